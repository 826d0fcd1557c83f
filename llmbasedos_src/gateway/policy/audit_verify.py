"""`verify`: walk every kept file of the audit log in chain order and report the first entry that is not what
the gateway wrote (see audit_files for the files and the line format)."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from llmbasedos.gateway.policy.audit_files import CONTINUED_EVENT, GENESIS, TRUNCATED_EVENT, chain_files, split_mac

__all__ = ["VerifyResult", "verify"]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int  # entries verified before the first fault (all of them when ok)
    line: int | None = None  # 1-based line of the first broken entry, in `file`
    seq: int | None = None
    reason: str | None = None
    file: str | None = None  # the file holding the first broken entry
    files: int = 0  # files walked

    def describe(self) -> str:
        if self.ok:
            files = f" in {self.files} files" if self.files > 1 else ""
            return f"OK: {self.entries} entries{files}, chain intact"
        seq = f" (entry {self.seq})" if self.seq is not None else ""
        where = f" of {Path(self.file).name}" if self.file else ""
        return f"BROKEN at line {self.line}{where}{seq}: {self.reason}"


def _lines(files: list[Path]) -> Iterator[tuple[Path, int, bytes]]:
    for path in files:
        try:
            with open(path, "rb") as fh:
                for lineno, raw in enumerate(fh, 1):
                    yield path, lineno, raw
        except FileNotFoundError:  # dropped by a rotation since it was listed: the chain break says so
            continue


def verify(path: Path, key: bytes, checkpoint: tuple[int, str] | None = None) -> VerifyResult:
    """Check the whole chain of the log at `path`, its renamed files included; a missing log is an empty one.

    It may run while the gateway writes: when the files changed under it (a rotation) and it found a fault, it
    checks the new set once more before reporting."""
    files = chain_files(path)
    result = _verify_files(path, files, key, checkpoint)
    if not result.ok:
        again = chain_files(path)
        if again != files:
            result = _verify_files(path, again, key, checkpoint)
    return result


def _verify_files(path: Path, files: list[Path], key: bytes, checkpoint: tuple[int, str] | None) -> VerifyResult:
    prev: str | None = None  # None until the first entry, which anchors the chain
    last_seq = 0
    count = 0
    checkpoint_mac: str | None = None
    checkpoint_at: tuple[Path, int] | None = None
    last_at: tuple[Path, int] = (path, 0)
    for file, lineno, raw in _lines(files):

        def broken(reason: str, seq: int | None = None, file: Path = file, lineno: int = lineno,
                   count: int = count) -> VerifyResult:
            return VerifyResult(False, count, lineno, seq, reason, str(file), len(files))

        if not raw.endswith(b"\n"):
            return broken("incomplete last line (cut while being written, or edited)")
        if not raw.strip():
            return broken("empty line: not an entry (inserted, or an entry was blanked)")
        signed = split_mac(raw)
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return broken("not valid JSON: the line was edited")
        if not isinstance(entry, dict):
            return broken("not a JSON object: the line was edited")
        seq = entry.get("seq")
        seq_shown = seq if isinstance(seq, int) else None
        if signed is None:
            if isinstance(entry.get("mac"), str):
                return broken("MAC mismatch: the line is not in the form the gateway writes (edited or forged)",
                              seq_shown)
            return broken("no MAC: the line was edited or inserted", seq_shown)
        body, mac = signed
        # Over the bytes as written: a parsed and re-serialised entry would hide a duplicated key.
        if not hmac.compare_digest(mac, hmac.digest(key, body, "sha256").hex()):
            return broken("MAC mismatch: the entry was edited or forged (or the key is not this log's)", seq_shown)
        if prev is None:
            if entry.get("event") == CONTINUED_EVENT and isinstance(seq, int):
                prev, last_seq = str(entry.get("prev")), seq - 1  # older files were dropped by rotation
            elif seq == 1:
                prev = GENESIS
            else:
                return broken(f"the log starts at entry {seq} with no continuation record: its beginning was "
                              "deleted", seq_shown)
        expected = last_seq + 1
        if seq != expected:
            return broken(
                f"sequence number {seq} where {expected} was expected: entries were deleted, inserted or moved",
                seq_shown,
            )
        if entry.get("prev") != prev:
            return broken("does not chain to the previous entry: entries or files were reordered or removed",
                          seq_shown)
        if entry.get("event") == TRUNCATED_EVENT:
            return broken(
                f"the gateway found the log cut when it started: entries {entry.get('found_seq', 0) + 1} to "
                f"{entry.get('expected_seq')} were missing",
                seq_shown,
            )
        if checkpoint is not None and seq == checkpoint[0]:
            checkpoint_mac, checkpoint_at = mac, (file, lineno)
        prev, last_seq, last_at = mac, expected, (file, lineno)
        count += 1
    if checkpoint is not None:
        if last_seq < checkpoint[0]:
            return VerifyResult(
                False, count, last_at[1] + 1, last_seq + 1,
                f"the log ends at entry {last_seq} but entry {checkpoint[0]} was written: its tail was cut",
                str(last_at[0]), len(files),
            )
        if checkpoint_mac is not None and checkpoint_at is not None and not hmac.compare_digest(
                checkpoint_mac, checkpoint[1]):
            return VerifyResult(
                False, count, checkpoint_at[1], checkpoint[0],
                "entry differs from the one the gateway recorded: the log was replaced", str(checkpoint_at[0]),
                len(files),
            )
    return VerifyResult(True, count, files=len(files))
