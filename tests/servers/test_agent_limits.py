"""Agent runs are bounded, through the real gateway: runs in flight per client and in total, runs started by runs
(depth and descendants), templates (size and CPU time), and a long run never stalls the agent's other callers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from llmbasedos.protocol import errors
from tests.gateway.harness import WsClient, wait_until
from tests.servers.agent_harness import FINAL, AgentStack

MAX_CHILDREN = 4

AGENT_YAML = f"""
http:
  allow_hosts: ["127.0.0.1:{{port}}"]
max_runs: 4
max_runs_per_client: 3
max_depth: 2
max_children: {MAX_CHILDREN}
max_render_seconds: 1
"""

WORKFLOWS = {
    "slow.yaml": """
id: slow
steps:
  - id: wait
    http: {url: "http://127.0.0.1:{port}/slow"}
""",
    "quick.yaml": "id: quick\nsteps:\n  - id: one\n    set: {done: true}\n",
    "twice.yaml": """
id: twice
steps:
  - id: first
    call: mcp.agent.runWorkflow
    params: {workflow_id: twice}
    on_error: continue
  - id: second
    call: mcp.agent.runWorkflow
    params: {workflow_id: twice}
    on_error: continue
""",
    "chain.yaml": """
id: chain
steps:
  - id: next
    call: mcp.agent.runWorkflow
    params: {workflow_id: chain}
""",
    "long_loop.yaml": """
id: long_loop
steps:
  - id: loop
    foreach: "{{ range(100000) | list }}"
    do:
      - id: note
        set: {n: "{{ item }}"}
""",
    "spin.yaml": """
id: spin
steps:
  - id: spin
    set: {x: "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"}
""",
    "huge.yaml": """
id: huge
steps:
  - id: big
    set: {x: "{{ 'a' * 10**9 }}"}
""",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[AgentStack]:
    s = AgentStack(WORKFLOWS, AGENT_YAML)
    try:
        yield s
    finally:
        s.close()


async def _settled(c: WsClient, workflow_id: str, most: int) -> list[dict[str, Any]]:
    """The executions of `workflow_id` once none is in flight (no live run is left to start another), or as
    soon as there are more than `most` (so an unbounded tree fails the test at once instead of growing)."""
    async def listed() -> list[dict[str, Any]] | None:
        runs: list[dict[str, Any]] = (await c.call("mcp.agent.listExecutions",
                                                   {"workflow_id": workflow_id, "limit": 500}))["executions"]
        return runs if runs and (len(runs) > most or all(r["state"] in FINAL for r in runs)) else None

    result: list[dict[str, Any]] = await wait_until(listed, 60, what=f"the runs of {workflow_id} to settle")
    return result


async def test_runs_in_flight_are_capped_per_client_and_in_total(stack: AgentStack) -> None:
    alice = stack.create_token("alice", "mcp.agent.*")
    bob = stack.create_token("bob", "mcp.agent.*")
    stack.http.release.clear()
    try:
        async with stack.client(alice) as a, stack.client(bob) as b:
            mine = [await a.call("mcp.agent.runWorkflow", {"workflow_id": "slow"}) for _ in range(3)]
            with pytest.raises(errors.RateLimited) as over:
                await a.call("mcp.agent.runWorkflow", {"workflow_id": "slow"})
            assert "this client has 3 workflow runs in flight" in over.value.message
            assert "max_runs_per_client in agent.yaml, or LLMBDO_AGENT_MAX_RUNS_PER_CLIENT" in over.value.message
            theirs = await b.call("mcp.agent.runWorkflow", {"workflow_id": "slow"})  # another client still can
            with pytest.raises(errors.RateLimited) as full:
                await b.call("mcp.agent.runWorkflow", {"workflow_id": "quick"})
            assert "4 workflow runs are in flight" in full.value.message
            assert "(max_runs in agent.yaml, or LLMBDO_AGENT_MAX_RUNS)" in full.value.message
            recorded = await a.call("mcp.agent.listExecutions", {"workflow_id": "slow"})
            assert len(recorded["executions"]) == 3  # a refusal leaves no execution behind
            stack.http.release.set()
            for run in mine:
                assert (await stack.wait_done(a, run["execution_id"]))["state"] == "succeeded"
            assert (await stack.wait_done(b, theirs["execution_id"]))["state"] == "succeeded"
            # Ended runs give their places back.
            assert (await stack.run(a, "quick"))["state"] == "succeeded"
            assert (await stack.run(b, "quick"))["state"] == "succeeded"
    finally:
        stack.http.release.set()


async def test_runs_started_by_runs_stop_at_the_depth_cap(stack: AgentStack) -> None:
    async with stack.client() as c:
        await c.call("mcp.agent.runWorkflow", {"workflow_id": "chain"})
        runs = await _settled(c, "chain", 3)
        statuses = [await c.call("mcp.agent.getWorkflowStatus", {"execution_id": r["id"]}) for r in runs]
    assert len(runs) == 3  # levels 0, 1 and 2
    failed = [s for s in statuses if s["state"] == "failed"]
    assert len(failed) == 1 and sum(s["state"] == "succeeded" for s in statuses) == 2
    assert "workflows nest deeper than 2 levels" in failed[0]["error"]
    assert "LLMBDO_AGENT_MAX_DEPTH" in failed[0]["error"]
    assert {s["client_id"] for s in statuses} == {statuses[0]["client_id"]}  # every child acts as the client


async def test_a_workflow_starting_itself_twice_stops_at_the_caps(stack: AgentStack) -> None:
    async with stack.client() as c:
        await c.call("mcp.agent.runWorkflow", {"workflow_id": "twice"})
        runs = await _settled(c, "twice", 1 + MAX_CHILDREN)
        statuses = [await c.call("mcp.agent.getWorkflowStatus", {"execution_id": r["id"]}) for r in runs]
        assert (await stack.run(c, "quick"))["state"] == "succeeded"  # the agent still runs other work
    assert 2 <= len(runs) <= 1 + MAX_CHILDREN
    refusals = [e["error"] for s in statuses for e in s["log"] if e.get("error")]
    assert refusals, "some start must have been refused"
    # Each refusal names the cap that stopped it (descendants, depth, or runs in flight) and its setting.
    assert all("LLMBDO_AGENT_MAX_" in r for r in refusals), refusals
    assert all(s["state"] == "succeeded" for s in statuses)  # on_error: continue


async def test_a_long_foreach_does_not_stall_other_callers(stack: AgentStack) -> None:
    watcher = stack.create_token("watcher", "mcp.agent.*")
    async with stack.client() as c, stack.client(watcher) as other:
        started = await c.call("mcp.agent.runWorkflow", {"workflow_id": "long_loop"})
        xid = started["execution_id"]

        async def looping() -> dict[str, Any] | None:
            status: dict[str, Any] = await c.call("mcp.agent.getWorkflowStatus", {"execution_id": xid})
            return status if any(e["step"] == "note" for e in status["log"]) else None

        await wait_until(looping, what="the foreach to run its steps")
        listed = await other.call("mcp.agent.listWorkflows")
        during = await c.call("mcp.agent.getWorkflowStatus", {"execution_id": xid})
        stopped = await c.call("mcp.agent.stopWorkflow", {"execution_id": xid})
    assert "long_loop" in {w["id"] for w in listed["workflows"]}
    # Another client was answered, and the run was still going after that answer: it did not wait for the run.
    assert during["state"] == "running"
    assert stopped["state"] == "stopped"


async def test_hostile_templates_fail_their_run_and_the_agent_keeps_serving(stack: AgentStack) -> None:
    watcher = stack.create_token("watcher2", "mcp.agent.*")
    async with stack.client() as c, stack.client(watcher) as other:
        started = await c.call("mcp.agent.runWorkflow", {"workflow_id": "spin"})
        listed = await other.call("mcp.agent.listWorkflows")
        during = await c.call("mcp.agent.getWorkflowStatus", {"execution_id": started["execution_id"]})
        spin = await stack.wait_done(c, started["execution_id"])
        huge = await stack.run(c, "huge")
    assert "spin" in {w["id"] for w in listed["workflows"]}
    assert during["state"] == "running"  # the render spins on a worker thread, not on the agent's loop
    assert spin["state"] == "failed"
    assert "template refused" in spin["error"] and "used more than 1 s of CPU time" in spin["error"]
    assert huge["state"] == "failed" and "the result of '*' would be too large" in huge["error"]
    assert stack.agent.alive()
