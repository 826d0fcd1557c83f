"""The WebSocket door: who gets in, and garbage that must never hurt the gateway."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator

import orjson
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from llmbasedos.protocol import errors
from tests.gateway.harness import Env, GatewayProcess, WsClient, stock_uvicorn, wait_until


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


class _RawWs:
    """A bare socket with websockets' sans-I/O client for the handshake: frames are built and cut by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proto: ClientProtocol) -> None:
        self.reader, self.writer, self.proto = reader, writer, proto
        self.texts: list[dict[str, object]] = []
        self.pongs: list[bytes] = []
        self.close_code: int | None = None

    @classmethod
    async def open(cls, gw: GatewayProcess) -> _RawWs:
        uri = parse_uri(f"{gw.ws_url}?token={gw.token}")
        reader, writer = await asyncio.open_connection(uri.host, uri.port)
        proto = ClientProtocol(uri, max_size=None)
        proto.send_request(proto.connect())
        writer.write(b"".join(proto.data_to_send()))
        while not any(isinstance(e, Response) for e in proto.events_received()):
            proto.receive_data(await asyncio.wait_for(reader.read(65536), 10))
        return cls(reader, writer, proto)

    @staticmethod
    def frame(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
        return Frame(opcode, data, fin).serialize(mask=True, extensions=[])

    async def send_in_pieces(self, data: bytes) -> None:
        """Cut at random places, each piece its own write: frames and headers arrive split every which way."""
        rng = random.Random(7)
        pos = 0
        while pos < len(data):
            step = rng.choice((1, 2, 3, 5, 9, 17, 40, 130))
            self.writer.write(data[pos:pos + step])
            await self.writer.drain()
            await asyncio.sleep(0.0005)
            pos += step

    async def read_until(self, done: Callable[[], bool]) -> None:
        while not done():
            data = await asyncio.wait_for(self.reader.read(1 << 16), 20)
            assert data, "the gateway ended the connection without a close frame"
            self.proto.receive_data(data)
            for event in self.proto.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    self.texts.append(orjson.loads(event.data))
                elif isinstance(event, Frame) and event.opcode is Opcode.PONG:
                    self.pongs.append(event.data)
                elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    self.close_code = Close.parse(event.data).code

    def close(self) -> None:
        self.writer.transport.abort()


def _say(rid: object, text: str) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "mcp.echo.say", "params": {"text": text}})


async def test_frames_of_every_shape_are_read_alike(gw: GatewayProcess) -> None:
    """Calls cut anywhere, pings among them, fragmented, binary, with 7- and 16-bit lengths: all answered."""
    ws = await _RawWs.open(gw)
    try:
        def stream(ping: bytes) -> bytes:
            return b"".join((
                *(ws.frame(Opcode.TEXT, _say(i, f"n{i}")) for i in range(40)),
                ws.frame(Opcode.PING, ping),
                ws.frame(Opcode.TEXT, b'{"jsonrpc": "2.0", ', fin=False),
                ws.frame(Opcode.PING, b"mid-message"),
                ws.frame(Opcode.CONT, b'"id": "frag", "method": "mcp.echo.say", ', fin=False),
                ws.frame(Opcode.CONT, b'"params": {"text": "in pieces"}}'),
                ws.frame(Opcode.BINARY, _say("bin", "binary")),
                ws.frame(Opcode.TEXT, _say("long", "L" * 5000)),  # a 16-bit length
                *(ws.frame(Opcode.TEXT, _say(f"after{i}", "x")) for i in range(5)),
            ))

        await ws.send_in_pieces(stream(b"are you there"))
        await ws.read_until(lambda: len(ws.texts) >= 48 and len(ws.pongs) >= 2)
        ws.writer.write(stream(b"once more, all"))  # the lot in one write (the same ids: the first are done)
        await ws.read_until(lambda: len(ws.texts) >= 2 * 48 and len(ws.pongs) >= 4)
        got = {(m["id"], m["result"]) for m in ws.texts}
        want = {*((i, f"n{i}") for i in range(40)), ("frag", "in pieces"), ("bin", "binary"), ("long", "L" * 5000),
                *((f"after{i}", "x") for i in range(5))}
        assert got == want
        assert len(ws.texts) == 2 * 48  # each call answered once per sending, nothing dropped or repeated
        assert sorted(bytes(p) for p in ws.pongs) == [b"are you there", b"mid-message", b"mid-message",
                                                      b"once more, all"]
    finally:
        ws.close()
    assert gw.alive()


@pytest.mark.parametrize(("what", "bad", "code"), [
    ("text that is not UTF-8", b"\x81\x82" + b"\0\0\0\0" + b"\xff\xfe", 1007),
    ("an unmasked frame", b"\x81\x02{}", 1002),
    ("a reserved bit set", b"\xc1\x82" + b"\0\0\0\0" + b"{}", 1002),
    ("a new message inside a fragmented one",
     _RawWs.frame(Opcode.TEXT, b"[", fin=False) + _RawWs.frame(Opcode.TEXT, b"{}"), 1002),
    ("a continuation with nothing to continue", _RawWs.frame(Opcode.CONT, b"{}"), 1002),
    ("a header announcing more than the frame cap", b"\x81\xff" + (100_000).to_bytes(8, "big") + b"\0\0\0\0", 1009),
])
async def test_a_bad_frame_closes_only_its_connection(gw: GatewayProcess, what: str, bad: bytes, code: int) -> None:
    ws = await _RawWs.open(gw)
    try:
        ws.writer.write(ws.frame(Opcode.TEXT, _say("before", "ok")))
        await ws.read_until(lambda: len(ws.texts) == 1)
        ws.writer.write(bad + ws.frame(Opcode.TEXT, _say("after", "no")))
        await ws.read_until(lambda: ws.close_code is not None)
        assert ws.close_code == code, what
        assert [m["id"] for m in ws.texts] == ["before"], what  # nothing after the bad frame is acted on
    finally:
        ws.close()
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        assert await c.call("mcp.echo.say", {"text": "still fine"}) == "still fine"
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
        # A bare socket: it reads only when told to, unlike a client library that reads in the background.
        ws = await _RawWs.open(gw)
        try:
            for i in range(300):  # 18 MB of answers: far past the 2 MiB the client may leave unread
                ws.writer.write(ws.frame(Opcode.TEXT, _say(i, big)))
            await asyncio.wait_for(ws.writer.drain(), 30)
            async with WsClient.connect(gw.ws_url, gw.token) as other:
                assert await other.call("mcp.echo.say", {"text": "still here"}) == "still here"
            await asyncio.sleep(1)  # let the answers pile up while this client reads nothing
            await ws.read_until(lambda: ws.close_code is not None)
            assert ws.close_code == 1013
            assert 0 < len(ws.texts) < 300
            assert [m["id"] for m in ws.texts] == list(range(len(ws.texts)))
            assert all(m["result"] == big for m in ws.texts)
        finally:
            ws.close()
        assert gw.alive()
        assert "does not read its answers" in gw.output()
    finally:
        env.close()


async def test_ws_also_works_under_a_stock_uvicorn() -> None:
    """Served by uvicorn's own WebSocket protocol (no direct lane), /ws falls back to plain ASGI messages."""
    async with stock_uvicorn() as (state, port):
        token = (state / "data" / "owner.token").read_text(encoding="utf-8").strip()
        async with WsClient.connect(f"ws://127.0.0.1:{port}/ws", token) as c:
            assert (await c.call("mcp.hello"))["gateway"] == "llmbasedos"
            await c.ws.send("{not json")
            assert (await c.next_message())["error"]["code"] == errors.PARSE_ERROR
            answers = await asyncio.gather(*(c.request("mcp.hello", rid=f"h{i}") for i in range(20)))
            assert {a["id"] for a in answers} == {f"h{i}" for i in range(20)}
