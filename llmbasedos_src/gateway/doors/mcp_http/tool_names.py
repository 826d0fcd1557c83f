"""One tool name per method for every client: the assignment over all routed services. Pure, no I/O.

Native capabilities (the appliance's own services and the gateway's methods) are named first, among
themselves, the way tools.py describes: `<service>_<action>`, and a method that would share a name with one
that sorts before it gets `_2`, `_3`, ... . Then the tools of upstream MCP servers (services that carry
`upstream`), server by server in name order: each keeps `<server>_<action>` or is refused. It is refused when
that name is already a native tool's, or a tool's of a server that sorts earlier (or of an earlier method of
its own server); it is then left out of tools/list, never suffixed and never shadowing the other, and the
refusal names the method that holds the name. So adding or removing an upstream server never renames a native
tool, and one upstream server never renames another's tools.

The assignment covers all services, not one client's view of them: a method has the same name for every client
that sees it, and no allowlist decides which of two colliding tools wins. Capabilities whose `mcp_kind` is not
"tool" (an upstream's prompts and resources requests) are never tools and take no name.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmbasedos.gateway.routing.router import Router

__all__ = ["ToolNames", "assign_tool_names", "routed_services", "log_new_refusals", "tool_name", "NAME_RE"]

log = logging.getLogger("llmbasedos.gateway.mcp")

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_GATEWAY = "(gateway)"  # the service entry of the gateway's own methods, which no backend may take


def tool_name(method: str) -> str:
    """The tool name for a method, before collisions are resolved."""
    parts = method.split(".")
    if len(parts) >= 3 and parts[0] == "mcp":
        base = parts[1] + "_" + "_".join(parts[2:])
    else:
        base = "_".join(p for p in parts if p) or "tool"
    base = _NAME_BAD_CHARS.sub("_", base)
    if len(base) > 64:
        digest = hashlib.sha256(method.encode()).hexdigest()[:8]
        base = base[:55] + "_" + digest
    return base


@dataclass(frozen=True, slots=True)
class ToolNames:
    names: dict[str, str] = field(default_factory=dict)  # method -> tool name
    refused: dict[str, str] = field(default_factory=dict)  # method -> why (names the method holding the name)
    upstream: dict[str, str] = field(default_factory=dict)  # method -> its upstream server, for each tool of one

    def refused_of(self, server: str) -> dict[str, str]:
        """The refused tools of one upstream server, by method."""
        return {m: why for m, why in self.refused.items() if self.upstream.get(m) == server}


def _is_tool(cap: dict[str, Any]) -> bool:
    return (cap.get("mcp_kind") or "tool") == "tool" and isinstance(cap.get("method"), str)


def _suffixed(base: str, taken: dict[str, str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        suffix = f"_{n}"
        name = base[:64 - len(suffix)] + suffix
    return name


def assign_tool_names(services: list[dict[str, Any]]) -> ToolNames:
    """Names for every tool of `services` (in the shape of `Router.capabilities_for`), whatever their order."""
    native: list[str] = []
    upstream: list[tuple[str, str, str]] = []  # (service, method, server)
    for service in services:
        tools = [c["method"] for c in service.get("capabilities", []) if _is_tool(c)]
        up = service.get("upstream")
        if isinstance(up, dict):
            name = str(service.get("service_name", ""))
            server = str(up.get("server") or name)
            upstream.extend((name, m, server) for m in tools)
        else:
            native.extend(tools)
    out = ToolNames()
    holder: dict[str, str] = {}  # tool name -> the method that has it
    for method in sorted(set(native)):
        name = _suffixed(tool_name(method), holder)
        holder[name] = method
        out.names[method] = name
    natives = dict(holder)
    for _service, method, server in sorted(set(upstream)):
        if method in out.names:
            continue  # claimed twice: the router refuses that, so it can only be a stale view
        out.upstream[method] = server
        name = tool_name(method)
        other = holder.get(name)
        if other is None:
            holder[name] = method
            out.names[method] = name
        elif natives.get(name) == other:
            out.refused[method] = f"its tool name {name!r} is the name of the native tool {other}"
        else:
            out.refused[method] = f"its tool name {name!r} is already the name of {other}"
    assert all(NAME_RE.match(n) for n in out.names.values())
    return out


def routed_services(router: Router) -> list[dict[str, Any]]:
    """Every routed method, grouped by service, whatever any client may see: what `assign_tool_names` needs."""
    backends = router.services()
    served = {m for caps in backends.values() for m in caps.methods()}
    out: list[dict[str, Any]] = [{"service_name": _GATEWAY, "capabilities": [
        {"method": m} for m in router.methods() if m not in served]}]
    for name, caps in sorted(backends.items()):
        entry: dict[str, Any] = {"service_name": name, "capabilities": [
            {"method": c.method, "mcp_kind": c.mcp_kind} for c in caps.capabilities]}
        if caps.upstream is not None:
            entry["upstream"] = caps.upstream
        out.append(entry)
    return out


def log_new_refusals(before: ToolNames | None, now: ToolNames) -> None:
    """Warn once about each refusal `now` has that `before` did not (the same refusal is not said again)."""
    old = before.refused if before is not None else {}
    for method, why in sorted(now.refused.items()):
        if old.get(method) != why:
            log.warning("the upstream tool %s is not served on /mcp: %s", method, why)
