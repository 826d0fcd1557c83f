"""The programs people and hosts use to reach the gateway from outside it.

    shell/         luca-shell, the interactive client (WebSocket)
    mcp_stdio.py   `llmbasedos mcp-stdio`, the stdio MCP server for hosts that only launch commands

They speak to the gateway over its public doors only: they import protocol/, rpc/ and the shared leaves,
never the gateway's internals.
"""
