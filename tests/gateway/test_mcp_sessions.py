"""Sessions of the 2025-11-25 era: ownership, expiry and the bound on their number (pure code, no I/O)."""

from __future__ import annotations

import asyncio

from llmbasedos.gateway.mcp_http.sessions import SessionStore
from llmbasedos.gateway.policy import ClientIdentity
from llmbasedos.protocol import errors

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
