"""The gateway's TCP port: picking a free one, checking a chosen one is free, and the URL to reach it."""

from __future__ import annotations

import errno
import socket

from llmbasedos.appliance.cli_errors import CLIError
from llmbasedos.appliance.supervisor_config import Layout

__all__ = ["free_port", "check_port_free", "gateway_url"]


def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option as the server will use, so a port in TIME_WAIT is not mistaken for a busy one.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CLIError(f"port {port} on {host} is already in use; choose another with --port "
                               "(0 picks a free one)") from None
            raise CLIError(f"cannot use port {port} on {host}: {exc.strerror}") from None


def gateway_url(layout: Layout) -> str:
    host = _connect_host(layout.gateway_host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{layout.gateway_port}"
