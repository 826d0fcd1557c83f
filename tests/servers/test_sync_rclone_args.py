"""The pure parts of the sync server: flag allowlist, locations, argument list, rclone log reading."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmbasedos.backend.confinement import VirtualRoot
from llmbasedos.protocol import errors
from llmbasedos.servers.sync.local_remotes import LocalRemotes, judge, reach
from llmbasedos.servers.sync.rclone_args import (
    allowed_flags,
    build_argv,
    overlaps,
    parse_flags,
    parse_location,
)
from llmbasedos.servers.sync.rclone_log import (
    Redactor,
    final_error,
    format_event,
    parse_combined,
    parse_line,
    progress_from_stats,
)
from llmbasedos.servers.sync.remotes import Remote, Wrapped, read_remotes
from llmbasedos.servers.sync.store import JobRecord, JobStore

CAPS = Path(__file__).resolve().parents[2] / "llmbasedos_src" / "servers" / "sync" / "caps.json"
REMOTES = {"backup": Remote("backup", "alias"), "disk": Remote("disk", "local")}


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lbsa", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def vroot(base: Path) -> VirtualRoot:
    (base / "root" / "docs").mkdir(parents=True)
    (base / "root" / "docs" / "a.txt").write_text("a")
    return VirtualRoot(base / "root")


# -- flags ---------------------------------------------------------------------------------------------------


def test_flags_are_glued_to_their_values_in_both_input_forms() -> None:
    parsed = parse_flags(["--exclude", "*.tmp", "--exclude=--config", "--transfers=04", "--checksum",
                          "--bwlimit", "1M:10M", "--max-age=7d", "--min-age", "2024-01-31"], "copy")
    assert parsed.args == ("--exclude=*.tmp", "--exclude=--config", "--transfers=4", "--checksum",
                           "--bwlimit=1M:10M", "--max-age=7d", "--min-age=2024-01-31")
    assert parsed.dry_run is False


def test_dry_run_flag_becomes_the_dry_run_switch() -> None:
    parsed = parse_flags(["--dry-run"], "sync")
    assert parsed.dry_run is True and parsed.args == ()
    assert parse_flags(["--dry-run=false"], "sync").dry_run is False


def test_false_boolean_flag_is_dropped() -> None:
    assert parse_flags(["--checksum=false"], "copy").args == ()


@pytest.mark.parametrize("flags, fragment", [
    (["--config=/tmp/evil.conf"], "not allowed"),
    (["--config", "/tmp/evil.conf"], "not allowed"),
    (["--password-command=touch /tmp/pwned"], "not allowed"),
    (["--password-command", "sh"], "not allowed"),
    (["--files-from=/etc/passwd"], "not allowed"),
    (["--exclude-from=/etc/shadow"], "not allowed"),
    (["--copy-links"], "not allowed"),
    (["--log-file=/tmp/x"], "not allowed"),
    # Flags that name a file or folder, or change how a backend reaches the disk: none is on the allowlist.
    (["--filter-from=/etc/passwd"], "not allowed"),
    (["--include-from", "/etc/passwd"], "not allowed"),
    (["--backup-dir=/etc"], "not allowed"),
    (["--compare-dest=/etc"], "not allowed"),
    (["--copy-dest=/etc"], "not allowed"),
    (["--temp-dir=/etc"], "not allowed"),
    (["--cache-dir=/etc"], "not allowed"),
    (["--links"], "not allowed"),
    (["--local-copy-links"], "not allowed"),
    (["--alias-remote=/etc"], "not allowed"),
    (["--crypt-remote=disk:/etc"], "not allowed"),
    (["--rc"], "not allowed"),
    (["-L"], "not an allowed flag"),
    (["-x"], "not an allowed flag"),
    (["-vv"], "not an allowed flag"),
    (["--"], "'--' is not allowed"),
    (["src"], "not an allowed flag"),
    (["--exclude"], "needs a value"),
    (["--exclude="], "non-empty pattern"),
    (["--transfers=0"], "integer from 1 to 64"),
    (["--transfers=-1"], "integer from 1 to 64"),
    (["--transfers=4; rm -rf /"], "integer"),
    (["--bwlimit=08:00,512k 12:00,10M"], "rate"),
    (["--max-age=1d; rm -rf /"], "duration"),
    (["--max-size=huge"], "size"),
    (["--checksum=yes"], "true or false"),
    (["--max-age=1d", "--max-age=2d"], "given twice"),
    (["--exclude=a\nb"], "control character"),
    (["--one-way"], "does not apply to mode 'copy'"),
    (["--delete-excluded"], "does not apply to mode 'copy'"),
])
def test_refused_flags(flags: list[str], fragment: str) -> None:
    with pytest.raises(errors.InvalidParams) as info:
        parse_flags(flags, "copy")
    assert fragment in info.value.message


def test_caps_description_lists_every_allowed_flag() -> None:
    caps = json.loads(CAPS.read_text())
    description = next(c["description"] for c in caps["capabilities"] if c["method"] == "mcp.sync.runJob")
    missing = [f for f in allowed_flags() if f + "," not in description and f + ";" not in description]
    assert missing == []


# -- locations -----------------------------------------------------------------------------------------------


def test_local_location_resolves_inside_the_root(vroot: VirtualRoot) -> None:
    loc = parse_location("source", "docs", vroot, REMOTES, must_exist=True)
    assert loc.display == "/docs"
    assert loc.arg == str(vroot.root / "docs")
    assert loc.is_local


def test_absolute_host_path_is_a_virtual_path(vroot: VirtualRoot) -> None:
    loc = parse_location("destination", "/etc", vroot, REMOTES, must_exist=False)
    assert loc.host == vroot.root / "etc"


def test_colon_after_a_slash_is_local(vroot: VirtualRoot) -> None:
    loc = parse_location("destination", "./backup:x", vroot, REMOTES, must_exist=False)
    assert loc.is_local and loc.display == "/backup:x"


def test_remote_location(vroot: VirtualRoot) -> None:
    loc = parse_location("destination", "backup:some/dir", vroot, REMOTES, must_exist=False)
    assert (loc.display, loc.arg, loc.is_local) == ("backup:some/dir", "backup:some/dir", False)


@pytest.mark.parametrize("text, error, fragment", [
    ("-x", errors.InvalidParams, "must not start with '-'"),
    ("--config=/etc/x", errors.InvalidParams, "must not start with '-'"),
    ("nope:x", errors.InvalidParams, "unknown remote 'nope'"),
    ("backup,remote=x:y", errors.InvalidParams, "connection-string"),
    ("disk,copy_links:/etc", errors.InvalidParams, "connection-string"),
    (":local:/etc", errors.InvalidParams, "on-the-fly"),
    ("backup:../x", errors.InvalidParams, "'..'"),
    ("backup:a/../../x", errors.InvalidParams, "'..'"),
    ("backup:-x", errors.InvalidParams, "must not start with '-'"),
    ("../etc", errors.PathOutsideRoot, "outside"),
    ("docs/../../etc", errors.PathOutsideRoot, "outside"),
    ("docs\x00x", errors.InvalidParams, "control character"),
    ("", errors.InvalidParams, "empty"),
])
def test_refused_locations(vroot: VirtualRoot, text: str, error: type[errors.RPCError], fragment: str) -> None:
    with pytest.raises(error) as info:
        parse_location("source", text, vroot, REMOTES, must_exist=False)
    assert fragment in info.value.message


def test_symlink_out_of_the_root_is_refused(vroot: VirtualRoot) -> None:
    (vroot.root / "escape").symlink_to("/etc")
    with pytest.raises(errors.PathOutsideRoot):
        parse_location("source", "/escape", vroot, REMOTES, must_exist=True)


def test_overlap(vroot: VirtualRoot) -> None:
    docs = parse_location("s", "/docs", vroot, REMOTES, must_exist=True)
    inner = parse_location("d", "/docs/inner", vroot, REMOTES, must_exist=False)
    other = parse_location("d", "/other", vroot, REMOTES, must_exist=False)
    remote = parse_location("d", "backup:docs", vroot, REMOTES, must_exist=False)
    assert overlaps(docs, inner) and overlaps(inner, docs) and overlaps(docs, docs)
    assert not overlaps(docs, other) and not overlaps(docs, remote)


def test_argv_ends_options_before_the_paths(vroot: VirtualRoot) -> None:
    src = parse_location("s", "/docs", vroot, REMOTES, must_exist=True)
    dst = parse_location("d", "backup:x", vroot, REMOTES, must_exist=False)
    flags = parse_flags(["--exclude", "--config=/evil"], "copy")
    argv = build_argv("rclone", "copy", src, dst, flags, config=Path("/cfg/rclone.conf"), dry_run=True)
    assert argv[:2] == ["rclone", "copy"]
    assert "--config=/cfg/rclone.conf" in argv and "--dry-run" in argv and "--use-json-log" in argv
    assert argv[-3:] == ["--", src.arg, "backup:x"]
    assert "--exclude=--config=/evil" in argv
    assert not any(a.startswith("--config") and a != "--config=/cfg/rclone.conf" for a in argv)


# -- remotes -------------------------------------------------------------------------------------------------


def test_read_remotes_keeps_names_and_types_only(base: Path) -> None:
    conf = base / "rclone.conf"
    conf.write_text("[DEFAULT]\npassword = leaked\n\n[s3]\ntype = s3\nsecret_access_key = SECRET\n\n"
                    "[bad,name]\ntype = local\n\n[-dash]\ntype = local\n")
    remotes = read_remotes(conf)
    assert {n: r.as_dict() for n, r in remotes.items()} == {
        "DEFAULT": {"name": "DEFAULT", "type": ""}, "s3": {"name": "s3", "type": "s3"}}
    assert read_remotes(base / "missing.conf") == {}


def test_encrypted_or_broken_config_is_feature_unavailable(base: Path) -> None:
    conf = base / "rclone.conf"
    conf.write_text("# Encrypted rclone configuration File\n\nRCLONE_ENCRYPT_V0:\nabcdef\n")
    with pytest.raises(errors.FeatureUnavailable) as info:
        read_remotes(conf)
    assert str(base) not in info.value.message
    conf.write_text("type = local\n")
    with pytest.raises(errors.FeatureUnavailable):
        read_remotes(conf)


def test_read_remotes_keeps_what_wrapping_remotes_store_data_in(base: Path) -> None:
    conf = base / "rclone.conf"
    conf.write_text("[disk]\ntype = local\ncopy_links = true\n\n[a]\ntype = alias\nremote = disk:/etc\n\n"
                    "[c]\ntype = crypt\nremote = a:sub\npassword = SECRET\n\n"
                    '[u]\ntype = union\nupstreams = a: "/tmp/x y":ro c:nc\n\n'
                    "[m]\ntype = combine\nupstreams = docs=disk:/home pics=a:p\n")
    remotes = read_remotes(conf)
    assert remotes["disk"].copy_links is True and remotes["disk"].wraps == ()
    assert remotes["a"].wraps == (Wrapped("disk:/etc", True),)
    assert remotes["c"].wraps == (Wrapped("a:sub", False),)
    assert remotes["u"].wraps == (Wrapped("a:", True), Wrapped("/tmp/x y", True), Wrapped("c", True))
    assert remotes["m"].wraps == (Wrapped("disk:/home", False), Wrapped("a:p", False))
    assert "SECRET" not in repr(remotes)


# -- remotes that reach the local disk -----------------------------------------------------------------------

CHAIN = {
    "disk": Remote("disk", "local"),
    "shouty": Remote("shouty", " LOCAL"),
    "linky": Remote("linky", "local", copy_links=True),
    "dav": Remote("dav", "webdav"),
    "net": Remote("net", "alias", (Wrapped("dav:x", True),)),
    "etc": Remote("etc", "alias", (Wrapped("disk:/etc", True),)),
    "srv": Remote("srv", "alias", (Wrapped("/srv/data", True),)),
    "deep": Remote("deep", "alias", (Wrapped("srv:sub", True),)),
    "sealed": Remote("sealed", "crypt", (Wrapped("srv:box", False),)),
    "pool": Remote("pool", "union", (Wrapped("net:", True), Wrapped("/tmp", True))),
    "mixed": Remote("mixed", "combine", (Wrapped("dav:", False), Wrapped("disk:/home", False))),
    "climb": Remote("climb", "alias", (Wrapped("disk:/srv/../etc", True),)),
    "loop": Remote("loop", "alias", (Wrapped("loop2:", True),)),
    "loop2": Remote("loop2", "crypt", (Wrapped("loop:", False),)),
    "ghost": Remote("ghost", "alias", (Wrapped("nowhere:x", True),)),
    "rel": Remote("rel", "alias", (Wrapped("data", True),)),
    "relremote": Remote("relremote", "alias", (Wrapped("disk:data", True),)),
    "fly": Remote("fly", "alias", (Wrapped(":local:/etc", True),)),
    "conn": Remote("conn", "crypt", (Wrapped("dav,url=http://x:y", False),)),
    "follow": Remote("follow", "alias", (Wrapped("linky:/srv", True),)),
}


@pytest.mark.parametrize("name, path, folders", [
    ("etc", "", ("/etc",)),
    ("etc", "passwd", ("/etc/passwd",)),
    ("srv", "/a/b", ("/srv/data/a/b",)),
    ("deep", "x", ("/srv/data/sub/x",)),
    ("sealed", "anything/at/all", ("/srv/data/box",)),  # crypt stores every path below its own folder
    ("pool", "x", ("/tmp/x",)),
    ("mixed", "x", ("/home",)),
    ("climb", "", ("/etc",)),
])
def test_chains_that_reach_local_folders(name: str, path: str, folders: tuple[str, ...]) -> None:
    found = reach(CHAIN, name, path)
    assert found is not None and found.problem is None and not found.direct
    assert found.folders == folders


def test_remotes_off_this_machine_do_not_reach_the_disk() -> None:
    assert reach(CHAIN, "dav", "x") is None and reach(CHAIN, "net", "/etc") is None
    direct = reach(CHAIN, "disk", "/etc")
    assert direct is not None and direct.direct
    shouty = reach(CHAIN, "shouty", "/etc")
    assert shouty is not None and shouty.direct


@pytest.mark.parametrize("name, fragment", [
    ("loop", "refers to itself"),
    ("ghost", "'nowhere', which is not a remote"),
    ("rel", "relative folder"),
    ("relremote", "relative path"),
    ("fly", "on-the-fly"),
    ("conn", "connection string"),
    ("follow", "copy_links"),
])
def test_chains_that_cannot_be_checked(name: str, fragment: str, base: Path) -> None:
    found = reach(CHAIN, name, "x")
    assert found is not None and found.problem is not None and fragment in found.problem
    for policy in LocalRemotes:
        verdict = judge(CHAIN, name, "x", policy, base)
        assert verdict.local and verdict.refused is not None and "cannot be checked" in verdict.refused


def test_judge_refuses_local_remotes_by_default_and_confines_them_on_request(base: Path) -> None:
    root = (base / "root").resolve()
    (root / "inside").mkdir(parents=True)
    (root / "out").symlink_to(base)
    remotes = {**CHAIN,
               "kept": Remote("kept", "alias", (Wrapped(f"{root}/inside", True),)),
               "tricky": Remote("tricky", "alias", (Wrapped(f"{root}/out/elsewhere", True),))}
    refused = judge(remotes, "etc", "", LocalRemotes.REFUSE, root)
    assert refused.refused is not None
    assert "remote 'etc'" in refused.refused and "LLMBDO_SYNC_LOCAL_REMOTES=confine" in refused.refused
    assert judge(remotes, "dav", "", LocalRemotes.REFUSE, root) == judge(remotes, "dav", "", LocalRemotes.CONFINE,
                                                                         root)
    assert judge(remotes, "disk", "/etc", LocalRemotes.CONFINE, root).direct
    kept = judge(remotes, "kept", "x", LocalRemotes.CONFINE, root)
    assert kept.refused is None and kept.folders == (root / "inside" / "x",)
    for name in ("etc", "tricky", "pool"):  # outside the root, the last through a symlink inside it
        verdict = judge(remotes, name, "", LocalRemotes.CONFINE, root)
        assert verdict.refused is not None and "outside the virtual root" in verdict.refused, name


def test_local_remote_paths_are_refused_or_confined(vroot: VirtualRoot) -> None:
    with pytest.raises(errors.Forbidden) as info:
        parse_location("source", "disk:/etc", vroot, CHAIN, must_exist=False)
    assert "remote 'disk'" in info.value.message and "LLMBDO_SYNC_LOCAL_REMOTES" in info.value.message
    confine = LocalRemotes.CONFINE
    etc = parse_location("source", "disk:/etc", vroot, CHAIN, must_exist=False, local_remotes=confine)
    assert etc.host == vroot.root / "etc" and etc.arg == str(vroot.root / "etc") and etc.display == "/etc"
    rel = parse_location("source", "disk:docs", vroot, CHAIN, must_exist=True, local_remotes=confine)
    assert rel.host == vroot.root / "docs"
    whole = parse_location("source", "disk:", vroot, CHAIN, must_exist=True, local_remotes=confine)
    assert whole.host == vroot.root
    with pytest.raises(errors.PathOutsideRoot):
        parse_location("source", "disk:../..", vroot, CHAIN, must_exist=False, local_remotes=confine)
    with pytest.raises(errors.NotFound):
        parse_location("source", "disk:/etc", vroot, CHAIN, must_exist=True, local_remotes=confine)


# -- job records -----------------------------------------------------------------------------------------------


def test_job_store_made_before_owners_keeps_its_jobs_for_the_owner(base: Path) -> None:
    path = base / "jobs.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, mode TEXT NOT NULL, source TEXT NOT NULL,
            destination TEXT NOT NULL, dry_run INTEGER NOT NULL, flags TEXT NOT NULL, state TEXT NOT NULL,
            created_at REAL NOT NULL, started_at REAL, ended_at REAL, pid INTEGER, exit_code INTEGER, error TEXT,
            progress TEXT, check_summary TEXT);
        INSERT INTO jobs VALUES ('job-old', 'copy', '/a', 'b:c', 0, '[]', 'succeeded', 1.0, 1.0, 2.0, NULL, 0,
            NULL, NULL, NULL);
    """)
    old.close()
    store = JobStore(path)
    try:
        store.save(JobRecord(id="job-new", mode="copy", source="/a", destination="b:d", dry_run=False, flags=[],
                             state="queued", created_at=3.0, client_id="c_alice"))
        assert [r.id for r in store.recent()] == ["job-new", "job-old"]
        old_job = store.get("job-old")
        assert old_job is not None and old_job.client_id is None
        assert [r.id for r in store.recent(client_id="c_alice")] == ["job-new"]
        assert store.recent(client_id="c_bob") == []
    finally:
        store.close()
    reopened = JobStore(path)  # the added column is found, not added twice
    try:
        new_job = reopened.get("job-new")
        assert new_job is not None and new_job.client_id == "c_alice"
    finally:
        reopened.close()


# -- reading rclone's output ---------------------------------------------------------------------------------


def test_redactor_hides_host_paths(base: Path) -> None:
    redact = Redactor(base / "root", {base / "rclone.conf": "rclone.conf"})
    root = str((base / "root").resolve())
    assert redact(f"can't open {root}/docs/a.txt") == "can't open /docs/a.txt"
    assert redact(f"at {root}: gone") == "at /: gone"
    assert redact(f"{root}2/x") == f"{root}2/x"  # a sibling directory is not the root
    assert redact(f"bad {base}/rclone.conf file") == "bad rclone.conf file"
    assert redact("Local file system at /srv/backup/x") == "Local file system at <remote root>"
    assert redact(f"Local file system at {root}/docs") == "Local file system at /docs"


def test_log_lines_and_stats(base: Path) -> None:
    redact = Redactor(base / "root", {})
    root = str((base / "root").resolve())
    line = json.dumps({"level": "error", "msg": "sizes differ", "object": "a.txt",
                       "time": "2026-01-02T03:04:05.1+00:00"})
    event = parse_line(line)
    assert event is not None and event.level == "error"
    assert format_event(event, redact) == "2026-01-02T03:04:05Z ERROR a.txt: sizes differ"
    stats_line = json.dumps({"level": "info", "msg": "x", "stats": {
        "bytes": 50, "totalBytes": 200, "transfers": 1, "totalTransfers": 4, "speed": 10.5, "eta": 15,
        "errors": 1, "lastError": f"open {root}/secret: denied",
        "transferring": [{"name": "big.bin", "bytes": 50, "size": 100, "percentage": 50}]}})
    stats_event = parse_line(stats_line)
    assert stats_event is not None and stats_event.stats is not None
    p = progress_from_stats(stats_event.stats, redact)
    assert (p["bytes"], p["total_bytes"], p["percent"], p["files"], p["total_files"]) == (50, 200, 25.0, 1, 4)
    assert (p["speed"], p["eta"], p["errors"]) == (10.5, 15, 1)
    assert p["last_error"] == "open /secret: denied"
    assert p["transferring"] == [{"name": "big.bin", "bytes": 50, "size": 100, "percent": 50}]
    plain = parse_line("2026/11/22 02:54:29 Failed to copy: directory not found")
    assert plain is not None and plain.message == "Failed to copy: directory not found"
    assert final_error([event, plain], redact) == "Failed to copy: directory not found"
    assert final_error([event], redact) == "a.txt: sizes differ"


def test_parse_combined(base: Path) -> None:
    report = base / "combined.txt"
    report.write_text("= same.txt\n* changed.txt\n+ only_src.txt\n- only_dst.txt\n! unreadable\n= b\n")
    parsed = parse_combined(report)
    assert parsed is not None
    d = parsed.as_dict()
    assert (d["identical"], d["matching"], d["differ"], d["missing_on_destination"], d["missing_on_source"],
            d["errors"]) == (False, 2, 1, 1, 1, 1)
    assert {"path": "changed.txt", "status": "differ"} in d["differences"]
    assert parse_combined(base / "none.txt") is None
