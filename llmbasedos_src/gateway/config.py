"""Gateway settings from `LLMBDO_GATEWAY_*` environment variables, on top of the shared `Settings`.

    LLMBDO_GATEWAY_HOST          address to bind                          (default: 127.0.0.1)
    LLMBDO_GATEWAY_PORT          TCP port; 0 picks a free one             (default: 8000)
    LLMBDO_GATEWAY_ALLOW_REMOTE  1 to allow a non-loopback bind           (default: off)
    LLMBDO_CALL_TIMEOUT          seconds a routed call may take           (default: 120)
    LLMBDO_GATEWAY_SOCKET        path of the local door                   (default: <run dir>/gateway.sock)
    LLMBDO_WS_MAX_UNREAD         bytes of answers a WebSocket client may leave unread before it is
                                 closed (1013)                            (default: 67108864, 64 MiB)
    LLMBDO_MCP_SESSIONS_PER_CLIENT  `/mcp` sessions one client may hold; a new one beyond ends its own
                                 least recently used                      (default: 32)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llmbasedos.loopback import is_loopback
from llmbasedos.settings import Settings

__all__ = ["GatewayConfig", "ConfigError", "MCP_SESSIONS_PER_CLIENT"]

MCP_SESSIONS_PER_CLIENT = 32


class ConfigError(ValueError):
    """A gateway setting is invalid; the message names the variable."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    allow_remote: bool = False
    call_timeout: float = 120.0
    socket_path: Path | None = None  # None: <run dir>/gateway.sock
    ws_max_unread: int = 64 * 1024 * 1024
    mcp_sessions_per_client: int = MCP_SESSIONS_PER_CLIENT

    @classmethod
    def from_env(cls) -> GatewayConfig:
        host = os.environ.get("LLMBDO_GATEWAY_HOST", "127.0.0.1").strip() or "127.0.0.1"
        port_raw = os.environ.get("LLMBDO_GATEWAY_PORT", "8000")
        try:
            port = int(port_raw)
        except ValueError:
            raise ConfigError(f"LLMBDO_GATEWAY_PORT: {port_raw!r} is not a port number") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"LLMBDO_GATEWAY_PORT: {port} is not between 0 and 65535")
        timeout_raw = os.environ.get("LLMBDO_CALL_TIMEOUT", "120")
        try:
            timeout = float(timeout_raw)
        except ValueError:
            raise ConfigError(f"LLMBDO_CALL_TIMEOUT: {timeout_raw!r} is not a number of seconds") from None
        if not timeout > 0:
            raise ConfigError("LLMBDO_CALL_TIMEOUT: must be more than 0 seconds")
        sock = os.environ.get("LLMBDO_GATEWAY_SOCKET")
        unread_raw = os.environ.get("LLMBDO_WS_MAX_UNREAD", str(cls.ws_max_unread))
        try:
            unread = int(unread_raw)
        except ValueError:
            raise ConfigError(f"LLMBDO_WS_MAX_UNREAD: {unread_raw!r} is not a number of bytes") from None
        if unread < 1 << 20:
            raise ConfigError("LLMBDO_WS_MAX_UNREAD: must be at least 1048576 bytes (1 MiB)")
        sessions_raw = os.environ.get("LLMBDO_MCP_SESSIONS_PER_CLIENT", str(cls.mcp_sessions_per_client))
        try:
            sessions = int(sessions_raw)
        except ValueError:
            raise ConfigError(f"LLMBDO_MCP_SESSIONS_PER_CLIENT: {sessions_raw!r} is not a number") from None
        if sessions < 1:
            raise ConfigError("LLMBDO_MCP_SESSIONS_PER_CLIENT: must be at least 1")
        cfg = cls(host=host, port=port, allow_remote=_truthy(os.environ.get("LLMBDO_GATEWAY_ALLOW_REMOTE")),
                  call_timeout=timeout, socket_path=Path(sock) if sock else None, ws_max_unread=unread,
                  mcp_sessions_per_client=sessions)
        cfg.check()
        return cfg

    def check(self) -> None:
        if not is_loopback(self.host) and not self.allow_remote:
            raise ConfigError(f"LLMBDO_GATEWAY_HOST: {self.host!r} is not a loopback address; "
                              "set LLMBDO_GATEWAY_ALLOW_REMOTE=1 to expose the gateway to the network")

    def gateway_socket(self, settings: Settings) -> Path:
        return self.socket_path or settings.run_dir / "gateway.sock"
