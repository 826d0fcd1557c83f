"""Sync jobs belong to the client that started them: the real gateway, two clients and the owner, the real
sync server and rclone (see sync_harness.py)."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pytest

from llmbasedos.protocol import errors
from tests.gateway.harness import Env, WsClient, wait_until
from tests.servers.sync_harness import SLOW, SyncEnv, big_file, gone, wait_running

_BEFORE_OWNERS = """
CREATE TABLE jobs (id TEXT PRIMARY KEY, mode TEXT NOT NULL, source TEXT NOT NULL, destination TEXT NOT NULL,
    dry_run INTEGER NOT NULL, flags TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL,
    ended_at REAL, pid INTEGER, exit_code INTEGER, error TEXT, progress TEXT, check_summary TEXT);
INSERT INTO jobs VALUES ('job-0123456789ab', 'copy', '/old', 'backup:old', 0, '[]', 'succeeded', 1.0, 1.0, 2.0,
    NULL, 0, NULL, NULL, NULL);
"""


async def _routed(c: WsClient) -> bool:
    try:
        await c.call("mcp.sync.listJobs", {})
    except errors.RPCError:
        return False
    return True


async def test_jobs_belong_to_the_client_that_started_them(senv: SyncEnv, start_server: Any) -> None:
    """Through the real gateway: a client sees and stops its own jobs only; the owner sees and stops all."""
    big_file(senv.root, "big")
    (senv.root / "small").mkdir()
    (senv.root / "small" / "s.txt").write_text("small")
    # A store from before jobs had owners: its job is the owner's alone.
    (senv.base / "data" / "sync").mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(senv.base / "data" / "sync" / "jobs.sqlite")) as db:
        db.executescript(_BEFORE_OWNERS)
    gw_env = Env()
    try:
        gw = gw_env.start_gateway()
        start_server("sync", {**senv.env, "LLMBDO_RUN_DIR": str(gw_env.run_dir)})
        alice = gw.create_token("alice", allow=("mcp.sync.*",))
        bob = gw.create_token("bob", allow=("mcp.sync.*",))
        async with (WsClient.connect(gw.ws_url, alice) as a, WsClient.connect(gw.ws_url, bob) as b,
                    WsClient.connect(gw.ws_url, gw.token) as owner):
            await wait_until(lambda: _routed(a), what="the sync service routed by the gateway")
            assert await a.call("mcp.sync.listJobs", {}) == []  # not even the old job
            hers = await a.call("mcp.sync.runJob", {"source": "/big", "destination": "backup:big", "flags": SLOW})
            running = await wait_running(a, hers["job_id"])
            his = await b.call("mcp.sync.runJob", {"source": "/small", "destination": "backup:bob", "wait": True})
            assert his["state"] == "succeeded", his

            unknown: dict[str, str] = {}
            for method in ("mcp.sync.getJobStatus", "mcp.sync.stopJob"):
                with pytest.raises(errors.NotFound) as info:
                    await b.call(method, {"job_id": "job-ffffffffffff"})
                unknown[method] = info.value.message.replace("job-ffffffffffff", "ID")
            for job_id in (hers["job_id"], "job-0123456789ab"):
                for method in ("mcp.sync.getJobStatus", "mcp.sync.stopJob"):
                    with pytest.raises(errors.NotFound) as info:
                        await b.call(method, {"job_id": job_id})
                    # Exactly the answer of an id that never existed: ids of others tell nothing.
                    assert info.value.message.replace(job_id, "ID") == unknown[method]
            assert [j["job_id"] for j in await b.call("mcp.sync.listJobs", {})] == [his["job_id"]]
            assert [j["job_id"] for j in await a.call("mcp.sync.listJobs", {"state": "running"})] == [hers["job_id"]]
            still = await a.call("mcp.sync.getJobStatus", {"job_id": hers["job_id"]})
            assert still["state"] == "running" and not gone(running["pid"])  # bob's stop touched nothing

            everyone = [j["job_id"] for j in await owner.call("mcp.sync.listJobs", {})]
            assert everyone == [his["job_id"], hers["job_id"], "job-0123456789ab"]
            old = await owner.call("mcp.sync.getJobStatus", {"job_id": "job-0123456789ab"})
            assert old["source"] == "/old"
            stopped = await owner.call("mcp.sync.stopJob", {"job_id": hers["job_id"]})
            assert stopped["state"] == "stopped" and gone(running["pid"])
            assert (await a.call("mcp.sync.getJobStatus", {"job_id": hers["job_id"]}))["state"] == "stopped"
    finally:
        gw_env.close()
