"""The caps on runs in flight and on the trees of runs that runs start (pure: no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmbasedos.protocol import errors
from llmbasedos.servers.agent.config import AgentConfig
from llmbasedos.servers.agent.runs import LiveRuns


def _live(**limits: int) -> LiveRuns:
    return LiveRuns(AgentConfig(workflows_dir=Path("w"), gateway_socket=Path("g.sock"), **limits))  # type: ignore[arg-type]


def test_a_client_past_its_cap_is_refused_while_another_client_still_starts() -> None:
    live = _live(max_runs_per_client=2, max_runs=3)
    live.admit("a1", "alice")
    live.admit("a2", "alice")
    with pytest.raises(errors.RateLimited,
                       match=r"max_runs_per_client in agent\.yaml, or LLMBDO_AGENT_MAX_RUNS_PER_CLIENT"):
        live.admit("a3", "alice")
    live.admit("b1", "bob")
    with pytest.raises(errors.RateLimited, match=r"3 workflow runs are in flight.*LLMBDO_AGENT_MAX_RUNS\)"):
        live.admit("b2", "bob")
    live.end("a1")
    live.admit("b2", "bob")  # an ended run gives its place back
    assert len(live) == 3
    live.end("a1")  # twice, or unknown: ignored
    live.end("nope")
    assert len(live) == 3


def test_a_run_starting_itself_twice_stops_at_the_descendant_cap() -> None:
    live = _live(max_children=5, max_depth=10, max_runs=100, max_runs_per_client=100)
    live.admit("root", "alice")
    started, refused = ["root"], []
    for parent in started:  # breadth first: every run tries to start two children
        for n in range(2):
            child = f"{parent}.{n}"
            try:
                live.admit(child, "alice", parent)
            except errors.QuotaExceeded as exc:
                refused.append(str(exc))
            else:
                started.append(child)
    assert len(started) == 1 + 5
    assert refused and all("LLMBDO_AGENT_MAX_CHILDREN" in r for r in refused)
    # The budget is the tree's as long as one of its runs lives: ending some does not give it back.
    live.end("root.0")
    with pytest.raises(errors.QuotaExceeded, match="max_children"):
        live.admit("again", "alice", "root.1")
    for run in started:
        live.end(run)
    assert len(live) == 0
    live.admit("root", "alice")  # a new tree, a new budget
    live.admit("fresh", "alice", "root")


def test_depth_counts_runs_started_by_runs_and_workflow_steps_together() -> None:
    live = _live(max_depth=3, max_children=100, max_runs_per_client=100, max_runs=100)
    live.admit("r0", "alice")
    live.admit("r1", "alice", "r0")  # depth 1
    live.enter_workflow("r1")  # its workflow step: depth 2
    live.admit("r3", "alice", "r1")  # started from inside that step: depth 3
    with pytest.raises(errors.QuotaExceeded, match=r"nest deeper than 3 levels.*LLMBDO_AGENT_MAX_DEPTH"):
        live.admit("r4", "alice", "r3")
    with pytest.raises(errors.QuotaExceeded, match="nest deeper than 3"):
        live.enter_workflow("r3")
    live.leave_workflow("r1")
    live.admit("r2", "alice", "r1")  # back at depth 1: its children are at depth 2
    live.leave_workflow("r1")  # more leaves than enters: ignored
    live.admit("r2b", "alice", "r1")


def test_a_parent_must_be_live_and_the_callers_own() -> None:
    live = _live()
    live.admit("mine", "alice")
    with pytest.raises(errors.InvalidRequest, match="not running"):
        live.admit("child", "alice", "x_gone")
    with pytest.raises(errors.Forbidden, match="another client"):
        live.admit("child", "mallory", "mine")
    assert len(live) == 1
    # A run started on the agent's own socket (no client id) may have children in the owner's name.
    live.admit("local", None)
    live.admit("child", "c_owner", "local")
