"""The `/status` document: services and their state, methods, connected clients, quota use.

A reader of everything (visibility.py) gets the whole document; any other client gets the same shape cut down
to itself: the services and methods its rights reach, its own connections and its own usage.

`upstreams` holds the upstream MCP servers: the upstream program's state file (upstream_state.py) and, per
server, the tools /mcp refuses because their name is taken (tool_names.py; `name_collisions`, by the
upstream's tool name). A reader of everything sees every registered server with all its fields, and the
program's own report (`program`: pid, running, registry error, or why the state file could not be read).
Any other client sees a server only when it may call one of its methods now, or when its rights cover the
whole server (`mcp.<name>.*`, `mcp.upstream.<name>.*` or wider, so a client allowed a server sees it fail);
and then only its state, transport, counts of tools, prompts and resources, restarts, since, and the tools
left out: never everybody's calls and errors, nor the last error (which may name a command or a host path).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any, Protocol

from llmbasedos.gateway.doors.mcp_http.tool_names import assign_tool_names, routed_services
from llmbasedos.gateway.doors.session import Session
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy
from llmbasedos.gateway.policy.visibility import reads_everything
from llmbasedos.gateway.routing.discovery import Discovery
from llmbasedos.gateway.routing.metrics import Metrics
from llmbasedos.gateway.routing.router import Router
from llmbasedos.upstream_state import read_upstream_state

__all__ = ["StatusSource", "build_status", "upstreams_section"]

# What a client that does not read everything sees of an upstream server it may use.
_SHOWN_TO_USERS = ("state", "transport", "tools", "prompts", "resources", "restarts", "since", "server_info",
                   "protocol_version", "refused_tools", "name_collisions")


class StatusSource(Protocol):
    """The parts of the running gateway the document is read from (`runtime.Gateway` is one)."""

    router: Router
    policy: Policy
    discovery: Discovery
    metrics: Metrics

    @property
    def sessions(self) -> Iterable[Session]: ...


def build_status(gateway: StatusSource, client: ClientIdentity) -> dict[str, Any]:
    everything = reads_everything(client)
    router = gateway.router
    visible = set(router.methods()) if everything else set(router.methods_for(client))
    services: dict[str, Any] = {}
    for name, caps in sorted(router.services().items()):
        methods = [m for m in caps.methods() if m in visible]
        if not methods and not everything:
            continue
        upstream = router.pool.get(name)
        service: dict[str, Any] = {
            "state": upstream.state if upstream is not None else "unknown",
            "version": caps.version,
            "description": caps.description,
            "methods": methods,
        }
        if everything:  # counts of everybody's calls
            service["in_flight"] = upstream.in_flight if upstream is not None else 0
            service["calls"] = upstream.calls if upstream is not None else 0
        services[name] = service
    try:
        usage = gateway.policy.usage()
        if not everything:
            usage = {cid: use for cid, use in usage.items() if cid == client.client_id}
    except Exception:
        usage = {"error": "usage is unavailable"}
    sessions = gateway.sessions if everything else [s for s in gateway.sessions
                                                    if s.client.client_id == client.client_id]
    gateway_info: dict[str, Any] = {"version": router.version,
                                    "uptime_s": round(time.time() - gateway.metrics.started, 3)}
    if everything:
        gateway_info["pid"] = os.getpid()
    return {
        "status": "ok",
        "gateway": gateway_info,
        "services": services,
        "refused_capability_files": dict(sorted(gateway.discovery.refused.items())) if everything else {},
        "upstreams": upstreams_section(gateway, client, everything, visible),
        "methods": [m for m in router.methods() if m in visible],
        "clients": [s.info() for s in sessions],
        "usage": usage,
        "you": {"client_id": client.client_id, "name": client.name, "reads_everything": everything},
    }


def upstreams_section(gateway: StatusSource, client: ClientIdentity, everything: bool,
                      visible: set[str]) -> dict[str, Any]:
    router = gateway.router
    state = read_upstream_state(gateway.discovery.run_dir)
    rows: dict[str, dict[str, Any]] = dict(state["servers"])
    services = router.services()
    for name, caps in services.items():  # published but not (yet) in the state file
        if caps.upstream is not None and name not in rows:
            rows[name] = {"state": "unknown", "transport": str(caps.upstream.get("transport", "")),
                          "tools": sum(1 for c in caps.capabilities if c.mcp_kind == "tool"),
                          "tool_names": {}, "refused_tools": {}}
    names = assign_tool_names(routed_services(router))
    servers: dict[str, Any] = {}
    for name, row in sorted(rows.items()):
        caps = services.get(name)
        if not everything and not (caps is not None and visible.intersection(caps.methods())) \
                and not _covers(gateway.policy, client, name):
            continue
        by_method = {m: tool for tool, m in row.get("tool_names", {}).items()}
        full = {**row, "name_collisions": {by_method.get(m, m): why for m, why in names.refused_of(name).items()}}
        servers[name] = full if everything else {k: full[k] for k in _SHOWN_TO_USERS if k in full}
    out: dict[str, Any] = {"servers": servers}
    if everything:
        out["program"] = {k: state.get(k) for k in ("present", "error", "pid", "running", "updated", "registry",
                                                     "registry_error")}
    return out


def _covers(policy: Policy, client: ClientIdentity, server: str) -> bool:
    """Whether the client's rights cover the whole server, by its name or as any upstream (`mcp.upstream.*`)."""
    return policy.is_allowed(client, f"mcp.{server}.*") or policy.is_allowed(client, f"mcp.upstream.{server}.*")
