"""`/mcp` on the wire: headers, versions, sessions, streams, limits and bad input, with a raw HTTP client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.gateway.harness import wait_until
from tests.support.mcp_stack import McpStack

MODERN = "2026-07-28"
MAX_BODY = 65536
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
ACCEPT = "application/json, text/event-stream"


@pytest.fixture(scope="module")
def stack() -> Iterator[McpStack]:
    s = McpStack.start(LLMBDO_MAX_FRAME=str(MAX_BODY))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        yield client


def modern_headers(stack: McpStack, method: str, name: str | None = None, **extra: str) -> dict[str, str]:
    headers = stack.auth(**{"accept": ACCEPT, "mcp-protocol-version": MODERN, "mcp-method": method})
    if name is not None:
        headers["mcp-name"] = name
    headers.update(extra)
    return headers


def modern_body(method: str, params: dict[str, Any] | None = None, rid: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": {**(params or {}), "_meta": dict(ENVELOPE)}}


async def initialize(http: httpx.AsyncClient, stack: McpStack, version: str = "2025-11-25",
                     token: str | None = None) -> tuple[str, dict[str, Any]]:
    headers = {"accept": ACCEPT, "authorization": f"Bearer {token or stack.token}"}
    resp = await http.post(stack.url, headers=headers, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert resp.status_code == 200, resp.text
    session = resp.headers["mcp-session-id"]
    await http.post(stack.url, headers={**headers, "mcp-session-id": session},
                    json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return session, resp.json()["result"]


def session_headers(stack: McpStack, session: str) -> dict[str, str]:
    return stack.auth(accept=ACCEPT, **{"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"})


async def metric(http: httpx.AsyncClient, stack: McpStack, method: str, outcome: str) -> float:
    text = (await http.get(stack.gateway.url + "/metrics", headers=stack.auth())).text
    needle = f'llmbasedos_gateway_requests_total{{method="{method}",outcome="{outcome}"}} '
    for line in text.splitlines():
        if line.startswith(needle):
            return float(line[len(needle):])
    return 0.0


# -- credentials, origin, host -----------------------------------------------------------------------------


async def test_a_token_is_required(stack: McpStack, http: httpx.AsyncClient) -> None:
    body = modern_body("tools/list")
    headers = modern_headers(stack, "tools/list")
    del headers["authorization"]
    missing = await http.post(stack.url, headers=headers, json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = await http.post(stack.url, headers={**headers, "authorization": "Bearer lbd_not-a-real-token"}, json=body)
    assert wrong.status_code == 401
    by_query = await http.post(stack.url_with_token, headers=headers, json=body)
    assert by_query.status_code == 200
    assert by_query.json()["result"]["tools"]


async def test_foreign_origin_and_host_are_refused(stack: McpStack, http: httpx.AsyncClient) -> None:
    body = modern_body("tools/list")
    evil = await http.post(stack.url, headers=modern_headers(stack, "tools/list", origin="http://evil.example.com"),
                           json=body)
    assert evil.status_code == 403
    rebound = await http.post(stack.url, headers=modern_headers(stack, "tools/list", host="evil.example.com"),
                              json=body)
    assert rebound.status_code == 403
    local = await http.post(stack.url, headers=modern_headers(stack, "tools/list", origin="http://localhost:3000"),
                            json=body)
    assert local.status_code == 200


async def test_the_token_is_never_written_anywhere(stack: McpStack, http: httpx.AsyncClient) -> None:
    await http.post(stack.url_with_token, headers={"accept": ACCEPT, "mcp-protocol-version": MODERN,
                                                   "mcp-method": "tools/list"}, json=modern_body("tools/list"))
    await http.post(stack.url + "?token=lbd_wrong-token-for-the-log", headers={"accept": ACCEPT}, json={})
    assert stack.token not in stack.gateway.output()
    assert "lbd_wrong-token-for-the-log" not in stack.gateway.output()
    for path in stack.env.state.rglob("*"):
        if path.is_file() and path.name != "owner.token" and path.suffix in (".log", ".jsonl", ".json", ".txt"):
            assert stack.token not in path.read_text(encoding="utf-8", errors="replace"), path.name


# -- bodies ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modern", [True, False])
async def test_invalid_json_is_a_parse_error(stack: McpStack, http: httpx.AsyncClient, modern: bool) -> None:
    headers = modern_headers(stack, "tools/list") if modern else stack.auth(accept=ACCEPT)
    resp = await http.post(stack.url, headers={**headers, "content-type": "application/json"}, content=b"{not json")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == -32700
    assert resp.json()["id"] is None


async def test_oversize_bodies_are_refused(stack: McpStack, http: httpx.AsyncClient) -> None:
    big = modern_body("tools/call", {"name": "echo_say", "arguments": {"text": "x" * (MAX_BODY + 10)}})
    resp = await http.post(stack.url, headers=modern_headers(stack, "tools/call", "echo_say"), json=big)
    assert resp.status_code == 413
    assert str(MAX_BODY) in resp.json()["error"]["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024
    streamed = await http.post(stack.url, headers={**modern_headers(stack, "tools/list"),
                                                   "content-type": "application/json"}, content=chunks())
    assert streamed.status_code == 413


async def test_batches_and_non_objects_are_invalid_requests(stack: McpStack, http: httpx.AsyncClient) -> None:
    batch = await http.post(stack.url, headers=modern_headers(stack, "tools/list"),
                            json=[modern_body("tools/list"), modern_body("tools/list", rid=2)])
    assert batch.status_code == 400
    assert batch.json()["error"]["code"] == -32600
    wrong_type = await http.post(stack.url, headers={**stack.auth(accept=ACCEPT), "content-type": "text/plain"},
                                 content=b"{}")
    assert wrong_type.status_code == 415
    unacceptable = await http.post(stack.url, headers=stack.auth(accept="text/html"), json=modern_body("tools/list"))
    assert unacceptable.status_code == 406


# -- the 2026-07-28 era ----------------------------------------------------------------------------------


async def test_discover(stack: McpStack, http: httpx.AsyncClient) -> None:
    resp = await http.post(stack.url, headers=modern_headers(stack, "server/discover"),
                           json=modern_body("server/discover"))
    result = resp.json()["result"]
    assert MODERN in result["supportedVersions"] and "2025-11-25" in result["supportedVersions"]
    assert result["capabilities"]["tools"]["listChanged"] is True
    assert result["resultType"] == "complete"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "llmbasedos"


async def test_list_results_carry_cache_hints(stack: McpStack, http: httpx.AsyncClient) -> None:
    for method in ("tools/list", "resources/list", "resources/templates/list", "prompts/list"):
        result = (await http.post(stack.url, headers=modern_headers(stack, method),
                                  json=modern_body(method))).json()["result"]
        assert isinstance(result["ttlMs"], int) and result["ttlMs"] >= 0, method
        assert result["cacheScope"] == "private", method


@pytest.mark.parametrize(("header", "value"), [("mcp-method", "prompts/list"), ("mcp-method", "TOOLS/LIST"),
                                               ("mcp-protocol-version", "2026-07-29")])
async def test_header_mismatch(stack: McpStack, http: httpx.AsyncClient, header: str, value: str) -> None:
    resp = await http.post(stack.url, headers={**modern_headers(stack, "tools/list"), header: value},
                           json=modern_body("tools/list", rid=7))
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == -32020
    assert resp.json()["id"] == 7


async def test_mcp_name_is_checked(stack: McpStack, http: httpx.AsyncClient) -> None:
    body = modern_body("tools/call", {"name": "echo_say", "arguments": {"text": "hi"}})
    wrong = await http.post(stack.url, headers=modern_headers(stack, "tools/call", "fs_read"), json=body)
    assert wrong.json()["error"]["code"] == -32020
    missing = await http.post(stack.url, headers=modern_headers(stack, "tools/call"), json=body)
    assert missing.json()["error"]["code"] == -32020
    right = await http.post(stack.url, headers=modern_headers(stack, "tools/call", "echo_say"), json=body)
    assert right.json()["result"]["structuredContent"] == {"result": "hi"}


async def test_unsupported_version(stack: McpStack, http: httpx.AsyncClient) -> None:
    body = modern_body("tools/list")
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
    resp = await http.post(stack.url, headers=modern_headers(stack, "tools/list", **{"mcp-protocol-version":
                                                                                     "2099-01-01"}), json=body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == -32022
    assert error["data"]["supported"] == [MODERN]
    assert error["data"]["requested"] == "2099-01-01"


async def test_envelope_and_methods(stack: McpStack, http: httpx.AsyncClient) -> None:
    no_meta = await http.post(stack.url, headers=modern_headers(stack, "tools/list"),
                              json={"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}})
    assert no_meta.status_code == 400 and no_meta.json()["error"]["code"] == -32602
    for removed in ("initialize", "ping", "no/such/method"):
        resp = await http.post(stack.url, headers=modern_headers(stack, removed), json=modern_body(removed, rid=9))
        assert resp.status_code == 404, removed
        assert resp.json() == {"jsonrpc": "2.0", "id": 9, "error": resp.json()["error"]}
        assert resp.json()["error"]["code"] == -32601
    unknown_tool = await http.post(stack.url, headers=modern_headers(stack, "tools/call", "nope"),
                                   json=modern_body("tools/call", {"name": "nope", "arguments": {}}))
    assert unknown_tool.status_code == 400 and unknown_tool.json()["error"]["code"] == -32602
    for verb in ("GET", "DELETE"):
        resp = await http.request(verb, stack.url, headers=modern_headers(stack, "tools/list"))
        assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    note = await http.post(stack.url, headers=modern_headers(stack, "notifications/cancelled"),
                           json={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
    assert note.status_code == 202


async def test_closing_the_stream_cancels_the_call(stack: McpStack, http: httpx.AsyncClient) -> None:
    before = await metric(http, stack, "mcp.echo.sleep", "cancelled")
    body = modern_body("tools/call", {"name": "echo_sleep", "arguments": {"seconds": 60}})
    with pytest.raises(httpx.ReadTimeout):
        await http.post(stack.url, headers=modern_headers(stack, "tools/call", "echo_sleep"), json=body,
                        timeout=httpx.Timeout(10, read=1.5))

    async def cancelled() -> bool:
        return await metric(http, stack, "mcp.echo.sleep", "cancelled") > before
    await wait_until(cancelled, 20, what="the gateway to cancel echo.sleep")


async def test_listen_stream_announces_tool_changes(stack: McpStack, http: httpx.AsyncClient) -> None:
    headers = modern_headers(stack, "subscriptions/listen")
    body = modern_body("subscriptions/listen", {"notifications": {"toolsListChanged": True,
                                                                  "promptsListChanged": True}}, rid=42)
    async with http.stream("POST", stack.url, headers=headers, json=body) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = _events(resp)
        ack = await asyncio.wait_for(anext(events), 20)
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["notifications"] == {"toolsListChanged": True}  # prompts never change here
        assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 42
        twin = stack.env.start_backend("twin")
        try:
            changed = await asyncio.wait_for(anext(events), 20)
        finally:
            twin.stop()
            stack.env.backends.remove(twin)
        assert changed["method"] == "notifications/tools/list_changed"
        assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 42


async def _events(resp: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in resp.aiter_lines():
        if line.startswith("data:"):
            yield json.loads(line[5:])


# -- the 2025-11-25 era ----------------------------------------------------------------------------------


async def test_session_lifecycle(stack: McpStack, http: httpx.AsyncClient) -> None:
    session, result = await initialize(http, stack, version="1999-01-01")
    assert result["protocolVersion"] == "2025-11-25"  # an unknown offer gets the newest this server speaks
    assert result["capabilities"]["tools"]["listChanged"] is True
    ping = await http.post(stack.url, headers=session_headers(stack, session),
                           json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert ping.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}
    no_session = await http.post(stack.url, headers=stack.auth(accept=ACCEPT),
                                 json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert no_session.status_code == 400
    assert "session" in no_session.json()["error"]["message"].lower()
    bad_version = await http.post(stack.url, headers={**session_headers(stack, session),
                                                      "mcp-protocol-version": "1999-01-01"},
                                  json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert bad_version.status_code == 400
    assert "1999-01-01" in bad_version.json()["error"]["message"]
    unknown = await http.post(stack.url, headers=session_headers(stack, "f" * 32),
                              json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    assert unknown.status_code == 404
    other = stack.gateway.create_token("someone-else")
    theirs = await http.post(stack.url, headers={**session_headers(stack, session), "authorization":
                                                 f"Bearer {other}"},
                             json={"jsonrpc": "2.0", "id": 4, "method": "tools/list"})
    assert theirs.status_code == 404  # a session belongs to the token that opened it
    ended = await http.delete(stack.url, headers=session_headers(stack, session))
    assert ended.status_code == 200
    after = await http.post(stack.url, headers=session_headers(stack, session),
                            json={"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
    assert after.status_code == 404


async def test_notifications_cancelled_stops_the_call(stack: McpStack, http: httpx.AsyncClient) -> None:
    session, _ = await initialize(http, stack)
    headers = session_headers(stack, session)
    before = await metric(http, stack, "mcp.echo.sleep", "cancelled")
    call = asyncio.ensure_future(http.post(stack.url, headers=headers, json={
        "jsonrpc": "2.0", "id": "slow", "method": "tools/call",
        "params": {"name": "echo_sleep", "arguments": {"seconds": 60}}}))

    async def cancelled() -> bool:
        await http.post(stack.url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/cancelled",
                                                          "params": {"requestId": "slow"}})
        return call.done()
    await wait_until(cancelled, 20, what="the call to end after notifications/cancelled")
    answer = call.result().json()
    assert answer["id"] == "slow" and answer["error"]["code"] == -32800
    assert await metric(http, stack, "mcp.echo.sleep", "cancelled") > before


async def test_get_stream_announces_tool_changes(stack: McpStack, http: httpx.AsyncClient) -> None:
    session, _ = await initialize(http, stack)
    headers = {**session_headers(stack, session), "accept": "text/event-stream"}
    async with http.stream("GET", stack.url, headers=headers) as resp:
        assert resp.status_code == 200
        second = await http.get(stack.url, headers=headers)
        assert second.status_code == 409  # one GET stream per session
        events = _events(resp)
        twin = stack.env.start_backend("twin")
        try:
            changed = await asyncio.wait_for(anext(events), 20)
        finally:
            twin.stop()
            stack.env.backends.remove(twin)
        assert changed == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    no_sse = await http.get(stack.url, headers={**headers, "accept": "application/json"})
    assert no_sse.status_code == 406


async def test_answers_as_sse_when_only_sse_is_accepted(stack: McpStack, http: httpx.AsyncClient) -> None:
    session, _ = await initialize(http, stack)
    resp = await http.post(stack.url, headers={**session_headers(stack, session), "accept": "text/event-stream"},
                           json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                 "params": {"name": "echo_say", "arguments": {"text": "sse"}}})
    assert resp.headers["content-type"].startswith("text/event-stream")
    data = [json.loads(line[5:]) for line in resp.text.splitlines() if line.startswith("data:")]
    assert data[-1]["result"]["structuredContent"] == {"result": "sse"}
