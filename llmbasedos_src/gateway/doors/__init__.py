"""The gateway's doors: where a client connects, is authenticated, and has its messages turned into calls.

    ws.py, ws_protocol.py, ws_frames.py  `/ws`: JSON-RPC over WebSocket, with a direct lane for common frames
    http_protocol.py  uvicorn's HTTP protocol with its writes gathered
    mcp_http/         `/mcp`: standard MCP over Streamable HTTP, both eras
    unix.py           `<run dir>/gateway.sock`: the local door (owner, and agent runs on a client's behalf)
    session.py        one connection's JSON-RPC dispatch, whatever its door
    auth.py           where a token is found on a request, and the answers to a refusal
    host.py           DoorHost: what a door needs of the running gateway

Imports routing/, policy/, config.py, protocol/ and rpc/; never runtime.py or app.py.
"""
