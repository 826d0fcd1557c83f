"""The `mcp` subcommands of `llmbasedos`: the upstream MCP servers the appliance serves (mcp_servers.yaml).

    llmbasedos mcp add NAME [--env K=V]... [--cwd DIR] [--replace] -- COMMAND [ARG...]
    llmbasedos mcp add NAME --url URL [--header 'K: V']... [--replace]
    llmbasedos mcp list [--json]          every server: state, tools and their /mcp names, last error
    llmbasedos mcp remove NAME
    llmbasedos mcp test NAME              connect, list the tools, print them
    llmbasedos mcp import FILE [--replace] [--format claude-desktop|vscode|cursor]

Every one takes `--state-dir DIR` (as `LLMBDO_STATE_DIR`). Values of `--env` and `--header` are secrets: they go
to 0600 files under `<config>/secrets/` and the YAML names the file (registry_file.py); a value written
`${env:VAR}` is read from the appliance's environment instead. Nothing here prints a secret's value.
A running appliance picks the change up by itself (the upstream program watches the file).

Exit codes: 0 done; 1 a negative answer (`test` could not reach the server, `import` left servers out);
2 bad input or an unusable file, with a message naming the problem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llmbasedos.appliance.ports import gateway_url
from llmbasedos.appliance.processes import pid_alive
from llmbasedos.appliance.state_dir import layout_for
from llmbasedos.gateway.doors.mcp_http.tools import tool_name
from llmbasedos.protocol.upstream_names import method_for
from llmbasedos.servers.upstream import host_configs, registry_file
from llmbasedos.servers.upstream.host_configs import HostConfig, HostConfigError, HostServer
from llmbasedos.servers.upstream.registry import RegistryError, Secret, ServerEntry, load_registry, registry_path
from llmbasedos.servers.upstream.registry_file import NewServer, NoSuchServer, ServerExists, add_server
from llmbasedos.settings import Settings

__all__ = ["register"]

STATE_FILE = "upstream.state.json"  # written by the upstream program in the run dir (its STATE_FILE)
Handler = Callable[[argparse.Namespace], int]
_REF = re.compile(r"^\$\{env:([^}]+)\}$")
_VALUED = {"--env", "--cwd", "--url", "--header", "--state-dir"}  # the options of `add` that take a value
_TOKEN_CHARS = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)


class _Usage(Exception):
    """Bad input: exit 2 with this message."""


def _err(message: str) -> None:
    print(f"llmbasedos: {message}", file=sys.stderr)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(getattr(args, "state_dir", None))


# -- add --------------------------------------------------------------------------------------------------------


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", action="append", default=None, metavar="K=V",
                        help="a variable for a stdio server (its value is kept in a 0600 file; '${env:VAR}' "
                             "reads VAR from the appliance's environment instead)")
    parser.add_argument("--cwd", metavar="DIR", help="the stdio server's working directory (default: the config dir)")
    parser.add_argument("--url", metavar="URL", help="a Streamable HTTP server's URL instead of a command")
    parser.add_argument("--header", action="append", default=None, metavar="'K: V'",
                        help="a header for an HTTP server (its value is kept in a 0600 file)")
    parser.add_argument("--replace", action="store_true", default=None,
                        help="replace a server of that name (its timeouts, retry and tools policy are kept)")
    parser.add_argument("--state-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="state directory (default: $LLMBDO_STATE_DIR)")


def _split_add(args: argparse.Namespace) -> tuple[argparse.Namespace, list[str]]:
    """The options and the command of `mcp add NAME ...`: the command starts after `--` or at the first word that
    is not an option (argparse cannot tell `NAME -- cmd` from `NAME cmd` in what follows NAME, so this does)."""
    words: list[str] = list(args.rest)
    i = 0
    while i < len(words) and words[i].startswith("-") and words[i] != "--":
        flag = words[i].split("=", 1)[0]
        if flag not in _VALUED and flag != "--replace":
            raise _Usage(f"unknown option {flag!r} (the server's own options go after --: "
                         "llmbasedos mcp add NAME [--env K=V]... -- COMMAND [ARG...])")
        i += 2 if flag in _VALUED and "=" not in words[i] else 1
    options, command = words[:i], words[i + 1:] if words[i:i + 1] == ["--"] else words[i:]
    inner = argparse.ArgumentParser(prog="llmbasedos mcp add", add_help=False)
    _add_options(inner)
    for key, value in vars(inner.parse_args(options)).items():
        if isinstance(value, list):
            setattr(args, key, (getattr(args, key, None) or []) + value)
        elif value is not None:
            setattr(args, key, value)
    return args, command


def _values(items: list[str], flag: str) -> dict[str, str | Secret]:
    """The values of `--env K=V` or `--header 'K: V'`. A bad one is named by its place, never echoed: it may be a
    secret pasted without its name."""
    sep, form = ("=", "NAME=VALUE") if flag == "--env" else (":", "'Name: value'")
    out: dict[str, str | Secret] = {}
    for n, item in enumerate(items, 1):
        key, found, value = item.partition(sep)
        if flag == "--header":
            key, value = key.strip(), value.strip()
        if not found:
            raise _Usage(f"{flag} #{n} has no {sep!r}: give {form}")
        if not key or (flag == "--header" and not _TOKEN_CHARS.match(key)):
            raise _Usage(f"{flag} #{n} has no valid name before its {sep!r}: give {form}")
        if flag == "--header" and any(c in value for c in "\r\n\0"):
            raise _Usage(f"--header {key}: the value holds a line break")
        if key in out or (flag == "--header" and key.lower() in {k.lower() for k in out}):
            raise _Usage(f"{flag} {key} is given twice")
        ref = _REF.match(value)
        out[key] = Secret(env=ref.group(1)) if ref else value
    return out


def _new_server(args: argparse.Namespace, command: list[str]) -> NewServer:
    if args.url is not None and command:
        raise _Usage("give either --url URL or -- COMMAND [ARG...], not both")
    if args.url is None and not command:
        raise _Usage("give the server's command after -- (llmbasedos mcp add NAME -- COMMAND [ARG...]) "
                     "or its --url")
    if args.url is not None:
        if args.env or args.cwd:
            raise _Usage("--env and --cwd are for stdio servers; an HTTP server takes --header")
        parts = urlsplit(args.url)
        if parts.query or parts.username or parts.password:
            print("llmbasedos: warning: the URL is kept in mcp_servers.yaml as it is; put a token in "
                  "--header 'Authorization: Bearer ...' instead, where it is kept in a 0600 file", file=sys.stderr)
        return NewServer(args.name, url=args.url, headers=_values(args.header or [], "--header"))
    if args.header:
        raise _Usage("--header is for HTTP servers (--url); a stdio server takes --env")
    cwd = None
    if args.cwd is not None:
        path = Path(os.path.abspath(Path(args.cwd).expanduser()))
        if not path.is_dir():
            raise _Usage(f"--cwd {path} is not a directory")
        cwd = str(path)
    program = command[0]
    if "/" in program and not os.path.isabs(program):  # as the shell that typed it would run it
        program = os.path.abspath(program)
    return NewServer(args.name, command=program, args=tuple(command[1:]), env=_values(args.env or [], "--env"), cwd=cwd)


def _secrets_line(config_dir: Path, entry: ServerEntry) -> str:
    """Where the entry's secrets are, by name: `; secrets: TOKEN in secrets/memory.TOKEN (0600), REF from $REF`."""
    parts = []
    for key, value in {**entry.env, **entry.headers}.items():
        if isinstance(value, Secret) and value.env is not None:
            parts.append(f"{key} from ${value.env}")
        elif isinstance(value, Secret) and value.file is not None:
            shown = value.file.relative_to(config_dir) if value.file.is_relative_to(config_dir) else value.file
            parts.append(f"{key} in {shown}")
    filed = " (files of the config dir, mode 0600)" if any(" in " in p for p in parts) else ""
    return f"; secrets: {', '.join(parts)}{filed}" if parts else ""


def _cmd_add(args: argparse.Namespace) -> int:
    args, command = _split_add(args)
    settings = _settings(args)
    server = _new_server(args, command)
    try:
        entry = add_server(settings.config_dir, server, replace=bool(args.replace))
    except ServerExists as exc:
        raise _Usage(f"{exc}: give --replace to replace it") from None
    target = entry.url if entry.url is not None else " ".join([entry.command or "", *entry.args])
    print(f"Registered {entry.name} ({entry.transport}: {_shown_url(target) if entry.url else target})"
          f"{_secrets_line(settings.config_dir, entry)}.")
    print(f"A running appliance serves it within 10 seconds; `llmbasedos mcp test {entry.name}` tries it now.")
    return 0


# -- remove -----------------------------------------------------------------------------------------------------


def _cmd_remove(args: argparse.Namespace) -> int:
    settings = _settings(args)
    removed = registry_file.remove_server(settings.config_dir, args.name)
    print(f"Removed {args.name}" + (f" and its secret files ({', '.join(removed)})" if removed else "") + ".")
    return 0


# -- list -------------------------------------------------------------------------------------------------------


def _shown_url(url: str) -> str:
    """A URL without what may be a secret in it: user info and query values."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username or parts.password:
        netloc = "(credentials)@" + netloc
    query = "&".join(f"{q.split('=', 1)[0]}=(hidden)" for q in parts.query.split("&") if q)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _appliance_state(run_dir: Path) -> dict[str, Any] | None:
    """The upstream program's state file, when that program is alive."""
    try:
        state = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8"))
        return state if isinstance(state, dict) and pid_alive(int(state["pid"])) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def servers_report(settings: Settings) -> dict[str, Any]:
    """What `mcp list --json` prints."""
    registry = load_registry(settings.config_dir)
    state = _appliance_state(settings.run_dir)
    live: dict[str, Any] = state.get("servers", {}) if state else {}
    rows: list[dict[str, Any]] = []
    for name, entry in sorted(registry.servers.items()):
        described = entry.describe()
        if "url" in described:
            described["url"] = _shown_url(described["url"])
        seen = live.get(name) if isinstance(live.get(name), dict) else None
        if state is None:
            current = "disabled" if not entry.enabled else "not running"
        else:  # pending: the running appliance has not read this change yet
            current = "pending" if seen is None else str(seen.get("state", "unknown"))
        seen = seen or {}
        names = seen.get("tool_names") if isinstance(seen.get("tool_names"), dict) else None
        rows.append({"name": name, "state": current, "transport": entry.transport, "enabled": entry.enabled,
                     "entry": described, "refused": None, "tools": seen.get("tools") if state else None,
                     "tool_names": {str(t): tool_name(str(m)) for t, m in sorted((names or {}).items())},
                     "refused_tools": seen.get("refused_tools") or {},
                     **{k: seen.get(k) for k in ("last_error", "calls", "errors", "restarts", "server_info")}})
    for name, why in sorted(registry.refused.items()):
        rows.append({"name": name, "state": "refused", "transport": None, "enabled": False, "entry": None,
                     "refused": why, "tools": None, "tool_names": {}, "refused_tools": {}, "last_error": why,
                     **dict.fromkeys(("calls", "errors", "restarts", "server_info"))})
    return {"registry": str(registry_path(settings.config_dir)), "running": state is not None,
            "registry_error": state.get("registry_error") if state else None, "servers": rows}


def _cmd_list(args: argparse.Namespace) -> int:
    report = servers_report(_settings(args))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if report["registry_error"]:
        print(f"The running appliance cannot read the registry: {report['registry_error']}")
    if not report["servers"]:
        print(f"No upstream MCP servers ({report['registry']}). Add one with `llmbasedos mcp add`.")
        return 0
    table = [("NAME", "STATE", "TRANSPORT", "TOOLS", "TARGET")]
    for row in report["servers"]:
        entry = row["entry"] or {}
        target = entry.get("url") or " ".join([entry.get("command", ""), *entry.get("args", [])])
        tools = "-" if row["tools"] is None else str(row["tools"])
        table.append((row["name"], row["state"], row["transport"] or "-", tools, target[:60]))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for n, cells in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if n == 0:
            continue
        row = report["servers"][n - 1]
        if row["tool_names"]:
            shown = [m if m == f"{row['name']}_{t}" else f"{m} ({t})" for t, m in row["tool_names"].items()]
            print(f"    tools: {', '.join(shown)}")
        for tool, why in row["refused_tools"].items():
            print(f"    refused tool {tool}: {why}")
        if row["refused"]:
            print(f"    refused: {row['refused']}")
        elif row["last_error"]:
            print(f"    last error: {row['last_error']}")
    if not report["running"]:
        print("(the appliance is not running: `llmbasedos up` serves these)")
    return 0


# -- test -------------------------------------------------------------------------------------------------------


def _cmd_test(args: argparse.Namespace) -> int:
    from llmbasedos.servers.upstream.link import UpstreamError, probe

    settings = _settings(args)
    registry = load_registry(settings.config_dir)
    if args.name in registry.refused:
        _err(f"mcp test {args.name}: the registry refuses it: {registry.refused[args.name]}")
        return 1
    entry = registry.servers.get(args.name)
    if entry is None:
        raise _Usage(f"no server {args.name!r} in {registry.source} (see `llmbasedos mcp list`)")
    with tempfile.TemporaryDirectory(prefix="llmbasedos-mcp-test-") as logs:
        try:
            listing = asyncio.run(probe(entry, log_dir=Path(logs)))
        except Exception as exc:  # UpstreamError says what failed; anything else is told in one line too
            _err(f"mcp test {args.name}: {exc if isinstance(exc, UpstreamError) else _leaf(exc)}")
            tail = _tail(Path(logs) / f"upstream-{entry.name}.log")
            if tail:
                print(f"The server wrote on stderr:\n{tail}", file=sys.stderr)
            return 1
    info = listing.server_info or {}
    about = " ".join(str(info.get(k)) for k in ("name", "version") if info.get(k))
    print(f"{entry.name}: connected to {about or 'the server'} (protocol {listing.protocol_version or '?'}), "
          f"{len(listing.tools)} tools{', prompts' if listing.prompts else ''}"
          f"{', resources' if listing.resources else ''}.")
    if not entry.enabled:
        print("(it is disabled in the registry: the appliance does not serve it)")
    for tool in listing.tools:
        upstream = str(tool.get("name", ""))
        served = tool_name(method_for(entry.name, upstream))
        policy = "" if entry.allows_tool(upstream) else "  [not served: tools.allow/deny]"
        first = str(tool.get("description") or "").strip().splitlines()
        print(f"  {served}{'' if served == f'{entry.name}_{upstream}' else f' ({upstream})'}"
              f"{policy}{'  ' + first[0][:100] if first else ''}")
    return 0


def _leaf(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"the connection failed ({type(exc).__name__}: {str(exc)[:200]})"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


# -- import -----------------------------------------------------------------------------------------------------


def _own_executable() -> str:
    argv0 = Path(sys.argv[0])
    if argv0.name == "llmbasedos" and argv0.exists():
        return os.path.abspath(argv0)
    beside = Path(sys.executable).parent / "llmbasedos"
    if beside.exists():
        return str(beside)
    return shutil.which("llmbasedos") or "llmbasedos"


def _import_one(settings: Settings, server: HostServer, base: Path, replace: bool) -> str:
    env = dict(server.env)
    if server.env_file is not None:
        path = base / Path(server.env_file).expanduser()
        try:
            env = {**host_configs.parse_env_file(path.read_text(encoding="utf-8")), **env}
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"its envFile {path} cannot be read ({exc.__class__.__name__})") from None
    cwd = str(base / Path(server.cwd).expanduser()) if server.cwd is not None else None
    new = NewServer(server.name, command=server.command, args=server.args, env=env, cwd=cwd, url=server.url,
                    headers=server.headers, enabled=server.enabled)
    entry = add_server(settings.config_dir, new, replace=replace)
    return entry.transport + _secrets_line(settings.config_dir, entry)


def _needs(config: HostConfig, server: HostServer, config_dir: Path) -> list[str]:
    out = []
    for where, variables in server.unresolved.items():
        wanted = ", ".join(f"{v} ({config.inputs[v[8:-1]]})" if v.startswith("${input:") and v[8:-1] in
                           config.inputs else v for v in variables)
        kind, _, key = where.partition(".")
        if kind in ("env", "headers"):
            out.append(f"{where} needs {wanted}: in {config_dir / registry_file.secret_file(server.name, key)}, "
                       "put the value in place of the placeholder")
        else:
            out.append(f"{where} needs {wanted}: fill it in in the registry")
    if out:
        out.append("then set `enabled: true` for it in the registry")
    return out


def _cmd_import(args: argparse.Namespace) -> int:
    settings = _settings(args)
    source = Path(os.path.abspath(Path(args.file).expanduser()))
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Usage(f"cannot read {source} ({exc.__class__.__name__})") from None
    state_dir = settings.state_dir.resolve()
    own = [gateway_url(layout_for(state_dir))]
    try:
        config = host_configs.parse_host_config(text, file_name=str(source), host_format=args.format, own_urls=own,
                                                environ=os.environ, home=str(Path.home()))
    except HostConfigError as exc:
        raise _Usage(f"{source}: {exc}") from None
    print(f"{config.label} configuration {source}:")
    left_out = 0
    for server in config.servers:
        label = server.host_name
        try:
            how = _import_one(settings, server, source.parent, args.replace)
        except ServerExists:
            print(f"  not taken   {label}: {server.name} is registered already (--replace replaces it)")
            left_out += 1
            continue
        except RegistryError as exc:
            print(f"  not taken   {label}: {exc}")
            left_out += 1
            continue
        print(f"  {'registered' if server.enabled else 'disabled  '}  {server.name} ({how})")
        for line in [*server.notes, *_needs(config, server, settings.config_dir)]:
            print(f"      {line}")
    for item in config.refused:
        print(f"  not taken   {item.host_name}: {item.reason}")
    for item in config.skipped:
        print(f"  skipped     {item.host_name}: {item.reason}")
    left_out += len(config.refused)
    if not config.servers and not config.refused and not config.skipped:
        print("  (no servers in it)")
    entry = host_configs.bridge_entry(config.format, _own_executable(), str(state_dir))
    print(f"\n{source.name} was not changed. In it, replace the servers registered above with this one entry:")
    print(json.dumps(entry, indent=2))
    print("It launches the stdio bridge with the owner token of this state dir; to give the host a token of its own, "
          "`llmbasedos token create NAME --allow ...`, keep it in a 0600 file and add `--token-file FILE` to args "
          "(docs/hosts.md).")
    return 1 if left_out else 0


# -- wiring -----------------------------------------------------------------------------------------------------


def _guarded(handler: Handler) -> Handler:
    """The handler with bad input and unusable files reported in one line (exit 2), not as a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (_Usage, NoSuchServer, RegistryError) as exc:
            _err(str(exc))
            return 2

    return run


def _sub(sub: Any, name: str, handler: Handler, help_text: str, *, state_dir: bool = True) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    if state_dir:  # SUPPRESS: an absent option must not overwrite one already parsed
        parser.add_argument("--state-dir", metavar="DIR", default=argparse.SUPPRESS,
                            help="state directory (default: $LLMBDO_STATE_DIR)")
    parser.set_defaults(func=_guarded(handler))
    return parser


def register(subparsers: Any) -> None:
    """Add `mcp` to the subparsers of the main `llmbasedos` parser."""
    mcp = subparsers.add_parser("mcp", help="the upstream MCP servers served behind the gateway",
                                description="Add, list, test, remove and import the MCP servers (stdio or "
                                            "Streamable HTTP) that llmbasedos serves behind its gateway.")

    def needs_subcommand(args: argparse.Namespace) -> int:
        mcp.print_usage(sys.stderr)
        _err("mcp: a subcommand is required")
        return 2

    mcp.set_defaults(func=needs_subcommand)
    sub = mcp.add_subparsers(dest="mcp_command", metavar="{add,list,remove,test,import}")
    p = _sub(sub, "add", _cmd_add, "register a server: -- COMMAND [ARG...] (stdio) or --url URL", state_dir=False)
    p.usage = ("llmbasedos mcp add NAME [--env K=V]... [--cwd DIR] [--replace] -- COMMAND [ARG...]\n"
               "       llmbasedos mcp add NAME --url URL [--header 'K: V']... [--replace]")
    _add_options(p)
    p.add_argument("name", help="the server's name (a-z, 0-9, _ and -, starting with a letter)")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]", help=argparse.SUPPRESS)
    p = _sub(sub, "list", _cmd_list, "list the servers: state, tools (with their /mcp names), last error")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _sub(sub, "remove", _cmd_remove, "unregister a server and delete its secret files")
    p.add_argument("name")
    p = _sub(sub, "test", _cmd_test, "connect to a server, list its tools and print them (exit 1 if it fails)")
    p.add_argument("name")
    p = _sub(sub, "import", _cmd_import, "register every server of a Claude Desktop, VS Code or Cursor "
             "configuration file, and print the one entry the host needs instead (the file is not changed)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--replace", action="store_true", help="replace servers registered under the same names")
    p.add_argument("--format", choices=host_configs.FORMATS, help="the host that wrote FILE (default: detected)")
