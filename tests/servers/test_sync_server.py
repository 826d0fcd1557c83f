"""The sync server as a real process, driving the real rclone on a temporary rclone.conf (remotes and helpers:
sync_harness.py). Remotes that reach the local disk: test_sync_local_remotes.py; job owners: test_sync_owners.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbasedos.protocol import errors
from tests.servers.sync_harness import (
    BIG,
    SLOW,
    SyncEnv,
    big_file,
    connect,
    gone,
    make_env,
    tree,
    until,
    wait_running,
    wait_state,
)
from tests.support.procs import ServerHandle
from tests.support.procs import start_server as start_process


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[SyncEnv, ServerHandle]]:
    """One server for the tests that only read, or are refused before anything runs."""
    env = make_env()
    (env.root / "docs").mkdir()
    (env.root / "docs" / "a.txt").write_text("alpha")
    (env.root / "escape").symlink_to("/etc")
    handle = start_process("sync", env.env)
    yield env, handle
    handle.stop()
    env.close()


# -- remotes ------------------------------------------------------------------------------------------------


async def test_list_remotes_gives_names_and_types_never_secrets(shared: tuple[SyncEnv, ServerHandle]) -> None:
    env, handle = shared
    async with connect(handle) as c:
        remotes = await c.call("mcp.sync.listRemotes", {})
        legacy = await c.call("mcp.sync.listRemotes", [])
    assert [(r["name"], r["type"]) for r in remotes] == [
        ("backup", "alias"), ("dav", "webdav"), ("disk", "local"), ("etc", "alias"), ("kept", "alias"),
        ("loop", "alias"), ("outside", "alias"), ("pool", "union"), ("sealed", "crypt"), ("vault", "crypt")]
    assert legacy == remotes
    text = json.dumps(remotes)
    assert env.obscured not in text and str(env.base) not in text and "password" not in text
    assert env.dav.url not in text



# -- jobs end to end ----------------------------------------------------------------------------------------


async def test_copy_to_an_alias_remote_and_back(senv: SyncEnv, start_server: Any) -> None:
    (senv.root / "docs" / "sub").mkdir(parents=True)
    (senv.root / "docs" / "a.txt").write_text("alpha")
    (senv.root / "docs" / "sub" / "b.txt").write_text("beta")
    handle = start_server("sync", senv.env)
    async with connect(handle) as c:
        out = await c.call("mcp.sync.runJob", {"source": "/docs", "destination": "backup:saved", "wait": True})
        assert out["state"] == "succeeded", out
        assert tree(senv.remote / "saved") == {"a.txt": "alpha", "sub/b.txt": "beta"}
        assert (out["progress"]["files"], out["progress"]["total_files"]) == (2, 2)
        assert out["progress"]["bytes"] == len("alpha") + len("beta")
        assert any("Copied (new)" in line for line in out["log"])
        assert not any(str(senv.base) in line for line in out["log"])

        # Back into a folder that does not exist yet, two levels deep.
        back = await c.call("mcp.sync.runJob", {"source": "backup:saved", "destination": "restored/deep",
                                                "wait": True})
        assert back["state"] == "succeeded", back
        assert back["destination"] == "/restored/deep"
        assert tree(senv.root / "restored" / "deep") == {"a.txt": "alpha", "sub/b.txt": "beta"}

        jobs = await c.call("mcp.sync.listJobs", {})
        assert [j["job_id"] for j in jobs] == [back["job_id"], out["job_id"]]
        assert await c.call("mcp.sync.listJobs", {"state": "failed"}) == []


async def test_sync_dry_run_changes_nothing_then_sync_mirrors(senv: SyncEnv, start_server: Any) -> None:
    (senv.root / "src").mkdir()
    (senv.root / "src" / "new.txt").write_text("new")
    (senv.root / "src" / "skip.tmp").write_text("temporary")
    (senv.remote / "mirror").mkdir()
    (senv.remote / "mirror" / "extra.txt").write_text("extra")
    handle = start_server("sync", senv.env)
    async with connect(handle) as c:
        dry = await c.call("mcp.sync.runJob", {"source": "/src", "destination": "backup:mirror", "mode": "sync",
                                               "dry_run": True, "flags": ["--exclude", "*.tmp"], "wait": True})
        assert dry["state"] == "succeeded" and dry["dry_run"] is True
        assert tree(senv.remote / "mirror") == {"extra.txt": "extra"}

        # The same through the flag, in the original llmbasedos' shape: one positional object.
        dry2 = await c.call("mcp.sync.runJob", [{"source": "/src", "destination": "backup:mirror", "mode": "sync",
                                                 "flags": ["--dry-run"], "wait": True}])
        assert dry2["dry_run"] is True and dry2["state"] == "succeeded"
        assert tree(senv.remote / "mirror") == {"extra.txt": "extra"}

        real = await c.call("mcp.sync.runJob", {"source": "/src", "destination": "backup:mirror", "mode": "sync",
                                                "flags": ["--exclude=*.tmp"], "wait": True})
        assert real["state"] == "succeeded", real
        assert real["flags"] == ["--exclude=*.tmp"]
        assert tree(senv.remote / "mirror") == {"new.txt": "new"}
        assert real["progress"]["deletes"] == 1




async def test_check_reports_identical_then_differences(senv: SyncEnv, start_server: Any) -> None:
    (senv.root / "docs").mkdir()
    (senv.root / "docs" / "same.txt").write_text("same")
    (senv.root / "docs" / "changed.txt").write_text("version one")
    handle = start_server("sync", senv.env)
    async with connect(handle) as c:
        copied = await c.call("mcp.sync.runJob", {"source": "/docs", "destination": "backup:docs", "wait": True})
        assert copied["state"] == "succeeded"
        same = await c.call("mcp.sync.runJob", {"source": "/docs", "destination": "backup:docs",
                                                "mode": "check", "wait": True})
        assert same["state"] == "succeeded", same
        assert same["check"]["identical"] is True and same["check"]["matching"] == 2

        (senv.root / "docs" / "changed.txt").write_text("version two, longer")
        (senv.root / "docs" / "added.txt").write_text("added")
        (senv.remote / "docs" / "stale.txt").write_text("stale")
        diff = await c.call("mcp.sync.runJob", {"source": "/docs", "destination": "backup:docs",
                                                "mode": "check", "wait": True})
    assert diff["state"] == "succeeded", diff
    report = diff["check"]
    assert report["identical"] is False
    assert (report["matching"], report["differ"], report["missing_on_destination"],
            report["missing_on_source"], report["errors"]) == (1, 1, 1, 1, 0)
    assert sorted((d["path"], d["status"]) for d in report["differences"]) == [
        ("added.txt", "missing_on_destination"), ("changed.txt", "differ"), ("stale.txt", "missing_on_source")]


async def test_crypt_remote_round_trip(senv: SyncEnv, start_server: Any) -> None:
    (senv.root / "private").mkdir()
    (senv.root / "private" / "diary.txt").write_text("my secret diary")
    handle = start_server("sync", senv.env)
    async with connect(handle) as c:
        up = await c.call("mcp.sync.runJob", {"source": "/private", "destination": "vault:box", "wait": True})
        assert up["state"] == "succeeded", up
        stored = [p for p in senv.crypt.rglob("*") if p.is_file()]
        assert len(stored) == 1
        assert "diary" not in str(stored[0]) and b"my secret diary" not in stored[0].read_bytes()
        down = await c.call("mcp.sync.runJob", {"source": "vault:box", "destination": "/opened", "wait": True})
    assert down["state"] == "succeeded", down
    assert tree(senv.root / "opened") == {"diary.txt": "my secret diary"}


async def test_failed_job_names_the_reason_without_host_paths(senv: SyncEnv, start_server: Any) -> None:
    handle = start_server("sync", senv.env)
    async with connect(handle) as c:
        out = await c.call("mcp.sync.runJob", {"source": "backup:missing", "destination": "/here", "wait": True,
                                               "flags": ["--retries=1"]})
        status = await c.call("mcp.sync.getJobStatus", [out["job_id"], 100])
    assert out["state"] == "failed"
    assert out["exit_code"] not in (0, None)
    assert "directory not found" in out["error"]
    assert status["log"] and any("directory not found" in line for line in status["log"])
    assert str(senv.base) not in json.dumps(status)


# -- progress, stopping, limits -----------------------------------------------------------------------------


async def test_waiting_call_gets_progress_and_cancelling_it_stops_the_job(senv: SyncEnv,
                                                                          start_server: Any) -> None:
    big_file(senv.root, "big")
    handle = start_server("sync", senv.env)
    notes: list[dict[str, Any]] = []
    async with connect(handle) as c:
        call = asyncio.ensure_future(c.call(
            "mcp.sync.runJob", {"source": "/big", "destination": "backup:big", "flags": SLOW, "wait": True},
            on_notification=lambda method, params: notes.append({"method": method, **params})))

        async def moving() -> bool:
            return any(n["progress"] > 0 for n in notes)

        await until(moving, "a progress notification with bytes moved")
        note = next(n for n in notes if n["progress"] > 0)
        assert note["method"] == "mcp.progress"
        assert note["total"] == BIG and 0 < note["progress"] < BIG
        assert "files" in note["message"]
        jobs = await c.call("mcp.sync.listJobs", {"state": "running"})
        assert len(jobs) == 1
        pid = jobs[0]["pid"]
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        stopped = await wait_state(c, jobs[0]["job_id"], "stopped")
    assert stopped["error"] == "stopped on request"
    assert gone(pid)


async def test_stop_a_running_job(senv: SyncEnv, start_server: Any) -> None:
    big_file(senv.root, "big")
    handle = start_server("sync", senv.env)
    async with connect(handle) as c:
        job = await c.call("mcp.sync.runJob", {"source": "/big", "destination": "backup:big", "flags": SLOW})
        assert job["state"] in ("queued", "running")
        running = await wait_running(c, job["job_id"])
        progress = running["progress"]
        assert progress["total_bytes"] == BIG and 0 < progress["bytes"] < BIG
        assert progress["transferring"][0]["name"] == "big.bin"
        stopped = await c.call("mcp.sync.stopJob", {"job_id": job["job_id"]})
        assert stopped["state"] == "stopped" and stopped["is_running"] is False
        assert gone(running["pid"])
        # Stopping again changes nothing.
        again = await c.call("mcp.sync.stopJob", [job["job_id"]])
    assert again["state"] == "stopped" and again["ended_at"] == stopped["ended_at"]
    copied = senv.remote / "big" / "big.bin"
    assert not copied.exists() or copied.stat().st_size < BIG


async def test_jobs_beyond_the_limit_wait_in_the_queue(senv: SyncEnv, start_server: Any) -> None:
    big_file(senv.root, "big")
    (senv.root / "small").mkdir()
    (senv.root / "small" / "s.txt").write_text("small")
    handle = start_server("sync", {**senv.env, "LLMBDO_SYNC_MAX_JOBS": "1", "LLMBDO_SYNC_MAX_QUEUED": "2"})
    async with connect(handle) as c:
        slow = await c.call("mcp.sync.runJob", {"source": "/big", "destination": "backup:big", "flags": SLOW})
        await wait_running(c, slow["job_id"])
        waiting = await c.call("mcp.sync.runJob", {"source": "/small", "destination": "backup:one"})
        later = await c.call("mcp.sync.runJob", {"source": "/small", "destination": "backup:two"})
        assert (await c.call("mcp.sync.getJobStatus", {"job_id": waiting["job_id"]}))["state"] == "queued"
        with pytest.raises(errors.Conflict) as info:
            await c.call("mcp.sync.runJob", {"source": "/small", "destination": "backup:three"})
        assert "Too many jobs" in info.value.message

        dropped = await c.call("mcp.sync.stopJob", {"job_id": waiting["job_id"]})
        assert dropped["state"] == "stopped" and dropped["started_at"] is None
        assert (await c.call("mcp.sync.getJobStatus", {"job_id": later["job_id"]}))["state"] == "queued"

        await c.call("mcp.sync.stopJob", {"job_id": slow["job_id"]})
        done = await wait_state(c, later["job_id"], "succeeded", "failed")
    assert done["state"] == "succeeded"
    assert tree(senv.remote / "two") == {"s.txt": "small"}
    assert not (senv.remote / "one").exists()


async def test_old_finished_jobs_are_forgotten_with_their_logs(senv: SyncEnv, start_server: Any) -> None:
    (senv.root / "small").mkdir()
    (senv.root / "small" / "s.txt").write_text("small")
    handle = start_server("sync", {**senv.env, "LLMBDO_SYNC_KEEP_JOBS": "2"})
    ids = []
    async with connect(handle) as c:
        for n in range(3):
            out = await c.call("mcp.sync.runJob", {"source": "/small", "destination": f"backup:{n}", "wait": True})
            ids.append(out["job_id"])
        listed = [j["job_id"] for j in await c.call("mcp.sync.listJobs", {})]
        with pytest.raises(errors.NotFound):
            await c.call("mcp.sync.getJobStatus", {"job_id": ids[0]})
    assert listed == [ids[2], ids[1]]
    logs = sorted(p.name for p in (senv.base / "data" / "sync" / "logs").iterdir())
    assert logs == sorted(f"{i}.log" for i in ids[1:])


# -- restarts -----------------------------------------------------------------------------------------------


async def test_graceful_restart_mid_job_reports_it_interrupted(senv: SyncEnv, start_server: Any) -> None:
    big_file(senv.root, "big")
    handle = start_server("sync", senv.env)
    async with connect(handle) as c:
        waited = asyncio.ensure_future(c.call("mcp.sync.runJob", {"source": "/big", "destination": "backup:big",
                                                                  "flags": SLOW, "wait": True}))
        job = (await until(lambda: c.call("mcp.sync.listJobs", {}), "the job to be listed"))[0]
        running = await wait_running(c, job["job_id"])
        assert handle.stop() == 0
        answer = await waited  # the waiting call is answered, not dropped
    assert answer["state"] == "interrupted"
    assert gone(running["pid"])

    handle = start_server("sync", senv.env)
    async with connect(handle) as c:
        status = await c.call("mcp.sync.getJobStatus", {"job_id": job["job_id"]})
        listed = await c.call("mcp.sync.listJobs", {"state": "interrupted"})
    assert status["state"] == "interrupted"
    assert status["error"] == "the sync server shut down before this job finished"
    assert status["progress"]["bytes"] > 0
    assert [j["job_id"] for j in listed] == [job["job_id"]]


async def test_crash_mid_job_is_reported_interrupted_after_restart(senv: SyncEnv, start_server: Any) -> None:
    big_file(senv.root, "big")
    (senv.root / "small").mkdir()
    (senv.root / "small" / "s.txt").write_text("small")
    handle = start_server("sync", {**senv.env, "LLMBDO_SYNC_MAX_JOBS": "1"})
    async with connect(handle) as c:
        job = await c.call("mcp.sync.runJob", {"source": "/big", "destination": "backup:big", "flags": SLOW})
        queued = await c.call("mcp.sync.runJob", {"source": "/small", "destination": "backup:small"})
        running = await wait_running(c, job["job_id"])
    handle.proc.kill()
    handle.proc.wait(30)

    handle = start_server("sync", senv.env)
    async with connect(handle) as c:
        status = await c.call("mcp.sync.getJobStatus", {"job_id": job["job_id"]})
        never = await c.call("mcp.sync.getJobStatus", {"job_id": queued["job_id"]})
        # The server is usable again after recovering.
        fresh = await c.call("mcp.sync.runJob", {"source": "/small", "destination": "backup:after", "wait": True})
    assert status["state"] == "interrupted"
    assert status["error"] == "the sync server stopped while this job was running"
    assert status["progress"]["bytes"] > 0
    assert never["state"] == "interrupted" and never["started_at"] is None
    assert fresh["state"] == "succeeded"

    async def orphan_gone() -> bool:
        return gone(running["pid"])

    assert await until(orphan_gone, "the orphaned rclone to exit")


# -- refusals -----------------------------------------------------------------------------------------------


def _at(value: Any, base: Path) -> Any:
    return value.replace("{base}", str(base)) if isinstance(value, str) else value


@pytest.mark.parametrize("params, error, fragment", [
    ({"flags": ["--config=/tmp/evil.conf"]}, errors.InvalidParams, "not allowed"),
    ({"flags": ["--password-command", "touch /tmp/pwned"]}, errors.InvalidParams, "not allowed"),
    ({"flags": ["-x"]}, errors.InvalidParams, "not an allowed flag"),
    ({"flags": ["--"]}, errors.InvalidParams, "'--' is not allowed"),
    ({"flags": ["--files-from=/etc/passwd"]}, errors.InvalidParams, "not allowed"),
    ({"flags": ["--copy-links"]}, errors.InvalidParams, "not allowed"),
    ({"source": "-x"}, errors.InvalidParams, "must not start with '-'"),
    ({"source": "--config=/etc/passwd"}, errors.InvalidParams, "must not start with '-'"),
    ({"destination": "--password-command=sh"}, errors.InvalidParams, "must not start with '-'"),
    ({"destination": "nope:x"}, errors.InvalidParams, "unknown remote 'nope'"),
    ({"destination": ":local:/tmp/x"}, errors.InvalidParams, "on-the-fly"),
    ({"destination": ":alias,remote=/tmp:x"}, errors.InvalidParams, "on-the-fly"),
    ({"destination": "backup,remote=disk:x"}, errors.InvalidParams, "connection-string"),
    ({"source": "disk,copy_links:/etc"}, errors.InvalidParams, "connection-string"),
    # Remotes that reach the local disk are refused by default, whatever the path.
    ({"source": "disk:/etc"}, errors.Forbidden, "remote 'disk' reaches the local disk"),
    ({"source": "disk:data"}, errors.Forbidden, "LLMBDO_SYNC_LOCAL_REMOTES=confine"),
    ({"source": "disk:../.."}, errors.Forbidden, "remote 'disk'"),
    ({"destination": "disk:{base}/written"}, errors.Forbidden, "remote 'disk'"),
    ({"source": "etc:"}, errors.Forbidden, "remote 'etc' reaches the local disk"),
    ({"source": "sealed:"}, errors.Forbidden, "remote 'sealed' reaches the local disk"),
    ({"destination": "pool:x"}, errors.Forbidden, "remote 'pool' reaches the local disk"),
    ({"destination": "outside:x"}, errors.Forbidden, "remote 'outside' reaches the local disk"),
    ({"destination": "kept:x"}, errors.Forbidden, "remote 'kept' reaches the local disk"),
    ({"destination": "loop:x"}, errors.Forbidden, "cannot be checked"),
    ({"destination": "backup:../../etc"}, errors.InvalidParams, "'..'"),
    ({"source": "../etc"}, errors.PathOutsideRoot, "outside"),
    ({"destination": "/docs/../../../etc"}, errors.PathOutsideRoot, "outside"),
    ({"source": "/escape"}, errors.PathOutsideRoot, "outside"),
    ({"source": "/nothing-here"}, errors.NotFound, "/nothing-here"),
    ({"destination": "/docs/inside"}, errors.InvalidParams, "overlap"),
    ({"mode": "sync", "source": "backup:in", "destination": "/"}, errors.InvalidParams, "virtual root"),
    ({"mode": "move", "source": "/", "destination": "backup:all"}, errors.InvalidParams, "virtual root"),
    ({"mode": "delete"}, errors.InvalidParams, "mode"),
    ({"config": "/tmp/evil.conf"}, errors.InvalidParams, "config"),
])
async def test_injection_and_escapes_are_refused(shared: tuple[SyncEnv, ServerHandle], params: dict[str, Any],
                                                  error: type[errors.RPCError], fragment: str) -> None:
    env, handle = shared
    async with connect(handle) as c:
        before = await c.call("mcp.sync.listJobs", {})
        with pytest.raises(error) as info:
            await c.call("mcp.sync.runJob", {"source": "/docs", "destination": "backup:out",
                                             **{k: _at(v, env.base) for k, v in params.items()}})
        after = await c.call("mcp.sync.listJobs", {})
    assert fragment in info.value.message
    assert str(env.base) not in info.value.message
    assert after == before  # refused before any job existed
    assert not (env.remote / "out").exists()
    assert list((env.base / "outside").iterdir()) == [] and not (env.base / "written").exists()


async def test_absolute_host_path_stays_inside_the_root(shared: tuple[SyncEnv, ServerHandle]) -> None:
    env, handle = shared
    outside = env.base / "elsewhere"
    outside.mkdir()
    async with connect(handle) as c:
        out = await c.call("mcp.sync.runJob", {"source": "/docs", "destination": str(outside), "wait": True})
    assert out["state"] == "succeeded", out
    assert list(outside.iterdir()) == []
    inside = env.root / str(outside).lstrip("/")
    assert tree(inside) == {"a.txt": "alpha"}
    assert out["destination"] == "/" + str(outside).lstrip("/")


async def test_unknown_job(shared: tuple[SyncEnv, ServerHandle]) -> None:
    _, handle = shared
    async with connect(handle) as c:
        with pytest.raises(errors.NotFound):
            await c.call("mcp.sync.getJobStatus", {"job_id": "job-000000000000"})
        with pytest.raises(errors.NotFound):
            await c.call("mcp.sync.stopJob", {"job_id": "job-000000000000"})
        with pytest.raises(errors.InvalidParams):
            await c.call("mcp.sync.getJobStatus", {"job_id": "../../etc/passwd"})



def test_bad_limit_setting_stops_the_server_with_a_message(senv: SyncEnv) -> None:
    with pytest.raises(Exception) as info:
        start_process("sync", {**senv.env, "LLMBDO_SYNC_MAX_JOBS": "lots"})
    assert "LLMBDO_SYNC_MAX_JOBS must be an integer" in str(info.value)

