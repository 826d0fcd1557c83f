"""The WebSocket door: who gets in, and garbage that must never hurt the gateway."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import uvicorn
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from llmbasedos.gateway.app import create_app
from llmbasedos.gateway.config import GatewayConfig
from llmbasedos.protocol import errors
from llmbasedos.settings import Settings
from tests.gateway.harness import OPEN_FREE_TIER, Env, GatewayProcess, WsClient, wait_until


def _status(exc: pytest.ExceptionInfo[InvalidStatus]) -> int:
    return exc.value.response.status_code


@pytest.fixture(scope="module")
def shared() -> Iterator[Env]:
    e = Env()
    try:
        e.start_backend("echo")
        e.start_gateway(LLMBDO_MAX_FRAME="65536")
        yield e
    finally:
        e.close()


@pytest.fixture
def gw(shared: Env) -> GatewayProcess:
    return shared.gateways[0]


async def test_handshake_refusals(gw: GatewayProcess) -> None:
    with pytest.raises(InvalidStatus) as no_token:
        async with WsClient.connect(gw.ws_url):
            pass
    assert _status(no_token) == 401
    with pytest.raises(InvalidStatus) as bad_token:
        async with WsClient.connect(gw.ws_url, "lbd_not-a-real-token"):
            pass
    assert _status(bad_token) == 401
    with pytest.raises(InvalidStatus) as bad_header:
        async with WsClient.connect(gw.ws_url, "lbd_not-a-real-token", query_token=False):
            pass
    assert _status(bad_header) == 401

    # A page on another site must not drive the appliance, even with a valid token.
    with pytest.raises(InvalidStatus) as foreign:
        async with WsClient.connect(gw.ws_url, gw.token, origin="https://evil.example"):
            pass
    assert _status(foreign) == 403
    async with WsClient.connect(gw.ws_url, gw.token, origin=f"http://localhost:{gw.port}") as c:
        assert (await c.call("mcp.hello"))["client"]["owner"] is True


async def test_revoked_token_is_refused(gw: GatewayProcess) -> None:
    token = gw.create_token("laptop", allow=("mcp.hello",))
    async with WsClient.connect(gw.ws_url, token) as c:
        assert (await c.call("mcp.hello"))["client"]["name"] == "laptop"
    gw.revoke_token("laptop")
    with pytest.raises(InvalidStatus) as revoked:
        async with WsClient.connect(gw.ws_url, token):
            pass
    assert _status(revoked) == 401


async def test_tokens_never_reach_the_log(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await c.call("mcp.hello")
    with pytest.raises(InvalidStatus):
        async with WsClient.connect(gw.ws_url, "lbd_wrong-token-value-123"):
            pass
    # uvicorn logs each WebSocket with its path and query string ...
    await wait_until(lambda: gw.output().count("WebSocket /ws") >= 2, what="the connections to be logged")
    log = gw.output()
    assert gw.token not in log  # ... but not the token in it
    assert "lbd_wrong-token-value-123" not in log


async def test_malformed_messages_never_break_the_gateway(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        cases: list[tuple[str | bytes, int]] = [
            ("{not json", errors.PARSE_ERROR),
            (b"\xff\xfe\x00garbage", errors.PARSE_ERROR),
            ("", errors.INVALID_REQUEST),
            ("42", errors.INVALID_REQUEST),
            ('"a string"', errors.INVALID_REQUEST),
            ("null", errors.INVALID_REQUEST),
            ('{"jsonrpc": "2.0"}', errors.INVALID_REQUEST),
            ('{"jsonrpc": "2.0", "id": 1}', errors.INVALID_REQUEST),
            ('{"jsonrpc": "2.0", "id": 1, "method": 5}', errors.INVALID_REQUEST),
            ('{"jsonrpc": "2.0", "id": 1, "method": "mcp.hello", "params": 7}', errors.INVALID_REQUEST),
            ('{"jsonrpc": "2.0", "id": {"a": 1}, "method": "mcp.hello"}', errors.INVALID_REQUEST),
            ('{"jsonrpc": "2.0", "id": true, "method": "mcp.hello"}', errors.INVALID_REQUEST),
            ('{"id": 1, "method": "mcp.hello"}', errors.INVALID_REQUEST),
        ]
        for raw, code in cases:
            await c.send(raw)
            answer = await c.next_message()
            assert answer["error"]["code"] == code, raw
        # A stray response from the client is dropped without an answer.
        await c.send({"jsonrpc": "2.0", "id": 99, "result": "unsolicited"})
        await c.send({"jsonrpc": "2.0", "method": "mcp.cancel", "params": {"id": "nothing"}})
        await c.send({"jsonrpc": "2.0", "method": "mcp.cancel", "params": ["odd"]})
        assert (await c.call("mcp.hello"))["gateway"] == "llmbasedos"
        assert c.inbox.empty()

    # A message over the frame cap closes that connection only.
    async with WsClient.connect(gw.ws_url, gw.token) as big:
        await big.send(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "mcp.hello",
                                     "params": {"pad": "x" * 100_000}}).decode())
        await asyncio.wait_for(big.closed.wait(), 20)
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        assert (await c.call("mcp.hello"))["gateway"] == "llmbasedos"
    assert gw.alive()


async def test_a_client_that_disconnects_mid_call_does_not_hurt_others(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as other:
        async with WsClient.connect(gw.ws_url, gw.token) as leaver:
            calls = [asyncio.create_task(leaver.request("mcp.echo.sleep", {"seconds": 5})) for _ in range(20)]
            await asyncio.sleep(0)
        for task in calls:
            with pytest.raises((ConnectionError, ConnectionClosed)):
                await task
        assert await other.call("mcp.echo.say", {"text": "fine"}) == "fine"


async def test_a_client_that_does_not_read_is_cut_off_and_others_are_served() -> None:
    """Its answers pile up only to LLMBDO_WS_MAX_UNREAD: then it gets what fitted, in order, and a 1013 close."""
    env = Env()
    try:
        env.start_backend("echo")
        gw = env.start_gateway(LLMBDO_WS_MAX_UNREAD=str(2 << 20))
        big = "z" * 60_000
        uri = parse_uri(f"{gw.ws_url}?token={gw.token}")
        # A bare socket under websockets' sans-I/O protocol: it reads only when told to, unlike a client library
        # that reads in the background.
        reader, writer = await asyncio.open_connection(uri.host, uri.port)
        proto = ClientProtocol(uri, max_size=None)
        proto.send_request(proto.connect())
        writer.write(b"".join(proto.data_to_send()))
        while not any(isinstance(e, Response) for e in proto.events_received()):
            proto.receive_data(await asyncio.wait_for(reader.read(65536), 10))
        try:
            for i in range(300):  # 18 MB of answers: far past the 2 MiB the client may leave unread
                proto.send_text(orjson.dumps({"jsonrpc": "2.0", "id": i, "method": "mcp.echo.say",
                                              "params": {"text": big}}))
                writer.write(b"".join(proto.data_to_send()))
            await asyncio.wait_for(writer.drain(), 30)
            async with WsClient.connect(gw.ws_url, gw.token) as other:
                assert await other.call("mcp.echo.say", {"text": "still here"}) == "still here"
            await asyncio.sleep(1)  # let the answers pile up while this client reads nothing
            got: list[dict[str, object]] = []
            close_code = None
            while close_code is None:
                data = await asyncio.wait_for(reader.read(1 << 20), 30)
                assert data, "the connection ended without a close frame"
                proto.receive_data(data)
                for event in proto.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        got.append(orjson.loads(event.data))
                    elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                        close_code = Close.parse(event.data).code
            assert close_code == 1013
            assert 0 < len(got) < 300
            assert [m["id"] for m in got] == list(range(len(got)))
            assert all(m["result"] == big for m in got)
        finally:
            writer.transport.abort()
        assert gw.alive()
        assert "does not read its answers" in gw.output()
    finally:
        env.close()


async def test_ws_also_works_under_a_stock_uvicorn() -> None:
    """Served by uvicorn's own WebSocket protocol (no direct lane), /ws falls back to plain ASGI messages."""
    state = Path(tempfile.mkdtemp(prefix="gwstock", dir="/tmp"))
    (state / "config").mkdir()
    (state / "config" / "licence_tiers.yaml").write_text(OPEN_FREE_TIER, encoding="utf-8")
    settings = Settings(state_dir=state, run_dir=state / "run", data_dir=state / "data", log_dir=state / "logs",
                        config_dir=state / "config", virtual_root=state / "files")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, GatewayConfig(port=0)), ws="websockets-sansio",
                                           lifespan="on", log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started, what="uvicorn to start")
        token = (state / "data" / "owner.token").read_text(encoding="utf-8").strip()
        async with WsClient.connect(f"ws://127.0.0.1:{port}/ws", token) as c:
            assert (await c.call("mcp.hello"))["gateway"] == "llmbasedos"
            await c.ws.send("{not json")
            assert (await c.next_message())["error"]["code"] == errors.PARSE_ERROR
            answers = await asyncio.gather(*(c.request("mcp.hello", rid=f"h{i}") for i in range(20)))
            assert {a["id"] for a in answers} == {f"h{i}" for i in range(20)}
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 20)
        sock.close()
        shutil.rmtree(state, ignore_errors=True)
