"""Rights and limits enforced end to end through /ws: tiers, allowlists, rate limits and quotas."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from llmbasedos.protocol import errors
from tests.gateway.harness import OPEN_FREE_TIER, Env, GatewayProcess, WsClient

TIERS = OPEN_FREE_TIER + """
TINY:
  allowed_capabilities: ['mcp.echo.*']
  denied_capabilities: ['mcp.echo.fail']
  rate_limit_requests: 50
  rate_limit_window_seconds: 3600
  requests_per_day: null
DAILY:
  allowed_capabilities: ['*']
  rate_limit_requests: null
  requests_per_day: 30
"""


@contextlib.asynccontextmanager
async def clients_with(gw: GatewayProcess, token: str, n: int) -> AsyncIterator[list[WsClient]]:
    """`n` WebSocket clients holding the same token."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(WsClient.connect(gw.ws_url, token)) for _ in range(n)]


@pytest.fixture(scope="module")
def shared() -> Iterator[Env]:
    """One gateway for the tests that do not restart it; each test makes its own clients."""
    e = Env()
    try:
        e.set_tiers(TIERS)
        e.start_backend("echo")
        e.start_backend("twin")
        e.start_gateway()
        yield e
    finally:
        e.close()


async def _code(c: WsClient, method: str, params: Any) -> int | None:
    answer = await c.request(method, params)
    return answer["error"]["code"] if "error" in answer else None


async def test_allowlist_within_tier(gw: GatewayProcess) -> None:
    narrow = gw.create_token("narrow", allow=("mcp.echo.say",))
    async with WsClient.connect(gw.ws_url, narrow) as c:
        hello = await c.call("mcp.hello")
        assert hello["client"]["name"] == "narrow"
        assert "mcp.echo.say" in hello["methods"]
        assert "mcp.echo.sleep" not in hello["methods"] and "mcp.twin.say" not in hello["methods"]
        services = {s["service_name"]: s for s in await c.call("mcp.listCapabilities")}
        assert [cap["method"] for cap in services["echo"]["capabilities"]] == ["mcp.echo.say"]
        assert "twin" not in services
        assert await c.call("mcp.echo.say", ["ok"]) == "ok"
        assert await _code(c, "mcp.echo.sleep", {"seconds": 0}) == errors.FORBIDDEN
        assert await _code(c, "mcp.twin.say", ["x"]) == errors.FORBIDDEN
        # Unknown methods are refused the same way, so rights do not reveal what exists.
        assert await _code(c, "mcp.secret.thing", {}) == errors.FORBIDDEN


async def test_tier_bounds_the_client(gw: GatewayProcess) -> None:
    tiny = gw.create_token("tiny", tier="TINY")  # its own allowlist is "*", the tier narrows it
    async with WsClient.connect(gw.ws_url, tiny) as c:
        assert await c.call("mcp.echo.say", ["ok"]) == "ok"
        assert await _code(c, "mcp.echo.fail", {"kind": "rpc"}) == errors.FORBIDDEN
        assert await _code(c, "mcp.twin.say", ["x"]) == errors.FORBIDDEN
        licence = await c.call("mcp.licence.check")
        assert licence["client"]["tier"] == "TINY"
        assert licence["limits"]["rate_limit_requests"] == 50


async def test_rate_limit_is_exact_under_concurrency(gw: GatewayProcess) -> None:
    tiny = gw.create_token("burst", tier="TINY")
    async with clients_with(gw, tiny, 5) as clients:
        answers = await asyncio.gather(*(
            clients[i % 5].request("mcp.echo.say", {"text": str(i)}) for i in range(250)))
    ok = [a for a in answers if "result" in a]
    limited = [a for a in answers if "error" in a]
    assert len(ok) == 50
    assert len(limited) == 200
    assert {a["error"]["code"] for a in limited} == {errors.RATE_LIMITED}
    assert all(a["error"]["data"]["retry_after"] > 0 for a in limited)


async def test_daily_quota_is_exact_and_survives_a_restart(env: Env) -> None:
    env.set_tiers(TIERS)
    env.start_backend("twin")
    gw = env.start_gateway()
    daily = gw.create_token("daily", tier="DAILY")
    async with clients_with(gw, daily, 4) as clients:
        answers = await asyncio.gather(*(
            clients[i % 4].request("mcp.twin.say", [str(i)]) for i in range(120)))
    assert sum("result" in a for a in answers) == 30
    refused = [a["error"] for a in answers if "error" in a]
    assert len(refused) == 90 and {e["code"] for e in refused} == {errors.QUOTA_EXCEEDED}

    gw.stop()
    again = env.start_gateway()
    async with WsClient.connect(again.ws_url, daily) as c:
        assert await _code(c, "mcp.twin.say", ["after restart"]) == errors.QUOTA_EXCEEDED
        # Another client's quota is its own.
        assert await c.call("mcp.hello")
    async with WsClient.connect(again.ws_url, again.token) as owner:
        assert await owner.call("mcp.twin.say", ["owner"]) == "owner"


async def test_backends_learn_who_the_call_is_for(gw: GatewayProcess) -> None:
    token = gw.create_token("laptop", tier="DAILY")
    async with WsClient.connect(gw.ws_url, token) as c:
        me = await c.call("mcp.twin.whoami")
        assert me["name"] == "laptop" and me["tier"] == "DAILY" and me["client_id"] != "c_owner"
        # A client cannot pass itself off as someone else: its own "caller" member is dropped.
        await c.send({"jsonrpc": "2.0", "id": "spoof", "method": "mcp.twin.whoami",
                      "caller": {"client_id": "c_owner", "name": "owner", "tier": "ELITE"}})
        assert (await c.next_message())["result"] == me
