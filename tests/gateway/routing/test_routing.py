"""Routing through the WebSocket door: gateway methods, backend calls, errors, notifications, batches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from llmbasedos.protocol import errors
from tests.gateway.harness import Env, GatewayProcess, WsClient, wait_until


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayProcess]:
    e = Env()
    try:
        e.start_backend("echo")
        yield e.start_gateway()
    finally:
        e.close()


async def _ready(c: WsClient) -> None:
    async def routed() -> bool:
        return "mcp.echo.say" in (await c.call("mcp.hello"))["methods"]

    await wait_until(routed, what="echo to be routed")


async def test_hello_lists_gateway_and_backend_methods(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await _ready(c)
        hello = await c.call("mcp.hello", {"client": "pytest"})
        assert hello["gateway"] == "llmbasedos"
        assert hello["version"]
        assert hello["client"]["owner"] is True
        assert {"mcp.hello", "mcp.listCapabilities", "mcp.licence.check", "mcp.echo.say",
                "mcp.echo.sleep"} <= set(hello["methods"])


async def test_list_capabilities_carries_schemas_per_service(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await _ready(c)
        services = {s["service_name"]: s for s in await c.call("mcp.listCapabilities")}
        assert "echo" in services and "gateway" in services
        say = next(cap for cap in services["echo"]["capabilities"] if cap["method"] == "mcp.echo.say")
        assert say["params_schema"]["required"] == ["text"]
        assert say["result_schema"] == {"type": "string"}
        only = await c.call("mcp.listCapabilities", ["echo"])
        assert [s["service_name"] for s in only] == ["echo"]
        with pytest.raises(errors.InvalidParams):
            await c.call("mcp.listCapabilities", {"service": 3})


async def test_licence_check_answers_for_the_client(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        status = await c.call("mcp.licence.check")
        assert status["tier"] == "FREE"
        assert status["valid"] is False  # no lic.key in the test state dir
        assert "limits" in status and "remaining" in status


async def test_named_and_positional_params_reach_the_backend(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token, query_token=False) as c:
        await _ready(c)
        assert await c.call("mcp.echo.say", {"text": "ab", "n": 2}) == "abab"
        assert await c.call("mcp.echo.say", ["xy", 3]) == "xyxyxy"


async def test_backend_errors_pass_through_without_leaks(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await _ready(c)
        with pytest.raises(errors.NotFound):
            await c.call("mcp.echo.fail", {"kind": "rpc"})
        answer = await c.request("mcp.echo.fail", {"kind": "bug"})
        assert answer["error"]["code"] == errors.INTERNAL_ERROR
        assert "secret" not in str(answer)
        answer = await c.request("mcp.echo.fail", {"kind": "oserror"})
        assert "/very/secret" not in str(answer)
        with pytest.raises(errors.InvalidParams):
            await c.call("mcp.echo.say", {"nope": 1})


async def test_unknown_method_is_method_not_found(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        answer = await c.request("mcp.nothing.here")
        assert answer["error"]["code"] == errors.METHOD_NOT_FOUND
        assert answer["id"] is not None


async def test_many_calls_in_flight_answer_in_completion_order(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await _ready(c)
        slow = asyncio.create_task(c.call("mcp.echo.sleep", {"seconds": 1.0}))
        fast = await asyncio.gather(*(c.call("mcp.echo.say", {"text": str(i)}) for i in range(200)))
        assert fast == [str(i) for i in range(200)]
        assert not slow.done()  # the slow call did not hold the others back
        assert await slow == {"slept": 1.0}


async def test_progress_notifications_carry_the_callers_id(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await _ready(c)
        answer = await c.request("mcp.echo.progress", {"steps": 3}, rid="my-call-7")
        assert answer["result"] == {"done": 3}
        progress = [n for n in c.notifications if n["method"] == "mcp.progress"]
        assert [n["params"]["progress"] for n in progress] == [1, 2, 3]
        assert all(n["params"]["id"] == "my-call-7" for n in progress)


async def test_cancel_notification_cancels_the_call(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await _ready(c)
        pending = asyncio.create_task(c.request("mcp.echo.sleep", {"seconds": 30}, rid=41))
        await wait_until(lambda: 41 in c.pending, what="the request to be sent")
        await c.send({"jsonrpc": "2.0", "method": "mcp.cancel", "params": {"id": 41}})
        answer = await asyncio.wait_for(pending, 20)
        assert answer["error"]["code"] == errors.CANCELLED
        assert await c.call("mcp.echo.say", {"text": "still here"}) == "still here"


async def test_duplicate_id_in_flight_is_refused(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await _ready(c)
        await c.send({"jsonrpc": "2.0", "id": "dup", "method": "mcp.echo.sleep", "params": {"seconds": 0.5}})
        await c.send({"jsonrpc": "2.0", "id": "dup", "method": "mcp.echo.say", "params": {"text": "x"}})
        refusal = await c.next_message()
        assert refusal["id"] == "dup" and refusal["error"]["code"] == errors.INVALID_REQUEST
        first = await c.next_message()
        assert first == {"jsonrpc": "2.0", "id": "dup", "result": {"slept": 0.5}}


async def test_batches(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await _ready(c)
        await c.send([
            {"jsonrpc": "2.0", "id": 1, "method": "mcp.echo.say", "params": {"text": "a"}},
            {"jsonrpc": "2.0", "method": "mcp.echo.say", "params": {"text": "notification"}},
            {"jsonrpc": "2.0", "id": 2, "method": "mcp.nope"},
            {"jsonrpc": "1.0", "id": 3, "method": "mcp.echo.say"},
            42,
            {"jsonrpc": "2.0", "id": 4, "method": "mcp.hello"},
        ])
        answers = await c.next_message()
        assert isinstance(answers, list) and len(answers) == 5  # the notification gets no answer
        by_id = {a["id"]: a for a in answers if a["id"] is not None}
        assert by_id[1]["result"] == "a"
        assert by_id[2]["error"]["code"] == errors.METHOD_NOT_FOUND
        assert by_id[3]["error"]["code"] == errors.INVALID_REQUEST
        assert by_id[4]["result"]["gateway"] == "llmbasedos"
        assert [a["error"]["code"] for a in answers if a["id"] is None] == [errors.INVALID_REQUEST]

        await c.send([])
        assert (await c.next_message())["error"]["code"] == errors.INVALID_REQUEST
        # A batch of notifications only is answered with nothing at all.
        await c.send([{"jsonrpc": "2.0", "method": "mcp.echo.say", "params": {"text": "n"}}])
        assert await c.call("mcp.echo.say", {"text": "after"}) == "after"
        assert c.inbox.empty()
