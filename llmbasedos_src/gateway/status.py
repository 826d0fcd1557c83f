"""The `/status` document: services and their state, methods, connected clients, quota use."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import Gateway

__all__ = ["build_status"]


def build_status(gateway: Gateway) -> dict[str, Any]:
    router = gateway.router
    services: dict[str, Any] = {}
    for name, caps in sorted(router.services().items()):
        upstream = router.pool.get(name)
        services[name] = {
            "state": upstream.state if upstream is not None else "unknown",
            "version": caps.version,
            "description": caps.description,
            "methods": caps.methods(),
            "in_flight": upstream.in_flight if upstream is not None else 0,
            "calls": upstream.calls if upstream is not None else 0,
        }
    try:
        usage = gateway.policy.usage()
    except Exception:
        usage = {"error": "usage is unavailable"}
    return {
        "status": "ok",
        "gateway": {"version": router.version, "pid": os.getpid(),
                    "uptime_s": round(time.time() - gateway.metrics.started, 3)},
        "services": services,
        "refused_capability_files": dict(sorted(gateway.discovery.refused.items())),
        "methods": router.methods(),
        "clients": [s.info() for s in gateway.sessions],
        "usage": usage,
    }
