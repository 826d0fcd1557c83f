"""The NUL-framed JSON-RPC machinery shared by the gateway, the backends, the agent and the tests.

    calls.py       CallTable: ids, the calls in flight, where answers and notifications go (no I/O)
    client.py      RPCClient: a persistent, multiplexed client over a UNIX socket, on a CallTable
    gathered_writes.py  the writes of one read or loop pass leave as one (upstreams, HTTP, backends)
    write_gate.py  a transport's pause/resume as something a coroutine can wait on
    read_scope.py  writes made while one read is handled leave together when it ends

Imports only protocol/. luca-shell's WebSocket client keeps its calls in a CallTable too.
"""
