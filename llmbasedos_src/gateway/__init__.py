"""The gateway: the one door between clients and the backends.

    doors/      where clients come in: /ws, /mcp, gateway.sock, and the session all of them share
    routing/    from a method name to its answer: the router, the upstream pool, discovery, metrics
    policy/     who a client is and what it may do: tokens, licence, tiers, limits, audit
    llm/        the LLM methods served inside the gateway
    config.py   the gateway's settings (a leaf every part may read)
    runtime.py  `Gateway`, which assembles the parts; app.py the ASGI app; __main__.py serves it
    status.py, ui.py  the status document and page

Lower parts never import the ones that assemble them: doors get `doors.host.DoorHost`, a narrow interface,
not the Gateway. tests/test_layout.py holds the rule.
"""
