"""Real third-party MCP servers for the upstream tests, installed by `make upstream-deps` into .cache/upstream.

    cmd = memory_server(tmp_path / "memory.jsonl")      # @modelcontextprotocol/server-memory over stdio
    cmd = everything_server()                           # @modelcontextprotocol/server-everything over stdio
    cmd = time_server()                                 # mcp-server-time (PyPI), in a venv of its own
    cmd = odd_server("garbage")                         # tests/support/odd_mcp_server.py, any of its modes
    cmd.command, cmd.args, cmd.env                      # what to launch (absolute paths)
    cmd.registry_entry()                                # the same as an mcp_servers.yaml entry
    cmd.stdio_params()                                  # the same for the SDK's Client

    with everything_http() as url:                      # server-everything in Streamable HTTP mode
        ...                                             # url = http://127.0.0.1:<free port>/mcp

`EverythingHttp` is the process behind `everything_http()`, for a test that kills or restarts it itself.
Every launcher raises `UpstreamDepsMissing` (saying to run `make upstream-deps`) when the cache is not there:
these tests are part of `make test`, so a missing install is an error, never a skip. Nothing is downloaded here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.procs import wait_for

__all__ = ["ServerCommand", "UpstreamDepsMissing", "EverythingHttp", "memory_server", "everything_server",
           "time_server", "odd_server", "everything_http", "installed_versions", "node_binary", "UPSTREAM_DIR",
           "ODD_SERVER"]

_REPO = Path(__file__).resolve().parents[2]
UPSTREAM_DIR = _REPO / ".cache" / "upstream"
ODD_SERVER = Path(__file__).resolve().with_name("odd_mcp_server.py")
_PACKAGES = UPSTREAM_DIR / "node_modules" / "@modelcontextprotocol"
_TIME_VENV = UPSTREAM_DIR / "time-venv"
_MARKER = UPSTREAM_DIR / ".installed"  # written by make upstream-deps after everything installed
_START_TIMEOUT = 30.0


class UpstreamDepsMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerCommand:
    """How to launch one stdio MCP server: `command` (an absolute path), `args`, and the `env` it needs."""

    command: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        return [self.command, *self.args]

    def registry_entry(self, **extra: Any) -> dict[str, Any]:
        """An mcp_servers.yaml entry for this server (plus `extra` keys such as timeouts or tools)."""
        entry: dict[str, Any] = {"command": self.command, "args": list(self.args)}
        if self.env:
            entry["env"] = dict(self.env)
        entry.update(extra)
        return entry

    def stdio_params(self) -> Any:
        """`mcp.client.stdio.StdioServerParameters` for a direct SDK client (PATH and HOME passed on too)."""
        from mcp.client.stdio import StdioServerParameters

        env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
        return StdioServerParameters(command=self.command, args=list(self.args), env={**env, **self.env})


def installed_versions() -> dict[str, str]:
    """The pinned versions make upstream-deps installed: {"memory": ..., "everything": ..., "time": ...}."""
    try:
        text = _MARKER.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UpstreamDepsMissing(_missing("the upstream MCP servers")) from None
    return dict(pair.split("=", 1) for pair in text.split() if "=" in pair)


def node_binary() -> str:
    """The system's node (the servers need Node 18 or later)."""
    node = shutil.which("node")
    if node is None:
        raise UpstreamDepsMissing("node is not installed: the npm MCP servers need it (Debian package nodejs)")
    return node


def memory_server(memory_file: str | os.PathLike[str] | None = None) -> ServerCommand:
    """@modelcontextprotocol/server-memory; its knowledge graph lives in `memory_file`.

    Pass a file in the test's tmp_path: without one each call gets a file in a fresh temporary directory, never
    the package's default (a file inside the shared cache, which would carry state from one test to the next).
    """
    script = _require(_PACKAGES / "server-memory" / "dist" / "index.js", "server-memory")
    if memory_file is None:
        memory_file = Path(tempfile.mkdtemp(prefix="lbmem", dir="/tmp")) / "memory.jsonl"
    return ServerCommand(node_binary(), [str(script)], {"MEMORY_FILE_PATH": str(Path(memory_file).resolve())})


def everything_server() -> ServerCommand:
    """@modelcontextprotocol/server-everything over stdio (echo, get-sum, get-tiny-image, ... and prompts)."""
    script = _require(_PACKAGES / "server-everything" / "dist" / "index.js", "server-everything")
    return ServerCommand(node_binary(), [str(script), "stdio"])


def time_server(local_timezone: str = "UTC") -> ServerCommand:
    """mcp-server-time from PyPI (tools get_current_time and convert_time), run from its own venv.

    The local timezone is given, so the answer does not depend on how this machine is set up.
    """
    program = _require(_TIME_VENV / "bin" / "mcp-server-time", "mcp-server-time")
    return ServerCommand(str(program), ["--local-timezone", local_timezone])


def odd_server(mode: str = "normal", *, name: str | None = None, extra_tools: Sequence[str] = (),
               cancelled_file: str | os.PathLike[str] | None = None) -> ServerCommand:
    """tests/support/odd_mcp_server.py in `mode` (normal, garbage, silent, exit), run by this Python.

    `cancelled_file` is where its `slow` tool records a cancellation; `extra_tools` adds echo tools by name.
    """
    args = [str(ODD_SERVER), mode]
    if name is not None:
        args += ["--name", name]
    for tool in extra_tools:
        args += ["--extra-tool", tool]
    env = {"ODD_CANCELLED_FILE": str(Path(cancelled_file).resolve())} if cancelled_file is not None else {}
    return ServerCommand(sys.executable, args, env)


class EverythingHttp:
    """server-everything in Streamable HTTP mode on a free port, in its own process group.

    It listens on every interface (the package takes only a PORT, no host); `url` uses the loopback address.
    """

    host = "127.0.0.1"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._script = _require(_PACKAGES / "server-everything" / "dist" / "index.js", "server-everything")
        self._node = node_binary()
        self._extra_env = dict(env or {})
        self.directory = Path(tempfile.mkdtemp(prefix="lbev", dir="/tmp"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"

    @property
    def log_path(self) -> Path:
        return self.directory / "everything.log"

    def output(self) -> str:
        """What the server wrote (it logs every request on stdout)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start on the port used before (a restart), or on a fresh free port; return once it accepts."""
        keep_port = self.port != 0
        for _ in range(5):
            if not keep_port:
                self.port = _free_port()
            env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
            env.update(self._extra_env, PORT=str(self.port))
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([self._node, str(self._script), "streamableHttp"], env=env,
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             cwd=str(self.directory), start_new_session=True)
            try:
                wait_for(self._accepting, timeout, what=f"server-everything to listen on port {self.port}")
                return
            except _Exited:
                if keep_port or "already in use" not in self.output():
                    break
            except TimeoutError:
                break
        out = self.output()
        self.stop()
        raise RuntimeError(f"server-everything (streamableHttp) did not start:\n{out}")

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, as far as clients can tell)."""
        if self.proc is not None:
            _end_group(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL what is left. Safe to call twice."""
        if self.proc is not None:
            _end_group(self.proc, signal.SIGTERM)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _accepting(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise _Exited
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def __enter__(self) -> EverythingHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def everything_http(env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Run server-everything in Streamable HTTP mode for the block; yields its URL, kills it afterwards."""
    server = EverythingHttp(env)
    try:
        server.start()
        yield server.url
    finally:
        server.cleanup()


class _Exited(Exception):
    pass


def _missing(what: str) -> str:
    return f"{what}: not installed in {UPSTREAM_DIR.relative_to(_REPO)} (run `make upstream-deps`)"


def _require(path: Path, what: str) -> Path:
    if not _MARKER.exists() or not path.exists():
        raise UpstreamDepsMissing(_missing(what))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _end_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the group `proc` leads, reap it, then SIGKILL anything of the group still there."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
