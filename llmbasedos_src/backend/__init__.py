"""What every backend daemon is built on: `MCPServer` and the confinement of client paths.

    server.py        MCPServer: caps, handlers, dispatch, cancellation, progress, shutdown
    connection.py    one peer's connection (decode, dispatch, gathered writes) and a call's CallContext
    params_check.py  the accept-only fast check of params ahead of jsonschema
    confinement.py   VirtualRoot: client paths inside one host directory, symlinks included
    special_files.py the one opener that never blocks on, or opens, a FIFO, socket or device

Imports protocol/, rpc/ and the shared leaves (settings, logs, files, heap); never the gateway.
"""
