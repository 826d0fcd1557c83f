"""The `/status` document: services and their state, methods, connected clients, quota use.

A reader of everything (visibility.py) gets the whole document; any other client gets the same shape cut down
to itself: the services and methods its rights reach, its own connections and its own usage.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any, Protocol

from llmbasedos.gateway.doors.session import Session
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy
from llmbasedos.gateway.policy.visibility import reads_everything
from llmbasedos.gateway.routing.discovery import Discovery
from llmbasedos.gateway.routing.metrics import Metrics
from llmbasedos.gateway.routing.router import Router

__all__ = ["StatusSource", "build_status"]


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
        "methods": [m for m in router.methods() if m in visible],
        "clients": [s.info() for s in sessions],
        "usage": usage,
        "you": {"client_id": client.client_id, "name": client.name, "reads_everything": everything},
    }
