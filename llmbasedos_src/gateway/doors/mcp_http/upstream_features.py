"""The prompts and resources of upstream MCP servers on /mcp, over the routed methods that carry them.

An upstream server's service has, besides its tools, capabilities whose `mcp_kind` names the MCP request they
carry: `mcp.<server>.prompts.list`, `.prompts.get`, `.resources.list`, `.resources.templates`,
`.resources.read`. Every function here takes the client's own view (`Router.capabilities_for(client)`) and a
`Call` that goes through `Router.call` as that client, so the allowlist (`mcp.<server>.*`), tier, limits and
audit decide here exactly as for a tool: a server whose request the client may not make is neither asked,
nor listed, nor read from.

- Prompts are named `<server>_<action_for(prompt name)>` (protocol/upstream_names.py). Two servers whose
  prompts would share a name: the server that sorts first keeps it, the other's prompt is left out (logged
  once). `prompts/get` maps our name back with the server's listing (remembered from the last listing, asked
  again when unknown) and forwards {name, arguments}; the GetPromptResult passes through.
- Resources keep the upstream's URIs; each listed URI is recorded with its server (a bounded record), so
  `resources/read` goes back to it. A URI made from a template goes to the server whose template's literal
  start (the text before its first `{`) is the longest start of the URI. A URI known neither way makes the
  gateway list the client's servers again (bounded as below) before it answers resource-not-found: no server
  is ever asked blindly for a URI it never showed, so a slow one cannot hold up the answer.
  An upstream resource or template in our own `llmbasedos://fs/` space is not listed: a read of it goes to fs.
- Listing asks every server at once, each bounded by `LIST_TIMEOUT`: one slow or dead server is skipped (and
  logged when its reason changes), and never holds up the others' answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from llmbasedos.gateway.doors.mcp_http.resources import RESOURCE_NOT_FOUND, URI_PREFIX
from llmbasedos.gateway.doors.mcp_http.tools import METHOD_META
from llmbasedos.protocol import errors
from llmbasedos.protocol.upstream_names import action_for

__all__ = ["UpstreamFeatures", "Call", "LIST_TIMEOUT", "MAX_RESOURCES", "requests_of"]

log = logging.getLogger("llmbasedos.gateway.mcp")

# A host lists prompts and resources when it connects, and waits for the answer before showing anything: five
# seconds is long for a listing (a healthy server answers in milliseconds, from the upstream program's cache or
# its live session), and short enough that a hung server costs the host one blink, not the router's timeout.
LIST_TIMEOUT = 5.0
MAX_RESOURCES = 2000  # upstream resources in one listing, all servers together (fs has its own cap)
MAX_RECORDED = 10_000  # URIs remembered with their server; the oldest are forgotten first
NAME_META = "llmbasedos/name"  # the upstream's own name of a prompt

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]


def requests_of(services: list[dict[str, Any]], kind: str) -> dict[str, str]:
    """service -> its method carrying the MCP request `kind`, for each upstream service the view has one of."""
    out: dict[str, str] = {}
    for service in services:
        if not isinstance(service.get("upstream"), dict):
            continue
        for cap in service.get("capabilities", []):
            if cap.get("mcp_kind") == kind:
                out[str(service["service_name"])] = str(cap["method"])
    return dict(sorted(out.items()))


def _not_found(uri: str) -> errors.RPCError:
    return errors.RPCError(f"Resource not found: {uri[:200]}", {"uri": uri[:200]}, code=RESOURCE_NOT_FOUND)


def _with_meta(item: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    meta = item.get("_meta")
    return {**item, "_meta": {**(meta if isinstance(meta, dict) else {}), **extra}}


class UpstreamFeatures:
    """What /mcp remembers of upstream prompts and resources between requests (bounded), and the requests."""

    def __init__(self) -> None:
        self._uris: OrderedDict[str, str] = OrderedDict()  # resource URI -> the service that listed it
        self._prompts: dict[str, tuple[str, str]] = {}  # our prompt name -> (service, the upstream's name)
        self._prefixes: dict[str, tuple[str, ...]] = {}  # service -> the literal starts of its URI templates
        self._skipped: dict[str, str] = {}  # service -> why its last listing was skipped
        self._collided: set[tuple[str, str]] = set()  # (prompt name, service) refusals already logged

    # -- listing ---------------------------------------------------------------------------------------

    async def _list_one(self, call: Call, service: str, method: str, key: str) -> list[dict[str, Any]]:
        try:
            got = await asyncio.wait_for(call(method, {}), LIST_TIMEOUT)
        except TimeoutError:
            self._skip(service, f"no answer within {LIST_TIMEOUT:g} s")
            return []
        except errors.Forbidden:
            return []  # rights changed since the view was read: not listed, and nothing to say about it
        except errors.RPCError as exc:
            self._skip(service, exc.message)
            return []
        items = got.get(key) if isinstance(got, dict) else None
        if not isinstance(items, list):
            self._skip(service, f"its answer has no {key!r} list")
            return []
        if self._skipped.pop(service, None) is not None:
            log.info("the upstream %s answers %s again", service, method)
        return [i for i in items if isinstance(i, dict)]

    def _skip(self, service: str, why: str) -> None:
        if self._skipped.get(service) != why:
            log.warning("listing the upstream %s skipped: %s", service, why)
        self._skipped[service] = why

    async def _list_all(self, call: Call, methods: dict[str, str], key: str) -> dict[str, list[dict[str, Any]]]:
        got = await asyncio.gather(*(self._list_one(call, s, m, key) for s, m in methods.items()))
        return dict(zip(methods, got, strict=True))

    # -- prompts ---------------------------------------------------------------------------------------

    async def list_prompts(self, services: list[dict[str, Any]], call: Call) -> list[dict[str, Any]]:
        getters = requests_of(services, "prompts/get")
        listers = {s: m for s, m in requests_of(services, "prompts/list").items() if s in getters}
        listed = await self._list_all(call, listers, "prompts")
        out: list[dict[str, Any]] = []
        holder: dict[str, str] = {}
        for service, prompts in listed.items():
            for prompt in prompts:
                upstream_name = prompt.get("name")
                if not isinstance(upstream_name, str) or not upstream_name:
                    continue
                name = f"{service}_{action_for(upstream_name)}"
                other = holder.get(name)
                if other is not None:
                    if other != service and (name, service) not in self._collided:
                        self._collided.add((name, service))
                        log.warning("the upstream prompt %r of %s is not served on /mcp: %r is already a prompt "
                                    "of %s", upstream_name, service, name, other)
                    continue
                holder[name] = service
                self._remember_prompt(name, service, upstream_name)
                out.append(_with_meta({**prompt, "name": name},
                                      {METHOD_META: getters[service], NAME_META: upstream_name}))
        return out

    def _remember_prompt(self, name: str, service: str, upstream_name: str) -> None:
        if len(self._prompts) >= MAX_RECORDED and name not in self._prompts:
            self._prompts.clear()
        self._prompts[name] = (service, upstream_name)

    async def get_prompt(self, services: list[dict[str, Any]], call: Call, name: Any,
                         arguments: Any) -> dict[str, Any]:
        if not isinstance(name, str) or not name:
            raise errors.InvalidParams("params.name must be a prompt name")
        if arguments is not None and (not isinstance(arguments, dict)
                                      or not all(isinstance(v, str) for v in arguments.values())):
            raise errors.InvalidParams("params.arguments must be an object of strings")
        getters = {s: m for s, m in requests_of(services, "prompts/get").items() if name.startswith(s + "_")}
        known = self._prompts.get(name)
        if known is None or known[0] not in getters:
            # Unknown here (never listed, or listed before a restart): ask the servers it could belong to.
            await self.list_prompts([s for s in services if s.get("service_name") in getters], call)
            known = self._prompts.get(name)
        if known is None or known[0] not in getters:
            raise errors.InvalidParams(f"Unknown prompt: {name[:200]}")
        service, upstream_name = known
        params: dict[str, Any] = {"name": upstream_name}
        if arguments:
            params["arguments"] = arguments
        result = await call(getters[service], params)
        if not isinstance(result, dict) or not isinstance(result.get("messages"), list):
            raise errors.UpstreamError(f"The upstream MCP server {service} answered something that is not a prompt")
        return result

    # -- resources -------------------------------------------------------------------------------------

    async def list_resources(self, services: list[dict[str, Any]], call: Call) -> list[dict[str, Any]]:
        readers = requests_of(services, "resources/read")
        listers = {s: m for s, m in requests_of(services, "resources/list").items() if s in readers}
        listed = await self._list_all(call, listers, "resources")
        out: list[dict[str, Any]] = []
        for service, items in listed.items():
            for item in items:
                uri = item.get("uri")
                if not isinstance(uri, str) or not uri or uri.startswith(URI_PREFIX):
                    continue
                if len(out) >= MAX_RESOURCES:
                    return out
                self._record(uri, service)
                out.append(_with_meta(item, {METHOD_META: readers[service]}))
        return out

    async def list_templates(self, services: list[dict[str, Any]], call: Call) -> list[dict[str, Any]]:
        readers = requests_of(services, "resources/read")
        listers = {s: m for s, m in requests_of(services, "resources/templates/list").items() if s in readers}
        listed = await self._list_all(call, listers, "resourceTemplates")
        out: list[dict[str, Any]] = []
        for service, items in listed.items():
            kept = [t for t in items if isinstance(t.get("uriTemplate"), str)
                    and not t["uriTemplate"].startswith(URI_PREFIX)]
            self._prefixes[service] = tuple({t["uriTemplate"].split("{", 1)[0] for t in kept})
            out += [_with_meta(t, {METHOD_META: readers[service]}) for t in kept]
        return out

    def _record(self, uri: str, service: str) -> None:
        self._uris[uri] = service
        self._uris.move_to_end(uri)
        while len(self._uris) > MAX_RECORDED:
            self._uris.popitem(last=False)

    async def read_resource(self, services: list[dict[str, Any]], call: Call, uri: str) -> dict[str, Any]:
        """The upstream's ReadResourceResult for `uri` (not one of ours), or resource-not-found."""
        readers = requests_of(services, "resources/read")
        service = self._reader_of(uri, readers)
        if service is None and readers:
            # Not listed here yet, or forgotten since: list again what this client may see, then decide.
            await asyncio.gather(self.list_resources(services, call), self.list_templates(services, call))
            service = self._reader_of(uri, readers)
        if service is None:
            raise _not_found(uri)
        result = await call(readers[service], {"uri": uri})
        if not isinstance(result, dict) or not isinstance(result.get("contents"), list):
            raise errors.UpstreamError(f"The upstream MCP server {service} answered something that is not a "
                                       "resource")
        return result

    def _reader_of(self, uri: str, readers: dict[str, str]) -> str | None:
        """The server that listed `uri`, else the one with the longest template start of it, among `readers`."""
        service = self._uris.get(uri)
        if service in readers:
            return service
        best, length = None, -1
        for candidate in readers:
            for prefix in self._prefixes.get(candidate, ()):
                if uri.startswith(prefix) and len(prefix) > length:
                    best, length = candidate, len(prefix)
        return best
