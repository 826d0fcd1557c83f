"""Upstream servers behind the real gateway: every existing rule applies to them unchanged (tokens,
allowlists, audit), and another llmbasedos's /mcp is an upstream like any other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.gateway.harness import Env, GatewayProcess, WsClient, wait_until
from tests.support.procs import start_server
from tests.support.third_party import odd_server

pytestmark = pytest.mark.asyncio


def _register(env: Env, servers: dict[str, Any]) -> None:
    (env.config_dir / "mcp_servers.yaml").write_text(yaml.safe_dump({"servers": servers}), encoding="utf-8")


def _start_upstream(env: Env) -> None:
    env.backends.append(start_server("upstream", env.env))


@pytest.fixture
def office() -> Iterator[tuple[Env, GatewayProcess]]:
    """An appliance with the odd server registered: gateway, upstream program."""
    env = Env()
    try:
        _register(env, {"odd": odd_server().registry_entry()})
        _start_upstream(env)
        gateway = env.start_gateway()
        yield env, gateway
    finally:
        env.close()


async def _wait_method(gateway: GatewayProcess, token: str, method: str) -> None:
    async with WsClient.connect(gateway.ws_url, token) as client:
        async def present() -> bool:
            caps = await client.call("mcp.listCapabilities")
            return method in [c["method"] for s in caps for c in s["capabilities"]]

        await wait_until(present, 30, what=f"{method} routed")


def _audit(env: Env) -> list[dict[str, Any]]:
    log = next(env.state.rglob("audit.jsonl"))
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


async def test_allowlists_govern_upstream_tools_like_any_other(office: tuple[Env, GatewayProcess]) -> None:
    env, gateway = office
    await _wait_method(gateway, gateway.token, "mcp.odd.echo")
    only_odd = gateway.create_token("only-odd", allow=("mcp.odd.*",))
    only_fs = gateway.create_token("only-fs", allow=("mcp.fs.*",))

    async with WsClient.connect(gateway.ws_url, only_odd) as odd_client, \
            WsClient.connect(gateway.ws_url, only_fs) as fs_client:
        echoed = await odd_client.call("mcp.odd.echo", {"text": "a private note"})
        assert echoed["content"] == [{"type": "text", "text": "a private note"}]
        refused = await fs_client.request("mcp.odd.echo", {"text": "no"})
        assert refused["error"]["code"] == -32003  # Forbidden, as for any method outside the allowlist
        # The allowlist covers the upstream's prompts and resources too.
        refused = await fs_client.request("mcp.odd.prompts.list", {})
        assert refused["error"]["code"] == -32003
        assert (await odd_client.call("mcp.odd.prompts.list", {}))["prompts"]

    expected = {("call", "only-odd", "ok"), ("authz", "only-fs", "denied")}
    # The log is written behind the calls: wait for the entries to land.
    await wait_until(lambda: {(e.get("event"), e.get("name"), e.get("outcome")) for e in _audit(env)
                              if e.get("method") == "mcp.odd.echo"} >= expected, 10, what="the audit entries")
    assert "a private note" not in json.dumps(_audit(env))  # arguments are never logged


async def test_another_llmbasedos_is_an_upstream_too(office: tuple[Env, GatewayProcess]) -> None:
    _, office_gateway = office
    await _wait_method(office_gateway, office_gateway.token, "mcp.odd.echo")
    # The home appliance reaches the office one with a token the office made for it, scoped to the odd server.
    home_token = office_gateway.create_token("home", allow=("mcp.odd.*",))
    home = Env()
    try:
        secret = home.config_dir / "office.token"
        secret.write_text(f"Bearer {home_token}", encoding="utf-8")
        _register(home, {"office": {"url": office_gateway.url + "/mcp",
                                    "headers": {"Authorization": {"file": "office.token"}}}})
        _start_upstream(home)
        home_gateway = home.start_gateway()
        await _wait_method(home_gateway, home_gateway.token, "mcp.office.odd_echo")
        async with WsClient.connect(home_gateway.ws_url, home_gateway.token) as client:
            chained = await client.call("mcp.office.odd_echo", {"text": "across two appliances"})
            assert chained["content"] == [{"type": "text", "text": "across two appliances"}]
            added = await client.call("mcp.office.odd_add", {"a": 20, "b": 22})
            assert added["structuredContent"] == {"sum": 42}
            caps = await client.call("mcp.listCapabilities")
            office_methods = {c["method"] for s in caps for c in s["capabilities"] if s["service_name"] == "office"}
            # Only what the office's token allows is offered here: not the office's files.
            assert not [m for m in office_methods if m.startswith("mcp.office.fs_")]
        state = json.loads((home.run_dir / "upstream.state.json").read_text(encoding="utf-8"))
        assert state["servers"]["office"]["state"] == "ready"
        assert home_token not in json.dumps(state)  # the secret is never in the report
    finally:
        home.close()
