"""bench/forwarder.py, the floor `bench/gateway.py` reads the gateway's ratio against: it must really forward.

A forwarder that lost or mixed up answers would make that floor meaningless (and the benchmark hang), so it is
checked here like the doors it stands beside: a real echo backend, a real forwarder process, a real client.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.gateway.harness import REPO, Env
from tests.support.procs import wait_for


@pytest.fixture
def forwarder_url(env: Env) -> Iterator[str]:
    echo = env.start_backend("echo")
    port_file = env.state / "forwarder.port"
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "forwarder.py"), str(echo.socket), str(port_file)],
                            env=env.env, cwd=str(REPO), stdin=subprocess.DEVNULL)
    try:
        port = wait_for(lambda: port_file.exists() and port_file.read_text(encoding="utf-8"), 30,
                        what="the forwarder's port")
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_answers_go_back_to_their_callers_under_their_own_ids(forwarder_url: str) -> None:
    async with ws_connect(forwarder_url) as a, ws_connect(forwarder_url) as b:
        # Both clients use the same ids: the forwarder must tell them apart on the one backend connection.
        for ws, word in ((a, "a"), (b, "b")):
            for i in range(20):
                await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": i, "method": "mcp.echo.say",
                                            "params": {"text": f"{word}{i}"}}).decode())
        await a.send(orjson.dumps({"jsonrpc": "2.0", "id": "e", "method": "mcp.echo.fail",
                                   "params": {"kind": "rpc"}}).decode())
        got_a = [orjson.loads(await asyncio.wait_for(a.recv(), 10)) for _ in range(21)]
        got_b = [orjson.loads(await asyncio.wait_for(b.recv(), 10)) for _ in range(20)]
    assert {m["id"]: m.get("result") for m in got_b} == {i: f"b{i}" for i in range(20)}
    results_a = {m["id"]: m for m in got_a}
    assert {i: results_a[i]["result"] for i in range(20)} == {i: f"a{i}" for i in range(20)}
    assert results_a["e"]["error"]["message"] == "No such thing: /virtual/x"  # errors pass through too


async def test_anything_but_a_text_frame_ends_the_connection(forwarder_url: str) -> None:
    async with ws_connect(forwarder_url) as ws:
        await ws.send(b"\x00binary")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    async with ws_connect(forwarder_url) as ws:  # the forwarder itself carries on
        await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "mcp.echo.say",
                                    "params": {"text": "still here"}}).decode())
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["result"] == "still here"
