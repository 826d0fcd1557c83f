"""The audit log: one JSON object per line, each chained to the previous one by HMAC-SHA256.

The log is `<log_dir>/audit.jsonl`; the key is `<data_dir>/audit.key` (32 random bytes in hex, mode 0600,
created on first start). An entry looks like

    {"event":"call","client":"c_1a2b","name":"laptop","method":"mcp.fs.read","outcome":"ok",
     "duration_ms":1.2,"seq":42,"ts":"2026-11-22T02:53:35.123Z","prev":"<mac of entry 41>","mac":"<hex>"}

where `mac` = HMAC-SHA256(key, compact JSON of the entry without `mac`, keys sorted). The first entry's `prev`
is 64 zeros. Editing an entry breaks its MAC; deleting, inserting or moving one breaks the sequence numbers or
the chain. Cutting the tail leaves a valid chain, so the last sequence number and MAC are also kept in the
gateway database (`audit_state`, written every half second and at close): the log must reach them. A gateway
that starts on a log shorter than that record writes an `audit.truncated` entry, which verification reports.

Entries are sealed (numbered, timed, chained, MACed) in batches of up to 64 and written in batches, whole
lines only: at the latest 0.1 s after they are made (the policy's flusher, in its own thread: the file is
written outside the lock that calls take to queue their entries), once 1 MiB is waiting, and at close.

Entries carry ids, names, methods, outcomes, reasons and durations only: never tokens, keys, passwords,
file contents or prompts. Callers pass only such fields; strings are cut to a few hundred characters.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .tokens import connect, write_secret_file

__all__ = [
    "AuditLog",
    "GENESIS",
    "TRUNCATED_EVENT",
    "VerifyResult",
    "load_key",
    "load_or_create_key",
    "read_checkpoint",
    "read_tail",
    "verify",
]

log = logging.getLogger("llmbasedos.gateway.audit")

GENESIS = "0" * 64
TRUNCATED_EVENT = "audit.truncated"
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


def _mac(key: bytes, entry: dict[str, Any]) -> str:
    return hmac.digest(key, orjson.dumps(entry, option=orjson.OPT_SORT_KEYS), "sha256").hex()


def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after the HMAC inner and outer padded keys (RFC 2104), to be copied per entry: the
    same MAC as `hmac` computes, at half the cost of copying an `hmac` object (its wrapper is Python)."""
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key)))


def read_checkpoint(db_path: Path) -> tuple[int, str] | None:
    """The last (seq, mac) the gateway recorded, or None (no database or nothing recorded yet)."""
    if not db_path.exists():
        return None
    try:
        conn = sqlite3.connect(db_path, timeout=10.0)
        try:
            row = conn.execute("SELECT seq, mac FROM audit_state WHERE id = 1").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # no such table: the gateway never wrote a checkpoint
        return None
    return (int(row[0]), str(row[1])) if row else None


def read_tail(path: Path, limit: int, keep: Callable[[dict[str, Any]], bool] | None = None,
              max_bytes: int = 1 << 20) -> list[dict[str, Any]]:
    """The newest `limit` entries that `keep` accepts, newest first, without their chain fields.

    Read-only, for display (the status page): it reads backwards at most `max_bytes` of the log, skips lines
    that do not parse, and checks no MAC (that is `verify`'s job). A missing log has no entries.
    """
    out: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            start = max(0, end - max_bytes)
            fh.seek(start)
            data = fh.read(end - start)
    except FileNotFoundError:
        return out
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


class AuditLog:
    """Appends chained entries. Thread-safe; one writer process per log (the gateway)."""

    def __init__(self, path: Path, key: bytes, db_path: Path | None = None) -> None:
        self.path = path
        self._pads = _hmac_pads(key)
        self._lock = threading.Lock()  # the chain: what is queued, sealed and pending
        # The file, taken before `_lock` when both are: a write to disk never holds up the calls that queue
        # entries meanwhile, and writes reach the file in chain order.
        self._file_lock = threading.Lock()
        self._seq, self._prev, needs_newline = self._resume(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._fh = os.fdopen(fd, "ab", buffering=0)
        if needs_newline:  # a crash cut the last line: keep it (verify reports it) and start a fresh one
            self._fh.write(b"\n")
        # Lines wait here until flush() (every 0.1 s from the policy) or until a batch is full: one write
        # per batch instead of one per call, and the file only ever receives whole lines.
        # In chain order: (entry, time), or for a call (client, name, method, outcome, duration_ms, time).
        self._unsealed: list[tuple[Any, ...]] = []
        self._call_parts: dict[tuple[str, str, str, str], tuple[bytes, bytes]] = {}
        self._pending = bytearray()  # sealed lines
        self._written = (self._seq, self._prev)
        self._second = -1
        self._second_text = ""
        self._ms = -1
        self._ms_text = ""
        self._conn: sqlite3.Connection | None = None
        self._saved: tuple[int, str] | None = None
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
    def _resume(path: Path) -> tuple[int, str, bool]:
        """(last seq, last mac, whether the file ends mid-line) of an existing log."""
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - _TAIL_READ))
                tail = fh.read()
        except FileNotFoundError:
            return 0, GENESIS, False
        needs_newline = bool(tail) and not tail.endswith(b"\n")
        for raw in reversed(tail.splitlines()):
            try:
                entry = orjson.loads(raw)
                return int(entry["seq"]), str(entry["mac"]), needs_newline
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        return 0, GENESIS, needs_newline

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
        for item in unsealed:
            seq += 1
            stamp = self._timestamp(item[-1])
            if stamp is not ts:  # the same object all through a millisecond
                ts, ts_bytes = stamp, stamp.encode()
            inner = inner_pad.copy()
            if len(item) == 2:  # an entry: completed in place, serialised with its keys sorted
                entry = item[0]
                entry["seq"] = seq
                entry["ts"] = ts
                entry["prev"] = prev
                body = dumps(entry, default=str, option=orjson.OPT_SORT_KEYS)  # never fail a call
                inner.update(body)
                out += memoryview(body)[:-1]
            else:  # a call (write_call): the same bytes, from its pieces
                client, name, method, outcome, duration_ms, _ = item
                head, middle = self._call_pieces(client, name, method, outcome)
                line = b"".join((head, dumps(duration_ms), middle, prev_bytes, b'","seq":', b"%d" % seq,
                                 b',"ts":"', ts_bytes, b'"'))
                inner.update(line)
                inner.update(b"}")
                out += line
            outer = outer_pad.copy()
            outer.update(inner.digest())
            prev = outer.hexdigest()
            prev_bytes = prev.encode()
            out += b',"mac":"'
            out += prev_bytes
            out += b'"}\n'
        self._seq, self._prev = seq, prev

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
            state = (self._seq, self._prev)
        if not data:
            return
        try:
            self._fh.write(data)
        except (OSError, ValueError):
            # The entries are lost; the gap in the chain is what `audit verify` will report.
            log.exception("cannot append to the audit log")
            return
        self._written = state

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


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int  # entries verified before the first fault (all of them when ok)
    line: int | None = None  # 1-based line of the first broken entry
    seq: int | None = None
    reason: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"OK: {self.entries} entries, chain intact"
        seq = f" (entry {self.seq})" if self.seq is not None else ""
        return f"BROKEN at line {self.line}{seq}: {self.reason}"


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from fh


def verify(path: Path, key: bytes, checkpoint: tuple[int, str] | None = None) -> VerifyResult:
    """Check the whole chain; report the first broken entry. A missing log is an empty one."""
    prev = GENESIS
    count = 0
    checkpoint_mac: str | None = None
    lines = _lines(path) if path.exists() else iter(())
    for lineno, raw in enumerate(lines, 1):

        def broken(reason: str, seq: int | None = None, lineno: int = lineno, count: int = count) -> VerifyResult:
            return VerifyResult(False, count, lineno, seq, reason)

        if not raw.endswith(b"\n"):
            return broken("incomplete last line (cut while being written, or edited)")
        if not raw.strip():
            return broken("empty line: not an entry (inserted, or an entry was blanked)")
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return broken("not valid JSON: the line was edited")
        if not isinstance(entry, dict):
            return broken("not a JSON object: the line was edited")
        mac = entry.pop("mac", None)
        seq = entry.get("seq")
        seq_shown = seq if isinstance(seq, int) else None
        if not isinstance(mac, str):
            return broken("no MAC: the line was edited or inserted", seq_shown)
        if not hmac.compare_digest(mac, _mac(key, entry)):
            return broken("MAC mismatch: the entry was edited or forged (or the key is not this log's)", seq_shown)
        expected = count + 1
        if seq != expected:
            return broken(
                f"sequence number {seq} where {expected} was expected: entries were deleted, inserted or moved",
                seq_shown,
            )
        if entry.get("prev") != prev:
            return broken("does not chain to the previous entry: entries were reordered or removed", seq_shown)
        if entry.get("event") == TRUNCATED_EVENT:
            return broken(
                f"the gateway found the log cut when it started: entries {entry.get('found_seq', 0) + 1} to "
                f"{entry.get('expected_seq')} were missing",
                seq_shown,
            )
        if checkpoint is not None and seq == checkpoint[0]:
            checkpoint_mac = mac
        prev = mac
        count += 1
    if checkpoint is not None:
        if count < checkpoint[0]:
            return VerifyResult(
                False, count, count + 1, count + 1,
                f"the log ends at entry {count} but entry {checkpoint[0]} was written: its tail was cut",
            )
        if checkpoint_mac is not None and not hmac.compare_digest(checkpoint_mac, checkpoint[1]):
            return VerifyResult(
                False, count, checkpoint[0], checkpoint[0],
                "entry differs from the one the gateway recorded: the log was replaced",
            )
    return VerifyResult(True, count)
