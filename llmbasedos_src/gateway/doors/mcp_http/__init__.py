"""The standard MCP front door `/mcp` (Streamable HTTP, 2026-07-28 and 2025-11-25).

    tool_names.py one tool name per method over all services; upstream collisions refused — pure
    tools.py      capabilities as MCP tools (descriptors, schemas, results) — pure
    resources.py  files under the virtual root as MCP resources
    upstream_features.py  upstream MCP servers' prompts and resources
    service.py    MCP methods over the router, whatever the era
    sessions.py   2025-11-25 sessions and their GET streams
    transport.py  McpDoor: era routing, the two eras' requests, JSON and SSE answers
    front.py      the Host check and the token's client (cached), before anything else
    envelope.py   the 2026-07-28 request envelope, checked fast before the SDK's classifier
    listen.py     2026-07-28 subscriptions/listen streams
    http_io.py    ASGI bodies, responses and SSE events
    endpoint.py   the ASGI endpoint and middleware that mount it at /mcp
"""

from llmbasedos.gateway.doors.mcp_http.endpoint import McpHttpEndpoint, McpMiddleware
from llmbasedos.gateway.doors.mcp_http.transport import McpDoor

__all__ = ["McpDoor", "McpHttpEndpoint", "McpMiddleware"]
