"""Upstream MCP servers, the ones a person already runs, governed behind the gateway.

    registry.py      mcp_servers.yaml: the servers, how to reach them, their timeouts and tool policy
    link.py          one server's SDK client session, kept alive: connect, list, ping, restart with backoff
    launch.py        the launcher each stdio server runs under: dies with its parent, clean environment
    service_caps.py  a server's listing as the cap file of its service (pure)
    program.py       the program: the registry watched, one Link per server, `<name>.cap.json` per service

The names of what upstreams offer, on our side, are in llmbasedos.protocol.upstream_names (the gateway
needs them too). May import llmbasedos.backend, llmbasedos.protocol and the shared leaves, like every server.
"""
