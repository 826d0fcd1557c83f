"""The upstream pool: a backend killed and restarted under load, timeouts, and independence of backends."""

from __future__ import annotations

import asyncio
import signal

import httpx

from llmbasedos.protocol import errors
from tests.gateway.harness import Env, WsClient, wait_until


async def test_backend_killed_and_restarted_mid_load(env: Env) -> None:
    echo = env.start_backend("echo")
    gw = env.start_gateway()
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        assert await c.call("mcp.echo.say", ["warm"]) == "warm"
        # Load: slow calls certainly in flight at the kill, and a stream of quick ones around it.
        slow = [asyncio.create_task(c.request("mcp.echo.sleep", {"seconds": 30})) for _ in range(50)]

        async def quick_stream() -> list[dict[str, object]]:
            return list(await asyncio.gather(*(c.request("mcp.echo.say", {"text": str(i)}) for i in range(300))))

        stream = asyncio.create_task(quick_stream())
        await wait_until(lambda: len(c.pending) >= 50, what="calls to be in flight")
        echo.proc.send_signal(signal.SIGKILL)
        echo.proc.wait(10)
        answers = await asyncio.wait_for(asyncio.gather(*slow), 30)
        assert {a["error"]["code"] for a in answers} == {errors.SERVICE_UNAVAILABLE}
        quick = await asyncio.wait_for(stream, 30)
        for a in quick:  # each quick call either made it or failed cleanly
            assert "result" in a or a["error"]["code"] == errors.SERVICE_UNAVAILABLE  # type: ignore[index]

        # While it is down, calls fail fast and clearly; other methods still work.
        down = await c.request("mcp.echo.say", {"text": "x"})
        assert down["error"]["code"] == errors.SERVICE_UNAVAILABLE
        assert (await c.call("mcp.hello"))["gateway"] == "llmbasedos"

        env.start_backend("echo")  # rewrites echo.cap.json: the gateway reconnects

        async def works() -> bool:
            answer = await c.request("mcp.echo.say", {"text": "back"})
            return answer.get("result") == "back"

        await wait_until(works, what="calls to succeed after the restart")
        results = await asyncio.gather(*(c.call("mcp.echo.say", {"text": str(i)}) for i in range(200)))
        assert results == [str(i) for i in range(200)]
    assert gw.alive()


async def test_per_call_timeout(env: Env) -> None:
    env.start_backend("echo")
    gw = env.start_gateway(LLMBDO_CALL_TIMEOUT="0.5")
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        answer = await c.request("mcp.echo.sleep", {"seconds": 20})
        assert answer["error"]["code"] == errors.TIMEOUT
        assert "mcp.echo.sleep timed out after 0.5 s" in answer["error"]["message"]
        assert await c.call("mcp.echo.say", ["after"]) == "after"
        # Counted and audited as a timeout, and the upstream no longer counts it in flight.
        async with httpx.AsyncClient(base_url=gw.url) as http:
            auth = {"Authorization": f"Bearer {gw.token}"}
            text = (await http.get("/metrics", headers=auth)).text
            status = (await http.get("/status", headers=auth)).json()
    assert 'llmbasedos_gateway_requests_total{method="mcp.echo.sleep",outcome="timeout"} 1' in text
    assert status["services"]["echo"]["in_flight"] == 0


async def test_deadlines_expire_only_the_calls_past_theirs(env: Env) -> None:
    """Slow calls among hundreds of quick ones on the same connection: the slow ones, and only they, time out;
    none is left counted in flight."""
    env.start_backend("echo")
    gw = env.start_gateway(LLMBDO_CALL_TIMEOUT="0.5")
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        slow = [asyncio.create_task(c.request("mcp.echo.sleep", {"seconds": 20}, rid=f"slow{i}")) for i in range(3)]
        quick = await asyncio.gather(*(c.call("mcp.echo.say", [str(i)]) for i in range(300)))
        assert quick == [str(i) for i in range(300)]
        for answer in await asyncio.gather(*slow):
            assert answer["error"]["code"] == errors.TIMEOUT, answer
        later = [asyncio.create_task(c.request("mcp.echo.sleep", {"seconds": 0.1}, rid=f"later{i}")) for i in range(3)]
        assert [a.get("result") for a in await asyncio.gather(*later)] == [{"slept": 0.1}] * 3
        async with httpx.AsyncClient(base_url=gw.url) as http:
            status = (await http.get("/status", headers={"Authorization": f"Bearer {gw.token}"})).json()
    assert status["services"]["echo"]["in_flight"] == 0


async def test_a_stuck_backend_never_holds_up_another(env: Env) -> None:
    env.start_backend("echo", LLMBDO_WORKERS="2")
    env.start_backend("twin")
    gw = env.start_gateway()
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await wait_until(lambda: _routed(c), what="both services")
        # Fill echo's two worker threads with blocking work, with a long queue behind them.
        stuck = [asyncio.create_task(c.request("mcp.echo.block", {"seconds": 4}, rid=f"s{i}")) for i in range(6)]
        await wait_until(lambda: len(c.pending) >= 6, what="echo to be busy")
        answers = await asyncio.gather(*(c.call("mcp.twin.say", [str(i)]) for i in range(100)))
        assert answers == [str(i) for i in range(100)]
        assert sum(t.done() for t in stuck) < 6  # twin answered while echo was still busy
        for i in range(6):
            await c.send({"jsonrpc": "2.0", "method": "mcp.cancel", "params": {"id": f"s{i}"}})
        for a in await asyncio.gather(*stuck):
            assert a.get("result") == {"blocked": 4} or a["error"]["code"] == errors.CANCELLED


async def _routed(c: WsClient) -> bool:
    methods = set((await c.call("mcp.hello"))["methods"])
    return {"mcp.echo.block", "mcp.twin.say"} <= methods


async def test_a_backend_that_stops_reading_holds_calls_back_without_losing_any(env: Env) -> None:
    """Calls to a frozen backend wait (behind the upstream's write buffer) and are all answered once it thaws."""
    echo = env.start_backend("echo")
    gw = env.start_gateway()
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        assert await c.call("mcp.echo.say", ["warm"]) == "warm"
        echo.proc.send_signal(signal.SIGSTOP)
        try:
            text = "q" * 50_000
            # 6 MB of requests: more than the socket and the 1 MiB write buffer hold, so later calls queue up.
            calls = [asyncio.create_task(c.request("mcp.echo.say", {"text": f"{i}:{text}"})) for i in range(120)]
            await asyncio.sleep(2)
            assert not any(t.done() for t in calls)
            async with httpx.AsyncClient(base_url=gw.url) as http:
                status = (await http.get("/status", headers={"Authorization": f"Bearer {gw.token}"})).json()
            assert status["services"]["echo"]["in_flight"] > 0
        finally:
            echo.proc.send_signal(signal.SIGCONT)
        answers = await asyncio.wait_for(asyncio.gather(*calls), 60)
        assert [a["result"] for a in answers] == [f"{i}:{text}" for i in range(120)]
    assert gw.alive()
