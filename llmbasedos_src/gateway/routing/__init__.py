"""From a method name to the code that answers it.

    router.py     admission through the policy, then a local handler or a backend; metrics and the audit line
    upstream.py   one persistent, multiplexed connection per backend service; deadlines.py their timeouts
    discovery.py  the run directory's `*.cap.json` files decide which services exist
    methods.py    the methods the gateway answers itself (`mcp.hello`, `mcp.listCapabilities`, ...)
    metrics.py    what is counted, rendered for `/metrics`

Imports policy/, protocol/ and rpc/; never the doors.
"""
