"""The `llmbasedos` command: run the appliance on a bare host under supervisord, and look after it.

    llmbasedos up [--state-dir DIR] [--user-files DIR] [--port N] [--timeout S]
    llmbasedos status [--state-dir DIR] [--json]
    llmbasedos down [--state-dir DIR]
    llmbasedos validate [--state-dir DIR]

These forms are a contract that scripts and tests rely on (DESIGN.md §7). Other packages add their own
subcommands (`token`, `audit`, ...) through a `register(subparsers)` function, looked up in `_EXTENSIONS`; each
subcommand sets `func`, a callable taking the parsed arguments and returning the exit code.

Everything `up` starts lives under one state directory:
    <state>/supervisord.conf   rendered from llmbasedos.appliance.programs (see llmbasedos.appliance.supervisor_config)
    <state>/run/               sockets, *.cap.json, supervisor.sock (0700), supervisord.pid, appliance.json
    <state>/data/ logs/ config/ user_files/
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import http.client
import importlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmbasedos.appliance.programs import (
    PROGRAMS,
    Program,
    available_programs,
    get_program,
    module_exists,
    shipped_programs,
)
from llmbasedos.appliance.supervisor_config import ConfigError, Layout, render
from llmbasedos.faults import clear_fault, read_faults
from llmbasedos.settings import default_state_dir

__all__ = ["main", "build_parser"]

# Modules that add subcommands with `register(subparsers)`; each is optional until its code exists.
_EXTENSIONS: tuple[str, ...] = ("llmbasedos.appliance.admin_cli", "llmbasedos.clients.mcp_stdio",
                                 "llmbasedos.appliance.models_cli")

DEFAULT_PORT = 8000
DEFAULT_TIMEOUT = 120.0
_STATE_FILE = "appliance.json"
_LOG_TAIL_LINES = 25
_POLL = 0.2
_MAX_STARTS = 4


class CLIError(Exception):
    """A failure to report to the user in one clear message (exit status 1)."""


# -- supervisord over its UNIX socket ----------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    # supervisor's own UNIX connection class has no timeout: a hung supervisord would hang the CLI.
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class SupervisorDown(Exception):
    """Nothing answers on the supervisor socket."""


class Supervisor:
    """XML-RPC client of one supervisord, through its UNIX socket."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        from supervisor.xmlrpc import SupervisorTransport

        self.socket_path = socket_path
        transport = SupervisorTransport(None, None, "unix://" + str(socket_path))
        transport._get_connection = lambda: _UnixHTTPConnection(str(socket_path), timeout)
        # The host part is ignored: the transport always talks to the socket.
        self._proxy = xmlrpc.client.ServerProxy("http://localhost", transport=transport)

    def _call(self, name: str, *args: Any) -> Any:
        if not self.socket_path.exists():
            raise SupervisorDown(str(self.socket_path))
        try:
            return getattr(self._proxy.supervisor, name)(*args)
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as exc:
            raise SupervisorDown(str(exc)) from exc

    def running(self) -> bool:
        try:
            return bool(self._call("getState")["statename"] == "RUNNING")
        except (SupervisorDown, xmlrpc.client.Fault):
            return False

    def pid(self) -> int:
        return int(self._call("getPID"))

    def processes(self) -> list[dict[str, Any]]:
        return list(self._call("getAllProcessInfo"))

    def shutdown(self) -> None:
        self._call("shutdown")


# -- the state directory -----------------------------------------------------------------------------


def _resolve_state_dir(arg: str | None) -> Path:
    path = Path(arg).expanduser() if arg else default_state_dir()
    return Path(os.path.abspath(path))


def _layout_for(state_dir: Path) -> Layout:
    """The layout `up` recorded for this state dir, or the default one when nothing was recorded."""
    base = Layout.for_state_dir(state_dir)
    try:
        saved = json.loads((base.run_dir / _STATE_FILE).read_text(encoding="utf-8"))
        return Layout.for_state_dir(
            state_dir,
            user_files=Path(saved["user_files"]),
            gateway_port=int(saved["gateway_port"]),
            gateway_host=str(saved["gateway_host"]),
            llm_local_port=int(saved["llm_local_port"]),
            python=str(saved["python"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return base


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    # Two `up`s (or an `up` and a `down`) at once on one state dir would race on supervisord's socket.
    fd = os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _make_dirs(layout: Layout) -> None:
    for path in (layout.state_dir, layout.run_dir, layout.data_dir, layout.log_dir, layout.config_dir):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.is_dir():
            raise CLIError(f"{path} exists and is not a directory")
    # The run dir holds sockets that grant access to everything: keep it to this user.
    os.chmod(layout.run_dir, 0o700)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log yet)"
    kept = text.splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "(the log is empty)"


# -- ports -------------------------------------------------------------------------------------------


def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port_free(host: str, port: int) -> None:
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


def _gateway_url(layout: Layout) -> str:
    host = _connect_host(layout.gateway_host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{layout.gateway_port}"


# -- processes (read from /proc: no third-party dependency) ------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie has exited; only its parent's wait is missing.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _read_pidfile(layout: Layout) -> int | None:
    try:
        pid = int(layout.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    # Guard against a recycled pid: it must be the supervisord of this configuration.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if str(layout.config_path).encode() in cmdline else None


def _appliance_processes(layout: Layout, groups: set[int]) -> list[int]:
    """Live processes started under this state dir's supervisord: they carry its socket in their environment,
    or belong to a process group supervisord created for a program."""
    marker = f"LLMBDO_SUPERVISOR_SOCKET={layout.supervisor_socket}".encode()
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[-1].split()
            if fields[0] == "Z":
                continue
            if int(fields[2]) in groups:
                found.append(pid)
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(pid)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return found


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _stop(layout: Layout) -> bool:
    """Stop supervisord and every process it started. Returns whether anything was running."""
    sup = Supervisor(layout.supervisor_socket)
    groups: set[int] = set()
    pid = _read_pidfile(layout)
    was_running = pid is not None
    asked = False
    try:
        # Each program leads its own process group (supervisord calls setpgrp): remember them to catch
        # children a program left behind.
        groups = {int(p["pid"]) for p in sup.processes() if p.get("pid")}
        if pid is None:
            pid = sup.pid()
        was_running = True
        sup.shutdown()
        asked = True
    except (SupervisorDown, xmlrpc.client.Fault):
        pass
    if pid is not None:
        if not asked:  # its socket is gone or it does not answer: TERM asks for the same clean shutdown
            _signal_all([pid], signal.SIGTERM)
        # supervisord stops programs in reverse priority, each within its stopwaitsecs.
        grace = sum(p.stopwaitsecs for p in PROGRAMS) + 10
        if not _wait_until(lambda: not _pid_alive(pid), grace):
            _signal_all([pid], signal.SIGKILL)
            _wait_until(lambda: not _pid_alive(pid), 5)
    strays = _appliance_processes(layout, groups)
    if strays:
        was_running = True
        _signal_all(strays, signal.SIGTERM)
        if not _wait_until(lambda: not _appliance_processes(layout, groups), 5):
            _signal_all(_appliance_processes(layout, groups), signal.SIGKILL)
            _wait_until(lambda: not _appliance_processes(layout, groups), 5)
    # Files a killed program could not remove: the gateway must not route to a dead service.
    for program in PROGRAMS:
        with contextlib.suppress(OSError):
            (layout.run_dir / f"{program.name}.cap.json").unlink()
    for leftover in (layout.run_dir / _STATE_FILE, layout.pidfile):
        with contextlib.suppress(OSError):
            leftover.unlink()
    return was_running


# -- up ----------------------------------------------------------------------------------------------


def _start_supervisord(layout: Layout) -> None:
    cmd = [sys.executable, "-m", "supervisor.supervisord", "-c", str(layout.config_path)]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise CLIError("supervisord did not start within 60 s") from None
    sup = Supervisor(layout.supervisor_socket)
    if done.returncode != 0 or not _wait_until(sup.running, 30):
        output = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
        raise CLIError(f"supervisord did not start (exit status {done.returncode}): {output or '(no output)'}\n"
                       f"  last lines of {layout.supervisord_log}:\n{_tail(layout.supervisord_log)}")


def _wait_ready(layout: Layout, programs: list[Program], timeout: float) -> None:
    sup = Supervisor(layout.supervisor_socket)
    pending = {p.name: p for p in programs}
    deadline = time.monotonic() + timeout
    infos: dict[str, dict[str, Any]] = {}
    # A program that crashes after supervisord counted it as started is restarted without end: count the
    # processes seen to catch such a loop, since it never becomes FATAL.
    pids: dict[str, set[int]] = {p.name: set() for p in programs}
    while pending:
        try:
            infos = {p["name"]: p for p in sup.processes()}
        except (SupervisorDown, xmlrpc.client.Fault) as exc:
            raise CLIError(f"supervisord stopped answering while the programs started: {exc}") from None
        faults = read_faults(layout.run_dir)
        for name, program in list(pending.items()):
            if name in faults:  # it stopped on a fault a restart cannot mend: say why at once
                raise CLIError(f"{name} cannot start: {faults[name]['message']}")
            info = infos.get(name, {})
            state = info.get("statename", "UNKNOWN")
            if info.get("pid"):
                pids[name].add(int(info["pid"]))
            if state in ("FATAL", "UNKNOWN"):
                raise CLIError(f"{name} failed to start ({state}: {info.get('description') or 'not known'}).\n"
                               f"  last lines of {layout.program_log(name)}:\n{_tail(layout.program_log(name))}")
            if len(pids[name]) > _MAX_STARTS:
                raise CLIError(f"{name} failed to start: it exited {len(pids[name]) - 1} times while starting.\n"
                               f"  last lines of {layout.program_log(name)}:\n{_tail(layout.program_log(name))}")
            if state == "RUNNING" and program.ready.is_ready(layout, info.get("pid") or None):
                del pending[name]
        if not pending:
            return
        if time.monotonic() >= deadline:
            name, program = next(iter(pending.items()))
            state = infos.get(name, {}).get("statename", "UNKNOWN")
            raise CLIError(f"{name} did not become ready within {timeout:g} s (state {state}; waited for "
                           f"{program.ready.describe(layout)}).\n"
                           f"  last lines of {layout.program_log(name)}:\n{_tail(layout.program_log(name))}")
        time.sleep(_POLL)


def _print_running(layout: Layout, names: list[str], *, already: bool) -> None:
    state = shlex.quote(str(layout.state_dir))
    print("llmbasedos is already running." if already else "llmbasedos is up.")
    if "gateway" in names:
        print(f"  gateway   {_gateway_url(layout)}   (WebSocket /ws, MCP /mcp, status /ui)")
    print(f"  services  {', '.join(names) if names else '(none)'}")
    print(f"  state     {layout.state_dir}")
    print(f"  logs      {layout.log_dir}")
    if module_exists("llmbasedos.appliance.admin_cli"):
        print(f"  token     llmbasedos token owner --state-dir {state}")
    print(f"  stop      llmbasedos down --state-dir {state}")


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = _resolve_state_dir(args.state_dir)
    if args.port is not None and not 0 <= args.port <= 65535:
        raise CLIError(f"--port {args.port} is not between 0 and 65535")
    if args.timeout <= 0:
        raise CLIError("--timeout must be more than 0 seconds")
    user_files = Path(os.path.abspath(Path(args.user_files).expanduser())) if args.user_files else None
    if user_files is not None and not user_files.is_dir():
        raise CLIError(f"--user-files {user_files} is not an existing directory")
    if state_dir.exists() and not state_dir.is_dir():
        raise CLIError(f"--state-dir {state_dir} exists and is not a directory")
    # A dry rendering before anything is created, so a refused state dir leaves no trace.
    render(Layout.for_state_dir(state_dir, user_files=user_files), available_programs())
    if _report_already_running(state_dir, args.port):
        return 0
    # Imported here: it pulls in jsonschema, which `status` and `down` do not need.
    from llmbasedos.files import atomic_write_text

    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(state_dir):
        if _report_already_running(state_dir, args.port):
            return 0
        programs = available_programs()
        if not programs:
            raise CLIError("no program of the appliance is installed")
        host = os.environ.get("LLMBDO_GATEWAY_HOST", "").strip() or "127.0.0.1"
        port = DEFAULT_PORT if args.port is None else args.port
        if port == 0:
            port = _free_port(host)
        elif any(p.name == "gateway" for p in programs):
            _check_port_free(host, port)
        llm_port = _free_port("127.0.0.1") if any(p.name == "llm-local" for p in programs) else 8081
        layout = Layout.for_state_dir(state_dir, user_files=user_files, gateway_port=port, gateway_host=host,
                                      llm_local_port=llm_port)
        _make_dirs(layout)
        if user_files is None:
            layout.virtual_root.mkdir(mode=0o700, exist_ok=True)
        _stop(layout)  # leftovers of a run that crashed: stray programs, cap files
        for program in programs:  # the faults of an earlier run are for this one to find again, or not
            clear_fault(layout.run_dir, program.name)
        atomic_write_text(layout.config_path, render(layout, programs), 0o600)
        atomic_write_text(layout.run_dir / _STATE_FILE, json.dumps({
            "gateway_url": _gateway_url(layout),
            "gateway_host": layout.gateway_host,
            "gateway_port": layout.gateway_port,
            "llm_local_port": layout.llm_local_port,
            "user_files": str(layout.virtual_root),
            "python": layout.python,
            "programs": [p.name for p in programs],
        }, indent=2) + "\n", 0o600)
        try:
            _start_supervisord(layout)
            _wait_ready(layout, programs, args.timeout)
        except BaseException:  # a failure or Ctrl-C: do not leave a half-started appliance behind
            _stop(layout)
            raise
    _print_running(layout, _by_priority([p.name for p in programs]), already=False)
    return 0


def _report_already_running(state_dir: Path, port: int | None) -> bool:
    layout = _layout_for(state_dir)
    try:
        names = [p["name"] for p in Supervisor(layout.supervisor_socket).processes()]
    except (SupervisorDown, xmlrpc.client.Fault):
        return False
    _print_running(layout, _by_priority(names), already=True)
    if port and port != layout.gateway_port:
        print(f"  (--port {port} is ignored while it runs; `llmbasedos down` first to change the port)")
    return True


def _by_priority(names: list[str]) -> list[str]:
    order = {p.name: (p.priority, p.name) for p in PROGRAMS}
    return sorted(names, key=lambda n: order.get(n, (10**6, n)))


# -- status, down, validate --------------------------------------------------------------------------


def status_of(state_dir: Path) -> dict[str, Any]:
    layout = _layout_for(state_dir)
    sup = Supervisor(layout.supervisor_socket)
    result: dict[str, Any] = {
        "running": False,
        "state_dir": str(layout.state_dir),
        "run_dir": str(layout.run_dir),
        "log_dir": str(layout.log_dir),
        "user_files": str(layout.virtual_root),
        "services": {},
        "programs": {},
        # Why a program stopped for good (faults.py); kept after `up` gave up and stopped everything.
        "faults": {name: report["message"] for name, report in read_faults(layout.run_dir).items()},
    }
    try:
        infos = sup.processes()
        result["supervisor_pid"] = sup.pid()
        result["running"] = True
    except (SupervisorDown, xmlrpc.client.Fault):
        return result
    by_name = {str(i["name"]): i for i in infos}
    for info in (by_name[n] for n in _by_priority(list(by_name))):
        name = str(info["name"])
        state = str(info["statename"])
        pid = int(info.get("pid") or 0) or None
        try:
            ready = state == "RUNNING" and get_program(name).ready.is_ready(layout, pid)
        except KeyError:
            ready = False
        result["services"][name] = state
        result["programs"][name] = {"state": state, "pid": pid, "ready": ready,
                                    "description": info.get("description", ""),
                                    "log": str(layout.program_log(name))}
    if result["services"].get("gateway") == "RUNNING":
        result["gateway_url"] = _gateway_url(layout)
    return result


def cmd_status(args: argparse.Namespace) -> int:
    data = status_of(_resolve_state_dir(args.state_dir))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for name, message in data["faults"].items():
        # soft_wrap: the message holds paths and a command to copy, which must not be broken across lines.
        console.print(f"[red]{escape(name)} cannot start:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if not data["running"]:
        console.print(f"llmbasedos is not running (state dir {data['state_dir']}).")
        return 0
    table = Table(title="llmbasedos")
    for column in ("service", "state", "ready", "pid", "details"):
        table.add_column(column)
    for name, info in data["programs"].items():
        colour = "green" if info["state"] == "RUNNING" else "red"
        table.add_row(name, f"[{colour}]{info['state']}[/]", "yes" if info["ready"] else "no",
                      str(info["pid"] or "-"), str(info["description"]))
    console.print(table)
    if "gateway_url" in data:
        console.print(f"gateway   {data['gateway_url']}")
    console.print(f"state     {data['state_dir']}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state_dir = _resolve_state_dir(args.state_dir)
    if not state_dir.is_dir():
        print(f"llmbasedos is not running (no state dir {state_dir}).")
        return 0
    layout = _layout_for(state_dir)
    with _locked(state_dir):
        stopped = _stop(layout)
    print("llmbasedos stopped." if stopped else "llmbasedos is not running.")
    return 0


def _merged_caps(caps_file: Path) -> Any:
    """caps.json with the fragments beside it (`*_caps.json`, brought by handler mixins), as the server loads it."""
    from llmbasedos.protocol.caps import CapsError

    raw = json.loads(caps_file.read_text(encoding="utf-8"))
    for fragment in sorted(caps_file.parent.glob("*_caps.json")):
        extra = json.loads(fragment.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or not isinstance(extra, dict) or not isinstance(extra.get("capabilities"), list):
            raise CapsError(f"{fragment.name}: must be an object with a 'capabilities' array")
        raw = {**raw, "capabilities": [*raw.get("capabilities", []), *extra["capabilities"]]}
    return raw


def cmd_validate(args: argparse.Namespace) -> int:
    from llmbasedos.protocol.caps import CapsError, parse_caps

    problems: list[str] = []
    owners: dict[str, str] = {}
    for program in shipped_programs():
        caps_file = program.caps_file()
        if caps_file is None:
            continue
        label = f"{program.name}/{caps_file.name}"
        try:
            caps = parse_caps(_merged_caps(caps_file), label)
        except CapsError as exc:
            problems.append(str(exc))
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{label}: cannot be read as JSON: {exc}")
            continue
        for method_name in caps.methods():
            if method_name in owners:
                problems.append(f"{method_name} is claimed by both {owners[method_name]} and {program.name}")
            owners[method_name] = program.name
        print(f"ok    {label} ({len(caps.capabilities)} methods)")
    layout = _layout_for(_resolve_state_dir(args.state_dir))
    if module_exists("llmbasedos.gateway.policy.tiers"):
        tiers = importlib.import_module("llmbasedos.gateway.policy.tiers")
        path = tiers.tiers_path(layout.config_dir)
        try:
            tiers.load_tiers(path)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            print(f"ok    {path if path.exists() else 'licence tiers (built-in defaults)'}")
    try:
        render(layout, available_programs())
        print("ok    supervisord configuration")
    except ConfigError as exc:
        problems.append(f"supervisord configuration: {exc}")
    for problem in problems:
        print(f"error {problem}", file=sys.stderr)
    return 1 if problems else 0


# -- argument parsing --------------------------------------------------------------------------------


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where everything lives (default: $LLMBDO_STATE_DIR, else the user's data dir)")


_BUILTIN = ("up", "status", "down", "validate")


def build_parser(*, extensions: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmbasedos", description="Local capabilities for LLM hosts, "
                                     "through one secure gateway.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = sub.add_parser("up", help="start every service under supervisord and wait until they are ready")
    _add_state_dir(up)
    up.add_argument("--user-files", metavar="DIR", help="the files the fs server exposes "
                    "(default: the state dir's user_files/)")
    up.add_argument("--port", type=int, metavar="N", help=f"gateway port (default {DEFAULT_PORT}; 0 picks a free one)")
    up.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                    help=f"how long to wait for every service to be ready (default {DEFAULT_TIMEOUT:g})")
    up.set_defaults(func=cmd_up)

    status = sub.add_parser("status", help="show what runs")
    _add_state_dir(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=cmd_status)

    down = sub.add_parser("down", help="stop everything `up` started")
    _add_state_dir(down)
    down.set_defaults(func=cmd_down)

    validate = sub.add_parser("validate", help="check capability files and configuration")
    _add_state_dir(validate)
    validate.set_defaults(func=cmd_validate)

    for name in _EXTENSIONS if extensions else ():
        if module_exists(name):
            importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The extensions import much of the gateway; a built-in command does not need them.
    parser = build_parser(extensions=not (argv and argv[0] in _BUILTIN))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except (CLIError, ConfigError) as exc:
        print(f"llmbasedos: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
