"""A message nested deeper than the limit, on every door: refused with -32600 and its id, the connection
goes on serving, and no process logs a traceback.

Before the shared decoder, orjson decoded such a message, the gateway then failed to encode its forward or
its answer (orjson encodes at most 254 levels), and `/ws` and `gateway.sock` dropped the connection.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import pytest

from llmbasedos.protocol.decoding import MAX_DEPTH
from llmbasedos.protocol.framing import NulFrameDecoder
from tests.gateway.harness import REPO, UnixClient, WsClient
from tests.support.deep_json import deep_request
from tests.support.mcp_stack import McpStack

DEPTHS = [MAX_DEPTH + 1, 300, 5000]  # past the limit, past what orjson encodes, past what it decodes


def assert_refused(answer: dict[str, Any], rid: Any, depth: int) -> None:
    assert answer["id"] == rid, answer
    assert answer["error"]["code"] == -32600
    assert "levels deep" in answer["error"]["message"] and f"limit is {MAX_DEPTH}" in answer["error"]["message"]
    if depth <= 1024:
        assert f"nested {depth} levels" in answer["error"]["message"]


def no_traceback(stack: McpStack) -> None:
    assert "Traceback" not in stack.gateway.output()
    for backend in stack.env.backends:
        assert "Traceback" not in backend.output(), backend.name


@pytest.mark.parametrize("depth", DEPTHS)
async def test_ws(stack: McpStack, depth: int) -> None:
    async with WsClient.connect(stack.gateway.ws_url, stack.token) as client:
        await client.send(deep_request(depth).decode())
        assert_refused(await client.next_message(), 7, depth)
        await client.send(deep_request(depth))  # a binary message too
        assert_refused(await client.next_message(), 7, depth)
        assert await client.call("mcp.echo.say", {"text": "still here"}) == "still here"
    no_traceback(stack)


@pytest.mark.parametrize("depth", DEPTHS)
async def test_gateway_sock(stack: McpStack, depth: int) -> None:
    client = await UnixClient.open(stack.gateway.socket)
    try:
        await client.send_raw(deep_request(depth, rid="deep") + b"\0")
        assert_refused(await client.next_message(), "deep", depth)
        await client.send({"jsonrpc": "2.0", "id": 2, "method": "mcp.echo.say", "params": {"text": "ok"}})
        assert (await client.next_message()) == {"jsonrpc": "2.0", "id": 2, "result": "ok"}
    finally:
        await client.close()
    no_traceback(stack)


@pytest.mark.parametrize("depth", DEPTHS)
async def test_a_backend_socket(stack: McpStack, depth: int) -> None:
    echo = next(b for b in stack.env.backends if b.name == "echo")
    reader, writer = await asyncio.open_unix_connection(str(echo.socket))
    decoder = NulFrameDecoder()

    async def answer() -> Any:
        while True:
            frames = decoder.receive_data(await asyncio.wait_for(reader.read(1 << 16), 20))
            if frames:
                return frames[0].value

    try:
        writer.write(deep_request(depth, rid=41) + b"\0")
        assert_refused(await answer(), 41, depth)
        writer.write(b'{"jsonrpc":"2.0","id":42,"method":"mcp.echo.say","params":{"text":"ok"}}\0')
        assert await answer() == {"jsonrpc": "2.0", "id": 42, "result": "ok"}
    finally:
        writer.close()
    no_traceback(stack)


@pytest.mark.parametrize("depth", DEPTHS)
async def test_mcp(stack: McpStack, depth: int) -> None:
    headers = {**stack.auth(), "accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        refused = await http.post(stack.url, content=deep_request(depth, rid=5), headers=headers)
        assert refused.status_code == 400
        assert_refused(refused.json(), 5, depth)
        init = await http.post(stack.url, headers=headers, json={
            "jsonrpc": "2.0", "id": 6, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}})
        assert init.status_code == 200 and init.json()["id"] == 6 and "mcp-session-id" in init.headers
    no_traceback(stack)


async def test_the_stdio_bridge(stack: McpStack) -> None:
    env = {**stack.env.env, "LLMBDO_TOKEN": stack.token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmbasedos.appliance.cli", "mcp-stdio", "--url", stack.url, env=env, cwd=str(REPO),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    async def line() -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))  # type: ignore[union-attr]

    try:
        for depth in DEPTHS:
            proc.stdin.write(deep_request(depth, rid=depth) + b"\n")
            await proc.stdin.drain()
            assert_refused(await line(), depth, depth)
        proc.stdin.write(json.dumps({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}).encode() + b"\n")
        await proc.stdin.drain()
        answer = await line()
        assert answer["id"] == 1 and "result" in answer
        assert proc.returncode is None
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert b"Traceback" not in await proc.stderr.read()
    no_traceback(stack)
