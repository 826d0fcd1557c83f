"""The HMAC-chained audit log: appends, resumption, and detection of every kind of tampering."""

from __future__ import annotations

import hmac
import json
import os
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from llmbasedos.gateway.policy.audit import AuditLog, load_or_create_key, read_checkpoint, read_tail, verify
from llmbasedos.gateway.policy.audit_files import rotation_from_env


@pytest.fixture
def tmp() -> Path:
    return Path(tempfile.mkdtemp(dir="/tmp"))


@pytest.fixture
def key(tmp: Path) -> bytes:
    return load_or_create_key(tmp / "audit.key")


def fill(tmp: Path, key: bytes, n: int = 6) -> Path:
    log = AuditLog(tmp / "audit.jsonl", key, tmp / "gateway.db")
    for i in range(n):
        log.append("call", client=f"c_{i}", name="laptop", method="mcp.fs.read", outcome="ok", duration_ms=1.5)
    log.close()
    return tmp / "audit.jsonl"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def check(tmp: Path, key: bytes) -> tuple[bool, int | None, str]:
    result = verify(tmp / "audit.jsonl", key, read_checkpoint(tmp / "gateway.db"))
    return result.ok, result.line, result.reason or ""


def test_key_file_is_private_and_stable(tmp: Path, key: bytes) -> None:
    assert len(key) == 32
    assert stat.S_IMODE((tmp / "audit.key").stat().st_mode) == 0o600
    assert load_or_create_key(tmp / "audit.key") == key


def test_intact_log_verifies(tmp: Path, key: bytes) -> None:
    path = fill(tmp, key)
    entries = [json.loads(line) for line in lines(path)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0]["prev"] == "0" * 64 and entries[1]["prev"] == entries[0]["mac"]
    assert entries[2]["method"] == "mcp.fs.read" and entries[2]["ts"].endswith("Z")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    result = verify(path, key, read_checkpoint(tmp / "gateway.db"))
    assert result.ok and result.entries == 6 and "OK" in result.describe()


@pytest.mark.parametrize("key_len", [32, 64, 65, 100])
def test_macs_match_the_standard_hmac_for_any_key_length_over_many_batches(tmp: Path, key_len: int) -> None:
    """Entries are MACed in batches from precomputed pads: what `verify` (the standard hmac module) expects."""
    key = os.urandom(key_len)
    log = AuditLog(tmp / "audit.jsonl", key, tmp / "gateway.db")
    for i in range(300):  # several sealing batches, and a flush in the middle of one
        log.append("call", client=f"c_{i % 7}", method="mcp.fs.stat", outcome="ok", duration_ms=i / 7)
        if i == 100:
            log.flush()
    log.close()
    result = verify(tmp / "audit.jsonl", key, read_checkpoint(tmp / "gateway.db"))
    assert result.ok and result.entries == 300, result.describe()
    assert not verify(tmp / "audit.jsonl", os.urandom(key_len)).ok


NAMES = ["laptop", 'quote " and \\ backslash', "tab\tnew\nline\x01", "é日本\u2028", "x" * 300]


def test_call_entries_are_the_bytes_a_dict_entry_would_be(tmp: Path, key: bytes) -> None:
    """write_call puts a call's line together from pieces: each one is exactly the sorted JSON `verify` recomputes,
    for awkward strings and durations, interleaved with ordinary entries, across sealing batches."""
    log = AuditLog(tmp / "audit.jsonl", key, tmp / "gateway.db")
    durations = [0.0, 0.001, 1.5, 12345.678, 1e-3, 7.0, 1e17]
    for i in range(200):
        name = NAMES[i % len(NAMES)]
        log.write_call(f"c_{i % 3}", name, f"mcp.{name}", ["ok", "error", "timeout"][i % 3], durations[i % 7])
        if i % 17 == 0:
            log.append("auth", outcome="denied", reason="no token", remote=name)
    log.close()
    assert verify(tmp / "audit.jsonl", key, read_checkpoint(tmp / "gateway.db")).ok
    entries = [json.loads(line) for line in (tmp / "audit.jsonl").read_bytes().splitlines()]  # not at U+2028
    calls = [e for e in entries if e["event"] == "call"]
    assert len(calls) == 200 and len(entries) == 200 + 12
    for i, entry in enumerate(calls):
        mac = entry.pop("mac")
        assert set(entry) == {"event", "decision", "client", "name", "method", "outcome", "duration_ms", "seq",
                              "ts", "prev"}
        assert entry["name"] == NAMES[i % len(NAMES)] and entry["method"] == f"mcp.{NAMES[i % len(NAMES)]}"
        assert entry["duration_ms"] == durations[i % 7] and entry["decision"] == "allowed"
        body = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert mac == hmac.new(key, body, "sha256").hexdigest()


def test_writers_and_a_flusher_at_once_keep_one_whole_chain(tmp: Path, key: bytes) -> None:
    """The file is written outside the lock that entries are queued under: with threads queueing and another
    flushing all the while, every entry still reaches the file once, whole, in chain order."""
    log = AuditLog(tmp / "audit.jsonl", key, tmp / "gateway.db")
    done = threading.Event()

    def flusher() -> None:
        while not done.is_set():
            log.flush()
            log.checkpoint()

    def writer(n: int) -> None:
        for i in range(3000):
            log.write_call(f"c_{n}", "laptop", "mcp.fs.stat", "ok", i / 1000)

    flushing = threading.Thread(target=flusher)
    flushing.start()
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    flushing.join()
    log.close()
    result = verify(tmp / "audit.jsonl", key, read_checkpoint(tmp / "gateway.db"))
    assert result.ok and result.entries == 12000, result.describe()
    per_writer = [[json.loads(line)["duration_ms"] for line in lines(tmp / "audit.jsonl")
                   if json.loads(line)["client"] == f"c_{n}"] for n in range(4)]
    assert all(durations == [i / 1000 for i in range(3000)] for durations in per_writer)


def test_reopening_continues_the_chain(tmp: Path, key: bytes) -> None:
    fill(tmp, key, 3)
    fill(tmp, key, 3)
    assert check(tmp, key) == (True, None, "")
    assert read_checkpoint(tmp / "gateway.db") == (6, json.loads(lines(tmp / "audit.jsonl")[-1])["mac"])


def test_edit_is_detected(tmp: Path, key: bytes) -> None:
    path = fill(tmp, key)
    content = lines(path)
    content[3] = content[3].replace('"outcome":"ok"', '"outcome":"denied"')
    path.write_text("".join(content))
    ok, line, reason = check(tmp, key)
    assert (ok, line) == (False, 4) and "MAC mismatch" in reason


def test_deletion_is_detected(tmp: Path, key: bytes) -> None:
    path = fill(tmp, key)
    content = lines(path)
    del content[2]
    path.write_text("".join(content))
    ok, line, reason = check(tmp, key)
    assert (ok, line) == (False, 3) and "sequence number 4 where 3 was expected" in reason


def test_deleting_the_first_entry_is_detected(tmp: Path, key: bytes) -> None:
    path = fill(tmp, key)
    path.write_text("".join(lines(path)[1:]))
    assert check(tmp, key)[:2] == (False, 1)


def test_insertion_is_detected(tmp: Path, key: bytes) -> None:
    path = fill(tmp, key)
    content = lines(path)
    content.insert(2, content[1])  # a replayed, genuine entry
    path.write_text("".join(content))
    assert check(tmp, key)[:2] == (False, 3)
    forged = dict(json.loads(content[1]), seq=3, method="mcp.fs.delete")
    content = lines(fill(Path(tempfile.mkdtemp(dir="/tmp")), key))
    content.insert(2, json.dumps(forged) + "\n")
    path.write_text("".join(content))
    ok, line, reason = check(tmp, key)
    assert (ok, line) == (False, 3) and "MAC mismatch" in reason


def test_reordering_is_detected(tmp: Path, key: bytes) -> None:
    path = fill(tmp, key)
    content = lines(path)
    content[2], content[3] = content[3], content[2]
    path.write_text("".join(content))
    ok, line, reason = check(tmp, key)
    assert (ok, line) == (False, 3) and "deleted, inserted or moved" in reason


def test_tail_truncation_is_detected_with_the_checkpoint(tmp: Path, key: bytes) -> None:
    path = fill(tmp, key)
    path.write_text("".join(lines(path)[:4]))
    ok, line, reason = check(tmp, key)
    assert (ok, line) == (False, 5) and "tail was cut" in reason
    # Without the checkpoint a shorter chain is self-consistent: that is why the gateway records it.
    assert verify(path, key).ok


def test_truncation_while_stopped_is_recorded_at_the_next_start(tmp: Path, key: bytes) -> None:
    path = fill(tmp, key)
    path.write_text("".join(lines(path)[:2]))
    fill(tmp, key, 2)  # the gateway starts again and writes more
    ok, line, reason = check(tmp, key)
    assert (ok, line) == (False, 3) and "entries 3 to 6 were missing" in reason


def test_a_replaced_log_is_detected(tmp: Path, key: bytes) -> None:
    fill(tmp, key)
    other = Path(tempfile.mkdtemp(dir="/tmp"))
    replacement = fill(other, key)  # same key, same length, different content
    (tmp / "audit.jsonl").write_bytes(replacement.read_bytes())
    ok, line, reason = check(tmp, key)
    assert (ok, line) == (False, 6) and "replaced" in reason


def test_wrong_key_and_garbage(tmp: Path, key: bytes) -> None:
    path = fill(tmp, key)
    assert not verify(path, os.urandom(32)).ok
    path.write_text("".join(lines(path)[:2]) + "not json\n")
    ok, line, reason = check(tmp, key)
    assert (ok, line) == (False, 3) and "not valid JSON" in reason
    path.write_text("".join(lines(path)[:2]) + "\n")
    assert check(tmp, key)[:2] == (False, 3)


def test_a_cut_last_line_is_reported_and_appending_goes_on(tmp: Path, key: bytes) -> None:
    path = fill(tmp, key, 3)
    with open(path, "ab") as fh:
        fh.write(b'{"seq": 4, "half')
    assert verify(path, key).line == 4
    fill(tmp, key, 1)
    content = lines(path)
    assert content[3] == '{"seq": 4, "half\n' and json.loads(content[4])["seq"] == 4
    assert verify(path, key).line == 4


def test_long_fields_are_cut_and_none_left_out(tmp: Path, key: bytes) -> None:
    log = AuditLog(tmp / "audit.jsonl", key)
    log.append("authz", method="m" * 5000, reason=None)
    log.close()
    entry = json.loads(lines(tmp / "audit.jsonl")[0])
    assert len(entry["method"]) < 400 and "reason" not in entry
    assert verify(tmp / "audit.jsonl", key).ok


def test_missing_log_is_empty(tmp: Path, key: bytes) -> None:
    result = verify(tmp / "none.jsonl", key)
    assert result.ok and result.entries == 0


def test_odd_values_are_written_as_text(tmp: Path, key: bytes) -> None:
    log = AuditLog(tmp / "audit.jsonl", key)
    log.append("call", method="mcp.fs.read", where=tmp / "x", count=3)
    log.close()
    entry = json.loads(lines(tmp / "audit.jsonl")[0])
    assert entry["where"] == str(tmp / "x") and entry["count"] == 3
    assert verify(tmp / "audit.jsonl", key).ok


def test_a_duplicated_key_that_parsing_would_hide_is_detected(tmp: Path, key: bytes) -> None:
    """The MAC covers the line's bytes: a reader that takes the first of two keys must not be fooled."""
    path = fill(tmp, key)
    content = lines(path)
    assert '"outcome":"ok"' in content[2]
    content[2] = content[2].replace('"client":', '"outcome":"denied","client":', 1)
    assert json.loads(content[2])["outcome"] == "ok"  # the last key wins: the parsed entry is unchanged
    path.write_text("".join(content))
    ok, line, reason = check(tmp, key)
    assert (ok, line) == (False, 3) and "MAC mismatch" in reason


def test_respacing_a_line_is_detected(tmp: Path, key: bytes) -> None:
    path = fill(tmp, key)
    content = lines(path)
    content[1] = content[1].replace('"event":', '"event": ', 1)
    path.write_text("".join(content))
    assert check(tmp, key)[:2] == (False, 2)


def rotating(tmp: Path, key: bytes, n: int, keep: int = 3) -> AuditLog:
    log = AuditLog(tmp / "audit.jsonl", key, tmp / "gateway.db", max_bytes=4096, keep=keep)
    for i in range(n):
        log.append("auth", outcome="denied", reason="unknown token", remote=f"10.0.0.{i % 250}")
        if i % 7 == 0:
            log.write_call(f"c_{i % 3}", "laptop", "mcp.fs.read", "ok", 1.25)
        if i % 11 == 0:
            log.flush()
    return log


def kept(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.iterdir() if p.name.startswith("audit.jsonl."))


def test_the_log_rotates_by_size_and_the_chain_goes_on_across_files(tmp: Path, key: bytes) -> None:
    log = rotating(tmp, key, 100, keep=50)
    log.close()
    rotated = kept(tmp)
    assert len(rotated) >= 3
    for path in rotated:
        assert path.stat().st_size < 4096 + 1024  # cut at an entry boundary past the limit
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = [json.loads(lines(p)[0]) for p in [*rotated[1:], tmp / "audit.jsonl"]]
    assert all(e["event"] == "audit.continued" for e in first)
    assert first[0]["previous_file"] == rotated[0].name == "audit.jsonl.000000000001"
    # Each file's name is the seq its first entry has.
    assert all(int(p.name.rsplit(".", 1)[1]) == json.loads(lines(p)[0])["seq"] for p in rotated)
    result = verify(tmp / "audit.jsonl", key, read_checkpoint(tmp / "gateway.db"))
    assert result.ok and result.files == len(rotated) + 1, result.describe()
    assert result.entries == read_checkpoint(tmp / "gateway.db")[0]  # type: ignore[index]


def test_old_files_are_dropped_and_verify_anchors_on_the_oldest_kept(tmp: Path, key: bytes) -> None:
    log = rotating(tmp, key, 300, keep=2)
    log.close()
    rotated = kept(tmp)
    assert len(rotated) == 2 and rotated[0].name != "audit.jsonl.000000000001"
    result = verify(tmp / "audit.jsonl", key, read_checkpoint(tmp / "gateway.db"))
    assert result.ok and result.files == 3, result.describe()
    # Removing the first lines of the oldest kept file is not the same as a rotation: it is seen.
    oldest = lines(rotated[0])
    rotated[0].write_text("".join(oldest[2:]))
    result = verify(tmp / "audit.jsonl", key)
    assert not result.ok and result.file == str(rotated[0]) and result.line == 1
    assert "beginning was deleted" in (result.reason or "")


def test_an_edit_or_a_missing_file_in_the_middle_is_reported_with_its_file(tmp: Path, key: bytes) -> None:
    log = rotating(tmp, key, 200, keep=10)
    log.close()
    rotated = kept(tmp)
    assert len(rotated) >= 3
    content = lines(rotated[1])
    content[3] = content[3].replace('"unknown token"', '"no token"')
    rotated[1].write_text("".join(content))
    result = verify(tmp / "audit.jsonl", key)
    assert (result.ok, result.file, result.line) == (False, str(rotated[1]), 4)
    assert "MAC mismatch" in (result.reason or "") and rotated[1].name in result.describe()
    rotated[1].unlink()
    result = verify(tmp / "audit.jsonl", key)
    assert (result.ok, result.file, result.line) == (False, str(rotated[2]), 1)


def test_a_crash_between_rename_and_first_write_resumes_from_the_renamed_file(tmp: Path, key: bytes) -> None:
    fill(tmp, key, 4)
    (tmp / "audit.jsonl").rename(tmp / "audit.jsonl.000000000001")  # as a rotation leaves it, live file gone
    fill(tmp, key, 2)
    assert check(tmp, key) == (True, None, "")
    first = json.loads(lines(tmp / "audit.jsonl")[0])
    assert (first["event"], first["seq"], first["previous_file"]) == ("audit.continued", 5,
                                                                       "audit.jsonl.000000000001")


@pytest.mark.parametrize(("variable", "value"), [("LLMBDO_AUDIT_MAX_BYTES", "big"), ("LLMBDO_AUDIT_MAX_BYTES", "10"),
                                                   ("LLMBDO_AUDIT_KEEP", "-1")])
def test_rotation_settings_are_checked(variable: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        rotation_from_env()


def test_the_newest_entries_are_read_back_across_a_rotation(tmp: Path, key: bytes) -> None:
    log = rotating(tmp, key, 100, keep=50)
    log.close()
    live = len(lines(tmp / "audit.jsonl"))
    newest = read_tail(tmp / "audit.jsonl", live + 5)
    seqs = [e["seq"] for e in newest]
    assert len(seqs) == live + 5 and seqs == list(range(seqs[0], seqs[0] - live - 5, -1))
    assert all("mac" not in e and "prev" not in e for e in newest)
