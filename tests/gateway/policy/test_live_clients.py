"""LiveClients: the generation that open connections compare per call, over a real gateway.db."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmbasedos.gateway.policy.live_clients import LiveClients
from llmbasedos.gateway.policy.tokens import TokenStore


@pytest.fixture
def db() -> Path:
    return Path(tempfile.mkdtemp(dir="/tmp")) / "gateway.db"


@pytest.fixture
def store(db: Path) -> Iterator[TokenStore]:
    s = TokenStore(db)
    yield s
    s.close()


def test_changes_from_another_process_move_the_generation(store: TokenStore, db: Path) -> None:
    live = LiveClients(store)
    seen: list[int] = []
    live.on_change(lambda: seen.append(live.generation))
    assert live.poll() is False  # nothing changed: nothing moves, nothing is re-read
    admin = TokenStore(db)  # what `llmbasedos token` opens
    try:
        record, _ = admin.create("laptop")
        assert live.poll() is True and live.active(record.id) == record
        admin.update("laptop", allow=("mcp.hello",))
        assert live.poll() is True
        active = live.active(record.id)
        assert active is not None and active.allow == ("mcp.hello",)
        admin.revoke("laptop")
        assert live.poll() is True and live.active(record.id) is None
    finally:
        admin.close()
    assert seen == sorted(seen) and len(seen) == 3  # each change told the listeners once
    assert live.active("c_nobody") is None


def test_an_expiry_moves_the_generation_when_it_passes(store: TokenStore) -> None:
    now = time.time()
    record, _ = store.create("brief", expires=now + 100)
    later, _ = store.create("longer", expires=now + 200)
    live = LiveClients(store)
    generation = live.generation
    assert live.poll(now + 50) is False and live.active(record.id, now + 50) == record
    assert live.active(record.id, now + 100) is None  # past its expiry even before the next poll
    assert live.poll(now + 100) is True and live.generation == generation + 1
    assert live.active(record.id) is None and live.active(later.id, now + 100) == later
    assert live.poll(now + 150) is False  # the next expiry is the other client's
    assert live.poll(now + 200) is True and live.active(later.id, now + 200) is None


def test_a_listener_that_fails_does_not_stop_the_others(store: TokenStore) -> None:
    live = LiveClients(store)
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    live.on_change(broken)
    live.on_change(lambda: calls.append("ok"))
    live.bump()
    assert calls == ["ok"]
    live.remove_listener(broken)
    live.bump()
    assert calls == ["ok", "ok"]
