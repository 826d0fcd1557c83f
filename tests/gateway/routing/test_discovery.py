"""Discovery: capability files appearing, disappearing and lying, while clients stay connected."""

from __future__ import annotations

import json
from typing import Any

import httpx

from llmbasedos.protocol import errors
from tests.gateway.harness import Env, GatewayProcess, WsClient, wait_until


async def _status(gw: GatewayProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{gw.url}/status", headers={"Authorization": f"Bearer {gw.token}"})
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


async def _methods(c: WsClient) -> set[str]:
    return set((await c.call("mcp.hello"))["methods"])


async def test_services_come_and_go_while_a_client_is_connected(env: Env) -> None:
    gw = env.start_gateway()
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        assert "mcp.echo.say" not in await _methods(c)
        echo = env.start_backend("echo")
        await wait_until(lambda: _has(c, "mcp.echo.say"), what="echo to be discovered")
        assert await c.call("mcp.echo.say", {"text": "up"}) == "up"
        twin = env.start_backend("twin")
        await wait_until(lambda: _has(c, "mcp.twin.say"), what="twin to be discovered")
        assert await c.call("mcp.twin.say", ["two"]) == "two"

        echo.stop()  # a clean stop removes echo.cap.json
        await wait_until(lambda: _lacks(c, "mcp.echo.say"), what="echo to be unregistered")
        answer = await c.request("mcp.echo.say", {"text": "gone"})
        assert answer["error"]["code"] == errors.METHOD_NOT_FOUND
        assert await c.call("mcp.twin.say", ["still"]) == "still"
        twin.stop()
        await wait_until(lambda: _lacks(c, "mcp.twin.say"), what="twin to be unregistered")


async def _has(c: WsClient, method: str) -> bool:
    return method in await _methods(c)


async def _lacks(c: WsClient, method: str) -> bool:
    return method not in await _methods(c)


def _cap(service: str, methods: list[str], socket: str) -> str:
    return json.dumps({"service_name": service, "description": "test", "version": "1", "socket": socket,
                       "capabilities": [{"method": m, "params_schema": {"type": "object"}} for m in methods]})


async def test_lying_and_broken_capability_files_are_refused_alone(env: Env) -> None:
    env.start_backend("echo")
    gw = env.start_gateway()
    run = env.run_dir
    bad = {
        # a file that claims another service
        "evil.cap.json": _cap("echo", ["mcp.echo.say", "mcp.echo.steal"], str(run / "evil.sock")),
        # a service that claims another service's method
        "rogue.cap.json": _cap("rogue", ["mcp.echo.say"], str(run / "rogue.sock")),
        # a service that claims the gateway's own methods
        "licence.cap.json": _cap("licence", ["mcp.licence.check"], str(run / "licence.sock")),
        # a socket outside the run directory
        "outside.cap.json": _cap("outside", ["mcp.outside.go"], "/tmp/elsewhere.sock"),
        "broken.cap.json": '{"service_name": "broken", ',
        "empty.cap.json": "",
        "schema.cap.json": json.dumps({"service_name": "schema", "socket": str(run / "schema.sock"),
                                       "capabilities": [{"method": "mcp.schema.x",
                                                         "params_schema": {"type": "nonsense"}}]}),
    }
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await wait_until(lambda: _has(c, "mcp.echo.say"), what="echo to be routed")
        for name, text in bad.items():
            (run / name).write_text(text, encoding="utf-8")
        await wait_until(lambda: _refused_all(gw, set(bad)), what="every bad file to be refused")
        # A good service that appears meanwhile is not held back by the bad ones.
        env.start_backend("twin")
        await wait_until(lambda: _has(c, "mcp.twin.say"), what="twin to be discovered")
        methods = await _methods(c)
        assert "mcp.echo.steal" not in methods and "mcp.outside.go" not in methods
        assert await c.call("mcp.echo.say", {"text": "mine"}) == "mine"
        assert (await c.call("mcp.licence.check"))["tier"] == "FREE"
        status = await _status(gw)
        assert status["services"]["echo"]["state"] == "up"
        assert "twin" in status["services"] and "rogue" not in status["services"]
        reasons = status["refused_capability_files"]
        assert "only echo.cap.json" in reasons["evil.cap.json"]
        assert "run directory" in reasons["outside.cap.json"]
        assert "reserved" in reasons["licence.cap.json"]
    log = gw.output()
    for name in bad:
        assert f"refused capability file {name}" in log, name

    # Removing a refused file clears it; fixing it registers it.
    (run / "broken.cap.json").unlink()
    await wait_until(lambda: _not_refused(gw, "broken.cap.json"), what="the removed file to be forgotten")


async def _refused_all(gw: GatewayProcess, names: set[str]) -> bool:
    return names <= set((await _status(gw))["refused_capability_files"])


async def _not_refused(gw: GatewayProcess, name: str) -> bool:
    return name not in (await _status(gw))["refused_capability_files"]


async def test_a_file_that_turns_bad_unregisters_its_service(env: Env) -> None:
    twin = env.start_backend("twin")
    gw = env.start_gateway()
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        await wait_until(lambda: _has(c, "mcp.twin.say"), what="twin to be routed")
        cap = twin.cap_path
        good = cap.read_text(encoding="utf-8")
        cap.write_text(good[: len(good) // 2], encoding="utf-8")
        await wait_until(lambda: _lacks(c, "mcp.twin.say"), what="twin to be unregistered")
        cap.write_text(good, encoding="utf-8")
        await wait_until(lambda: _has(c, "mcp.twin.say"), what="twin to be routed again")
        assert await c.call("mcp.twin.say", ["back"]) == "back"
