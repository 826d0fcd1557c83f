"""The upstream program: every registered MCP server, each published as a service of its own.

    python -m llmbasedos.servers.upstream

One socket, `upstream.sock`, serves all of them: the gateway routes `mcp.<name>.*` here through the cap file
`<name>.cap.json` this program writes for each server once its session is up (service_caps.py), and the
program hands each call to that server's `Link`. The service `upstream` itself has one method,
`mcp.upstream.servers`, which says how every server is doing; the same report is kept in
`<run dir>/upstream.state.json` for `llmbasedos mcp list` and the gateway's status page.

The registry is read again whenever its file changes (checked every second), so `llmbasedos mcp add` and
`remove` take effect on a running appliance within seconds: new servers start, removed ones stop and their
services go away, changed ones restart. A registry that does not parse leaves the running servers as they
are, and says why in the report; an entry with a fault is left out alone.

A server that was up keeps its cap file while it restarts, so hosts keep a stable tool list and calls made in
the meantime wait for the new session (up to the server's connect timeout). A server that never came up has
no cap file. Cap files of a previous run that died without cleaning up are removed at start.

Configuration (besides the common `LLMBDO_*` settings):

    LLMBDO_MCP_SERVERS    the registry file (default: <config_dir>/mcp_servers.yaml)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import orjson
from mcp import types
from mcp.shared.exceptions import MCPError

from llmbasedos.backend.server import CallContext, MCPServer, method
from llmbasedos.files import atomic_write_text
from llmbasedos.protocol import errors
from llmbasedos.protocol.upstream_names import INTERNAL_ACTIONS
from llmbasedos.servers.upstream.link import Link, UpstreamError
from llmbasedos.servers.upstream.registry import RegistryError, ServerEntry, load_registry, registry_path
from llmbasedos.servers.upstream.service_caps import Published, build_caps

__all__ = ["UpstreamProgram", "STATE_FILE"]

STATE_FILE = "upstream.state.json"
_POLL = 1.0
_CAP_SUFFIX = ".cap.json"
_KIND_OF_ACTION = {action: kind for kind, action in INTERNAL_ACTIONS.items()}


def _rpc_error(exc: MCPError) -> errors.RPCError:
    """An upstream's JSON-RPC error, as the same kind of error here."""
    message = f"upstream: {exc.error.message}"[:1000]
    if exc.error.code == errors.INVALID_PARAMS:
        return errors.InvalidParams(message)
    if exc.error.code == errors.METHOD_NOT_FOUND:
        return errors.MethodNotFound(message)
    if "timed out" in exc.error.message:
        return errors.Timeout(message)
    return errors.UpstreamError(message)


class UpstreamProgram(MCPServer):
    service_name = "upstream"
    caps_file = Path(__file__).with_name("caps.json")

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.links: dict[str, Link] = {}
        self.published: dict[str, Published] = {}
        self._entries: dict[str, ServerEntry] = {}
        self._refused: dict[str, str] = {}
        self._registry_error: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._state_pending = False

    @property
    def registry_file(self) -> Path:
        return registry_path(self.settings.config_dir)

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_cap_files()
        self._check_registry()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_registry())

    async def on_stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        links = list(self.links.values())
        self.links.clear()
        for name in list(self.published):
            self._unpublish(name)
        await asyncio.gather(*(link.stop() for link in links), *self._stopping, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            (self.settings.run_dir / STATE_FILE).unlink()

    def _remove_stale_cap_files(self) -> None:
        for path in self.settings.run_dir.glob(f"*{_CAP_SUFFIX}"):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and isinstance(data.get("upstream"), dict):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- the registry ---------------------------------------------------------------------------------

    async def _watch_registry(self) -> None:
        while True:
            await asyncio.sleep(_POLL)
            try:
                self._check_registry()
            except Exception:  # never let one bad read end the watching
                self.log.exception("reading the registry failed")

    def _check_registry(self) -> None:
        try:
            st = self.registry_file.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and self._stamp is not None:
            return
        self._stamp = stamp
        try:
            registry = load_registry(self.settings.config_dir)
        except RegistryError as exc:
            self._registry_error = str(exc)
            self.log.error("registry not applied: %s", exc)
            self._state_changed()
            return
        self._registry_error = None
        for name, why in registry.refused.items():
            if self._refused.get(name) != why:
                self.log.error("upstream server refused: %s", why)
        self._refused = dict(registry.refused)
        self._apply({n: e for n, e in registry.servers.items()})

    def _apply(self, entries: dict[str, ServerEntry]) -> None:
        for name, link in list(self.links.items()):
            entry = entries.get(name)
            if entry is None or not entry.enabled or entry != link.entry:
                self.log.info("upstream %s: %s", name, "removed" if entry is None else
                              "disabled" if not entry.enabled else "changed, restarting")
                self._drop(name)
        for name, entry in entries.items():
            if entry.enabled and name not in self.links:
                link = Link(entry, log_dir=self.settings.log_dir, on_change=self._link_changed)
                self.links[name] = link
                link.start()
        self._entries = entries
        self._state_changed()

    def _drop(self, name: str) -> None:
        link = self.links.pop(name)
        self._unpublish(name)
        task = asyncio.get_running_loop().create_task(link.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    # -- publishing -----------------------------------------------------------------------------------

    def _cap_path(self, name: str) -> Path:
        return self.settings.run_dir / f"{name}{_CAP_SUFFIX}"

    def _link_changed(self, link: Link) -> None:
        if not any(held is link for held in self.links.values()):
            return  # a link being stopped: its service is already gone
        if link.state == "ready" and link.listing is not None:
            published = build_caps(link.entry, link.listing, str(self.socket_path))
            previous = self.published.get(link.name)
            if published.caps is None:
                self._unpublish(link.name)
                self.published[link.name] = published
            elif previous is None or previous.caps != published.caps:
                text = json.dumps(published.caps, indent=1, ensure_ascii=False)
                atomic_write_text(self._cap_path(link.name), text)
                self.published[link.name] = published
                self.log.info("upstream %s: %d tools published", link.name, len(published.tool_names))
        self._state_changed()

    def _unpublish(self, name: str) -> None:
        self.published.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            self._cap_path(name).unlink()

    # -- the report -----------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        servers: dict[str, Any] = {}
        for name, entry in sorted(self._entries.items()):
            link = self.links.get(name)
            if not entry.enabled or link is None:
                servers[name] = {"state": "disabled", "transport": entry.transport, "tools": 0}
                continue
            row = link.describe()
            published = self.published.get(name)
            row["tools"] = len(published.tool_names) if published else 0
            row["tool_names"] = dict(published.tool_names) if published else {}
            row["refused_tools"] = dict(published.refused_tools) if published else {}
            row["prompts"] = bool(link.listing and link.listing.prompts)
            row["resources"] = bool(link.listing and link.listing.resources)
            servers[name] = row
        for name, why in sorted(self._refused.items()):
            servers[name] = {"state": "refused", "last_error": why, "tools": 0}
        return {"pid": os.getpid(), "updated": time.time(), "registry": self.registry_file.name,
                "registry_error": self._registry_error, "servers": servers}

    def _state_changed(self) -> None:
        # Coalesced: a burst of changes (a registry of many servers starting) writes the file once.
        if self._state_pending or self._loop is None:
            return
        self._state_pending = True
        self._loop.call_later(0.2, self._write_state)

    def _write_state(self) -> None:
        self._state_pending = False
        with contextlib.suppress(OSError):
            atomic_write_text(self.settings.run_dir / STATE_FILE, json.dumps(self.report(), indent=1))

    # -- calls ----------------------------------------------------------------------------------------

    @method("mcp.upstream.servers", inline=True)
    def servers(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.report()

    async def call_unlisted(self, method_name: str, params: Any, ctx: CallContext) -> Any:
        parts = method_name.split(".", 2)
        link = self.links.get(parts[1]) if len(parts) == 3 and parts[0] == "mcp" else None
        published = self.published.get(parts[1]) if link is not None else None
        if link is None or published is None or published.caps is None:
            raise errors.MethodNotFound(f"Method not found: {method_name}")
        if params is not None and not isinstance(params, dict):
            raise errors.InvalidParams("params must be an object: an MCP tool takes named arguments")
        args: dict[str, Any] = params or {}
        kind = _KIND_OF_ACTION.get(parts[2])
        try:
            if kind is not None:
                return await self._forward(link, kind, args)
            tool = next((t for t, m in published.tool_names.items() if m == method_name), None)
            if tool is None:
                raise errors.MethodNotFound(f"Method not found: {method_name}")
            request = types.CallToolRequest(params=types.CallToolRequestParams(name=tool, arguments=args))
            result = await link.request(request, timeout=link.entry.timeouts["call"],
                                        progress=lambda p, t, m: ctx.progress(p, t, m))
        except UpstreamError as exc:
            raise errors.ServiceUnavailable(str(exc)) from None
        except MCPError as exc:
            raise _rpc_error(exc) from None
        return self._sized(link, result)

    def _sized(self, link: Link, result: dict[str, Any]) -> dict[str, Any]:
        # A result larger than a frame would break the gateway's connection to every upstream: refuse it here.
        size = len(orjson.dumps(result))
        if size > self.settings.max_frame - 4096:
            link.errors += 1
            link.last_error = f"a result of {size} bytes exceeded the frame size limit"
            self._state_changed()
            raise errors.PayloadTooLarge(f"upstream {link.name} answered {size} bytes, more than the "
                                         f"{self.settings.max_frame} bytes a message may hold (LLMBDO_MAX_FRAME)")
        return result

    async def _forward(self, link: Link, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        timeout = link.entry.timeouts["list"]
        if kind == "prompts/list":
            return {"prompts": await self._all(link, types.ListPromptsRequest, "prompts", timeout)}
        if kind == "resources/list":
            return {"resources": await self._all(link, types.ListResourcesRequest, "resources", timeout)}
        if kind == "resources/templates/list":
            return {"resourceTemplates": await self._all(link, types.ListResourceTemplatesRequest,
                                                         "resourceTemplates", timeout)}
        if kind == "prompts/get":
            request: Any = types.GetPromptRequest(params=types.GetPromptRequestParams(
                name=str(args.get("name", "")), arguments=args.get("arguments")))
        else:
            request = types.ReadResourceRequest(params=types.ReadResourceRequestParams(uri=str(args.get("uri", ""))))
        return self._sized(link, await link.request(request, timeout=link.entry.timeouts["call"]))

    async def _all(self, link: Link, request_type: Any, key: str, timeout: float) -> list[Any]:
        out: list[Any] = []
        cursor: str | None = None
        for _ in range(50):
            raw = await link.request(request_type(params=types.PaginatedRequestParams(cursor=cursor)), timeout=timeout)
            items = raw.get(key)
            if isinstance(items, list):
                out.extend(items)
            cursor = raw.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        return out
