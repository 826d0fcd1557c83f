"""The standard MCP front door `/mcp` (Streamable HTTP, 2026-07-28 and 2025-11-25).

    tools.py      capabilities as MCP tools (names, schemas, results) — pure
    resources.py  files under the virtual root as MCP resources
    service.py    MCP methods over the router, whatever the era
    sessions.py   2025-11-25 sessions and their GET streams
    transport.py  the ASGI endpoint: auth, origin, era routing, JSON and SSE answers
"""

from llmbasedos.gateway.doors.mcp_http.transport import McpDoor, McpHttpEndpoint, McpMiddleware

__all__ = ["McpDoor", "McpHttpEndpoint", "McpMiddleware"]
