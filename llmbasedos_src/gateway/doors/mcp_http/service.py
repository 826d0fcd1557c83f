"""Standard MCP methods over the gateway's router, whatever the era or transport.

This layer maps MCP (tools, prompts, resources, discovery) onto `Router.call` and `Router.capabilities_for`;
the HTTP transport (transport.py) owns headers, sessions and streams. Tool names are assigned once over all
routed services each time the routes change (tool_names.py), so a method has one name for every client; the
prompts and resources of upstream MCP servers come from upstream_features.py. Tool failures are results with
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
from llmbasedos.gateway.doors.mcp_http.tool_names import ToolNames, assign_tool_names, log_new_refusals, routed_services
from llmbasedos.gateway.doors.mcp_http.tools import (
    ToolCatalog,
    call_result,
    decode_cursor,
    error_result,
    page,
    passthrough_result,
)
from llmbasedos.gateway.doors.mcp_http.upstream_features import UpstreamFeatures
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
        self.names: ToolNames = assign_tool_names(routed_services(self.router))
        log_new_refusals(None, self.names)
        self.upstream = UpstreamFeatures()
        self.router.on_change(self._routes_changed)
        self._methods: dict[str, Callable[[McpCall, dict[str, Any]], Any]] = {
            "tools/list": self._tools_list,
            "tools/call": self._tools_call,
            "resources/list": self._resources_list,
            "resources/read": self._resources_read,
            "resources/templates/list": self._templates_list,
            "prompts/list": self._prompts_list,
            "prompts/get": self._prompts_get,
        }

    # -- change tracking -------------------------------------------------------------------------------

    def on_tools_changed(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _routes_changed(self) -> None:
        self.generation += 1
        names = assign_tool_names(routed_services(self.router))
        log_new_refusals(self.names, names)
        self.names = names
        self._catalogs.clear()
        for listener in self._listeners:
            listener()

    def catalog(self, client: ClientIdentity) -> ToolCatalog:
        now = time.monotonic()
        cached = self._catalogs.get(client)
        if cached is not None and cached[0] == self.generation and now - cached[1] < _CATALOG_TTL:
            return cached[2]
        catalog = ToolCatalog(self.router.capabilities_for(client), self.names)
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
            meta = result.get("_meta")  # an upstream's result may carry its own
            result["_meta"] = {**(meta if isinstance(meta, dict) else {}), SERVER_INFO_KEY: self.server_info()}
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
        return passthrough_result(value) if tool.upstream else call_result(tool, value)

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

    def _caller(self, call: McpCall) -> resources.Call:
        async def routed(method: str, params: dict[str, Any]) -> Any:
            return await self.router.call(call.client, method, params, request_id=call.request_id,
                                          disconnected=call.disconnected)
        return routed

    async def _resources_list(self, call: McpCall, params: dict[str, Any]) -> dict[str, Any]:
        """Upstream resources come on the first page, all of them (at most upstream_features.MAX_RESOURCES),
        followed by the fs server's first page; the next cursors are the fs server's, so later pages are files
        only and never ask the upstreams again."""
        cursor = params.get("cursor")
        routed = self._caller(call)
        listing = None
        if cursor is None:  # asked at once, while the fs server walks its tree
            views = self.router.capabilities_for(call.client)
            listing = asyncio.ensure_future(self.upstream.list_resources(views, routed))
        try:
            if self.router.service_of(resources.LIST_METHOD) is None:
                files: dict[str, Any] = {"resources": []}  # the fs server is away: no files, not an error
            else:
                files = await resources.list_resources(routed, cursor)
            upstream = await listing if listing is not None else []
        finally:
            if listing is not None:
                listing.cancel()
        result: dict[str, Any] = {"resources": [*upstream, *files["resources"]]}
        if "nextCursor" in files:
            result["nextCursor"] = files["nextCursor"]
        return result

    async def _resources_read(self, call: McpCall, params: dict[str, Any]) -> dict[str, Any]:
        uri = params.get("uri")
        if isinstance(uri, str) and uri and not uri.startswith(resources.URI_PREFIX):
            return await self.upstream.read_resource(self.router.capabilities_for(call.client), self._caller(call),
                                                     uri)
        return await resources.read_resource(self._caller(call), uri)

    async def _templates_list(self, call: McpCall, params: dict[str, Any]) -> dict[str, Any]:
        upstream = await self.upstream.list_templates(self.router.capabilities_for(call.client), self._caller(call))
        return {"resourceTemplates": [*resources.templates()["resourceTemplates"], *upstream]}

    async def _prompts_list(self, call: McpCall, params: dict[str, Any]) -> dict[str, Any]:
        cursor = params.get("cursor")
        decode_cursor(cursor, 1 << 30)  # a bad cursor is refused before any upstream is asked
        prompts = await self.upstream.list_prompts(self.router.capabilities_for(call.client), self._caller(call))
        prompts.sort(key=lambda p: p["name"])
        listed, nxt = page(prompts, cursor)
        result: dict[str, Any] = {"prompts": listed}
        if nxt is not None:
            result["nextCursor"] = nxt
        return result

    async def _prompts_get(self, call: McpCall, params: dict[str, Any]) -> dict[str, Any]:
        return await self.upstream.get_prompt(self.router.capabilities_for(call.client), self._caller(call),
                                              params.get("name"), params.get("arguments"))
