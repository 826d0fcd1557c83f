"""The files of the audit log and the shape of one line: shared by the writer (audit.py) and `verify`.

The live log is `audit.jsonl`. When it reaches `LLMBDO_AUDIT_MAX_BYTES` (default 10 MiB) it is renamed
`audit.jsonl.<seq of its first entry, 12 digits>` and a new `audit.jsonl` is started; the newest
`LLMBDO_AUDIT_KEEP` (default 10) renamed files are kept, older ones deleted. The chain goes on across files:
each new file starts with an `audit.continued` entry, chained and MACed like any other, that names the file
before it. So when the oldest files are gone, `verify` anchors on the oldest kept file's first entry, which
only the key's holder could have written: removing lines from the start of that file (or of any file) still
breaks the chain.

A line is the entry's compact JSON with sorted keys, its closing brace replaced by `,"mac":"<64 hex>"}` and
a newline. The MAC authenticates the exact bytes of the line without that member (the JSON up to it, closed
by `}`), so `verify` checks what was written, not what a parser makes of it: a duplicated key, reordered
keys or changed spacing all fail.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CONTINUED_EVENT",
    "DEFAULT_KEEP",
    "DEFAULT_MAX_BYTES",
    "GENESIS",
    "MAC_HEAD",
    "TRUNCATED_EVENT",
    "chain_files",
    "rotated_files",
    "rotated_name",
    "rotation_from_env",
    "split_mac",
]

GENESIS = "0" * 64
TRUNCATED_EVENT = "audit.truncated"
CONTINUED_EVENT = "audit.continued"
DEFAULT_MAX_BYTES = 10 << 20
DEFAULT_KEEP = 10
_MIN_MAX_BYTES = 4096  # a file must hold a few entries besides its continuation record
MAC_HEAD = b',"mac":"'
_MAC_TAIL = b'"}\n'
_MAC_HEX = 64
_SUFFIX = len(MAC_HEAD) + _MAC_HEX + len(_MAC_TAIL)
_HEX = frozenset(b"0123456789abcdef")


def split_mac(raw: bytes) -> tuple[bytes, str] | None:
    """(the bytes the MAC covers, the MAC) of one line as written, or None when it does not end in a MAC."""
    if len(raw) <= _SUFFIX or not raw.endswith(_MAC_TAIL) or raw[-_SUFFIX:-_SUFFIX + len(MAC_HEAD)] != MAC_HEAD:
        return None
    mac = raw[-_MAC_HEX - len(_MAC_TAIL):-len(_MAC_TAIL)]
    if not _HEX.issuperset(mac):
        return None
    return raw[:-_SUFFIX] + b"}", mac.decode("ascii")


def rotated_name(path: Path, first_seq: int) -> Path:
    return path.with_name(f"{path.name}.{first_seq:012d}")


def rotated_files(path: Path) -> list[tuple[int, Path]]:
    """The renamed files of the log at `path`, oldest first, with the seq each one starts at."""
    prefix = path.name + "."
    found: list[tuple[int, Path]] = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return found
    for name in names:
        suffix = name[len(prefix):]
        if name.startswith(prefix) and suffix.isdigit():
            found.append((int(suffix), path.with_name(name)))
    return sorted(found)


def chain_files(path: Path) -> list[Path]:
    """Every kept file of the log, in chain order: the renamed ones, then the live one if it exists."""
    files = [p for _, p in rotated_files(path)]
    if path.exists():
        files.append(path)
    return files


def _int_env(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a whole number") from None
    if value < minimum:
        raise ValueError(f"{name}: must be at least {minimum}")
    return value


def rotation_from_env() -> tuple[int, int]:
    """(max bytes of the live file, renamed files kept) from LLMBDO_AUDIT_MAX_BYTES and LLMBDO_AUDIT_KEEP;
    ValueError naming the variable when one is not a number or too small."""
    return (_int_env("LLMBDO_AUDIT_MAX_BYTES", DEFAULT_MAX_BYTES, _MIN_MAX_BYTES),
            _int_env("LLMBDO_AUDIT_KEEP", DEFAULT_KEEP, 0))
