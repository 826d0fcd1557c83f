"""The local door gateway.sock: owner identity by file permission, same dialect, garbage-proof."""

from __future__ import annotations

import stat

from llmbasedos.protocol import errors
from llmbasedos.rpc.client import RPCClient
from tests.gateway.harness import Env, GatewayProcess, UnixClient, WsClient, wait_until


async def test_socket_is_0660_and_acts_as_the_owner(env: Env) -> None:
    env.start_backend("echo")
    gw = env.start_gateway()
    assert stat.S_IMODE(gw.socket.stat().st_mode) == 0o660
    client = await RPCClient.connect_unix(str(gw.socket))
    try:
        hello = await client.call("mcp.hello")
        assert hello["client"]["owner"] is True
        assert await client.call("mcp.echo.say", ["local"]) == "local"
        seen: list[tuple[str, object]] = []
        result = await client.call("mcp.echo.progress", {"steps": 2},
                                   on_notification=lambda m, p: seen.append((m, p)))
        assert result == {"done": 2}
        assert [m for m, _ in seen] == ["mcp.progress", "mcp.progress"]
    finally:
        await client.close()


async def test_malformed_frames_never_break_the_gateway(env: Env) -> None:
    gw = env.start_gateway(LLMBDO_MAX_FRAME="4096")
    c = await UnixClient.open(gw.socket)
    try:
        cases: list[tuple[bytes, int]] = [
            (b"{not json\0", errors.PARSE_ERROR),
            (b"\xff\xfe\xfd\0", errors.PARSE_ERROR),
            (b"42\0", errors.INVALID_REQUEST),
            (b"[]\0", errors.INVALID_REQUEST),
            (b'{"jsonrpc": "2.0", "id": 1}\0', errors.INVALID_REQUEST),
            (b'{"jsonrpc": "2.0", "id": 1, "method": "mcp.hello", "params": "x"}\0', errors.INVALID_REQUEST),
            (b"{" + b'"pad": "' + b"x" * 10_000 + b'"}\0', errors.FRAME_TOO_LARGE),
        ]
        for raw, code in cases:
            await c.send_raw(raw)
            answer = await c.next_message()
            assert answer["error"]["code"] == code, raw[:40]
        await c.send_raw(b"\0\0\0")  # keep-alives: no answer
        # A frame split across writes, then two frames in one write.
        await c.send_raw(b'{"jsonrpc": "2.0", "id": "a", "met')
        await c.send_raw(b'hod": "mcp.hello"}\0{"jsonrpc": "2.0", "id": "b", "method": "mcp.nope"}\0')
        answers = {m["id"]: m for m in (await c.next_message(), await c.next_message())}
        assert answers["a"]["result"]["gateway"] == "llmbasedos"
        assert answers["b"]["error"]["code"] == errors.METHOD_NOT_FOUND
        await c.send([{"jsonrpc": "2.0", "id": 1, "method": "mcp.hello"},
                      {"jsonrpc": "2.0", "id": 2, "method": "mcp.licence.check"}])
        batch = await c.next_message()
        assert sorted(a["id"] for a in batch) == [1, 2]
    finally:
        await c.close()
    # An abrupt disconnect in the middle of a frame leaves the gateway serving.
    c = await UnixClient.open(gw.socket)
    await c.send_raw(b'{"jsonrpc": "2.0", "id": 1, "method": "mcp.he')
    await c.close()
    client = await RPCClient.connect_unix(str(gw.socket))
    try:
        assert (await client.call("mcp.hello"))["gateway"] == "llmbasedos"
    finally:
        await client.close()
    assert gw.alive()


async def test_a_second_gateway_does_not_steal_the_socket(env: Env) -> None:
    gw = env.start_gateway()
    second = GatewayProcess(env.state, dict(env.env))
    env.gateways.append(second)
    try:
        second.start(timeout=30)
    except RuntimeError as exc:
        assert "another gateway" in str(exc)
    else:
        raise AssertionError("a second gateway started on the same run dir")
    await wait_until(lambda: gw.socket.exists(), what="the first gateway's socket")
    client = await RPCClient.connect_unix(str(gw.socket))
    try:
        assert (await client.call("mcp.hello"))["gateway"] == "llmbasedos"
    finally:
        await client.close()


async def test_local_service_acts_for_a_client_with_its_rights_only(env: Env) -> None:
    env.start_backend("twin")
    gw = env.start_gateway()
    laptop_id, _ = gw.create_client("laptop", allow=("mcp.twin.whoami",))
    gone_id, _ = gw.create_client("gone")
    gw.revoke_token(gone_id)
    c = await UnixClient.open(gw.socket)
    try:
        await c.send({"jsonrpc": "2.0", "id": 1, "method": "mcp.twin.whoami", "caller": {"client_id": laptop_id}})
        assert (await c.next_message())["result"]["name"] == "laptop"
        await c.send({"jsonrpc": "2.0", "id": 2, "method": "mcp.twin.say", "params": ["x"],
                      "caller": {"client_id": laptop_id}})
        assert (await c.next_message())["error"]["code"] == errors.FORBIDDEN
        for rid, who in ((3, "c_nobody"), (33, gone_id)):
            await c.send({"jsonrpc": "2.0", "id": rid, "method": "mcp.twin.whoami", "caller": {"client_id": who}})
            assert (await c.next_message())["error"]["code"] == errors.UNAUTHORIZED
        await c.send({"jsonrpc": "2.0", "id": 4, "method": "mcp.twin.whoami", "caller": "owner"})
        assert (await c.next_message())["error"]["code"] == errors.INVALID_REQUEST
        await c.send({"jsonrpc": "2.0", "id": 5, "method": "mcp.twin.whoami"})
        assert (await c.next_message())["result"]["name"] == "owner"
    finally:
        await c.close()


async def test_the_run_making_a_call_reaches_the_backend_from_the_unix_door_only(env: Env) -> None:
    env.start_backend("twin")
    gw = env.start_gateway()
    laptop_id, laptop_token = gw.create_client("laptop", allow=("mcp.twin.whoami",))
    c = await UnixClient.open(gw.socket)
    try:
        await c.send({"jsonrpc": "2.0", "id": 1, "method": "mcp.twin.whoami",
                      "caller": {"client_id": laptop_id, "run": "x_parent"}})
        seen = (await c.next_message())["result"]
        assert (seen["name"], seen["run"]) == ("laptop", "x_parent")
        # A run started on the agent's own socket has no client id: it acts as the door's owner.
        await c.send({"jsonrpc": "2.0", "id": 2, "method": "mcp.twin.whoami", "caller": {"run": "x_local"}})
        seen = (await c.next_message())["result"]
        assert (seen["name"], seen["run"]) == ("owner", "x_local")
        for rid, run in ((3, 7), (4, ""), (5, "x" * 65)):
            await c.send({"jsonrpc": "2.0", "id": rid, "method": "mcp.twin.whoami",
                          "caller": {"client_id": laptop_id, "run": run}})
            answer = await c.next_message()
            assert answer["error"]["code"] == errors.INVALID_REQUEST and "caller.run" in answer["error"]["message"]
        await c.send({"jsonrpc": "2.0", "id": 6, "method": "mcp.twin.whoami", "caller": {"client_id": laptop_id}})
        assert "run" not in (await c.next_message())["result"]
    finally:
        await c.close()
    # A /ws client's "caller" is ignored: it cannot claim to be a run.
    async with WsClient.connect(gw.ws_url, laptop_token) as ws:
        await ws.send({"jsonrpc": "2.0", "id": 1, "method": "mcp.twin.whoami", "caller": {"run": "x_forged"}})
        seen = (await ws.next_message())["result"]
    assert seen["name"] == "laptop" and "run" not in seen
