"""Sessions of the 2025-11-25 era: ownership, expiry and the bounds on their number (pure code), then the
same bounds and the rate limit on `initialize` through a real gateway."""

from __future__ import annotations

import asyncio
import json

import httpx

from llmbasedos.gateway.doors.mcp_http.sessions import SessionStore
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity
from llmbasedos.protocol import errors
from tests.gateway.harness import OPEN_FREE_TIER, Env

ALICE = ClientIdentity("c1", "alice", "FREE", ("*",), False)
BOB = ClientIdentity("c2", "bob", "FREE", ("*",), False)


def test_a_session_belongs_to_its_client() -> None:
    store = SessionStore()
    session = store.create(ALICE, "2025-11-25")
    assert store.get(session.id, ALICE) is session
    assert store.get(session.id, BOB) is None
    assert store.get("unknown", ALICE) is None
    assert store.remove(session.id) is True
    assert store.get(session.id, ALICE) is None and session.closed


def test_idle_sessions_expire() -> None:
    store = SessionStore(idle_timeout=0.0)
    session = store.create(ALICE, "2025-11-25")
    assert store.get(session.id, ALICE) is None
    assert len(store) == 0


async def test_a_busy_session_does_not_expire_and_closing_cancels_its_work() -> None:
    store = SessionStore(idle_timeout=0.0)
    session = store.create(ALICE, "2025-11-25")
    task = asyncio.get_running_loop().create_task(asyncio.sleep(60))
    session.tasks[1] = task
    assert store.get(session.id, ALICE) is session
    store.close()
    await asyncio.sleep(0)
    assert task.cancelled() or task.cancelling()


def test_the_number_of_sessions_is_bounded() -> None:
    store = SessionStore(max_sessions=3)
    first = store.create(ALICE, "2025-11-25")
    for _ in range(5):
        store.create(ALICE, "2025-11-25")
    assert len(store) == 3
    assert store.get(first.id, ALICE) is None  # the least recently used went first


def test_sessions_follow_their_clients_rights() -> None:
    store = SessionStore()
    alice, bob = store.create(ALICE, "2025-11-25"), store.create(BOB, "2025-11-25")
    narrowed = ClientIdentity("c1", "alice", "FREE", ("mcp.hello",), False)

    def refresh(client: ClientIdentity) -> ClientIdentity:
        if client.client_id == "c2":
            raise errors.Unauthorized("Token revoked or expired")
        return narrowed

    store.follow_rights(refresh)
    assert store.get(alice.id, narrowed) is alice and alice.client == narrowed  # lives on, with the new rights
    assert bob.closed and store.get(bob.id, BOB) is None and len(store) == 1  # revoked: gone, its work cancelled


def test_a_session_is_found_by_its_client_whatever_its_current_rights() -> None:
    store = SessionStore()
    session = store.create(ALICE, "2025-11-25")
    widened = ClientIdentity("c1", "alice", "PRO", ("*",), False)
    assert store.get(session.id, widened) is session and session.client == widened
    assert store.get(session.id, BOB) is None


def test_one_client_cannot_push_out_another_clients_session() -> None:
    store = SessionStore(max_sessions=10)
    alice = store.create(ALICE, "2025-11-25")
    for _ in range(50):
        store.create(BOB, "2025-11-25")
    assert store.get(alice.id, ALICE) is alice
    assert len(store) == 10 and store.count(BOB) == 9


def test_each_client_has_its_own_cap_and_loses_its_own_oldest() -> None:
    store = SessionStore(per_client=3)
    alice = store.create(ALICE, "2025-11-25")
    bobs = [store.create(BOB, "2025-11-25") for _ in range(5)]
    assert store.count(BOB) == 3 and store.count(ALICE) == 1
    assert store.get(bobs[0].id, BOB) is None and bobs[0].closed
    assert store.get(bobs[-1].id, BOB) is bobs[-1]
    assert store.get(alice.id, ALICE) is alice
    store.remove(alice.id)
    assert store.count(ALICE) == 0


# -- through a real gateway -------------------------------------------------------------------------------

ACCEPT = "application/json, text/event-stream"
INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "1"}}}


async def _initialize(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    return await http.post(url, headers={"accept": ACCEPT, "authorization": f"Bearer {token}"}, json=INITIALIZE)


async def _ping(http: httpx.AsyncClient, url: str, token: str, session: str) -> httpx.Response:
    return await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={
        "accept": ACCEPT, "authorization": f"Bearer {token}", "mcp-session-id": session,
        "mcp-protocol-version": "2025-11-25"})


async def test_a_client_opening_many_sessions_only_ends_its_own(env: Env) -> None:
    gw = env.start_gateway(LLMBDO_MCP_SESSIONS_PER_CLIENT="4")
    bob = gw.create_token("bob")
    url = gw.url + "/mcp"
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        alice = (await _initialize(http, url, gw.token)).headers["mcp-session-id"]
        bobs = [(await _initialize(http, url, bob)).headers["mcp-session-id"] for _ in range(20)]
        assert (await _ping(http, url, gw.token, alice)).json()["result"] == {}
        assert (await _ping(http, url, bob, bobs[-1])).json()["result"] == {}
        assert (await _ping(http, url, bob, bobs[0])).status_code == 404  # its own oldest went
        assert (await _ping(http, url, bob, alice)).status_code == 404  # never someone else's


async def test_initialize_counts_against_the_clients_rate_limit(env: Env) -> None:
    env.set_tiers(OPEN_FREE_TIER + "SLOW:\n  allowed_capabilities: ['*']\n  rate_limit_requests: 3\n"
                  "  rate_limit_window_seconds: 3600\n")
    gw = env.start_gateway()
    slow = gw.create_token("slow", tier="SLOW")
    url = gw.url + "/mcp"
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        for _ in range(3):
            assert "mcp-session-id" in (await _initialize(http, url, slow)).headers
        refused = await _initialize(http, url, slow)
        assert "mcp-session-id" not in refused.headers
        error = refused.json()["error"]
        assert error["code"] == -32029 and error["data"]["retry_after"] > 0
        assert "mcp-session-id" in (await _initialize(http, url, gw.token)).headers  # others are not affected
    gw.stop()
    entries = [json.loads(line) for line in (env.state / "logs" / "audit.jsonl").read_text().splitlines()]
    assert any(e["event"] == "limit" and e.get("method") == "initialize" and e["name"] == "slow" for e in entries)
