"""The shipped example workflows load cleanly, and the ones that need no LLM or mail account run for real:
backup_folder drives the real sync server (real rclone), simple_sequential runs as the original did."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.agent_harness import AgentStack

REPO_WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="module")
def stack() -> Iterator[AgentStack]:
    shipped = {p.name: p.read_text(encoding="utf-8") for p in REPO_WORKFLOWS.glob("*.yaml")}
    s = AgentStack(shipped)
    try:
        s.start_routed("sync", LLMBDO_VIRTUAL_ROOT=str(s.root))
        yield s
    finally:
        s.close()


async def test_every_shipped_workflow_loads(stack: AgentStack) -> None:
    async with stack.client() as c:
        listed = await c.call("mcp.agent.listWorkflows")
    assert listed["errors"] == []
    ids = {w["id"] for w in listed["workflows"]}
    assert {"summarise_folder", "triage_inbox", "backup_folder", "simple_sequential"} <= ids
    assert len(ids) == len(list(REPO_WORKFLOWS.glob("*.yaml")))


async def test_backup_folder_syncs_with_rclone(stack: AgentStack) -> None:
    docs = stack.root / "documents"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("alpha\n", encoding="utf-8")
    (docs / "sub" / "b.txt").write_text("beta\n", encoding="utf-8")
    async with stack.client() as c:
        await c.call("mcp.fs.mkdir", {"path": "/backup"})
        status = await stack.run(c, "backup_folder", {"source": "/documents", "destination": "/backup",
                                                      "poll_seconds": 0.2}, )
    assert status["state"] == "succeeded", (status["error"], status["log"][-3:])
    assert status["outputs"]["state"] == "succeeded"
    assert (stack.root / "backup" / "a.txt").read_text(encoding="utf-8") == "alpha\n"
    assert (stack.root / "backup" / "sub" / "b.txt").read_text(encoding="utf-8") == "beta\n"


async def test_simple_sequential_example_runs(stack: AgentStack) -> None:
    async with stack.client() as c:
        status = await stack.run(c, "simple_sequential")
    assert status["state"] == "succeeded", status["error"]
    assert [e["kind"] for e in status["log"]] == ["log", "sleep", "log"]
    assert status["outputs"] == {"step1": "Starting the simple sequential workflow", "step2": 1, "step3": "Done"}
