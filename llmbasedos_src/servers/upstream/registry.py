"""The registry of upstream MCP servers: `<config_dir>/mcp_servers.yaml` (or `LLMBDO_MCP_SERVERS`).

    servers:
      memory:
        command: node                             # stdio: command, args, env, cwd
        args: [mcp/server-memory/dist/index.js]
        env: {MEMORY_FILE_PATH: {file: memory.path}}
      everything:
        url: http://127.0.0.1:3001/mcp            # Streamable HTTP
        headers: {Authorization: {env: EVERYTHING_TOKEN}}
        timeouts: {connect: 30, list: 30, call: 300}
        retry: {count: 1, backoff: 1.5}           # connect and list only; tools/call is never retried
        tools: {allow: ["*"], deny: [delete_*]}
        enabled: true

A stdio server runs in the config dir unless its `cwd` says otherwise (a relative `cwd` is taken from the
config dir too), so relative paths in `args` resolve against the config dir. A value in `env` or `headers`
is a string, `{env: VAR}` (read from the appliance's environment when the server starts) or `{file: F}` (the
file's content, F relative to the config dir): secrets stay out of the YAML.

A file that is not a mapping of servers is refused whole; an entry with a fault is refused alone, with a
message naming the server and the field, and the others are served. Secrets are resolved only when a server
starts (`resolve`), and no message or description ever holds a secret's value.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmbasedos.protocol.caps import SERVICE_RE
from llmbasedos.yaml_text import load_yaml

__all__ = ["RESERVED_NAMES", "Registry", "RegistryError", "Secret", "ServerEntry", "load_registry",
           "parse_registry", "registry_path"]

FILE_NAME = "mcp_servers.yaml"
# The appliance's own services and the gateway's own method families: an upstream named so would shadow them.
RESERVED_NAMES = frozenset({"fs", "sync", "mail", "agent", "llm", "licence", "upstream", "hello"})
_ENTRY_KEYS = {"command", "args", "env", "cwd", "url", "headers", "timeouts", "retry", "tools", "enabled"}
_TIMEOUTS = {"connect": 30.0, "list": 30.0, "call": 300.0}
_MAX_SECRET_FILE = 64 * 1024


class RegistryError(ValueError):
    """The registry, or one of its entries, is invalid; the message names the server and the field."""


@dataclass(frozen=True)
class Secret:
    """A value read when the server starts: from the environment (`env`) or a file (`file`)."""

    env: str | None = None
    file: Path | None = None

    def describe(self) -> str:
        return f"{{env: {self.env}}}" if self.env is not None else f"{{file: {self.file}}}"


Value = str | Secret


@dataclass(frozen=True)
class ServerEntry:
    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, Value] = field(default_factory=dict)
    cwd: Path | None = None
    url: str | None = None
    headers: Mapping[str, Value] = field(default_factory=dict)
    timeouts: Mapping[str, float] = field(default_factory=lambda: dict(_TIMEOUTS))
    retry_count: int = 1
    retry_backoff: float = 1.5
    allow: tuple[str, ...] = ("*",)
    deny: tuple[str, ...] = ()
    enabled: bool = True

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "http"

    def allows_tool(self, tool: str) -> bool:
        """The server's own tool policy, applied before any client's rights."""
        return (any(fnmatch.fnmatchcase(tool, p) for p in self.allow)
                and not any(fnmatch.fnmatchcase(tool, p) for p in self.deny))

    def resolve(self, environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
        """(env, headers) with every secret read now; RegistryError naming the server, field and the variable
        or file (never its value) when one cannot be read."""
        environ = os.environ if environ is None else environ
        return (_resolve(self.name, "env", self.env, environ), _resolve(self.name, "headers", self.headers, environ))

    def describe(self) -> dict[str, Any]:
        """What `mcp list` shows: the entry with its secrets named, never their values."""
        shown = {k: v.describe() if isinstance(v, Secret) else v for k, v in self.env.items()}
        headers = {k: v.describe() if isinstance(v, Secret) else "(set)" for k, v in self.headers.items()}
        out: dict[str, Any] = {"name": self.name, "transport": self.transport, "enabled": self.enabled,
                               "timeouts": dict(self.timeouts), "tools": {"allow": list(self.allow),
                                                                          "deny": list(self.deny)}}
        if self.command is not None:
            out.update(command=self.command, args=list(self.args), env=shown, cwd=str(self.cwd))
        else:
            out.update(url=self.url, headers=headers)
        return out


@dataclass(frozen=True)
class Registry:
    servers: Mapping[str, ServerEntry]
    refused: Mapping[str, str]  # server name -> why it is not served
    source: str


def registry_path(config_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    override = environ.get("LLMBDO_MCP_SERVERS", "").strip()
    return Path(override).expanduser() if override else config_dir / FILE_NAME


def load_registry(config_dir: Path, environ: Mapping[str, str] | None = None) -> Registry:
    """The registry as the file says now; no file is an empty registry."""
    path = registry_path(config_dir, environ)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Registry({}, {}, path.name)
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path.name}: cannot be read ({exc.__class__.__name__})") from None
    return parse_registry(load_yaml(text, path.name, RegistryError), config_dir=config_dir, source=path.name)


def parse_registry(data: Any, *, config_dir: Path, source: str = FILE_NAME) -> Registry:
    if data is None:
        return Registry({}, {}, source)
    if not isinstance(data, dict) or set(data) - {"servers"}:
        raise RegistryError(f"{source}: must be a mapping with one key, 'servers'")
    servers = data.get("servers") or {}
    if not isinstance(servers, dict):
        raise RegistryError(f"{source}: servers: must be a mapping of name -> server")
    ok: dict[str, ServerEntry] = {}
    refused: dict[str, str] = {}
    for name, raw in servers.items():
        label = str(name)[:64]
        try:
            ok[label] = _entry(name, raw, config_dir, source)
        except RegistryError as exc:
            refused[label] = str(exc)
    return Registry(ok, refused, source)


def _fail(source: str, name: str, where: str, fault: str) -> RegistryError:
    return RegistryError(f"{source}: servers.{name}{'.' + where if where else ''}: {fault}")


def _entry(name: Any, raw: Any, config_dir: Path, source: str) -> ServerEntry:
    if isinstance(name, bool):  # YAML reads on/off/yes/no as booleans
        raise _fail(source, str(name), "", "YAML reads this name as a boolean: put it in quotes")
    if not isinstance(name, str) or not SERVICE_RE.match(name):
        raise _fail(source, str(name)[:64], "", "a name is 1 to 32 of a-z, 0-9, _ and -, starting with a letter")
    if name in RESERVED_NAMES:
        raise _fail(source, name, "", f"{name!r} is the name of one of the appliance's own services")
    if not isinstance(raw, dict):
        raise _fail(source, name, "", "must be a mapping")
    unknown = sorted(map(str, set(raw) - _ENTRY_KEYS))
    if unknown:
        raise _fail(source, name, unknown[0], "unknown key")
    has_command, has_url = "command" in raw, "url" in raw
    if has_command == has_url:
        raise _fail(source, name, "", "give either 'command' (a stdio server) or 'url' (Streamable HTTP), not both")
    fields: dict[str, Any] = {"name": name}
    if has_command:
        command = raw["command"]
        if not isinstance(command, str) or not command.strip():
            raise _fail(source, name, "command", "must be a non-empty string")
        args = raw.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
            raise _fail(source, name, "args", "must be a list of strings")
        cwd = raw.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd.strip()):
            raise _fail(source, name, "cwd", "must be a directory path")
        for key in ("url", "headers"):
            if key in raw:
                raise _fail(source, name, key, "is for HTTP servers, not stdio ones")
        fields.update(command=command, args=tuple(str(a) for a in args),
                      env=_values(raw.get("env", {}), source, name, "env", config_dir),
                      cwd=(config_dir / Path(cwd).expanduser()) if cwd else config_dir)
    else:
        url = raw["url"]
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise _fail(source, name, "url", "must be an http:// or https:// URL")
        for key in ("args", "env", "cwd"):
            if key in raw:
                raise _fail(source, name, key, "is for stdio servers, not HTTP ones")
        fields.update(url=url, headers=_values(raw.get("headers", {}), source, name, "headers", config_dir))
    fields["timeouts"] = _timeouts(raw.get("timeouts", {}), source, name)
    fields["retry_count"], fields["retry_backoff"] = _retry(raw.get("retry", {}), source, name)
    fields["allow"], fields["deny"] = _tools(raw.get("tools", {}), source, name)
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _fail(source, name, "enabled", "must be true or false")
    fields["enabled"] = enabled
    return ServerEntry(**fields)


def _values(raw: Any, source: str, name: str, where: str, config_dir: Path) -> dict[str, Value]:
    if not isinstance(raw, dict):
        raise _fail(source, name, where, "must be a mapping")
    out: dict[str, Value] = {}
    for key, value in raw.items():
        at = f"{where}.{key}"
        if not isinstance(key, str) or not key or "\0" in key or (where == "env" and "=" in key):
            raise _fail(source, name, at, "is not a valid name")
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            out[key] = str(value)
        elif isinstance(value, dict) and list(value) == ["env"] and isinstance(value["env"], str) and value["env"]:
            out[key] = Secret(env=value["env"])
        elif isinstance(value, dict) and list(value) == ["file"] and isinstance(value["file"], str) and value["file"]:
            out[key] = Secret(file=config_dir / Path(value["file"]).expanduser())
        else:
            raise _fail(source, name, at, "must be a string, {env: VARIABLE} or {file: PATH}")
    return out


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _timeouts(raw: Any, source: str, name: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise _fail(source, name, "timeouts", "must be a mapping of connect, list, call to seconds")
    out = dict(_TIMEOUTS)
    for key, value in raw.items():
        if key not in _TIMEOUTS:
            raise _fail(source, name, f"timeouts.{key}", "unknown timeout (connect, list, call)")
        if not _positive(value):
            raise _fail(source, name, f"timeouts.{key}", "must be a positive number of seconds")
        out[key] = float(value)
    return out


def _retry(raw: Any, source: str, name: str) -> tuple[int, float]:
    if not isinstance(raw, dict) or set(raw) - {"count", "backoff"}:
        raise _fail(source, name, "retry", "must be a mapping with count and backoff")
    count, backoff = raw.get("count", 1), raw.get("backoff", 1.5)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 10:
        raise _fail(source, name, "retry.count", "must be an integer from 0 to 10")
    if not _positive(backoff) or backoff < 1:
        raise _fail(source, name, "retry.backoff", "must be a number of at least 1")
    return count, float(backoff)


def _tools(raw: Any, source: str, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(raw, dict) or set(raw) - {"allow", "deny"}:
        raise _fail(source, name, "tools", "must be a mapping with allow and deny")
    lists = []
    for key, default in (("allow", ["*"]), ("deny", [])):
        value = raw.get(key, default)
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            raise _fail(source, name, f"tools.{key}", "must be a list of tool name patterns")
        lists.append(tuple(value))
    return lists[0], lists[1]


def _resolve(name: str, where: str, values: Mapping[str, Value], environ: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, str):
            out[key] = value
        elif value.env is not None:
            if value.env not in environ:
                raise RegistryError(f"servers.{name}.{where}.{key}: the variable {value.env} is not set")
            out[key] = environ[value.env]
        else:
            assert value.file is not None
            try:
                with open(value.file, "rb") as fh:
                    data = fh.read(_MAX_SECRET_FILE + 1)
            except OSError as exc:
                raise RegistryError(f"servers.{name}.{where}.{key}: cannot read {value.file.name} "
                                    f"({exc.__class__.__name__})") from None
            if len(data) > _MAX_SECRET_FILE:
                raise RegistryError(f"servers.{name}.{where}.{key}: {value.file.name} is larger than 64 KiB")
            try:
                out[key] = data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise RegistryError(f"servers.{name}.{where}.{key}: {value.file.name} is not UTF-8 text") from None
    return out
