"""Executions in SQLite: they survive a reopen, live ones become interrupted, old finished ones are pruned."""

from __future__ import annotations

from pathlib import Path

from llmbasedos.servers.agent.store import ExecutionRecord, ExecutionStore


def test_records_survive_reopen_and_live_ones_become_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "agent" / "executions.db"
    store = ExecutionStore(path)
    log = [{"step": "a", "kind": "set", "state": "succeeded", "attempts": 1}]
    store.save(ExecutionRecord("x_live", "wf", "running", 1.0, client_id="c_1", current_step="b", log=log))
    store.save(ExecutionRecord("x_done", "wf", "succeeded", 2.0, client_id="c_2", outputs={"n": 3}))
    store.save(ExecutionRecord("x_wait", "other", "pending", 3.0))
    store.close()

    store = ExecutionStore(path)
    assert store.mark_interrupted(10.0) == 2
    live = store.get("x_live")
    assert live is not None and live.state == "interrupted" and live.ended_at == 10.0
    assert live.log == log and live.error
    done = store.get("x_done")
    assert done is not None and done.state == "succeeded" and done.outputs == {"n": 3}
    assert [r.id for r in store.list(client_id="c_2")] == ["x_done"]
    assert [r.id for r in store.list(workflow_id="other")] == ["x_wait"]
    assert [r.id for r in store.list(state="interrupted")] == ["x_wait", "x_live"]
    assert store.get("x_missing") is None
    store.close()


def test_prune_keeps_the_newest_and_every_live_run(tmp_path: Path) -> None:
    store = ExecutionStore(tmp_path / "e.db")
    store.save(ExecutionRecord("x_old_live", "wf", "running", 0.0))
    for i in range(1, 6):
        store.save(ExecutionRecord(f"x_{i}", "wf", "failed", float(i)))
    assert store.prune(2) == 3
    assert [r.id for r in store.list()] == ["x_5", "x_4", "x_old_live"]
    store.close()
