"""A workflow acts with the rights of the client that started it, and never more (through the real gateway)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from llmbasedos.protocol import errors
from tests.gateway.harness import wait_until
from tests.servers.agent_harness import AgentStack

AGENT_YAML = 'http:\n  allow_hosts: ["127.0.0.1:{port}"]\n'

WORKFLOWS = {
    "copy.yaml": """
id: copy
steps:
  - id: read
    call: mcp.fs.read
    params: {path: /in.txt}
  - id: write
    call: mcp.fs.write
    params: {path: /copied.txt, content: "{{ steps.read.content }}"}
""",
    "whoami.yaml": """
id: whoami
steps:
  - id: me
    call: mcp.twin.whoami
""",
    "long_call.yaml": """
id: long_call
steps:
  - id: nap
    call: mcp.echo.sleep
    params: {seconds: 300}
  - id: after
    call: mcp.fs.write
    params: {path: /after-nap.txt, content: x}
""",
    "wait_then_read.yaml": """
id: wait_then_read
steps:
  - id: wait
    http: {url: "http://127.0.0.1:{port}/slow"}
  - id: read
    call: mcp.fs.read
    params: {path: /in.txt}
""",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[AgentStack]:
    s = AgentStack(WORKFLOWS, AGENT_YAML)
    (s.root / "in.txt").write_text("private words\n", encoding="utf-8")
    try:
        s.start_routed("twin")
        s.start_routed("echo")
        yield s
    finally:
        s.close()


def _audit(stack: AgentStack) -> list[dict[str, Any]]:
    try:
        lines = (stack.env.state / "logs" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


async def test_a_client_without_write_rights_cannot_write_through_a_workflow(stack: AgentStack) -> None:
    token = stack.create_token("reader", "mcp.fs.read", "mcp.fs.list", "mcp.agent.*")
    async with stack.client(token) as reader:
        me = (await reader.call("mcp.licence.check"))["client"]
        with pytest.raises(errors.Forbidden):
            await reader.call("mcp.fs.write", {"path": "/direct.txt", "content": "x"})
        status = await stack.run(reader, "copy")
    assert status["state"] == "failed"
    assert [e["state"] for e in status["log"]] == ["succeeded", "failed"]  # it could read, as the reader may
    assert "mcp.fs.write is not allowed" in status["error"]
    assert f"code {errors.FORBIDDEN}" in status["error"]
    assert not (stack.root / "copied.txt").exists()
    assert status["client_id"] == me["id"]

    def denied() -> bool:
        return any(e.get("event") == "authz" and e.get("outcome") == "denied" and e.get("client") == me["id"]
                   and e.get("method") == "mcp.fs.write" for e in _audit(stack))

    await wait_until(denied, what="the refusal in the audit log, in the reader's name")
    assert "private words" not in (stack.env.state / "logs" / "audit.jsonl").read_text(encoding="utf-8")

    async with stack.client() as owner:
        ok = await stack.run(owner, "copy")
        assert ok["state"] == "succeeded", ok
        # A client sees its own executions only; the owner sees all.
        async with stack.client(token) as reader:
            with pytest.raises(errors.NotFound):
                await reader.call("mcp.agent.getWorkflowStatus", {"execution_id": ok["id"]})
            with pytest.raises(errors.NotFound):
                await reader.call("mcp.agent.stopWorkflow", {"execution_id": ok["id"]})
            mine = await reader.call("mcp.agent.listExecutions")
        everyone = await owner.call("mcp.agent.listExecutions")
    assert {e["id"] for e in mine["executions"]} == {status["id"]}
    assert {status["id"], ok["id"]} <= {e["id"] for e in everyone["executions"]}
    assert (stack.root / "copied.txt").read_text(encoding="utf-8") == "private words\n"


async def test_a_client_without_agent_rights_cannot_start_workflows(stack: AgentStack) -> None:
    token = stack.create_token("fsonly", "mcp.fs.*")
    async with stack.client(token) as c:
        with pytest.raises(errors.Forbidden):
            await c.call("mcp.agent.runWorkflow", {"workflow_id": "copy"})


async def test_a_client_revoked_mid_run_stops_acting(stack: AgentStack) -> None:
    token = stack.create_token("leaver", "mcp.fs.read", "mcp.agent.*")
    stack.http.slow_started.clear()
    stack.http.release.clear()
    async with stack.client(token) as c:
        started = await c.call("mcp.agent.runWorkflow", {"workflow_id": "wait_then_read"})
        await wait_until(stack.http.slow_started.is_set, what="the run to reach its waiting step")
        stack.gw.revoke_token("leaver")
        stack.http.release.set()
    async with stack.client() as owner:
        status = await stack.wait_done(owner, started["execution_id"])
    assert status["state"] == "failed"
    assert status["log"][-1]["step"] == "read"
    assert f"code {errors.UNAUTHORIZED}" in status["error"]


@pytest.mark.parametrize(("change", "code"), [(("--expires", "1s"), errors.UNAUTHORIZED),
                                              (("--allow", "mcp.agent.*"), errors.FORBIDDEN)])
async def test_a_client_changed_mid_run_acts_with_its_new_rights(stack: AgentStack, change: tuple[str, ...],
                                                                 code: int) -> None:
    """`token update` during a run: an expiry stops it acting, a narrowed allowlist narrows what it may do."""
    name = f"changed{len(change[1])}"
    token = stack.create_token(name, "mcp.fs.read", "mcp.agent.*")
    stack.http.slow_started.clear()
    stack.http.release.clear()
    async with stack.client(token) as c:
        started = await c.call("mcp.agent.runWorkflow", {"workflow_id": "wait_then_read"})
        await wait_until(stack.http.slow_started.is_set, what="the run to reach its waiting step")
    stack.update_token(name, *change)

    async def in_force() -> bool:  # the change as the gateway sees it, before the run goes on
        try:
            async with stack.client(token) as probe:
                return "mcp.fs.read" not in (await probe.call("mcp.hello"))["methods"]
        except (InvalidStatus, errors.Unauthorized):  # refused at the handshake, or expired during the probe
            return True

    await wait_until(in_force, what="the change to be in force")
    stack.http.release.set()
    async with stack.client() as owner:
        status = await stack.wait_done(owner, started["execution_id"])
    assert status["state"] == "failed"
    assert status["log"][-1]["step"] == "read"
    assert f"code {code}" in status["error"]


async def test_ws_clients_cannot_borrow_an_identity_with_caller(stack: AgentStack) -> None:
    token = stack.create_token("borrower", "mcp.fs.read", "mcp.licence.check")
    async with stack.client() as owner:
        owner_id = (await owner.call("mcp.licence.check"))["client"]["id"]
    async with stack.client(token) as c:
        await c.send({"jsonrpc": "2.0", "id": 7, "method": "mcp.fs.write",
                      "params": {"path": "/borrowed.txt", "content": "x"}, "caller": {"client_id": owner_id}})
        answer = await c.next_message()
    assert answer["id"] == 7 and answer["error"]["code"] == errors.FORBIDDEN
    assert not (stack.root / "borrowed.txt").exists()


async def test_calls_carry_the_identity_of_the_client_that_started_the_run(stack: AgentStack) -> None:
    token = stack.create_token("asker", "mcp.twin.whoami", "mcp.agent.*")
    async with stack.client(token) as c:
        me = await wait_until(lambda: _whoami(c), what="the twin backend routed")
        status = await stack.run(c, "whoami")
    assert status["state"] == "succeeded", status["error"]
    # The same identity, and the run making the call next to it (so the runs a run starts are its children).
    assert status["outputs"]["me"] == {**me, "run": status["id"]}
    assert me["name"] == "asker"


async def _whoami(c: Any) -> Any:
    try:
        return await c.call("mcp.twin.whoami")
    except errors.RPCError:
        return None


def _upstream(stack: AgentStack, name: str) -> dict[str, Any]:
    answer = httpx.get(f"{stack.gw.url}/status", headers={"Authorization": f"Bearer {stack.gw.token}"}, timeout=10)
    services: dict[str, Any] = answer.json()["services"]
    return services.get(name, {})


async def test_stop_cancels_the_gateway_call_in_flight(stack: AgentStack) -> None:
    async with stack.client() as c:
        await wait_until(lambda: _upstream(stack, "echo").get("state") is not None, what="echo routed")
        started = await c.call("mcp.agent.runWorkflow", {"workflow_id": "long_call"})
        xid = started["execution_id"]
        await wait_until(lambda: _upstream(stack, "echo").get("in_flight") == 1, what="the call to reach echo")
        stopped = await c.call("mcp.agent.stopWorkflow", {"execution_id": xid})
        assert stopped["state"] == "stopped"
        # Cancelled upstream too: nothing is left in flight, long before the 300 s sleep could end.
        await wait_until(lambda: _upstream(stack, "echo").get("in_flight") == 0, what="the call to be cancelled")
        status = await c.call("mcp.agent.getWorkflowStatus", {"execution_id": xid})
    assert [(e["step"], e["state"]) for e in status["log"]] == [("nap", "stopped")]

    def cancelled() -> bool:
        return any(e.get("event") == "call" and e.get("method") == "mcp.echo.sleep"
                   and e.get("outcome") == "cancelled" for e in _audit(stack))

    await wait_until(cancelled, what="the gateway to record the cancelled call")
    assert not (stack.root / "after-nap.txt").exists()
