"""Refused credentials reach the audit log at a bounded rate: the counter on a clock of the test's own, and a
real gateway flooded with bad tokens."""

from __future__ import annotations

import json

import httpx

from llmbasedos.gateway.policy.audit import load_key, verify
from llmbasedos.gateway.policy.refusals import OTHER_ADDRESSES, RefusalCounter
from tests.gateway.harness import Env


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_refusal_of_a_minute_is_audited_and_repeats_are_counted() -> None:
    clock = Clock()
    counter = RefusalCounter(clock=clock)
    assert counter.first("10.0.0.1") is True
    assert [counter.first("10.0.0.1") for _ in range(5)] == [False] * 5
    assert counter.first("10.0.0.2") is True
    clock.now += 30
    assert counter.due() == []  # the minute is not over
    clock.now += 31
    assert counter.due() == [("10.0.0.1", 5)]  # 10.0.0.2 had no repeats: nothing to add
    assert counter.first("10.0.0.1") is True  # a new minute starts with an audited refusal again


def test_memory_and_audited_entries_are_bounded_across_addresses() -> None:
    clock = Clock()
    counter = RefusalCounter(max_addresses=10, max_first=1000, clock=clock)
    audited = sum(counter.first(f"10.0.{i // 250}.{i % 250}") for i in range(5000))
    assert audited == 10
    assert counter.due(everything=True) == [(OTHER_ADDRESSES, 4990)]
    counter = RefusalCounter(max_addresses=1000, max_first=20, clock=clock)
    assert sum(counter.first(f"10.1.0.{i}") for i in range(200)) == 20
    assert counter.due(everything=True) == [(OTHER_ADDRESSES, 180)]


async def test_a_flood_of_bad_tokens_writes_a_bounded_number_of_entries(env: Env) -> None:
    gw = env.start_gateway()
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        for i in range(500):
            headers = {"authorization": f"Bearer lbd_wrong{i}"} if i % 2 else {}
            resp = await http.get(gw.url + "/status", headers=headers)
            assert resp.status_code == 401
        assert (await http.get(gw.url + "/status", headers={"authorization": f"Bearer {gw.token}"})).is_success
    gw.stop()  # a clean stop writes what was counted
    log = env.state / "logs" / "audit.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    refusals = [e for e in entries if e["event"] == "auth" and e["outcome"] == "denied"]
    assert len(refusals) == 2, refusals
    assert refusals[0]["reason"] == "no token" and refusals[0]["remote"] == "127.0.0.1"
    assert refusals[1]["refusals"] == 499
    assert refusals[1]["reason"] == "499 refusals from 127.0.0.1 in the last minute"
    assert any(e["event"] == "auth" and e["outcome"] == "allowed" for e in entries)
    assert verify(log, load_key(env.state / "data" / "audit.key")).ok
