"""Who a client is and what it may do, and the record of what it did.

    gatekeeper.py   Policy: authentication, admission (rights, rate limits, quotas), LLM token reservations
    rights.py       a client's rights under its tier and the licence's
    tokens.py, live_clients.py, expiry.py  clients and their hashed tokens, seen live by open connections
    licence.py, tiers.py                   the licence and the tiers it names
    limits.py                              rate windows, daily quotas, token reservations
    audit.py, audit_files.py, audit_verify.py, refusals.py  the tamper-evident audit log
    store_health.py  a database SQLite cannot use, found once, said once
    visibility.py    who may see everything on the status surfaces

Imports only protocol/ and the shared leaves: the doors and the router ask it, it never calls them.
"""
