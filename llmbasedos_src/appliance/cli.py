"""The `llmbasedos` command: run the appliance on a bare host under supervisord, and look after it.

    llmbasedos up [--state-dir DIR] [--user-files DIR] [--port N] [--timeout S]
    llmbasedos status [--state-dir DIR] [--json]
    llmbasedos down [--state-dir DIR]
    llmbasedos validate [--state-dir DIR]

These forms are a contract that scripts and tests rely on (DESIGN.md §7). Other packages add their own
subcommands (`token`, `audit`, `mcp`, ...) through a `register(subparsers)` function, looked up in
`_EXTENSIONS`; each subcommand sets `func`, a callable taking the parsed arguments and returning the exit code.

Everything `up` starts lives under one state directory:
    <state>/supervisord.conf   rendered from llmbasedos.appliance.programs (see llmbasedos.appliance.supervisor_config)
    <state>/run/               sockets, *.cap.json, supervisor.sock (0700), supervisord.pid, appliance.json
    <state>/data/ logs/ config/ user_files/

This module holds the commands and the parser; the pieces behind them live beside it: state_dir (the state
dir, its recorded layout and lock), ports, processes (/proc, pids, signals), supervisor_client (supervisord's
XML-RPC), lifecycle (start, wait until ready, stop) and cli_errors (CLIError).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import xmlrpc.client
from pathlib import Path
from typing import Any

from llmbasedos.appliance.cli_errors import CLIError
from llmbasedos.appliance.lifecycle import start_supervisord, stop, wait_ready
from llmbasedos.appliance.ports import check_port_free, free_port, gateway_url
from llmbasedos.appliance.programs import PROGRAMS, available_programs, get_program, module_exists, shipped_programs
from llmbasedos.appliance.state_dir import STATE_FILE, layout_for, locked, make_dirs, resolve_state_dir
from llmbasedos.appliance.supervisor_client import Supervisor, SupervisorDown
from llmbasedos.appliance.supervisor_config import ConfigError, Layout, render
from llmbasedos.faults import clear_fault, read_faults
from llmbasedos.upstream_state import read_upstream_state

__all__ = ["main", "build_parser"]

# Modules that add subcommands with `register(subparsers)`; each is optional until its code exists.
_EXTENSIONS: tuple[str, ...] = ("llmbasedos.appliance.admin_cli", "llmbasedos.clients.mcp_stdio",
                                 "llmbasedos.appliance.models_cli", "llmbasedos.appliance.mcp_cli")

DEFAULT_PORT = 8000
DEFAULT_TIMEOUT = 120.0


# -- up ----------------------------------------------------------------------------------------------


def _print_running(layout: Layout, names: list[str], *, already: bool) -> None:
    state = shlex.quote(str(layout.state_dir))
    print("llmbasedos is already running." if already else "llmbasedos is up.")
    if "gateway" in names:
        print(f"  gateway   {gateway_url(layout)}   (WebSocket /ws, MCP /mcp, status /ui)")
    print(f"  services  {', '.join(names) if names else '(none)'}")
    print(f"  state     {layout.state_dir}")
    print(f"  logs      {layout.log_dir}")
    if module_exists("llmbasedos.appliance.admin_cli"):
        print(f"  token     llmbasedos token owner --state-dir {state}")
    print(f"  stop      llmbasedos down --state-dir {state}")


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args.state_dir)
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
    with locked(state_dir):
        if _report_already_running(state_dir, args.port):
            return 0
        programs = available_programs()
        if not programs:
            raise CLIError("no program of the appliance is installed")
        host = os.environ.get("LLMBDO_GATEWAY_HOST", "").strip() or "127.0.0.1"
        port = DEFAULT_PORT if args.port is None else args.port
        if port == 0:
            port = free_port(host)
        elif any(p.name == "gateway" for p in programs):
            check_port_free(host, port)
        llm_port = free_port("127.0.0.1") if any(p.name == "llm-local" for p in programs) else 8081
        layout = Layout.for_state_dir(state_dir, user_files=user_files, gateway_port=port, gateway_host=host,
                                      llm_local_port=llm_port)
        make_dirs(layout)
        if user_files is None:
            layout.virtual_root.mkdir(mode=0o700, exist_ok=True)
        stop(layout)  # leftovers of a run that crashed: stray programs, cap files
        for program in programs:  # the faults of an earlier run are for this one to find again, or not
            clear_fault(layout.run_dir, program.name)
        atomic_write_text(layout.config_path, render(layout, programs), 0o600)
        atomic_write_text(layout.run_dir / STATE_FILE, json.dumps({
            "gateway_url": gateway_url(layout),
            "gateway_host": layout.gateway_host,
            "gateway_port": layout.gateway_port,
            "llm_local_port": layout.llm_local_port,
            "user_files": str(layout.virtual_root),
            "python": layout.python,
            "programs": [p.name for p in programs],
        }, indent=2) + "\n", 0o600)
        try:
            start_supervisord(layout)
            wait_ready(layout, programs, args.timeout)
        except BaseException:  # a failure or Ctrl-C: do not leave a half-started appliance behind
            stop(layout)
            raise
    _print_running(layout, _by_priority([p.name for p in programs]), already=False)
    return 0


def _report_already_running(state_dir: Path, port: int | None) -> bool:
    layout = layout_for(state_dir)
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
    layout = layout_for(state_dir)
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
        # The upstream MCP servers as the upstream program last wrote them (name collisions: the gateway's /status).
        "upstreams": read_upstream_state(layout.run_dir),
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
        result["gateway_url"] = gateway_url(layout)
    return result


def _print_upstreams(console: Any, upstreams: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    if upstreams["error"]:
        console.print(f"[red]upstream MCP servers:[/] {escape(upstreams['error'])}", highlight=False)
    if upstreams.get("present") and upstreams.get("running") is False:
        console.print("[red]upstream MCP servers:[/] the upstream program is not running (its state file is stale)")
    if upstreams.get("registry_error"):
        console.print(f"[red]mcp_servers.yaml:[/] {escape(upstreams['registry_error'])}", highlight=False)
    servers = upstreams["servers"]
    if not servers:
        return
    table = Table(title="upstream MCP servers")
    for column in ("server", "state", "transport", "tools", "calls", "errors", "restarts", "last error"):
        table.add_column(column)
    for name, row in servers.items():
        colour = "green" if row["state"] == "ready" else "yellow" if row["state"] in ("starting", "restarting",
                                                                                      "disabled") else "red"
        table.add_row(escape(name), f"[{colour}]{escape(row['state'])}[/]", escape(str(row.get("transport", "-"))),
                      *(str(row.get(k, "-")) for k in ("tools", "calls", "errors", "restarts")),
                      escape(str(row.get("last_error") or "-")))
    console.print(table)
    for name, row in servers.items():
        for tool, why in row.get("refused_tools", {}).items():
            console.print(f"  {escape(name)}: {escape(tool)} left out: {escape(why)}", highlight=False)


def cmd_status(args: argparse.Namespace) -> int:
    data = status_of(resolve_state_dir(args.state_dir))
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
    _print_upstreams(console, data["upstreams"])
    if "gateway_url" in data:
        console.print(f"gateway   {data['gateway_url']}")
    console.print(f"state     {data['state_dir']}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args.state_dir)
    if not state_dir.is_dir():
        print(f"llmbasedos is not running (no state dir {state_dir}).")
        return 0
    layout = layout_for(state_dir)
    with locked(state_dir):
        stopped = stop(layout)
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
    layout = layout_for(resolve_state_dir(args.state_dir))
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
