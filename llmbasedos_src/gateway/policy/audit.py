"""The audit log: one JSON object per line, each chained to the previous one by HMAC-SHA256.

The log is `<log_dir>/audit.jsonl`; the key is `<data_dir>/audit.key` (32 random bytes in hex, mode 0600,
created on first start). An entry looks like

    {"event":"call","client":"c_1a2b","name":"laptop","method":"mcp.fs.read","outcome":"ok",
     "duration_ms":1.2,"seq":42,"ts":"2026-11-22T02:53:35.123Z","prev":"<mac of entry 41>","mac":"<hex>"}

where `mac` = HMAC-SHA256(key, the line's bytes without its `mac` member: the entry's compact JSON, keys
sorted, as written). The first entry's `prev` is 64 zeros. Editing an entry breaks its MAC; deleting,
inserting or moving one breaks the sequence numbers or the chain. Cutting the tail leaves a valid chain, so
the last sequence number and MAC are also kept in the gateway database (`audit_state`, written every half
second and at close): the log must reach them. A gateway that starts on a log shorter than that record writes
an `audit.truncated` entry, which verification reports.

Entries are sealed (numbered, timed, chained, MACed) in batches of up to 64 and written in batches, whole
lines only: at the latest 0.1 s after they are made (the policy's flusher, in its own thread: the file is
written outside the lock that calls take to queue their entries), once 1 MiB is waiting, and at close.

The log rotates by size, the chain going on across files, and `verify` walks every kept file: see
audit_files.py for the file names, the line format and the settings (LLMBDO_AUDIT_MAX_BYTES, LLMBDO_AUDIT_KEEP).

Entries carry ids, names, methods, outcomes, reasons and durations only: never tokens, keys, passwords,
file contents or prompts. Callers pass only such fields; strings are cut to a few hundred characters.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from llmbasedos.gateway.policy.audit_files import (
    CONTINUED_EVENT,
    DEFAULT_KEEP,
    DEFAULT_MAX_BYTES,
    GENESIS,
    MAC_HEAD,
    TRUNCATED_EVENT,
    chain_files,
    rotated_files,
    rotated_name,
)
from llmbasedos.gateway.policy.audit_verify import VerifyResult, verify
from llmbasedos.gateway.policy.tokens import connect, write_secret_file

__all__ = [
    "AuditLog",
    "CONTINUED_EVENT",
    "GENESIS",
    "TRUNCATED_EVENT",
    "VerifyResult",
    "load_key",
    "load_or_create_key",
    "read_checkpoint",
    "read_tail",
    "verify",
]

log = logging.getLogger("llmbasedos.gateway.policy.audit")

_MAX_STR = 300
_TAIL_READ = 1 << 16
_BATCH_BYTES = 1 << 20  # sealed lines the log holds before a writer flushes them without waiting for the flusher
_SEAL_BATCH = 64
_SHA256_BLOCK = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    mac TEXT NOT NULL
);
"""


def load_key(path: Path) -> bytes:
    """The audit key; raises ValueError when the file is malformed, OSError when unreadable."""
    text = path.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError("the audit key file is not hex") from None
    if len(key) < 32:
        raise ValueError("the audit key is shorter than 32 bytes")
    return key


def load_or_create_key(path: Path) -> bytes:
    try:
        return load_key(path)
    except FileNotFoundError:
        pass
    with contextlib.suppress(FileExistsError):  # another process won the race: use its key
        write_secret_file(path, secrets.token_hex(32) + "\n")
    return load_key(path)


def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after the HMAC inner and outer padded keys (RFC 2104), to be copied per entry: the
    same MAC as `hmac` computes, at half the cost of copying an `hmac` object (its wrapper is Python)."""
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key)))


def read_checkpoint(db_path: Path) -> tuple[int, str] | None:
    """The last (seq, mac) the gateway recorded, or None (no database or nothing recorded yet).

    Raises StoreCorrupt (see tokens.connect) when the database is not a usable SQLite file."""
    if not db_path.exists():
        return None
    conn = connect(db_path)
    try:
        row = conn.execute("SELECT seq, mac FROM audit_state WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # no such table: the gateway never wrote a checkpoint
        return None
    finally:
        conn.close()
    return (int(row[0]), str(row[1])) if row else None


def read_tail(path: Path, limit: int, keep: Callable[[dict[str, Any]], bool] | None = None,
              max_bytes: int = 1 << 20) -> list[dict[str, Any]]:
    """The newest `limit` entries that `keep` accepts, newest first, without their chain fields.

    Read-only, for display (the status page): it reads backwards at most `max_bytes` of the log (into the
    renamed files when the live one has too few), skips lines that do not parse, and checks no MAC (that is
    `verify`'s job). A missing log has no entries.
    """
    out: list[dict[str, Any]] = []
    budget = max_bytes
    for file in reversed(chain_files(path)):
        if len(out) >= limit or budget <= 0:
            break
        try:
            with open(file, "rb") as fh:
                end = fh.seek(0, os.SEEK_END)
                start = max(0, end - budget)
                fh.seek(start)
                data = fh.read(end - start)
        except FileNotFoundError:  # renamed or dropped meanwhile
            continue
        budget -= len(data)
        lines = data.split(b"\n")
        if start > 0:
            lines = lines[1:]  # the first line read is probably cut
        for raw in reversed(lines):
            if len(out) >= limit:
                break
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(entry, dict) or (keep is not None and not keep(entry)):
                continue
            entry.pop("mac", None)
            entry.pop("prev", None)
            out.append(entry)
    return out


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _MAX_STR:
        return value[:_MAX_STR] + "…"
    if isinstance(value, float):
        return round(value, 3)
    return value


@dataclass(frozen=True)
class _Resumed:
    """Where an existing log left off."""

    seq: int
    mac: str
    needs_newline: bool  # the live file ends mid-line
    live_first: int | None  # seq of the live file's first entry (None: no entry in it)
    live_size: int
    previous_file: str | None  # the newest renamed file, when there is one


def _tail_entry(path: Path) -> tuple[tuple[int, str] | None, bool, int]:
    """((seq, mac) of the last entry, whether the file ends mid-line, size) of one file of the log."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _TAIL_READ))
            tail = fh.read()
    except FileNotFoundError:
        return None, False, 0
    needs_newline = bool(tail) and not tail.endswith(b"\n")
    for raw in reversed(tail.splitlines()):
        try:
            entry = orjson.loads(raw)
            return (int(entry["seq"]), str(entry["mac"])), needs_newline, size
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return None, needs_newline, size


def _first_seq(path: Path) -> int | None:
    try:
        with open(path, "rb") as fh:
            entry = orjson.loads(fh.readline(_TAIL_READ))
        return int(entry["seq"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class AuditLog:
    """Appends chained entries. Thread-safe; one writer process per log (the gateway)."""

    def __init__(self, path: Path, key: bytes, db_path: Path | None = None, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        self.path = path
        self._pads = _hmac_pads(key)
        self._max_bytes = max_bytes
        self._keep = keep
        self._lock = threading.Lock()  # the chain: what is queued, sealed and pending
        # The file, taken before `_lock` when both are: a write to disk never holds up the calls that queue
        # entries meanwhile, and writes reach the file in chain order.
        self._file_lock = threading.Lock()
        resumed = self._resume(path)
        self._seq, self._prev = resumed.seq, resumed.mac
        self._live_first = resumed.live_first or self._seq + 1
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._fh = os.fdopen(fd, "ab", buffering=0)
        # The live file's size is `_live_base + len(_pending)`: one addition per entry tells when to rotate.
        self._live_base = resumed.live_size
        if resumed.needs_newline:  # a crash cut the last line: keep it (verify reports it) and start a fresh one
            self._fh.write(b"\n")
            self._live_base += 1
        # Lines wait here until flush() (every 0.1 s from the policy) or until a batch is full: one write
        # per batch instead of one per call, and the file only ever receives whole lines.
        # In chain order: (entry, time), or for a call (client, name, method, outcome, duration_ms, time).
        self._unsealed: list[tuple[Any, ...]] = []
        self._call_parts: dict[tuple[str, str, str, str], tuple[bytes, bytes]] = {}
        self._pending = bytearray()  # sealed lines
        # Where a new file starts in `_pending`: (offset, first seq of the file that ends there).
        self._cuts: list[tuple[int, int]] = []
        self._written = (self._seq, self._prev)
        self._second = -1
        self._second_text = ""
        self._ms = -1
        self._ms_text = ""
        self._conn: sqlite3.Connection | None = None
        self._saved: tuple[int, str] | None = None
        if resumed.live_first is None and self._seq > 0:
            # A fresh live file in the middle of the chain (a crash between a rename and the first write):
            # it starts like any rotated file, so it can anchor `verify` once the files before it are gone.
            self.append(CONTINUED_EVENT, previous_file=resumed.previous_file)
        if db_path is not None:
            self._conn = connect(db_path)
            self._conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
            row = self._conn.execute("SELECT seq, mac FROM audit_state WHERE id = 1").fetchone()
            if row is not None:
                self._saved = (int(row[0]), str(row[1]))
                if self._seq < self._saved[0]:
                    log.error("audit log %s ends at entry %d but entry %d was written: it was cut",
                              path.name, self._seq, self._saved[0])
                    self.append(TRUNCATED_EVENT, expected_seq=self._saved[0], found_seq=self._seq)
            self.checkpoint()

    @staticmethod
    def _resume(path: Path) -> _Resumed:
        last, needs_newline, size = _tail_entry(path)
        rotated = rotated_files(path)
        previous = rotated[-1][1] if rotated else None
        live_first = _first_seq(path) if last is not None else None
        if last is None and previous is not None:  # the chain ends in the newest renamed file
            last = _tail_entry(previous)[0]
        seq, mac = last if last is not None else (0, GENESIS)
        return _Resumed(seq, mac, needs_newline, live_first, size, previous.name if previous else None)

    def _timestamp(self, now: float) -> str:
        ms = int(now * 1000)
        if ms != self._ms:  # entries come many to a millisecond under load
            second = ms // 1000
            if second != self._second:
                self._second = second
                self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._ms = ms
            self._ms_text = f"{self._second_text}.{ms % 1000:03d}Z"
        return self._ms_text

    def append(self, event: str, **fields: Any) -> None:
        """Write one entry. Fields that are None are left out; long strings are cut."""
        entry = {k: _clip(v) for k, v in fields.items() if v is not None}
        entry["event"] = event
        self.write(entry)

    def write(self, entry: dict[str, Any]) -> None:
        """Write one entry made of short, JSON-ready values (the per-call path: no copying, no clipping).

        The entry takes its place in the chain now; it is sealed (completed in place with seq, ts and prev,
        serialised and MACed) in a batch with the others, before any of them reaches the file.
        """
        self._queue((entry, time.time()))

    def write_call(self, client: str, name: str, method: str, outcome: str, duration_ms: float) -> None:
        """Write the entry of an admitted call that ended: {"event": "call", "decision": "allowed", "client",
        "name", "method", "outcome", "duration_ms"}, short strings only. The entry every call makes, so no dict
        is built for it: its line is put together from pieces kept per client, method and outcome, to the very
        bytes `write` would give (what `verify` recomputes)."""
        self._queue((client, name, method, outcome, duration_ms, time.time()))

    def _queue(self, item: tuple[Any, ...]) -> None:
        with self._lock:
            self._unsealed.append(item)
            if len(self._unsealed) < _SEAL_BATCH:
                return
            self._seal()
            if len(self._pending) < _BATCH_BYTES:
                return
        self.flush()  # the flusher is behind: do not let memory grow

    def _call_pieces(self, client: str, name: str, method: str, outcome: str) -> tuple[bytes, bytes]:
        """What comes before the duration, and between it and `prev`, in a call entry's sorted JSON."""
        key = (client, name, method, outcome)
        pieces = self._call_parts.get(key)
        if pieces is None:
            if len(self._call_parts) > 4096:  # method names come from clients: bound the cache
                self._call_parts.clear()
            dumps = orjson.dumps
            pieces = self._call_parts[key] = (
                b'{"client":' + dumps(client) + b',"decision":"allowed","duration_ms":',
                b',"event":"call","method":' + dumps(method) + b',"name":' + dumps(name) + b',"outcome":'
                + dumps(outcome) + b',"prev":"',
            )
        return pieces

    def _seal(self) -> None:
        # One tight loop per batch costs far less per entry than the same work spread over the calls. The
        # lines go straight into one buffer: a bytes object kept per line cost as much as the MAC.
        unsealed, self._unsealed = self._unsealed, []
        seq, prev = self._seq, self._prev
        prev_bytes = prev.encode()
        inner_pad, outer_pad = self._pads
        out = self._pending
        dumps = orjson.dumps
        ts, ts_bytes = "", b""
        mac_head = MAC_HEAD
        room = self._max_bytes - self._live_base  # bytes `_pending` may reach before the live file is full
        for item in unsealed:
            if len(out) >= room or len(item) == 2:
                self._seq, self._prev = seq, prev
                if len(out) >= room:
                    room = self._max_bytes - self._cut(out)
                if len(item) == 2:  # an entry: completed in place, serialised with its keys sorted
                    self._seal_entry(out, item[0], item[1])
                seq, prev = self._seq, self._prev
                prev_bytes = prev.encode()
                if len(item) == 2:
                    continue
            # A call (write_call): the bytes `_seal_entry` would give, from its pieces.
            seq += 1
            stamp = self._timestamp(item[-1])
            if stamp is not ts:  # the same object all through a millisecond
                ts, ts_bytes = stamp, stamp.encode()
            client, name, method, outcome, duration_ms, _ = item
            head, middle = self._call_pieces(client, name, method, outcome)
            line = b"".join((head, dumps(duration_ms), middle, prev_bytes, b'","seq":', b"%d" % seq,
                             b',"ts":"', ts_bytes, b'"'))
            inner = inner_pad.copy()
            inner.update(line)
            inner.update(b"}")
            out += line
            outer = outer_pad.copy()
            outer.update(inner.digest())
            prev = outer.hexdigest()
            prev_bytes = prev.encode()
            out += mac_head
            out += prev_bytes
            out += b'"}\n'
        self._seq, self._prev = seq, prev
        self._live_base = self._max_bytes - room

    def _seal_entry(self, out: bytearray, entry: dict[str, Any], now: float) -> None:
        """Complete an entry in place with seq, ts and prev, and append its line to `out`."""
        seq, prev = self._seq + 1, self._prev
        entry["seq"] = seq
        entry["ts"] = self._timestamp(now)
        entry["prev"] = prev
        body = orjson.dumps(entry, default=str, option=orjson.OPT_SORT_KEYS)  # never fail a call
        inner = self._pads[0].copy()
        inner.update(body)
        outer = self._pads[1].copy()
        outer.update(inner.digest())
        mac = outer.hexdigest()
        out += memoryview(body)[:-1]
        out += MAC_HEAD
        out += mac.encode()
        out += b'"}\n'
        self._seq, self._prev = seq, mac

    def _cut(self, out: bytearray) -> int:
        """End the live file here: the entries after go to a new file, which starts with a continuation entry
        chained to the last one of this file. Returns the new `_live_base`."""
        offset = len(out)
        self._cuts.append((offset, self._live_first))
        previous = rotated_name(self.path, self._live_first).name
        self._live_first = self._seq + 1
        self._seal_entry(out, {"event": CONTINUED_EVENT, "previous_file": previous}, time.time())
        return -offset

    def flush(self) -> None:
        """Write the pending entries to the file."""
        with self._file_lock:
            self._flush_file()

    def _flush_file(self) -> None:
        # With _file_lock held.
        with self._lock:
            if self._unsealed:
                self._seal()
            data, self._pending = self._pending, bytearray()
            cuts, self._cuts = self._cuts, []
            self._live_base += len(data)
            state = (self._seq, self._prev)
        if not data:
            return
        try:
            start = 0
            for offset, first in cuts:
                self._fh.write(data[start:offset])
                start = offset
                self._rotate(first)
            self._fh.write(data[start:])
        except (OSError, ValueError):
            # The entries are lost; the gap in the chain is what `audit verify` will report.
            log.exception("cannot append to the audit log")
            return
        self._written = state

    def _rotate(self, first: int) -> None:
        """Rename the live file (whose first entry is `first`), start a new one, drop the oldest beyond `keep`."""
        self._fh.close()
        try:
            os.rename(self.path, rotated_name(self.path, first))
        except OSError:
            log.exception("cannot rename the audit log %s: it goes on in the same file", self.path.name)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._fh = os.fdopen(fd, "ab", buffering=0)
        rotated = rotated_files(self.path)
        for _, old in rotated[:max(0, len(rotated) - self._keep)]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()

    @property
    def last(self) -> tuple[int, str]:
        """The seq and mac of the last entry written to the file."""
        with self._file_lock:
            return self._written

    def checkpoint(self) -> None:
        """Record the last seq and mac in the database (detects a cut tail)."""
        if self._conn is None:
            return
        self.flush()
        state = self.last
        if state == self._saved:
            return
        self._conn.execute(
            "INSERT INTO audit_state (id, seq, mac) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac",
            state,
        )
        self._saved = state

    def close(self) -> None:
        with self._file_lock:
            self._flush_file()
            self._fh.close()
        if self._conn is not None:
            try:
                self.checkpoint()
            finally:
                self._conn.close()
                self._conn = None


