"""The agent's configuration: `<config_dir>/agent.yaml`, plus environment overrides.

    http:
      allow_hosts: [api.example.com, "127.0.0.1:8080"]   # host, or host:port; nothing else is reachable
      max_response_bytes: 1048576
    docker:
      enabled: false
      images: [alpine:3.20]          # the only images a docker step may run
    n8n:
      enabled: false                 # n8n_webhook steps; their hosts must be on http.allow_hosts too
    max_depth: 5                     # how deep runs nest: `workflow` steps and runs started by runs
    max_children: 16                 # sub-workflows and runs started under one root run, in all
    max_runs: 16                     # runs in flight at once, all clients together
    max_runs_per_client: 4           # runs in flight at once for one client
    max_string: 4194304              # the largest string (characters) or list (items) a template produces
    max_render_seconds: 2            # CPU time one template render may take

    LLMBDO_AGENT_HTTP_ALLOW   comma list of hosts added to http.allow_hosts
    LLMBDO_AGENT_MAX_DEPTH, LLMBDO_AGENT_MAX_CHILDREN, LLMBDO_AGENT_MAX_RUNS, LLMBDO_AGENT_MAX_RUNS_PER_CLIENT,
    LLMBDO_AGENT_MAX_STRING, LLMBDO_AGENT_MAX_RENDER_SECONDS
                              override the agent.yaml limits of the same name
    LLMBDO_WORKFLOWS_DIR      the workflows directory (default: <config_dir>/workflows)
    LLMBDO_GATEWAY_SOCKET     the gateway's UNIX socket (default: <run_dir>/gateway.sock)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmbasedos.settings import Settings

__all__ = ["AgentConfig", "ConfigError", "CONFIG_FILE", "setting_of"]

CONFIG_FILE = "agent.yaml"

# Every bound on runs and templates: (agent.yaml key, its default). Each may be overridden by
# LLMBDO_AGENT_<KEY>; `setting_of` names both, so a refusal can say which setting to raise.
_LIMITS: dict[str, int | float] = {
    "max_depth": 5,
    "max_children": 16,
    "max_runs": 16,
    "max_runs_per_client": 4,
    "max_string": 4 << 20,
    "max_render_seconds": 2.0,
}


def setting_of(limit: str) -> str:
    """How a person changes `limit`: its agent.yaml key and its environment variable."""
    return f"{limit} in {CONFIG_FILE}, or LLMBDO_AGENT_{limit.upper()}"


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
    max_depth: int = int(_LIMITS["max_depth"])
    max_children: int = int(_LIMITS["max_children"])
    max_runs: int = int(_LIMITS["max_runs"])
    max_runs_per_client: int = int(_LIMITS["max_runs_per_client"])
    max_string: int = int(_LIMITS["max_string"])
    max_render_seconds: float = float(_LIMITS["max_render_seconds"])

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
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigError(f"{CONFIG_FILE}: http.max_response_bytes must be a positive integer")
        limits = {name: _limit(data, name, default) for name, default in _LIMITS.items()}
        return cls(
            workflows_dir=Path(workflows) if workflows else settings.config_dir / "workflows",
            gateway_socket=Path(sock) if sock else settings.run_dir / "gateway.sock",
            http_allow=frozenset(allow),
            max_response_bytes=max_bytes,
            docker_enabled=docker.get("enabled", False) is True,
            docker_images=frozenset(str(i) for i in _list(docker, "images", "docker")),
            n8n_enabled=n8n.get("enabled", False) is True,
            max_depth=int(limits["max_depth"]),
            max_children=int(limits["max_children"]),
            max_runs=int(limits["max_runs"]),
            max_runs_per_client=int(limits["max_runs_per_client"]),
            max_string=int(limits["max_string"]),
            max_render_seconds=float(limits["max_render_seconds"]),
        )


def _limit(data: dict[str, Any], name: str, default: int | float) -> int | float:
    """A limit from the environment, else agent.yaml, else its default; positive, of the default's type."""
    env = f"LLMBDO_AGENT_{name.upper()}"
    raw = os.environ.get(env)
    value: Any = data.get(name, default)
    where = f"{CONFIG_FILE}: {name}"
    if raw is not None and raw.strip():
        where = env
        try:
            value = float(raw) if isinstance(default, float) else int(raw)
        except ValueError:
            raise ConfigError(f"{env}: {raw!r} is not a number") from None
    number = (int, float) if isinstance(default, float) else (int,)
    if isinstance(value, bool) or not isinstance(value, number) or value <= 0:
        kind = "number" if isinstance(default, float) else "integer"
        raise ConfigError(f"{where} must be a positive {kind}")
    return value


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
