"""Standard MCP methods over the gateway's router, whatever the era or transport.

This layer maps MCP (tools, resources, discovery) onto `Router.call` and `Router.capabilities_for`; the
HTTP transport (transport.py) owns headers, sessions and streams. Tool failures are results with
`isError: true`; anything else that goes wrong is raised as an `RPCError` for the transport to answer as a
JSON-RPC error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS

from llmbasedos.gateway.doors.mcp_http import resources
from llmbasedos.gateway.doors.mcp_http.tools import ToolCatalog, call_result, error_result
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity
from llmbasedos.protocol import errors

if TYPE_CHECKING:
    from llmbasedos.gateway.doors.host import DoorHost

__all__ = ["McpService", "McpCall", "SERVER_NAME", "MODERN_VERSIONS", "HANDSHAKE_VERSIONS", "LATEST_HANDSHAKE",
           "INSTRUCTIONS"]

SERVER_NAME = "llmbasedos"
MODERN_VERSIONS: tuple[str, ...] = tuple(MODERN_PROTOCOL_VERSIONS)
HANDSHAKE_VERSIONS: tuple[str, ...] = tuple(HANDSHAKE_PROTOCOL_VERSIONS)
LATEST_HANDSHAKE = LATEST_HANDSHAKE_VERSION
INSTRUCTIONS = ("llmbasedos exposes a person's local capabilities: files under a virtual root (fs_*), semantic "
                "search, sync, mail and calendar, workflows and language models. Paths are inside the virtual root.")
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
_CATALOG_TTL = 5.0  # rights can change without a route change (revoked token, new licence): re-read this often
_CACHE_TTL_MS = {"tools/list": 5000, "prompts/list": 60000, "resources/templates/list": 60000,
                 "resources/list": 0, "resources/read": 0, "server/discover": 60000}

NotifySink = Callable[[str, dict[str, Any]], None]


@dataclass(slots=True)
class McpCall:
    """One MCP request as the service sees it."""

    client: ClientIdentity
    modern: bool
    request_id: Any = None
    progress_token: Any = None
    notify: NotifySink | None = None  # sends a notification on this request's response stream
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


class McpService:
    def __init__(self, gateway: DoorHost) -> None:
        self.gateway = gateway
        self.router = gateway.router
        self.version = gateway.router.version
        self.generation = 0
        self._catalogs: dict[ClientIdentity, tuple[int, float, ToolCatalog]] = {}
        self._listeners: list[Callable[[], None]] = []
        self.router.on_change(self._routes_changed)
        self._methods: dict[str, Callable[[McpCall, dict[str, Any]], Any]] = {
            "tools/list": self._tools_list,
            "tools/call": self._tools_call,
            "resources/list": self._resources_list,
            "resources/read": self._resources_read,
            "resources/templates/list": self._templates_list,
            "prompts/list": self._prompts_list,
        }

    # -- change tracking -------------------------------------------------------------------------------

    def on_tools_changed(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _routes_changed(self) -> None:
        self.generation += 1
        self._catalogs.clear()
        for listener in self._listeners:
            listener()

    def catalog(self, client: ClientIdentity) -> ToolCatalog:
        now = time.monotonic()
        cached = self._catalogs.get(client)
        if cached is not None and cached[0] == self.generation and now - cached[1] < _CATALOG_TTL:
            return cached[2]
        catalog = ToolCatalog(self.router.capabilities_for(client))
        if len(self._catalogs) > 10_000:
            self._catalogs.clear()
        self._catalogs[client] = (self.generation, now, catalog)
        return catalog

    # -- what the server says about itself -----------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        return {"tools": {"listChanged": True}, "resources": {"listChanged": False, "subscribe": False},
                "prompts": {"listChanged": False}}

    def server_info(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "title": "llmbasedos gateway", "version": self.version}

    def initialize_result(self, version: str) -> dict[str, Any]:
        return {"protocolVersion": version, "capabilities": self.capabilities(), "serverInfo": self.server_info(),
                "instructions": INSTRUCTIONS}

    def discover_result(self) -> dict[str, Any]:
        return {"supportedVersions": [*MODERN_VERSIONS, *reversed(HANDSHAKE_VERSIONS)],
                "capabilities": self.capabilities(), "instructions": INSTRUCTIONS}

    # -- dispatch --------------------------------------------------------------------------------------

    async def handle(self, call: McpCall, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The result of one request, shaped for the call's era; RPCError for a protocol fault."""
        if call.modern:
            if method == "server/discover":
                result = self.discover_result()
            else:
                handler = self._methods.get(method)
                if handler is None:
                    raise errors.MethodNotFound(f"Method not found: {method}")
                result = await handler(call, params)
            result["resultType"] = "complete"
            ttl = _CACHE_TTL_MS.get(method)
            if ttl is not None:
                result["ttlMs"] = ttl
                result["cacheScope"] = "private"  # what a client sees depends on its token
            result["_meta"] = {SERVER_INFO_KEY: self.server_info()}
            return result
        if method == "ping":
            return {}
        handler = self._methods.get(method)
        if handler is None:
            raise errors.MethodNotFound(f"Method not found: {method}")
        return await handler(call, params)  # type: ignore[no-any-return]

    async def _tools_list(self, call: McpCall, params: dict[str, Any]) -> dict[str, Any]:
        tools, nxt = self.catalog(call.client).page(params.get("cursor"))
        result: dict[str, Any] = {"tools": tools}
        if nxt is not None:
            result["nextCursor"] = nxt
        return result

    async def _tools_call(self, call: McpCall, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise errors.InvalidParams("params.name must be a tool name")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        elif not isinstance(arguments, dict):
            raise errors.InvalidParams("params.arguments must be an object")
        tool = self.catalog(call.client).by_name.get(name)
        if tool is None:
            raise errors.InvalidParams(f"Unknown tool: {name}")
        listener = self._progress_listener(call)
        try:
            value = await self.router.call(call.client, tool.method, arguments, notify=listener,
                                           request_id=call.request_id, disconnected=call.disconnected)
        except errors.Cancelled:
            raise
        except errors.RPCError as exc:
            return error_result(exc)
        return call_result(tool, value)

    def _progress_listener(self, call: McpCall) -> Callable[[str, dict[str, Any]], None] | None:
        token, sink = call.progress_token, call.notify
        if token is None or sink is None:
            return None
        chunks = 0

        def listener(method: str, params: dict[str, Any]) -> None:
            nonlocal chunks
            out: dict[str, Any] = {"progressToken": token}
            if method == "mcp.progress":
                progress = params.get("progress")
                if not isinstance(progress, (int, float)):
                    return
                out["progress"] = progress
                if isinstance(params.get("total"), (int, float)):
                    out["total"] = params["total"]
                if isinstance(params.get("message"), str):
                    out["message"] = params["message"]
            elif method == "mcp.llm.chunk":
                # A streamed answer has no total: each chunk counts one step and carries its text.
                chunks += 1
                out["progress"] = chunks
                if isinstance(params.get("delta"), str):
                    out["message"] = params["delta"]
            else:
                return
            sink("notifications/progress", out)

        return listener

    def _fs_caller(self, call: McpCall) -> resources.Call:
        async def fs(method: str, params: dict[str, Any]) -> Any:
            return await self.router.call(call.client, method, params, request_id=call.request_id,
                                          disconnected=call.disconnected)
        return fs

    async def _resources_list(self, call: McpCall, params: dict[str, Any]) -> dict[str, Any]:
        cursor = params.get("cursor")
        if self.router.service_of(resources.LIST_METHOD) is None:
            return {"resources": []}  # the fs server is away: no files, not an error
        return await resources.list_resources(self._fs_caller(call), cursor)

    async def _resources_read(self, call: McpCall, params: dict[str, Any]) -> dict[str, Any]:
        return await resources.read_resource(self._fs_caller(call), params.get("uri"))

    async def _templates_list(self, call: McpCall, params: dict[str, Any]) -> dict[str, Any]:
        return resources.templates()

    async def _prompts_list(self, call: McpCall, params: dict[str, Any]) -> dict[str, Any]:
        return {"prompts": []}
