"""Session and router in process, with the real Policy: local methods as other gateway modules register them."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llmbasedos.gateway.doors.session import MAX_BATCH, MAX_IN_FLIGHT, POLICY_VIOLATION, Session
from llmbasedos.gateway.policy.gatekeeper import Policy
from llmbasedos.gateway.policy.tokens import TokenStore
from llmbasedos.gateway.routing.router import GatewayCall, Router
from llmbasedos.protocol import errors
from llmbasedos.protocol.caps import CapsError
from llmbasedos.settings import Settings
from tests.gateway.harness import OPEN_FREE_TIER, wait_until

CAP = {"method": "mcp.demo.work", "description": "A local method for the tests",
       "params_schema": {"type": "object", "properties": {"steps": {"type": "integer", "minimum": 0},
                                                         "hang": {"type": "boolean"}},
                         "required": ["steps"], "additionalProperties": False},
       "positional": ["steps"], "annotations": {"streaming": True}}


class Demo:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.calls: list[GatewayCall] = []

    async def work(self, call: GatewayCall, params: dict[str, Any]) -> Any:
        self.calls.append(call)
        for i in range(params["steps"]):
            call.notify("mcp.demo.chunk", {"n": i})
        if params.get("hang"):
            self.started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if params["steps"] == 13:
            raise RuntimeError("secret detail /home/someone")
        return {"done": params["steps"], "client": call.client.name}


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Router, Demo, Policy]]:
    state = Path(tempfile.mkdtemp(prefix="gws", dir="/tmp"))
    (state / "config").mkdir()
    (state / "config" / "licence_tiers.yaml").write_text(OPEN_FREE_TIER, encoding="utf-8")
    settings = Settings(state_dir=state, run_dir=state / "run", data_dir=state / "data", log_dir=state / "logs",
                        config_dir=state / "config", virtual_root=state / "files")
    policy = Policy.load(settings)
    router = Router(policy)
    demo = Demo()
    router.register_local("mcp.demo.work", demo.work, CAP)
    try:
        yield router, demo, policy
    finally:
        policy.close()
        shutil.rmtree(state, ignore_errors=True)


async def test_local_method_notifies_with_the_callers_id(setup: tuple[Router, Demo, Policy]) -> None:
    router, _, policy = setup
    sent: list[Any] = []
    session = Session(router, policy.local_identity(), sent.append, transport="test")
    session.receive({"jsonrpc": "2.0", "id": "r1", "method": "mcp.demo.work", "params": [2]})
    await wait_until(lambda: any(m.get("id") == "r1" for m in sent), what="the answer")
    assert sent == [
        {"jsonrpc": "2.0", "method": "mcp.demo.chunk", "params": {"n": 0, "id": "r1"}},
        {"jsonrpc": "2.0", "method": "mcp.demo.chunk", "params": {"n": 1, "id": "r1"}},
        {"jsonrpc": "2.0", "id": "r1", "result": {"done": 2, "client": "owner"}},
    ]
    caps = {s["service_name"]: s for s in router.capabilities_for(policy.local_identity())}
    assert caps["demo"]["capabilities"][0]["annotations"] == {"streaming": True}


async def test_local_params_are_validated_and_bugs_hidden(setup: tuple[Router, Demo, Policy]) -> None:
    router, _, policy = setup
    owner = policy.local_identity()
    with pytest.raises(errors.InvalidParams, match="steps"):
        await router.call(owner, "mcp.demo.work", {"steps": "many"})
    with pytest.raises(errors.InvalidParams):
        await router.call(owner, "mcp.demo.work", [1, 2, 3])
    with pytest.raises(errors.InternalError) as info:
        await router.call(owner, "mcp.demo.work", {"steps": 13})
    assert "secret" not in str(info.value)
    with pytest.raises(errors.MethodNotFound):
        await router.call(owner, "mcp.demo.nothing", {})
    assert await router.call(owner, "mcp.demo.work", {"steps": 0}) == {"done": 0, "client": "owner"}


async def test_disconnect_cancels_local_work(setup: tuple[Router, Demo, Policy]) -> None:
    router, demo, policy = setup
    sent: list[Any] = []
    session = Session(router, policy.local_identity(), sent.append, transport="test")
    session.receive({"jsonrpc": "2.0", "id": 1, "method": "mcp.demo.work", "params": {"steps": 0, "hang": True}})
    await asyncio.wait_for(demo.started.wait(), 10)
    session.close()
    await asyncio.wait_for(demo.cancelled.wait(), 10)
    assert demo.calls[0].disconnected.is_set()
    assert sent == []  # nobody is left to read an answer


async def test_cancel_notification_answers_cancelled(setup: tuple[Router, Demo, Policy]) -> None:
    router, demo, policy = setup
    sent: list[Any] = []
    session = Session(router, policy.local_identity(), sent.append, transport="test")
    session.receive({"jsonrpc": "2.0", "id": 5, "method": "mcp.demo.work", "params": {"steps": 0, "hang": True}})
    await asyncio.wait_for(demo.started.wait(), 10)
    session.receive({"jsonrpc": "2.0", "method": "mcp.cancel", "params": {"id": 5}})
    await wait_until(lambda: sent, what="the answer")
    assert sent[0]["id"] == 5 and sent[0]["error"]["code"] == errors.CANCELLED
    assert demo.cancelled.is_set()


async def test_registration_conflicts(setup: tuple[Router, Demo, Policy]) -> None:
    router, demo, _ = setup
    with pytest.raises(CapsError, match="already registered"):
        router.register_local("mcp.demo.work", demo.work, CAP)
    with pytest.raises(CapsError, match="JSON Schema"):
        router.register_local("mcp.demo.other", demo.work, {"params_schema": {"type": "nonsense"}})
    assert "demo" in router.reserved_services()


async def test_oversized_batches_and_floods_are_refused(setup: tuple[Router, Demo, Policy]) -> None:
    router, _, policy = setup
    sent: list[Any] = []
    session = Session(router, policy.local_identity(), sent.append, transport="test")
    session.receive([{"jsonrpc": "2.0", "id": i, "method": "mcp.hello"} for i in range(MAX_BATCH + 1)])
    assert sent[-1]["error"]["code"] == errors.INVALID_REQUEST and str(MAX_BATCH) in sent[-1]["error"]["message"]
    for i in range(MAX_IN_FLIGHT + 1):
        session.receive({"jsonrpc": "2.0", "id": i, "method": "mcp.demo.work", "params": {"steps": 0, "hang": True}})
    assert sent[-1] == {"jsonrpc": "2.0", "id": MAX_IN_FLIGHT, "error": {
        "code": errors.RATE_LIMITED, "message": f"More than {MAX_IN_FLIGHT} calls in flight on this connection",
        "data": {"retry_after": 1}}}
    assert session.in_flight == MAX_IN_FLIGHT
    session.close()


# -- rights that change while the session is open -----------------------------------------------------------


def _other_store(policy: Policy) -> TokenStore:
    """Another connection to the gateway's database, as `llmbasedos token` opens it."""
    return TokenStore(policy.owner_token_path.parent / "gateway.db")


async def _generation_moves(policy: Policy, before: int) -> None:
    await wait_until(lambda: policy.clients.generation != before, 10, what="the policy to notice the change")


async def test_a_revoked_client_gets_its_next_message_refused_and_its_connection_ended(
        setup: tuple[Router, Demo, Policy]) -> None:
    router, demo, policy = setup
    store = _other_store(policy)
    try:
        _, token = store.create("leaver", allow=("mcp.demo.*",))
        client = policy.authenticate(token, transport="test", remote="r")
        sent: list[Any] = []
        ended: list[tuple[int, str]] = []
        session = Session(router, client, sent.append, transport="test")
        session.end = lambda code, reason: ended.append((code, reason))
        session.receive({"jsonrpc": "2.0", "id": 1, "method": "mcp.demo.work", "params": {"steps": 0, "hang": True}})
        await asyncio.wait_for(demo.started.wait(), 10)
        before = policy.clients.generation
        store.revoke("leaver")
        await _generation_moves(policy, before)
        session.receive({"jsonrpc": "2.0", "id": 2, "method": "mcp.demo.work", "params": {"steps": 0}})
        refusal = errors.Unauthorized("Token revoked or expired").to_error()
        assert sent == [{"jsonrpc": "2.0", "id": 2, "error": refusal}]
        assert ended == [(POLICY_VIOLATION, "token revoked or expired")] and POLICY_VIOLATION == 1008
        await asyncio.wait_for(demo.cancelled.wait(), 10)  # its call in flight is stopped too
        session.receive([{"jsonrpc": "2.0", "id": 3, "method": "mcp.demo.work", "params": {"steps": 0}}])
        await asyncio.sleep(0)
        assert len(sent) == 1 and len(ended) == 1 and len(demo.calls) == 1  # nothing more runs or answers
    finally:
        store.close()


async def test_an_expired_client_is_refused_on_its_open_session(setup: tuple[Router, Demo, Policy]) -> None:
    router, _, policy = setup
    store = _other_store(policy)
    try:
        _, token = store.create("brief", allow=("mcp.demo.*",))
        client = policy.authenticate(token, transport="test", remote="r")
        sent: list[Any] = []
        ended: list[tuple[int, str]] = []
        session = Session(router, client, sent.append, transport="test")
        session.end = lambda code, reason: ended.append((code, reason))
        store.update("brief", expires=time.time() + 1.0)
        rid = 0

        def refused() -> bool:
            nonlocal rid
            if ended:
                return True
            rid += 1
            session.receive({"jsonrpc": "2.0", "id": rid, "method": "mcp.demo.work", "params": {"steps": 0}})
            return False

        await wait_until(refused, 10, what="the expiry to end the session")
        await wait_until(lambda: any(m.get("id") == rid for m in sent), what="the last answer")
        answers = {m["id"]: m for m in sent}
        assert "error" in answers[rid] and answers[rid]["error"]["code"] == errors.UNAUTHORIZED
        # Before the expiry, answered as usual (calls still running when it ended are cancelled, unanswered).
        assert all("result" in m for i, m in answers.items() if i != rid)
        with pytest.raises(errors.Unauthorized, match="expired"):
            policy.authenticate(token, transport="test", remote="r")
    finally:
        store.close()


async def test_a_changed_allowlist_applies_to_the_next_message(setup: tuple[Router, Demo, Policy]) -> None:
    router, _, policy = setup
    store = _other_store(policy)
    try:
        _, token = store.create("mover", allow=("mcp.demo.*",))
        sent: list[Any] = []
        ended: list[tuple[int, str]] = []
        session = Session(router, policy.authenticate(token, transport="test", remote="r"), sent.append,
                          transport="test")
        session.end = lambda code, reason: ended.append((code, reason))
        session.receive({"jsonrpc": "2.0", "id": 1, "method": "mcp.demo.work", "params": {"steps": 0}})
        await wait_until(lambda: len(sent) == 1, what="the first answer")
        assert sent[0]["result"]["client"] == "mover"
        before = policy.clients.generation
        store.update("mover", allow=("mcp.hello",))
        await _generation_moves(policy, before)
        session.receive({"jsonrpc": "2.0", "id": 2, "method": "mcp.demo.work", "params": {"steps": 0}})
        await wait_until(lambda: len(sent) == 2, what="the second answer")
        assert sent[1]["error"]["code"] == errors.FORBIDDEN
        assert session.client.allow == ("mcp.hello",) and ended == [] and not session.revoked
    finally:
        store.close()
