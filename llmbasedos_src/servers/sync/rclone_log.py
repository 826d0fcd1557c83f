"""Reading what rclone writes: its JSON log lines (`--use-json-log`), the stats they carry, the `--combined`
report of `rclone check`, and its exit codes. Pure functions; host paths are redacted before anything leaves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LogEvent", "parse_line", "progress_from_stats", "Redactor", "format_event", "CheckReport",
           "parse_combined", "describe_exit", "read_tail_events", "final_error"]

# rclone's own plain-text lines (the final "Failed to copy: ..." is printed outside the JSON logger).
_PLAIN_PREFIX = re.compile(r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} (?:[A-Z]+\s*: )?")


@dataclass(frozen=True)
class LogEvent:
    level: str  # error, warning, notice, info, debug
    message: str
    obj: str | None = None
    time: str | None = None
    stats: dict[str, Any] | None = None


def parse_line(raw: str) -> LogEvent | None:
    line = raw.strip()
    if not line:
        return None
    if line.startswith("{"):
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        if isinstance(data, dict):
            stats = data.get("stats")
            obj = data.get("object")
            return LogEvent(
                level=str(data.get("level", "info")),
                message=str(data.get("msg", "")).strip(),
                obj=obj if isinstance(obj, str) and obj else None,
                time=data.get("time") if isinstance(data.get("time"), str) else None,
                stats=stats if isinstance(stats, dict) else None,
            )
    text = _PLAIN_PREFIX.sub("", line)
    level = "error" if text.startswith(("Failed", "Fatal", "ERROR")) else "notice"
    return LogEvent(level=level, message=text)


_LOCAL_FS_AT = re.compile(r"(Local file system at )(/[^\s\"']*)")


class Redactor:
    """Replaces host paths that rclone prints with what the client knows them as."""

    def __init__(self, virtual_root: Path, others: dict[Path, str]) -> None:
        rules: list[tuple[str, str, str]] = []  # (host prefix, replacement when '/' follows, otherwise)
        for root in {str(virtual_root), str(virtual_root.resolve())}:
            rules.append((root.rstrip("/") or "/", "", "/"))
        for path, label in others.items():
            for p in {str(path), str(path.resolve())}:
                rules.append((p, label, label))
        rules.sort(key=lambda r: len(r[0]), reverse=True)  # the longest (most specific) prefix wins
        # Replacement templates: backslashes escaped so re.sub takes them literally.
        self._rules = [
            (re.compile(re.escape(prefix) + r"(?=/)"), re.compile(re.escape(prefix) + r"(?![\w.-])"),
             slash.replace("\\", "\\\\"), other.replace("\\", "\\\\"))
            for prefix, slash, other in rules if prefix != "/"
        ]

    def _local_fs(self, m: re.Match[str]) -> str:
        path = m.group(2)
        if any(before.match(path) or alone.match(path) for before, alone, _, _ in self._rules):
            return m.group(0)
        # A local or alias remote's own root: the admin's host path, not for the client.
        return m.group(1) + "<remote root>"

    def __call__(self, text: str) -> str:
        text = _LOCAL_FS_AT.sub(self._local_fs, text)
        for before_slash, alone, slash, other in self._rules:
            text = alone.sub(other, before_slash.sub(slash, text))
        return text


def _num(stats: dict[str, Any], key: str) -> int:
    value = stats.get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def progress_from_stats(stats: dict[str, Any], redact: Redactor) -> dict[str, Any]:
    """The subset of rclone's accounting stats a client cares about, with stable snake_case names."""
    total = _num(stats, "totalBytes")
    done = _num(stats, "bytes")
    speed = stats.get("speed")
    eta = stats.get("eta")
    transferring = []
    for item in stats.get("transferring") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            transferring.append({"name": redact(item["name"]), "bytes": _num(item, "bytes"),
                                 "size": _num(item, "size"), "percent": _num(item, "percentage")})
    last_error = stats.get("lastError")
    return {
        "bytes": done,
        "total_bytes": total,
        "percent": round(100.0 * done / total, 1) if total else (100.0 if done else 0.0),
        "files": _num(stats, "transfers"),
        "total_files": _num(stats, "totalTransfers"),
        "checks": _num(stats, "checks"),
        "total_checks": _num(stats, "totalChecks"),
        "deletes": _num(stats, "deletes"),
        "renames": _num(stats, "renames"),
        "errors": _num(stats, "errors"),
        "speed": float(speed) if isinstance(speed, (int, float)) else 0.0,
        "eta": int(eta) if isinstance(eta, (int, float)) and not isinstance(eta, bool) else None,
        "elapsed": float(stats.get("elapsedTime") or 0.0),
        "transferring": transferring[:20],
        "last_error": redact(last_error) if isinstance(last_error, str) and last_error else None,
    }


def format_event(event: LogEvent, redact: Redactor) -> str:
    # Object and message redacted apart, so a path at the end of the object cannot swallow the ': '.
    text = redact(event.message.replace("\n", " ").strip())
    if event.obj:
        text = f"{redact(event.obj)}: {text}"
    stamp = f"{event.time[:19]}Z " if event.time else ""
    return f"{stamp}{event.level.upper()} {text}"


def read_tail_events(log: Path, max_bytes: int = 256 * 1024) -> list[LogEvent]:
    """The events at the end of a job log (the first, probably cut, line dropped when reading from a middle)."""
    try:
        with log.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            start = max(0, size - max_bytes)
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if start > 0 and lines:
        lines = lines[1:]
    return [e for e in (parse_line(line) for line in lines) if e is not None]


def final_error(events: Iterable[LogEvent], redact: Redactor) -> str | None:
    """The best one-line reason a run failed: rclone's closing "Failed to ..." line, else its last error."""
    last_error: str | None = None
    for event in events:
        if event.stats is not None:
            continue
        message = redact(event.message.replace("\n", " ").strip())
        if message.startswith(("Failed to", "Fatal error")):
            return message
        if event.level in ("error", "critical", "fatal"):
            last_error = f"{redact(event.obj)}: {message}" if event.obj else message
    return last_error


_EXIT_CODES = {
    1: "syntax or usage error",
    2: "error not otherwise categorised",
    3: "directory not found",
    4: "file not found",
    5: "temporary error (retrying may help)",
    6: "less serious errors",
    7: "fatal error",
    8: "transfer limit (--max-transfer) reached",
    9: "no files transferred",
}


def describe_exit(code: int) -> str:
    if code < 0:
        return f"rclone was killed by signal {-code}"
    return f"rclone exited with code {code}: {_EXIT_CODES.get(code, 'unknown error')}"


@dataclass(frozen=True)
class CheckReport:
    matching: int
    differ: int
    missing_on_destination: int
    missing_on_source: int
    errors: int
    differences: list[dict[str, str]]

    @property
    def identical(self) -> bool:
        return not (self.differ or self.missing_on_destination or self.missing_on_source or self.errors)

    def as_dict(self) -> dict[str, Any]:
        return {"identical": self.identical, "matching": self.matching, "differ": self.differ,
                "missing_on_destination": self.missing_on_destination, "missing_on_source": self.missing_on_source,
                "errors": self.errors, "differences": self.differences}


_COMBINED = {"*": "differ", "+": "missing_on_destination", "-": "missing_on_source", "!": "error"}


def parse_combined(path: Path, max_listed: int = 100) -> CheckReport | None:
    """`rclone check --combined` writes one line per file: '= x' same, '* x' differ, '+ x' only in the source,
    '- x' only in the destination, '! x' error. Paths are relative to the two roots, so nothing to redact."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    counts = {"=": 0, "*": 0, "+": 0, "-": 0, "!": 0}
    listed: list[dict[str, str]] = []
    for line in text.splitlines():
        if len(line) < 3 or line[1] != " " or line[0] not in counts:
            continue
        counts[line[0]] += 1
        if line[0] != "=" and len(listed) < max_listed:
            listed.append({"path": line[2:], "status": _COMBINED[line[0]]})
    return CheckReport(counts["="], counts["*"], counts["+"], counts["-"], counts["!"], listed)
