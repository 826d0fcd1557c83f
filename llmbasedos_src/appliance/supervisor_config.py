"""Rendering of supervisord configurations from the program registry (pure: no I/O, no environment).

Two profiles share one renderer, so the container and the bare host run the same programs the same way:
- `Layout.for_state_dir(...)`: the bare host under one state directory (`llmbasedos up`).
- `Layout.container()`: the Docker image; its rendering is the top-level `supervisord.conf`
  (regenerate with `python -m llmbasedos.appliance.supervisor_config > supervisord.conf`).

Container paths (the Dockerfile and docker-compose.yml agree with these):
    /opt/venv/bin/python      the interpreter the package is installed in
    /etc/llmbasedos           configuration (lic.key, licence_tiers.yaml, ...), mounted read-only
    /data/user_files          the fs server's virtual root (user_files/ mounted)
    /var/lib/llmbasedos       state dir, working directory; data/ below it holds persistent data
    /var/log/llmbasedos       logs of supervisord and every program
    /run/mcp                  sockets, *.cap.json, supervisor.sock (0700), supervisord.pid
    user llmbasedos           supervisord and every program run as this unprivileged user
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from llmbasedos.appliance.programs import PROGRAMS, Program, shipped_programs
from llmbasedos.faults import EXIT_NO_RETRY

__all__ = [
    "CONTAINER_USER",
    "ConfigError",
    "Layout",
    "LOG_BACKUPS",
    "LOG_MAXBYTES",
    "MAX_SOCKET_PATH",
    "common_env",
    "program_env",
    "render",
    "render_container",
]

CONTAINER_USER = "llmbasedos"
LOG_MAXBYTES = "10MB"
LOG_BACKUPS = 5
# AF_UNIX paths hold at most 107 bytes plus the terminating NUL.
MAX_SOCKET_PATH = 107
_LONGEST_SOCKET_NAME = "supervisor.sock"
_INI_COMMENT = re.compile(r"\s[;#]")


class ConfigError(ValueError):
    """A value cannot be written into a supervisord configuration; the message says which and why."""


@dataclass(frozen=True)
class Layout:
    """Where everything lives for one profile, and how programs are launched."""

    state_dir: Path
    run_dir: Path
    data_dir: Path
    log_dir: Path
    config_dir: Path
    virtual_root: Path
    directory: Path
    python: str
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    llm_local_port: int = 8081
    gateway_allow_remote: bool = False
    user: str | None = None
    nodaemon: bool = False

    @classmethod
    def for_state_dir(cls, state_dir: Path, *, user_files: Path | None = None, gateway_port: int = 8000,
                      gateway_host: str = "127.0.0.1", llm_local_port: int = 8081,
                      python: str | None = None) -> Layout:
        state = Path(state_dir)
        return cls(
            state_dir=state,
            run_dir=state / "run",
            data_dir=state / "data",
            log_dir=state / "logs",
            config_dir=state / "config",
            virtual_root=Path(user_files) if user_files is not None else state / "user_files",
            directory=state,
            python=python or sys.executable,
            gateway_host=gateway_host,
            gateway_port=gateway_port,
            llm_local_port=llm_local_port,
        )

    @classmethod
    def container(cls) -> Layout:
        return cls(
            state_dir=Path("/var/lib/llmbasedos"),
            run_dir=Path("/run/mcp"),
            data_dir=Path("/var/lib/llmbasedos/data"),
            log_dir=Path("/var/log/llmbasedos"),
            config_dir=Path("/etc/llmbasedos"),
            virtual_root=Path("/data/user_files"),
            directory=Path("/var/lib/llmbasedos"),
            python="/opt/venv/bin/python",
            # Inside the container the gateway must listen beyond loopback for the published port to reach
            # it; docker-compose publishes that port on the host's 127.0.0.1 only.
            gateway_host="0.0.0.0",
            gateway_allow_remote=True,
            gateway_port=8000,
            llm_local_port=8081,
            user=CONTAINER_USER,
            nodaemon=True,
        )

    @property
    def config_path(self) -> Path:
        """Where `llmbasedos up` writes the rendered configuration (the container's is baked into the image)."""
        return self.state_dir / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "supervisord.pid"

    @property
    def supervisord_log(self) -> Path:
        return self.log_dir / "supervisord.log"

    def program_log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def check(self) -> None:
        """Raise ConfigError when a path cannot work (not absolute, or a socket path too long for AF_UNIX)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path) and not value.is_absolute():
                raise ConfigError(f"{f.name} must be an absolute path")
        longest = self.run_dir / _LONGEST_SOCKET_NAME
        if len(str(longest).encode()) > MAX_SOCKET_PATH:
            raise ConfigError(
                f"the run directory {self.run_dir} is too long for UNIX sockets "
                f"({len(str(longest).encode())} bytes for {longest.name}, at most {MAX_SOCKET_PATH}); "
                "choose a shorter state directory")
        for port_name in ("gateway_port", "llm_local_port"):
            port = getattr(self, port_name)
            if not 0 < port < 65536:
                raise ConfigError(f"{port_name} {port} is not a TCP port (1-65535)")


def _value(text: str, what: str) -> str:
    """A value for the INI file, refused when supervisord would read it as something else."""
    if any(c in text for c in "\n\r\0"):
        raise ConfigError(f"{what} contains a line break or NUL byte, which a supervisord configuration cannot hold")
    # supervisord expands `%(name)s` in values, some of them twice (log file names), so no escaping of a
    # literal % survives everywhere: refuse it.
    if "%" in text:
        raise ConfigError(f"{what} contains a % sign, which supervisord would expand; choose a path without it")
    # The INI parser drops ` ;...` and ` #...` as comments and strips surrounding blanks.
    if _INI_COMMENT.search(text) or text != text.strip():
        raise ConfigError(f"{what} has a blank before ; or #, or at an end, which a supervisord configuration "
                          "cannot hold; choose a path without it")
    return text


def _env_value(text: str, what: str) -> str:
    # supervisord splits `environment=` with a non-POSIX shlex and strips quotes: a quote inside a value
    # cannot be expressed, so refuse it rather than write a file that means something else.
    if '"' in text or "'" in text:
        raise ConfigError(f"{what} contains a quote character, which supervisord's environment= cannot hold")
    return '"' + _value(text, what) + '"'


def common_env(layout: Layout, programs: Iterable[Program]) -> dict[str, str]:
    env = {
        "LLMBDO_STATE_DIR": str(layout.state_dir),
        "LLMBDO_RUN_DIR": str(layout.run_dir),
        "LLMBDO_DATA_DIR": str(layout.data_dir),
        "LLMBDO_LOG_DIR": str(layout.log_dir),
        "LLMBDO_CONFIG_DIR": str(layout.config_dir),
        "LLMBDO_VIRTUAL_ROOT": str(layout.virtual_root),
        "LLMBDO_GATEWAY_HOST": layout.gateway_host,
        "LLMBDO_GATEWAY_PORT": str(layout.gateway_port),
        # Lets a program find the supervisor (status page), and lets `llmbasedos down` recognise every
        # process this supervisord started, children included, even after supervisord itself died.
        "LLMBDO_SUPERVISOR_SOCKET": str(layout.supervisor_socket),
        "PYTHONUNBUFFERED": "1",
    }
    if layout.gateway_allow_remote:
        env["LLMBDO_GATEWAY_ALLOW_REMOTE"] = "1"
    if any(p.name == "llm-local" for p in programs):
        env["LLMBDO_LLM_LOCAL_PORT"] = str(layout.llm_local_port)
    return env


def program_env(layout: Layout, program: Program, programs: Iterable[Program]) -> dict[str, str]:
    """The environment supervisord sets for `program` (on top of the one it inherited)."""
    values = {f.name: str(getattr(layout, f.name)) for f in fields(layout)}
    env = common_env(layout, programs)
    for key, template in program.env.items():
        env[key] = template.format_map(values)
    return dict(sorted(env.items()))


def _section(name: str, items: Mapping[str, object]) -> list[str]:
    lines = [f"[{name}]"]
    for key, val in items.items():
        if isinstance(val, bool):
            val = "true" if val else "false"
        lines.append(f"{key}={val}")
    return [*lines, ""]


def render(layout: Layout, programs: Iterable[Program]) -> str:
    """The supervisord configuration running `programs` in `layout`. Raises ConfigError on unusable values."""
    layout.check()
    progs = sorted(programs, key=lambda p: (p.priority, p.name))
    names = [p.name for p in progs]
    if len(set(names)) != len(names):
        raise ConfigError(f"program names must be unique: {names}")
    v = _value
    out = [
        "; supervisord configuration of llmbasedos, rendered from llmbasedos.appliance.programs by",
        "; llmbasedos.appliance.supervisor_config. Do not edit by hand: "
        + ("regenerate with `python -m llmbasedos.appliance.supervisor_config > supervisord.conf`."
           if layout.nodaemon else "`llmbasedos up` rewrites it."),
        "",
    ]
    out += _section("unix_http_server", {
        "file": v(str(layout.supervisor_socket), "supervisor socket"),
        "chmod": "0700",
    })
    supervisord: dict[str, object] = {
        "logfile": v(str(layout.supervisord_log), "log dir"),
        "logfile_maxbytes": LOG_MAXBYTES,
        "logfile_backups": LOG_BACKUPS,
        "loglevel": "info",
        "pidfile": v(str(layout.pidfile), "run dir"),
        "nodaemon": layout.nodaemon,
        "directory": v(str(layout.directory), "working directory"),
        "childlogdir": v(str(layout.log_dir), "log dir"),
        "identifier": "llmbasedos",
        "umask": "027",
        "minfds": 1024,
        "minprocs": 200,
    }
    if layout.user:
        supervisord["user"] = layout.user
    out += _section("supervisord", supervisord)
    out += _section("rpcinterface:supervisor", {
        "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface",
    })
    out += _section("supervisorctl", {"serverurl": "unix://" + v(str(layout.supervisor_socket), "supervisor socket")})
    for program in progs:
        env = program_env(layout, program, progs)
        command = shlex.join([layout.python, "-m", program.module])
        section: dict[str, object] = {
            "command": v(command, f"command of {program.name}"),
            "directory": v(str(layout.directory), "working directory"),
            "environment": ",".join(f"{k}={_env_value(val, k)}" for k, val in env.items()),
            "priority": program.priority,
            "autostart": True,
            # Restarted whenever it ends, except with EXIT_NO_RETRY: a fault a restart cannot mend (faults.py).
            "autorestart": "unexpected",
            "exitcodes": EXIT_NO_RETRY,
            # A program counts as started after 1 s up; a crash before that is retried with a growing
            # backoff (1 s, 2 s, 3 s) and gives up as FATAL, which `llmbasedos up` reports.
            "startsecs": 1,
            "startretries": 3,
            "stopsignal": "TERM",
            "stopwaitsecs": program.stopwaitsecs,
            "stopasgroup": True,
            "killasgroup": True,
            "redirect_stderr": True,
            "stdout_logfile": v(str(layout.program_log(program.name)), "log dir"),
            "stdout_logfile_maxbytes": LOG_MAXBYTES,
            "stdout_logfile_backups": LOG_BACKUPS,
        }
        if layout.user:
            section["user"] = layout.user
        out += _section(f"program:{program.name}", section)
    return "\n".join(out)


def render_container(programs: tuple[Program, ...] = PROGRAMS) -> str:
    """The top-level `supervisord.conf`: every program this source tree ships, at the container's paths."""
    return render(Layout.container(), shipped_programs(programs))


if __name__ == "__main__":
    sys.stdout.write(render_container())
