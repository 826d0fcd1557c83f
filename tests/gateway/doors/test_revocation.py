"""Rights change live: `llmbasedos token revoke` / `token update` (real commands) against a real gateway with
connections and sessions already open, on every door (/ws fast lane, /ws under a stock uvicorn, /mcp)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from llmbasedos.protocol import errors
from tests.gateway.harness import GatewayProcess, WsClient, stock_uvicorn, wait_until

ACCEPT = "application/json, text/event-stream"


def token_cmd(state: Path, *args: str) -> str:
    """Run the real `llmbasedos token ...` against the gateway's state directory; its standard output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}
    proc = subprocess.run([sys.executable, "-m", "llmbasedos.appliance.cli", "token", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return proc.stdout.strip()


async def closed_with(c: WsClient, code: int) -> None:
    await wait_until(c.closed.is_set, 10, what="the gateway to close the connection")
    assert c.ws.close_code == code, (c.ws.close_code, c.ws.close_reason)


async def refused_or_closed(c: WsClient) -> None:
    """Call until the gateway stops answering with results: every refusal must be Unauthorized, and the
    connection must then be closed with 1008."""

    async def stopped() -> bool:
        try:
            answer = await c.request("mcp.hello")
        except (ConnectionError, ConnectionClosed):
            return True
        if "error" in answer:
            assert answer["error"]["code"] == errors.UNAUTHORIZED, answer
            return True
        return False

    await wait_until(stopped, 10, what="a call to be refused")
    await closed_with(c, 1008)


async def test_revoke_closes_open_ws_connections_and_spares_the_others(gw: GatewayProcess) -> None:
    token = gw.create_token("leaver", allow=("mcp.hello", "mcp.echo.*"))
    async with WsClient.connect(gw.ws_url, token) as busy, WsClient.connect(gw.ws_url, token) as idle, \
            WsClient.connect(gw.ws_url, gw.token) as owner:
        assert (await busy.call("mcp.hello"))["client"]["name"] == "leaver"
        assert await idle.call("mcp.echo.say", {"text": "x"}) == "x"
        slow = asyncio.ensure_future(busy.request("mcp.echo.sleep", {"seconds": 300}))
        token_cmd(gw.state, "revoke", "leaver")
        await refused_or_closed(busy)
        await closed_with(idle, 1008)  # no call needed: an idle connection is closed too
        with pytest.raises(ConnectionError):
            await slow  # the call in flight went with its connection
        assert (await owner.call("mcp.hello"))["client"]["owner"] is True  # others keep their rights
    with pytest.raises(InvalidStatus) as again:
        async with WsClient.connect(gw.ws_url, token):
            pass
    assert again.value.response.status_code == 401


async def test_expiry_set_on_an_open_connection_ends_it(gw: GatewayProcess) -> None:
    token = gw.create_token("shortlived", allow=("mcp.hello",))
    async with WsClient.connect(gw.ws_url, token) as c:
        assert (await c.call("mcp.hello"))["client"]["name"] == "shortlived"
        token_cmd(gw.state, "update", "shortlived", "--expires", "1s")
        await refused_or_closed(c)
    with pytest.raises(InvalidStatus) as again:
        async with WsClient.connect(gw.ws_url, token):
            pass
    assert again.value.response.status_code == 401
    assert token not in gw.output()


async def test_a_narrowed_allowlist_applies_to_the_next_call(gw: GatewayProcess) -> None:
    token = gw.create_token("narrowed", allow=("mcp.hello", "mcp.echo.*"))
    async with WsClient.connect(gw.ws_url, token) as c:
        assert await c.call("mcp.echo.say", {"text": "before"}) == "before"
        token_cmd(gw.state, "update", "narrowed", "--allow", "mcp.hello")

        async def forbidden() -> bool:
            answer = await c.request("mcp.echo.say", {"text": "after"})
            return "error" in answer and answer["error"]["code"] == errors.FORBIDDEN

        await wait_until(forbidden, 10, what="the narrowed allowlist to apply")
        hello = await c.call("mcp.hello")  # the connection stays open, with its new rights
        assert "mcp.echo.say" not in hello["methods"]
        token_cmd(gw.state, "update", "narrowed", "--allow", "mcp.hello", "mcp.echo.*")

        async def allowed() -> bool:
            return "result" in await c.request("mcp.echo.say", {"text": "again"})

        await wait_until(allowed, 10, what="the widened allowlist to apply")
        assert not c.closed.is_set()


async def test_revocation_holds_under_a_stock_uvicorn() -> None:
    """Without the direct lane (uvicorn's own WebSocket protocol), the ASGI path closes with 1008 too."""
    async with stock_uvicorn() as (state, port):
        token = token_cmd(state, "create", "stock", "--allow", "mcp.hello")
        async with WsClient.connect(f"ws://127.0.0.1:{port}/ws", token) as busy, \
                WsClient.connect(f"ws://127.0.0.1:{port}/ws", token) as idle:
            assert (await busy.call("mcp.hello"))["client"]["name"] == "stock"
            assert (await idle.call("mcp.hello"))["client"]["name"] == "stock"
            token_cmd(state, "revoke", "stock")
            await refused_or_closed(busy)
            await closed_with(idle, 1008)


# -- /mcp ---------------------------------------------------------------------------------------------------


async def _initialize(http: httpx.AsyncClient, url: str, token: str) -> str:
    headers = {"accept": ACCEPT, "authorization": f"Bearer {token}"}
    resp = await http.post(url, headers=headers, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert resp.status_code == 200, resp.text
    session = resp.headers["mcp-session-id"]
    await http.post(url, headers={**headers, "mcp-session-id": session},
                    json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return session


async def _tools(http: httpx.AsyncClient, url: str, token: str, session: str, rid: int) -> httpx.Response:
    return await http.post(url, headers={"accept": ACCEPT, "authorization": f"Bearer {token}",
                                         "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"},
                           json={"jsonrpc": "2.0", "id": rid, "method": "tools/list"})


def _tool_names(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {t["name"] for t in resp.json()["result"]["tools"]}


async def test_mcp_sessions_follow_revocation_and_changes(gw: GatewayProcess) -> None:
    url = gw.url + "/mcp"
    leaver = gw.create_token("mcp-leaver", allow=("mcp.echo.*",))
    stayer = gw.create_token("mcp-stayer", allow=("mcp.echo.*",))
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        gone, kept = await _initialize(http, url, leaver), await _initialize(http, url, stayer)
        assert {"echo_say", "echo_sleep"} <= _tool_names(await _tools(http, url, leaver, gone, 1))

        # A changed allowlist: the session lives on with the new rights (no 404, no re-initialize).
        token_cmd(gw.state, "update", "mcp-stayer", "--allow", "mcp.echo.say")

        async def narrowed() -> bool:
            names = _tool_names(await _tools(http, url, stayer, kept, 2))
            return "echo_say" in names and "echo_sleep" not in names

        await wait_until(narrowed, 10, what="the session to take the new allowlist")

        # A held GET stream of the revoked client's session ends with it.
        stream_open, stream_done = asyncio.Event(), asyncio.Event()

        async def hold_stream() -> None:
            headers = {"accept": "text/event-stream", "authorization": f"Bearer {leaver}", "mcp-session-id": gone,
                       "mcp-protocol-version": "2025-11-25"}
            async with http.stream("GET", url, headers=headers) as resp:
                assert resp.status_code == 200
                stream_open.set()
                async for _ in resp.aiter_bytes():
                    pass
            stream_done.set()

        holder = asyncio.ensure_future(hold_stream())
        await asyncio.wait_for(stream_open.wait(), 10)
        token_cmd(gw.state, "revoke", "mcp-leaver")

        async def refused() -> int | None:
            resp = await _tools(http, url, leaver, gone, 3)
            return resp.status_code if resp.status_code in (401, 404) else None

        assert await wait_until(refused, 10, what="the revoked session to be refused") == 401
        await asyncio.wait_for(stream_done.wait(), 10)
        await holder
        # The revoked token cannot reach the session any more, and cannot start another.
        resp = await http.post(url, headers={"accept": ACCEPT, "authorization": f"Bearer {leaver}"},
                               json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                                   "protocolVersion": "2025-11-25", "capabilities": {},
                                   "clientInfo": {"name": "t", "version": "1"}}})
        assert resp.status_code == 401
        assert "echo_say" in _tool_names(await _tools(http, url, stayer, kept, 4))  # the other one is fine
