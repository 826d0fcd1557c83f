"""Remotes that reach the local disk, through the real sync server and the real rclone (see sync_harness.py):
refused by default, kept inside the virtual root with LLMBDO_SYNC_LOCAL_REMOTES=confine, never a way out.
The refusals of single locations are in test_sync_server.py's test_injection_and_escapes_are_refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbasedos.protocol import errors
from tests.servers.sync_harness import LOCAL_REMOTES, SyncEnv, connect, make_env, tree
from tests.support.procs import ServerHandle
from tests.support.procs import start_server as start_process


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[SyncEnv, ServerHandle]]:
    env = make_env()
    handle = start_process("sync", env.env)
    yield env, handle
    handle.stop()
    env.close()


async def test_list_remotes_says_which_reach_the_local_disk_and_why_they_are_refused(
        shared: tuple[SyncEnv, ServerHandle]) -> None:
    _, handle = shared
    async with connect(handle) as c:
        remotes = {r["name"]: r for r in await c.call("mcp.sync.listRemotes", {})}
    assert {n for n, r in remotes.items() if r["local"]} == set(LOCAL_REMOTES)
    assert {n for n, r in remotes.items() if r["usable"]} == {"backup", "dav", "vault"}
    for name in LOCAL_REMOTES:
        assert f"remote {name!r}" in remotes[name]["refused"]
        if name != "loop":
            assert "LLMBDO_SYNC_LOCAL_REMOTES=confine" in remotes[name]["refused"]
    assert "cannot be checked" in remotes["loop"]["refused"] and "itself" in remotes["loop"]["refused"]
    assert remotes["backup"]["refused"] is None


async def test_confined_local_remotes_stay_inside_the_virtual_root(senv: SyncEnv, start_server: Any) -> None:
    """With LLMBDO_SYNC_LOCAL_REMOTES=confine a local remote's path is a path of the virtual root."""
    (senv.root / "outbox").mkdir()
    (senv.root / "outbox" / "letter.txt").write_text("dear")
    (senv.root / "data").mkdir()
    (senv.root / "data" / "mine.txt").write_text("inside")
    name = f"written-by-{senv.base.name}"  # unique, so only a write through a refused remote could make it
    handle = start_server("sync", {**senv.env, "LLMBDO_SYNC_LOCAL_REMOTES": "confine"})
    async with connect(handle) as c:
        remotes = {r["name"]: r for r in await c.call("mcp.sync.listRemotes", {})}
        assert {n for n, r in remotes.items() if r["usable"]} == {"backup", "dav", "vault", "disk", "kept"}
        assert "outside the virtual root" in remotes["outside"]["refused"]

        moved = await c.call("mcp.sync.runJob", ["/outbox", f"disk:{senv.base}/sent", "move", False, [], True])
        assert moved["state"] == "succeeded", moved
        assert moved["destination"] == "/" + f"{senv.base}/sent".lstrip("/")
        assert tree(senv.root / str(senv.base).lstrip("/") / "sent") == {"letter.txt": "dear"}
        assert not (senv.base / "sent").exists()

        # Relative paths start at the virtual root, not at the server's working directory (its state dir).
        rel = await c.call("mcp.sync.runJob", {"source": "disk:data", "destination": "backup:data", "wait": True})
        assert rel["state"] == "succeeded", rel
        assert rel["source"] == "/data" and tree(senv.remote / "data") == {"mine.txt": "inside"}

        with pytest.raises(errors.NotFound):  # <root>/etc, which does not exist: never the host's /etc
            await c.call("mcp.sync.runJob", {"source": "disk:/etc", "destination": "backup:etc"})
        with pytest.raises(errors.PathOutsideRoot):
            await c.call("mcp.sync.runJob", {"source": "/data", "destination": "disk:../.."})
        with pytest.raises(errors.InvalidParams) as info:  # the rewritten path is checked like a plain one
            await c.call("mcp.sync.runJob", {"mode": "sync", "source": "backup:data", "destination": "disk:/"})
        assert "virtual root" in info.value.message

        kept = await c.call("mcp.sync.runJob", {"source": "/data", "destination": "kept:copy", "wait": True})
        assert kept["state"] == "succeeded", kept
        assert tree(senv.root / "kept" / "copy") == {"mine.txt": "inside"}
        with pytest.raises(errors.InvalidParams) as info:  # kept: lives in the root, so overlaps count
            await c.call("mcp.sync.runJob", {"source": "/kept", "destination": "kept:again"})
        assert "overlap" in info.value.message

        for dest in (f"etc:{name}", f"sealed:{name}", f"pool:{name}", f"outside:{name}", f"loop:{name}"):
            with pytest.raises(errors.Forbidden) as info:
                await c.call("mcp.sync.runJob", {"source": "/data", "destination": dest})
            assert repr(dest.split(":")[0]) in info.value.message
            assert str(senv.base) not in info.value.message
    assert list((senv.base / "outside").iterdir()) == []
    assert not (Path("/tmp") / name).exists() and not (Path("/etc") / name).exists()


def test_bad_local_remotes_setting_stops_the_server_with_a_message(senv: SyncEnv, start_server: Any) -> None:
    with pytest.raises(Exception) as info:  # the fixture stops the server should it start all the same
        start_server("sync", {**senv.env, "LLMBDO_SYNC_LOCAL_REMOTES": "allow"})
    assert "LLMBDO_SYNC_LOCAL_REMOTES must be 'refuse' or 'confine'" in str(info.value)
