"""Turn a client's job request into an rclone argument list, from validated parts only.

Nothing a client sends reaches rclone's command line unchecked: paths are either virtual paths resolved inside
the virtual root, or `remote:path` with a remote that exists in rclone.conf and that either never reaches the
local disk or is kept inside the virtual root (local_remotes.py); extra flags come from an allowlist, each
value checked and always passed glued to its flag (`--exclude=PATTERN`), and a `--` ends the options before
the two paths. No allowed flag takes a file or folder. rclone runs without a shell, so there is nothing to
quote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmbasedos.backend.confinement import VirtualRoot
from llmbasedos.protocol import errors
from llmbasedos.servers.sync.local_remotes import LocalRemotes, judge
from llmbasedos.servers.sync.remotes import Remote

__all__ = ["MODES", "Location", "parse_location", "parse_flags", "ParsedFlags", "build_argv", "allowed_flags",
           "overlaps"]

MODES = ("copy", "sync", "move", "check")
MAX_FLAGS = 64
_MAX_VALUE = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Location:
    """One side of a job: what the client sees (`display`) and what rclone gets (`arg`)."""

    display: str
    arg: str
    host: Path | None  # the resolved host path of a local location, None for a remote
    touches: tuple[Path, ...] = ()  # host folders inside the root that a remote stores this location's data in

    @property
    def is_local(self) -> bool:
        return self.host is not None

    @property
    def host_paths(self) -> tuple[Path, ...]:
        """Every host path the job may read or write on this side (empty for a remote off this machine)."""
        return (self.host,) if self.host is not None else self.touches


def _check_text(what: str, text: str) -> None:
    if not text:
        raise errors.InvalidParams(f"{what} is empty")
    if _CONTROL.search(text):
        raise errors.InvalidParams(f"{what} contains a control character")
    if len(text) > 4096:
        raise errors.InvalidParams(f"{what} is longer than 4096 characters")


def _local(text: str, vroot: VirtualRoot, must_exist: bool) -> Location:
    """A path of the virtual root: relative ones too start at the root, never at the server's directory."""
    try:
        host = vroot.resolve(text, must_exist=must_exist)
    except errors.NotFound:
        if must_exist:
            raise
        # rclone creates missing folders; find the deepest existing one (inside the root, symlinks resolved)
        # and append the rest, which has no symlink in it since it does not exist yet.
        parts = [p for p in vroot.normalize(text).split("/") if p]
        for cut in range(len(parts) - 1, -1, -1):
            try:
                base = vroot.resolve("/" + "/".join(parts[:cut]), must_exist=True)
            except errors.NotFound:
                continue
            host = base.joinpath(*parts[cut:])
            break
        else:  # pragma: no cover - the root exists
            raise
    return Location(vroot.to_virtual(host), str(host), host)


def parse_location(what: str, text: str, vroot: VirtualRoot, remotes: Mapping[str, Remote], *,
                   must_exist: bool, local_remotes: LocalRemotes = LocalRemotes.REFUSE) -> Location:
    """`remote:path` when a ':' comes before any '/' (rclone's own rule), else a virtual path.

    A local name with a colon in it can be written `./a:b` or `/a:b`, as with rclone. A missing path is
    NotFound when `must_exist`, else the folders rclone will create.
    """
    _check_text(what, text)
    if text.startswith("-"):
        raise errors.InvalidParams(f"{what} must not start with '-'")
    colon = text.find(":")
    slash = text.find("/")
    if colon == -1 or (slash != -1 and slash < colon):
        return _local(text, vroot, must_exist)
    name, rpath = text[:colon], text[colon + 1:]
    if not name:
        raise errors.InvalidParams(f"{what}: on-the-fly backends (':backend:') are not allowed; "
                                   "use a remote from rclone.conf")
    if "," in name:
        raise errors.InvalidParams(f"{what}: connection-string options ('remote,option=value:') are not "
                                   "allowed; use a remote from rclone.conf as it is defined there")
    if name not in remotes:
        raise errors.InvalidParams(f"{what}: unknown remote {name!r} (see mcp.sync.listRemotes; a local "
                                   f"name with a ':' is written './{name}:...')")
    if rpath.startswith("-"):
        raise errors.InvalidParams(f"{what}: the path after the remote must not start with '-'")
    verdict = judge(remotes, name, rpath, local_remotes, vroot.root)
    if verdict.refused is not None:
        raise errors.Forbidden(f"{what}: {verdict.refused}")
    if verdict.direct:
        # The rewrite drops the remote itself, so none of its options (copy_links...) apply either.
        return _local(rpath or "/", vroot, must_exist)
    # '..' could climb above an alias or local remote's root; a remote path stays under its remote.
    if ".." in rpath.replace("\\", "/").split("/"):
        raise errors.InvalidParams(f"{what}: '..' is not allowed in a remote path")
    return Location(text, text, None, verdict.folders)


def overlaps(a: Location, b: Location) -> bool:
    """Two locations on this machine where one contains the other (or both are the same place)."""
    return any(x == y or x.is_relative_to(y) or y.is_relative_to(x) for x in a.host_paths for y in b.host_paths)


# -- flags -------------------------------------------------------------------------------------------------

_NUM = r"\d+(?:\.\d+)?"
_SIZE_RE = re.compile(rf"^(?:off|{_NUM}(?:[bkmgtpe]i?)?)$", re.IGNORECASE)
_DURATION_RE = re.compile(rf"^(?:off|{_NUM}|(?:{_NUM}(?:ms|s|m|h|d|w|M|y))+)$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?$")
_FILTER_RULE_RE = re.compile(r"^[+-] \S")


def _size(value: str) -> str:
    if not _SIZE_RE.match(value):
        raise ValueError("a size like 10M, 1.5G, 512k or off")
    return value


def _bwlimit(value: str) -> str:
    # One rate, or upload:download. rclone's timetables are refused: they are hard to check and rarely needed.
    parts = value.split(":")
    if len(parts) > 2 or not all(_SIZE_RE.match(p) for p in parts):
        raise ValueError("a rate like 10M, or UP:DOWN like 1M:10M, or off")
    return value


def _age(value: str) -> str:
    if not (_DURATION_RE.match(value) or _DATE_RE.match(value)):
        raise ValueError("a duration like 30m, 12h, 7d, 2w, or a date like 2024-01-31")
    return value


def _duration(value: str) -> str:
    if not _DURATION_RE.match(value):
        raise ValueError("a duration like 1s, 2m or 1h")
    return value


def _int_between(low: int, high: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not re.fullmatch(r"\d{1,9}", value) or not low <= int(value) <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return str(int(value))

    return check


def _pattern(value: str) -> str:
    if not value:
        raise ValueError("a non-empty pattern")
    return value


def _filter_rule(value: str) -> str:
    if not _FILTER_RULE_RE.match(value):
        raise ValueError("a rule like '- *.tmp' or '+ /docs/**'")
    return value


_ALL = frozenset(MODES)
_TRANSFER = frozenset({"copy", "sync", "move"})


@dataclass(frozen=True)
class _Spec:
    kind: Literal["bool", "value"]
    check: Callable[[str], str] | None = None
    repeat: bool = False
    modes: frozenset[str] = _ALL


_ALLOWED: dict[str, _Spec] = {
    "--exclude": _Spec("value", _pattern, repeat=True),
    "--include": _Spec("value", _pattern, repeat=True),
    "--filter": _Spec("value", _filter_rule, repeat=True),
    "--max-age": _Spec("value", _age),
    "--min-age": _Spec("value", _age),
    "--max-size": _Spec("value", _size),
    "--min-size": _Spec("value", _size),
    "--max-depth": _Spec("value", _int_between(0, 1000)),
    "--bwlimit": _Spec("value", _bwlimit),
    "--max-transfer": _Spec("value", _size, modes=_TRANSFER),
    "--transfers": _Spec("value", _int_between(1, 64)),
    "--checkers": _Spec("value", _int_between(1, 64)),
    "--retries": _Spec("value", _int_between(1, 10)),
    "--low-level-retries": _Spec("value", _int_between(1, 100)),
    "--modify-window": _Spec("value", _duration),
    "--max-delete": _Spec("value", _int_between(0, 1_000_000_000), modes=frozenset({"sync", "move"})),
    "--checksum": _Spec("bool"),
    "--size-only": _Spec("bool"),
    "--ignore-size": _Spec("bool"),
    "--ignore-case": _Spec("bool"),
    "--fast-list": _Spec("bool"),
    "--no-traverse": _Spec("bool", modes=_TRANSFER),
    "--ignore-existing": _Spec("bool", modes=_TRANSFER),
    "--ignore-times": _Spec("bool", modes=_TRANSFER),
    "--update": _Spec("bool", modes=_TRANSFER),
    "--immutable": _Spec("bool", modes=_TRANSFER),
    "--no-update-modtime": _Spec("bool", modes=_TRANSFER),
    "--create-empty-src-dirs": _Spec("bool", modes=_TRANSFER),
    "--delete-excluded": _Spec("bool", modes=frozenset({"sync"})),
    "--delete-before": _Spec("bool", modes=frozenset({"sync"})),
    "--delete-during": _Spec("bool", modes=frozenset({"sync"})),
    "--delete-after": _Spec("bool", modes=frozenset({"sync"})),
    "--track-renames": _Spec("bool", modes=frozenset({"sync"})),
    "--one-way": _Spec("bool", modes=frozenset({"check"})),
    "--download": _Spec("bool", modes=frozenset({"check"})),
}
_DRY_RUN = "--dry-run"


def allowed_flags() -> list[str]:
    return sorted([*_ALLOWED, _DRY_RUN])


@dataclass(frozen=True)
class ParsedFlags:
    args: tuple[str, ...]  # each one `--name` or `--name=value`
    dry_run: bool


def parse_flags(items: Sequence[str], mode: str) -> ParsedFlags:
    """Check extra flags against the allowlist. Accepts `--name=value` or `--name`, `value` as two items."""
    if len(items) > MAX_FLAGS:
        raise errors.InvalidParams(f"flags: at most {MAX_FLAGS} items")
    out: list[str] = []
    seen: set[str] = set()
    dry_run = False
    i = 0
    while i < len(items):
        item = items[i]
        where = f"flags[{i}]"
        if _CONTROL.search(item):
            raise errors.InvalidParams(f"{where} contains a control character")
        if item == "--":
            raise errors.InvalidParams(f"{where}: '--' is not allowed")
        if not item.startswith("--"):
            raise errors.InvalidParams(f"{where}: {item[:40]!r} is not an allowed flag; only long --flags from "
                                       "the allowlist are accepted (see the runJob description)")
        name, eq, value = item.partition("=")
        if name == _DRY_RUN:
            if eq and value not in ("true", "false"):
                raise errors.InvalidParams(f"{where}: --dry-run takes true or false")
            dry_run = dry_run or value != "false"
            i += 1
            continue
        spec = _ALLOWED.get(name)
        if spec is None:
            raise errors.InvalidParams(f"{where}: flag {name[:40]!r} is not allowed; allowed flags: "
                                       + ", ".join(allowed_flags()))
        if mode not in spec.modes:
            raise errors.InvalidParams(f"{where}: flag {name} does not apply to mode {mode!r}")
        if name in seen and not spec.repeat:
            raise errors.InvalidParams(f"{where}: flag {name} given twice")
        seen.add(name)
        if spec.kind == "bool":
            if eq and value not in ("true", "false"):
                raise errors.InvalidParams(f"{where}: {name} takes true or false")
            if value != "false":
                out.append(name)
            i += 1
            continue
        if not eq:
            if i + 1 >= len(items):
                raise errors.InvalidParams(f"{where}: {name} needs a value")
            i += 1
            value = items[i]
            if _CONTROL.search(value):
                raise errors.InvalidParams(f"flags[{i}] contains a control character")
        if len(value) > _MAX_VALUE:
            raise errors.InvalidParams(f"{where}: the value of {name} is longer than {_MAX_VALUE} characters")
        assert spec.check is not None
        try:
            value = spec.check(value)
        except ValueError as exc:
            raise errors.InvalidParams(f"{where}: {name} takes {exc}") from None
        # Glued with '=', a value can never be read by rclone as a flag of its own.
        out.append(f"{name}={value}")
        i += 1
    return ParsedFlags(tuple(out), dry_run)


def build_argv(rclone: str, mode: str, source: Location, destination: Location, flags: ParsedFlags, *,
               config: Path, dry_run: bool, combined_report: Path | None = None) -> list[str]:
    """The full command line. Our own options come first and cannot be overridden by the allowlist."""
    if mode not in MODES:
        raise errors.InvalidParams(f"mode must be one of {', '.join(MODES)}")
    argv = [
        rclone, mode,
        f"--config={config}",
        "--ask-password=false",  # never wait on a terminal that is not there
        "--use-json-log",
        "--log-level=INFO",
        "--stats=1s",
        "--stats-log-level=INFO",
    ]
    if dry_run or flags.dry_run:
        argv.append("--dry-run")
    if mode == "check" and combined_report is not None:
        argv.append(f"--combined={combined_report}")
    argv.extend(flags.args)
    argv.extend(["--", source.arg, destination.arg])
    return argv
