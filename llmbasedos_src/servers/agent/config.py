"""The agent's configuration: `<config_dir>/agent.yaml`, plus environment overrides.

    http:
      allow_hosts: [api.example.com, "127.0.0.1:8080"]   # host, or host:port; nothing else is reachable
      max_response_bytes: 1048576
    docker:
      enabled: false
      images: [alpine:3.20]          # the only images a docker step may run
    n8n:
      enabled: false                 # n8n_webhook steps; their hosts must be on http.allow_hosts too
    max_depth: 5                     # how deep `workflow` steps may nest

    LLMBDO_AGENT_HTTP_ALLOW   comma list of hosts added to http.allow_hosts
    LLMBDO_WORKFLOWS_DIR      the workflows directory (default: <config_dir>/workflows)
    LLMBDO_GATEWAY_SOCKET     the gateway's UNIX socket (default: <run_dir>/gateway.sock)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ...settings import Settings

__all__ = ["AgentConfig", "ConfigError", "CONFIG_FILE"]

CONFIG_FILE = "agent.yaml"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class AgentConfig:
    workflows_dir: Path
    gateway_socket: Path
    http_allow: frozenset[str] = frozenset()
    max_response_bytes: int = 1 << 20
    docker_enabled: bool = False
    docker_images: frozenset[str] = frozenset()
    n8n_enabled: bool = False
    max_depth: int = 5

    def host_allowed(self, host: str, port: int | None) -> bool:
        host = host.lower().strip("[]")
        return host in self.http_allow or (port is not None and f"{host}:{port}" in self.http_allow)

    @classmethod
    def load(cls, settings: Settings) -> AgentConfig:
        path = settings.config_dir / CONFIG_FILE
        data: Any = {}
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise ConfigError(f"{CONFIG_FILE}: cannot be read ({exc.strerror})") from None
        if text.strip():
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{CONFIG_FILE}: invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{CONFIG_FILE}: must be a mapping")
        http = _section(data, "http")
        docker = _section(data, "docker")
        n8n = _section(data, "n8n")
        allow = {str(h).lower().strip() for h in _list(http, "allow_hosts", "http")}
        env_allow = os.environ.get("LLMBDO_AGENT_HTTP_ALLOW", "")
        allow |= {h.strip().lower() for h in env_allow.split(",") if h.strip()}
        workflows = os.environ.get("LLMBDO_WORKFLOWS_DIR")
        sock = os.environ.get("LLMBDO_GATEWAY_SOCKET")
        max_bytes = http.get("max_response_bytes", 1 << 20)
        depth = data.get("max_depth", 5)
        for name, value in (("http.max_response_bytes", max_bytes), ("max_depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{CONFIG_FILE}: {name} must be a positive integer")
        return cls(
            workflows_dir=Path(workflows) if workflows else settings.config_dir / "workflows",
            gateway_socket=Path(sock) if sock else settings.run_dir / "gateway.sock",
            http_allow=frozenset(allow),
            max_response_bytes=max_bytes,
            docker_enabled=docker.get("enabled", False) is True,
            docker_images=frozenset(str(i) for i in _list(docker, "images", "docker")),
            n8n_enabled=n8n.get("enabled", False) is True,
            max_depth=depth,
        )


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{CONFIG_FILE}: {name} must be a mapping")
    return value


def _list(section: dict[str, Any], key: str, where: str) -> list[Any]:
    value = section.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{CONFIG_FILE}: {where}.{key} must be a list")
    return value
