"""`python -m llmbasedos.gateway`: serve the gateway with uvicorn (uvloop + httptools).

The settings and the policy's state are read before the web stack is even imported, so a start that must fail
fails within a fraction of a second: supervisord then counts it as a failed start, not as a crash of a running
program. A corrupt database ends it with `faults.EXIT_NO_RETRY` (see faults.py and store_health.py).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import socket
import sys

from llmbasedos.faults import EXIT_NO_RETRY, clear_fault, record_fault
from llmbasedos.gateway.config import ConfigError, GatewayConfig
from llmbasedos.gateway.policy.gatekeeper import Policy
from llmbasedos.gateway.policy.store_health import StoreCorrupt
from llmbasedos.logs import setup_logging
from llmbasedos.settings import Settings

log = logging.getLogger("llmbasedos.gateway")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main() -> None:
    settings = Settings.from_env()
    setup_logging(settings.log_level, settings.log_format)
    try:
        config = GatewayConfig.from_env()
    except ConfigError as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(2) from None
    try:
        policy = Policy.load(settings)
    except StoreCorrupt as exc:
        if record_fault(settings.run_dir, "gateway", str(exc), exc.path):
            log.error("refusing to start: %s", exc)
        raise SystemExit(EXIT_NO_RETRY) from None
    except Exception as exc:  # a bad licence or tiers file: say which and stop, no traceback
        log.error("refusing to start: %s", exc)
        raise SystemExit(2) from None
    clear_fault(settings.run_dir, "gateway")
    _serve(settings, config, policy)


def _serve(settings: Settings, config: GatewayConfig, policy: Policy) -> None:
    # The web stack is imported only once the state is known to be usable (see the module docstring).
    import uvicorn

    from llmbasedos.gateway.app import create_app
    from llmbasedos.gateway.doors.http_protocol import CorkedHttpToolsProtocol
    from llmbasedos.gateway.doors.ws_protocol import DirectWebSocketProtocol
    from llmbasedos.heap import freeze_startup_heap
    try:
        sock = _bind(config.host, config.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc.strerror)
        policy.close()
        raise SystemExit(2) from None
    port = sock.getsockname()[1]
    bound = dataclasses.replace(config, port=port)
    app = create_app(settings, bound, policy=policy)
    ws_protocol = functools.partial(DirectWebSocketProtocol, max_unread=config.ws_max_unread)
    server = uvicorn.Server(uvicorn.Config(
        app, loop="uvloop", http=CorkedHttpToolsProtocol, ws=ws_protocol, lifespan="on",  # type: ignore[arg-type]
        # The access log would print query strings, and `?token=` is one: it stays off.
        access_log=False, log_config=None, ws_max_size=settings.max_frame, ws_per_message_deflate=False,
        timeout_graceful_shutdown=5, server_header=False,
        # No proxy sits in front of the gateway: X-Forwarded-* from a local client must not rename its address.
        proxy_headers=False,
    ))
    log.info("gateway listening on http://%s:%d", config.host, port)
    freeze_startup_heap()
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(1)


if __name__ == "__main__":
    main()
