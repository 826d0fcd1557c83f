"""The MCP server lists of the hosts people already use, read into registry terms. Pure: text in, entries out.

    Claude Desktop  claude_desktop_config.json   {"mcpServers": {name: {command, args, env} | {url, headers}}}
    VS Code         .vscode/mcp.json (JSONC)     {"servers": {name: {type, command, args, env, envFile, cwd,
                                                  url, headers}}, "inputs": [...]}; also settings.json's "mcp"
    Cursor          ~/.cursor/mcp.json           {"mcpServers": {...}} as Claude's, with url/headers too

What a server of the file becomes:
- Its name is mapped to a registry name, deterministically (`registry_name`): lower case, every character
  outside a-z 0-9 _ - becomes `_`, `mcp_` in front of one that does not start with a letter, a long one cut to
  32 characters with 8 hex characters of the original's hash, `_mcp` after a name of the appliance's own
  services (`fs` -> `fs_mcp`), and `_2`, `_3`... after a name an earlier server of the file already took.
- VS Code and Cursor substitute `${...}` variables, and so does the import: `${userHome}`, `${pathSeparator}`
  and `${workspaceFolder}` (when the file is a workspace's `.vscode/mcp.json` or `.cursor/mcp.json`) are
  filled in; an env or header value that is exactly `${env:VAR}` becomes `{env: VAR}` (read by the appliance
  when the server starts); `${env:VAR}` inside a longer value ("Bearer ${env:TOKEN}") is filled in from the
  environment of the import, when set. Anything else (`${input:ID}`, an unset variable inside a value, an
  unknown variable) cannot be had here: the server is registered disabled, with its text kept, and
  `unresolved` says which field needs what. Claude Desktop substitutes nothing: its values are taken as
  written.
- A server llmbasedos cannot take is refused with the reason, never dropped in silence, and never stops the
  others: a legacy SSE server, a value that is not a string, neither a command nor a URL.
- An entry that is llmbasedos itself (the `llmbasedos mcp-stdio` bridge, or a URL in `own_urls`) is skipped.

The registry checks the result again when it is written (registry_file.py), so its rules stay in one place.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from llmbasedos.protocol.caps import SERVICE_RE
from llmbasedos.servers.upstream.registry import RESERVED_NAMES, Secret

__all__ = ["FORMATS", "HostConfig", "HostConfigError", "HostServer", "NotTaken", "bridge_entry", "detect_format",
           "parse_env_file", "parse_host_config", "registry_name", "strip_jsonc"]

FORMATS = ("claude-desktop", "vscode", "cursor")
_LABEL = {"claude-desktop": "Claude Desktop", "vscode": "VS Code", "cursor": "Cursor"}
_VAR = re.compile(r"\$\{([^}]*)\}")
_NAME_BAD = re.compile(r"[^a-z0-9_-]")
_HTTP_TYPES = {"http", "streamable-http", "streamablehttp", "streamable_http"}
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}


class HostConfigError(ValueError):
    """The file as a whole cannot be read as a host's MCP configuration."""


@dataclass(frozen=True)
class HostServer:
    """One server of a host's file, in registry terms. A str value of `env` or `headers` is a literal (it goes
    to a secret file), a `Secret(env=VAR)` a reference the appliance reads when the server starts."""

    name: str  # the registry name
    host_name: str  # as the host's file names it
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str | Secret] = field(default_factory=dict)
    env_file: str | None = None  # VS Code's envFile: the caller reads it (parse_env_file) and adds it to env
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str | Secret] = field(default_factory=dict)
    enabled: bool = True
    unresolved: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # "headers.Authorization" -> vars
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotTaken:
    host_name: str
    reason: str


@dataclass(frozen=True)
class HostConfig:
    format: str  # one of FORMATS
    servers: tuple[HostServer, ...]
    refused: tuple[NotTaken, ...]  # servers llmbasedos cannot take, and why
    skipped: tuple[NotTaken, ...]  # llmbasedos itself
    inputs: Mapping[str, str]  # VS Code input id -> its description

    @property
    def label(self) -> str:
        return _LABEL[self.format]


# -- names ----------------------------------------------------------------------------------------------------


def registry_name(host_name: str, taken: Iterable[str] = ()) -> str:
    """The registry name for a host's server name (see the module docstring); `taken` are names already used."""
    name = _NAME_BAD.sub("_", host_name.strip().lower()) or "server"
    if not name[0].isalpha():
        name = "mcp_" + name
    if len(name) > 32:
        name = f"{name[:23]}_{hashlib.sha256(host_name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    if name in RESERVED_NAMES:
        name += "_mcp"
    taken = set(taken)
    base, n = name, 2
    while name in taken:
        suffix = f"_{n}"
        name, n = base[:32 - len(suffix)] + suffix, n + 1
    assert SERVICE_RE.match(name), name
    return name


# -- the file -------------------------------------------------------------------------------------------------


def strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (VS Code's JSONC) as plain JSON; strings are left as they are."""
    return _drop_trailing_commas(_drop_comments(text))


def _string_end(text: str, i: int) -> int:
    """The index just past the JSON string starting at `i`."""
    j = i + 1
    while j < len(text) and text[j] != '"':
        j += 2 if text[j] == "\\" else 1
    return j + 1


def _drop_comments(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            j = _string_end(text, i)
            out.append(text[i:j])
            i = j
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            out.append("\n" * text.count("\n", i, n if end < 0 else end))  # keeps line numbers in errors
            i = n if end < 0 else end + 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _drop_trailing_commas(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            j = _string_end(text, i)
            out.append(text[i:j])
            i = j
            continue
        if text[i] == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] in "]}":
                i += 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def detect_format(data: Any, file_name: str = "") -> str:
    """Which host wrote this (already decoded) file; HostConfigError when it is none of them."""
    if not isinstance(data, dict):
        raise HostConfigError("not a JSON object")
    parts = PurePosixPath(file_name.replace("\\", "/")).parts
    if isinstance(data.get("servers"), dict) or (
            isinstance(data.get("mcp"), dict) and isinstance(data["mcp"].get("servers"), dict)):
        return "vscode"
    if isinstance(data.get("mcpServers"), dict):
        if parts and parts[-1] == "claude_desktop_config.json":
            return "claude-desktop"
        if ".cursor" in parts or (parts and parts[-1] == "mcp.json"):
            return "cursor"
        return "claude-desktop"
    raise HostConfigError("found neither \"mcpServers\" (Claude Desktop, Cursor) nor \"servers\" (VS Code)")


def parse_host_config(text: str, *, file_name: str = "", host_format: str | None = None,
                      own_urls: Iterable[str] = (), environ: Mapping[str, str] | None = None,
                      home: str | None = None) -> HostConfig:
    """The servers of a host's file. `file_name` (its path) helps tell Claude's from Cursor's and gives
    `${workspaceFolder}`; `own_urls` are this appliance's /mcp URLs; `environ` fills `${env:VAR}` inside values."""
    try:
        data = json.loads(strip_jsonc(text))
    except ValueError as exc:
        raise HostConfigError(f"not valid JSON: {exc}") from None
    fmt = host_format or detect_format(data, file_name)
    if fmt not in FORMATS:
        raise HostConfigError(f"unknown host format {fmt!r} (known: {', '.join(FORMATS)})")
    if not isinstance(data, dict):
        raise HostConfigError("not a JSON object")
    if fmt == "vscode":
        block = data.get("servers", data.get("mcp", {}).get("servers") if isinstance(data.get("mcp"), dict) else None)
    else:
        block = data.get("mcpServers")
    if not isinstance(block, dict):
        key = "servers" if fmt == "vscode" else "mcpServers"
        raise HostConfigError(f"{_LABEL[fmt]}: \"{key}\" must be an object of name -> server")
    inputs = _inputs(data.get("inputs") if fmt == "vscode" else None)
    subst = None if fmt == "claude-desktop" else _Substitution(environ or {}, home, _workspace(file_name), inputs)
    own = {_url_key(u) for u in own_urls}
    servers: list[HostServer] = []
    refused: list[NotTaken] = []
    skipped: list[NotTaken] = []
    taken: set[str] = set()
    for host_name, raw in block.items():
        try:
            server = _server(str(host_name), raw, fmt, subst, taken)
        except _Refused as exc:
            refused.append(NotTaken(str(host_name), str(exc)))
            continue
        if _is_ourselves(server, own):
            skipped.append(NotTaken(server.host_name, "this is llmbasedos itself"))
            continue
        taken.add(server.name)
        servers.append(server)
    return HostConfig(fmt, tuple(servers), tuple(refused), tuple(skipped), inputs)


def parse_env_file(text: str) -> dict[str, str]:
    """A dotenv file (VS Code's `envFile`): `KEY=VALUE` lines, `export ` allowed, `#` comments, quotes taken off."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if key:
            out[key] = value
    return out


def bridge_entry(host_format: str, executable: str, state_dir: str) -> dict[str, Any]:
    """The one entry a host needs once its servers are behind llmbasedos, in the host's own format: the stdio
    bridge `llmbasedos mcp-stdio` (docs/hosts.md), by its absolute path, with the appliance's state dir."""
    bridge = {"command": executable, "args": ["mcp-stdio", "--state-dir", state_dir]}
    if host_format == "vscode":
        return {"servers": {"llmbasedos": {"type": "stdio", **bridge}}}
    return {"mcpServers": {"llmbasedos": bridge}}


# -- one server -----------------------------------------------------------------------------------------------


class _Refused(Exception):
    pass


def _inputs(raw: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            out[item["id"]] = str(item.get("description") or item["id"])
    return out


def _workspace(file_name: str) -> str | None:
    path = PurePath(file_name)
    return str(path.parent.parent) if path.parent.name in (".vscode", ".cursor") and path.is_absolute() else None


class _Substitution:
    """`${...}` variables as VS Code and Cursor fill them in; what cannot be filled in here is collected."""

    def __init__(self, environ: Mapping[str, str], home: str | None, workspace: str | None,
                 inputs: Mapping[str, str]) -> None:
        self.environ, self.home, self.workspace, self.inputs = environ, home, workspace, inputs

    def value(self, text: str, missing: list[str]) -> str:
        def one(match: re.Match[str]) -> str:
            var = match.group(1).strip()
            kind, _, arg = var.partition(":")
            if kind == "env" and arg in self.environ:
                return self.environ[arg]
            if var == "userHome" and self.home:
                return self.home
            if var in ("pathSeparator", "/"):
                return "/"
            if var == "workspaceFolder" and self.workspace:
                return self.workspace
            missing.append(match.group(0))
            return match.group(0)

        return _VAR.sub(one, text)


def _server(host_name: str, raw: Any, fmt: str, subst: _Substitution | None, taken: set[str]) -> HostServer:
    if not isinstance(raw, dict):
        raise _Refused("must be an object")
    kind = str(raw.get("type") or raw.get("transport") or "").strip().lower()
    url = raw.get("url", raw.get("serverUrl"))
    if kind == "sse":
        raise _Refused("a legacy SSE server: llmbasedos speaks Streamable HTTP only (if the server also serves "
                       "Streamable HTTP, often at /mcp, add that URL with `llmbasedos mcp add NAME --url URL`)")
    if kind and kind != "stdio" and kind not in _HTTP_TYPES:
        raise _Refused(f"unknown type {raw.get('type') or raw.get('transport')!r}")
    has_command = isinstance(raw.get("command"), str) and bool(raw["command"].strip())
    stdio = kind == "stdio" or (not kind and has_command)
    if stdio and not has_command:
        raise _Refused("a stdio server without a command")
    if not stdio and url is None:
        raise _Refused("an HTTP server without a url" if kind else "has neither a command nor a url")
    unresolved: dict[str, tuple[str, ...]] = {}
    notes: list[str] = []

    def text(value: Any, where: str) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _Refused(f"{where}: must be a string")
        value = str(value)
        if subst is None:
            return value
        missing: list[str] = []
        value = subst.value(value, missing)
        if missing:
            unresolved[where] = tuple(missing)
        return value

    def values(block: Any, where: str) -> dict[str, str | Secret]:
        if block is None:
            return {}
        if not isinstance(block, dict):
            raise _Refused(f"{where}: must be an object")
        out: dict[str, str | Secret] = {}
        for key, value in block.items():
            whole = _VAR.fullmatch(value.strip()) if subst is not None and isinstance(value, str) else None
            ref = whole.group(1).strip() if whole else ""
            if ref.startswith("env:") and ref[4:]:
                out[str(key)] = Secret(env=ref[4:])
            else:
                out[str(key)] = text(value, f"{where}.{key}")
        return out

    fields: dict[str, Any] = {}
    if stdio:
        args = raw.get("args") or []
        if not isinstance(args, list):
            raise _Refused("args: must be a list of strings")
        fields.update(command=text(raw["command"], "command"),
                      args=tuple(text(a, f"args[{i}]") for i, a in enumerate(args)),
                      env=values(raw.get("env"), "env"))
        if raw.get("cwd") is not None:
            fields["cwd"] = text(raw["cwd"], "cwd")
        if raw.get("envFile") is not None:
            fields["env_file"] = text(raw["envFile"], "envFile")
        if url is not None:
            notes.append("has both a command and a url: the command is used")
    else:
        fields.update(url=text(url, "url"), headers=values(raw.get("headers"), "headers"))
        path = urlsplit(fields["url"]).path.rstrip("/")
        if not kind and path.endswith("/sse"):
            raise _Refused("its URL ends in /sse, a legacy SSE endpoint: llmbasedos speaks Streamable HTTP only "
                           "(if the server also serves it, often at /mcp, add that URL with `llmbasedos mcp add`)")
    name = registry_name(host_name, taken)
    if name != host_name:
        notes.append(f"{host_name!r} is registered as {name} (registry names are lower case a-z, 0-9, _ and -)")
    enabled = raw.get("disabled") is not True and raw.get("enabled") is not False
    if not enabled:
        notes.append(f"disabled in {_LABEL[fmt]}'s file: registered disabled")
    if unresolved:
        enabled = False
    return HostServer(name=name, host_name=host_name, enabled=enabled, unresolved=unresolved, notes=tuple(notes),
                      **fields)


# -- ourselves ------------------------------------------------------------------------------------------------


def _url_key(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    path = parts.path.rstrip("/")
    return (parts.scheme.lower(), "loopback" if host in _LOOPBACK else host, port,
            path if path.endswith("/mcp") else path + "/mcp")


def _is_ourselves(server: HostServer, own: set[tuple[str, str, int | None, str]]) -> bool:
    if server.command is not None:
        words = [server.command, *server.args]
        names = {PurePath(w.replace("\\", "/")).name.lower().removesuffix(".exe") for w in words}
        return "mcp-stdio" in server.args and ("llmbasedos" in names or any(w.startswith("llmbasedos.") for w in words))
    return server.url is not None and _url_key(server.url) in own
