"""Daily LLM token quotas against hostile clients, end to end: a real gateway process, its /ws door, and the
loopback provider's `held` model (exactly max_tokens words, each answer held until the test releases it)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from llmbasedos.gateway.llm.estimates import prompt_bound
from llmbasedos.protocol import errors
from tests.gateway.harness import Env, GatewayProcess, WsClient, wait_until
from tests.support.fake_providers import FakeProviders

KEY = "sk-quota-5e4d3c2b1a0f"
QUOTA, PER_REQUEST = 100, 20
TIERS = f"""
FREE:
  allowed_capabilities: ['*']
  rate_limit_requests: 100000
  requests_per_day: null
  allowed_llm_models: ['*']
  max_tokens_per_request: {PER_REQUEST}
  max_tokens_per_day: {QUOTA}
"""
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    server = FakeProviders(KEY).start()
    yield server
    server.stop()


@pytest.fixture
def env(fake: FakeProviders) -> Iterator[Env]:
    fake.reset()
    e = Env()
    e.set_tiers(TIERS)
    key = e.config_dir / "provider.key"
    key.write_text(KEY + "\n", encoding="utf-8")
    key.chmod(0o600)
    (e.config_dir / "llm_models.yaml").write_text(
        "default: held\nmodels:\n"
        f"  held:\n    provider: openai\n    base_url: {fake.base_url}\n    model: held\n"
        f"    api_key_file: {key}\n    timeout: 60\n",
        encoding="utf-8")
    try:
        yield e
    finally:
        fake.release()  # answers still held end, so the fake's server can stop
        e.close()


async def _used(c: WsClient) -> int:
    status = await c.call("mcp.licence.check")
    return int(status["remaining"]["llm_tokens_used_today"])


async def _positive(value: Any) -> bool:
    return bool(await value > 0)


async def test_chats_sent_at_once_cannot_spend_more_than_the_quota_and_one_call(env: Env,
                                                                                fake: FakeProviders) -> None:
    gw = env.start_gateway()
    async with WsClient.connect(gw.ws_url, gw.create_token("greedy")) as c:
        tasks = [asyncio.create_task(c.request("mcp.llm.chat", {"messages": HELLO, "stream": i % 2 == 0}))
                 for i in range(20)]
        # Every chat is either refused or waiting at the provider: all of them were admitted or not at once.
        await wait_until(lambda: fake.held + sum(t.done() for t in tasks) == 20, what="each chat held or refused")
        fake.release()
        answers = await asyncio.gather(*tasks)
        served = [a["result"] for a in answers if "result" in a]
        refused = [errors.from_error_object(a["error"]) for a in answers if "error" in a]
        assert served and refused
        for exc in refused:
            assert isinstance(exc, errors.QuotaExceeded)
            assert "tier FREE" in exc.message and str(QUOTA) in exc.message
            assert exc.data["limit"] == QUOTA and exc.data["left"] == 0 and exc.data["retry_after"] > 0
        # The reservation is what the provider was allowed to write.
        assert {r.body["max_tokens"] for r in fake.requests} == {PER_REQUEST}
        # Then one at a time until the day is spent.
        for _ in range(10):
            try:
                served.append(await c.call("mcp.llm.chat", {"messages": HELLO}))
            except errors.QuotaExceeded:
                break
        else:
            pytest.fail("the quota was never reached")
        used = await _used(c)
        assert used == sum(r["usage"]["total_tokens"] for r in served)  # each settled to its real use
        one_call = max(r["usage"]["total_tokens"] for r in served)
        assert used < QUOTA + one_call
        assert sum(r["usage"]["completion_tokens"] for r in served) <= QUOTA + PER_REQUEST
    async with WsClient.connect(gw.ws_url, gw.create_token("bystander")) as other:
        result = await other.call("mcp.llm.chat", {"messages": HELLO})  # another client's day is its own
        assert result["usage"]["completion_tokens"] == PER_REQUEST


@pytest.mark.parametrize("stream", [True, False])
async def test_a_caller_who_leaves_mid_call_pays_what_the_model_may_have_written(env: Env, fake: FakeProviders,
                                                                                 stream: bool) -> None:
    gw = env.start_gateway()
    token = gw.create_token("leaver")
    options = {"max_tokens": 15}
    async with WsClient.connect(gw.ws_url, token) as c:
        await c.send({"jsonrpc": "2.0", "id": 1, "method": "mcp.llm.chat",
                      "params": {"messages": HELLO, "options": options, "stream": stream}})
        if stream:
            await wait_until(lambda: any(n["method"] == "mcp.llm.chunk" for n in c.notifications), what="a chunk")
        else:
            await wait_until(lambda: fake.held == 1, what="the chat at the provider")
    # The caller is gone after one word at most: the provider's request is closed, not read to its end.
    await wait_until(lambda: fake.disconnects == 1, what="the provider's request closed")
    async with WsClient.connect(gw.ws_url, token) as c:
        await wait_until(lambda: _positive(_used(c)), what="the abandoned chat charged")
        used = await _used(c)
    assert used >= options["max_tokens"]  # not the one word it read
    assert used == prompt_bound(HELLO, options) + options["max_tokens"]  # exactly its reservation


def _db_tokens(gw: GatewayProcess, client_id: str) -> int:
    conn = sqlite3.connect(gw.data_dir / "gateway.db")
    try:
        row = conn.execute("SELECT llm_tokens FROM usage WHERE client_id = ?", (client_id,)).fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


async def test_a_gateway_killed_mid_call_has_charged_the_reservation(env: Env) -> None:
    gw = env.start_gateway()
    client_id, token = gw.create_client("crasher")
    options = {"max_tokens": 15}
    reserved = prompt_bound(HELLO, options) + options["max_tokens"]
    async with WsClient.connect(gw.ws_url, token) as c:
        await c.send({"jsonrpc": "2.0", "id": 1, "method": "mcp.llm.chat",
                      "params": {"messages": HELLO, "options": options, "stream": True}})
        await wait_until(lambda: any(n["method"] == "mcp.llm.chunk" for n in c.notifications), what="a chunk")
        await wait_until(lambda: _db_tokens(gw, client_id) == reserved, what="the reservation in gateway.db")
        assert gw.proc is not None
        gw.proc.kill()
        gw.proc.wait(10)
    again = env.start_gateway()
    async with WsClient.connect(again.ws_url, token) as c:
        assert await _used(c) == reserved
