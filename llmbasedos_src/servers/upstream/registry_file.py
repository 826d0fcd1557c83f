"""Changing `mcp_servers.yaml`: add a server, replace one, remove one, with its secrets kept out of the YAML.

Secrets. Every value of `env` or `headers` given as text is taken as a secret, whatever it looks like: there
is no telling a token from a path, and a value the person did not mean to share must never land in a file
that gets pasted into a bug report. Each one is written to its own file `<config>/secrets/<server>.<KEY>`
(mode 0600, the directory 0700) and the YAML holds `{file: secrets/<server>.<KEY>}`. A KEY with characters
other than letters, digits, `_`, `.` and `-` is spelled with those and 8 hex characters of its hash. A value
that is a reference already (`Secret(env=VAR)`, from `--env K='${env:VAR}'` or a host's `${env:VAR}`) is
written as `{env: VAR}` instead, and nothing is filed. A secret file holds the value as given (the registry
takes off one trailing line end when it reads it back); one of more than 64 KiB is refused. `args`, `command`,
`cwd` and `url` have no secret form in the registry and are written as they are. Removing a server removes
every `secrets/<server>.*`; replacing one removes those the new entry no longer uses.

Validation lives in registry.py alone: the document as it will be is parsed with `parse_registry` before
anything is written, and an entry it refuses is refused here with its message (a name like `../x` or `fs`,
a bad URL...). No secret file is written before that, so a refused name never becomes a path.

Writing. The YAML is written whole and atomically (mode 0600): the upstream program, which watches the file,
reads the old version or the new one, never a part. An edit keeps the file's comments where it can: when the
`servers:` block is in the plain block style `mcp add` writes, the entry's lines are appended, replaced or cut
out as text, and the result is kept only if it parses to exactly the document intended; otherwise (flow style,
anchors, odd quoting) the file is rewritten from the document by PyYAML, which drops comments. An entry
replaced keeps its `timeouts`, `retry` and `tools` (a deny list must not vanish because a token changed).

Two edits at once (two shells, an import and an add) take turns on a lock file beside the registry
(`.mcp_servers.yaml.lock`), so neither loses the other's change. It is not the state dir's lock: `llmbasedos up`
holds that one for as long as the appliance takes to start, and an edit has no reason to wait for that.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmbasedos.files import atomic_write_text
from llmbasedos.protocol.caps import SERVICE_RE
from llmbasedos.servers.upstream.registry import RegistryError, Secret, ServerEntry, parse_registry, registry_path
from llmbasedos.yaml_text import load_yaml

__all__ = ["SECRETS_DIR", "NewServer", "NoSuchServer", "ServerExists", "add_server", "remove_server",
           "secret_file"]

SECRETS_DIR = "secrets"
_MAX_SECRET = 64 * 1024
_KEPT_ON_REPLACE = ("timeouts", "retry", "tools")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_KEY_BAD = re.compile(r"[^A-Za-z0-9_.-]")
_HEADER = ("# Upstream MCP servers served behind the gateway (docs/upstream.md).\n"
           "# `llmbasedos mcp add/remove/import` edit this file; secrets live in secrets/, never here.\n")
_TOP = re.compile(r"^servers:[ \t]*(#.*)?$")
_ENTRY = re.compile(r"^( +)([A-Za-z0-9_-]+|'[^']*'|\"[^\"\\]*\")[ \t]*:([ \t]|$)")


class _Dumper(yaml.SafeDumper):
    """Entries in block style, their short lists and secret references on one line: `args: [-y, x]`."""


class _Row(list[Any]):
    pass


class _Ref(dict[str, Any]):
    pass


_Dumper.add_representer(_Row, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
_Dumper.add_representer(_Ref, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))


class ServerExists(RegistryError):
    """A server of that name is registered already."""


class NoSuchServer(RegistryError):
    """No server of that name is registered."""


@dataclass(frozen=True)
class NewServer:
    """A server to register. Text values of `env` and `headers` are secrets (filed); Secret values references."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str | Secret] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str | Secret] = field(default_factory=dict)
    enabled: bool = True


def secret_file(server: str, key: str) -> str:
    """Where the secret `key` of `server` is kept, relative to the config dir."""
    if not _SAFE_KEY.match(key):
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        key = f"{_KEY_BAD.sub('_', key)[:40] or 'value'}_{digest}"
    return f"{SECRETS_DIR}/{server}.{key}"


def add_server(config_dir: Path, server: NewServer, *, replace: bool = False,
               environ: Mapping[str, str] | None = None) -> ServerEntry:
    """Register `server` (ServerExists if the name is taken and not `replace`; RegistryError naming the field
    when the registry would refuse it) and return the entry as the registry reads it."""
    path = _path(config_dir, environ)
    with _locked(path):
        text, doc = _read(path, config_dir)
        servers = doc["servers"]
        old = next((k for k in servers if str(k) == server.name), None)
        if old is not None and not replace:
            raise ServerExists(f"{server.name} is registered already")
        entry, secrets = _entry_doc(server, servers.get(old) if old is not None else None)
        if old is None:
            new = {"servers": {**servers, server.name: entry}}
        else:  # in its place, so the file's order holds
            new = {"servers": {(server.name if k == old else k): (entry if k == old else v)
                               for k, v in servers.items()}}
        registry = parse_registry(new, config_dir=config_dir, source=path.name)
        if server.name not in registry.servers:
            raise RegistryError(registry.refused.get(server.name[:64], f"{server.name}: refused"))
        for key, value in secrets.items():
            if len(value.encode("utf-8", "surrogatepass")) > _MAX_SECRET:
                raise RegistryError(f"{path.name}: servers.{server.name}: the value of {key} is larger than 64 KiB")
        _write_secrets(config_dir, secrets)
        _write(path, _edited(text, new, server.name, entry) or _dump(new))
        _remove_secrets(config_dir, server.name, keep=set(secrets) | _referenced(entry))
        return registry.servers[server.name]


def remove_server(config_dir: Path, name: str, *, environ: Mapping[str, str] | None = None) -> list[str]:
    """Unregister `name` (NoSuchServer if it is not there) and delete its secret files; returns their names."""
    path = _path(config_dir, environ)
    with _locked(path):
        text, doc = _read(path, config_dir)
        old = next((k for k in doc["servers"] if str(k) == name), None)
        if old is None:
            raise NoSuchServer(f"no server {name!r} in {path.name}")
        new = {"servers": {k: v for k, v in doc["servers"].items() if k != old}}
        _write(path, _edited(text, new, name, None) or _dump(new))
        return _remove_secrets(config_dir, name, keep=set()) if SERVICE_RE.match(name) else []


# -- the document ---------------------------------------------------------------------------------------------


def _path(config_dir: Path, environ: Mapping[str, str] | None) -> Path:
    path = registry_path(config_dir, environ)
    if path == config_dir / path.name:
        config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.parent.is_dir():
        raise RegistryError(f"{path.name}: its directory {path.parent} does not exist")
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _normal(data: Any) -> Any:
    if data is None:
        return {"servers": {}}
    if isinstance(data, dict) and "servers" in data and data["servers"] is None:
        return {**data, "servers": {}}
    return data


def _read(path: Path, config_dir: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "", {"servers": {}}
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path.name}: cannot be read ({exc.__class__.__name__})") from None
    data = _normal(load_yaml(text, path.name, RegistryError))
    parse_registry(data, config_dir=config_dir, source=path.name)  # a file refused whole is not edited
    return text, {"servers": dict(data.get("servers") or {})}


def _entry_doc(server: NewServer, old: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The YAML entry for `server`, and the secret files to write (path relative to the config dir -> value)."""
    secrets: dict[str, str] = {}

    def refs(values: Mapping[str, str | Secret]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, Secret):
                out[key] = _Ref(env=value.env) if value.env is not None else _Ref(file=str(value.file))
            else:
                rel = secret_file(server.name, key)
                secrets[rel] = value
                out[key] = _Ref(file=rel)
        return out

    entry: dict[str, Any] = {}
    if server.command is not None:
        entry["command"] = server.command
        if server.args:
            entry["args"] = _Row(server.args)
        if server.env:
            entry["env"] = refs(server.env)
        if server.cwd is not None:
            entry["cwd"] = server.cwd
    else:
        entry["url"] = server.url
        if server.headers:
            entry["headers"] = refs(server.headers)
    if isinstance(old, dict):
        entry.update({k: old[k] for k in _KEPT_ON_REPLACE if k in old})
    if not server.enabled:
        entry["enabled"] = False
    return entry, secrets


def _referenced(entry: dict[str, Any]) -> set[str]:
    values = [*entry.get("env", {}).values(), *entry.get("headers", {}).values()]
    return {v["file"] for v in values if isinstance(v, dict) and isinstance(v.get("file"), str)}


def _dump(doc: Any) -> str:
    return _HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096)


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text, 0o600)


# -- secrets --------------------------------------------------------------------------------------------------


def _write_secrets(config_dir: Path, secrets: Mapping[str, str]) -> None:
    if not secrets:
        return
    folder = config_dir / SECRETS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for rel, value in secrets.items():
        atomic_write_text(config_dir / rel, value, 0o600)


def _remove_secrets(config_dir: Path, name: str, *, keep: set[str]) -> list[str]:
    removed = []
    for path in sorted((config_dir / SECRETS_DIR).glob(f"{name}.*")):
        if f"{SECRETS_DIR}/{path.name}" not in keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path.name)
    return removed


# -- editing the text, comments kept --------------------------------------------------------------------------


def _edited(text: str, new: dict[str, Any], name: str, entry: dict[str, Any] | None) -> str | None:
    """`text` with `name`'s entry appended, replaced by `entry`, or (None) cut out; None when that cannot be
    done as text, or the text would not say exactly `new`."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    top = next((i for i, line in enumerate(lines) if _TOP.match(line.rstrip("\r\n"))), None)
    if top is None:
        if any(_is_content(line) for line in lines):
            return None
        lines = [*(lines or [_HEADER]), "servers:\n"]
        top = len(lines) - 1
    end, indent, last = len(lines), None, top
    for i in range(top + 1, len(lines)):
        if _is_content(lines[i]):
            if _indent(lines[i]) == 0:
                end = i
                break
            indent = indent if indent is not None else _indent(lines[i])
            last = i
    indent = indent or 2
    block = _find(lines, top, end, indent, name)
    new_lines = _entry_lines(name, entry, indent) if entry is not None else []
    if block is not None:
        lines[block[0]:block[1]] = new_lines
    elif entry is not None:
        lines[last + 1:last + 1] = new_lines
    else:
        return None
    candidate = "".join(lines)
    try:
        ok = _normal(yaml.safe_load(candidate)) == new
    except yaml.YAMLError:
        ok = False
    return candidate if ok else None


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _find(lines: list[str], top: int, end: int, indent: int, name: str) -> tuple[int, int] | None:
    """The lines [start, stop) of `name`'s entry: its key line and every line indented deeper after it."""
    for i in range(top + 1, end):
        match = _ENTRY.match(lines[i])
        if match is None or len(match.group(1)) != indent or match.group(2).strip("'\"") != name:
            continue
        j = i + 1
        while j < end and (not lines[j].strip() or _indent(lines[j]) > indent):
            j += 1
        while j > i + 1 and not lines[j - 1].strip():
            j -= 1
        return i, j
    return None


def _entry_lines(name: str, entry: dict[str, Any], indent: int) -> list[str]:
    text = yaml.dump({name: entry}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096)
    return [" " * indent + line + "\n" for line in text.splitlines()]
