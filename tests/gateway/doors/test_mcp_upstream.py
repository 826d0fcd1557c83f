"""Upstream MCP servers on `/mcp`, end to end: the real gateway, the real upstream program, the odd MCP server
(tests/support/odd_mcp_server.py) registered twice, and the official SDK's client on both sides.

    odd     the odd server, plus the tool `x_y`           -> odd_echo, odd_add, ..., odd_x_y
    odd_x   the odd server, plus the tool `y`             -> odd_x_echo, ...; odd_x_y is taken: refused
    echo    the appliance's own echo backend (native)     -> echo_say, ...

What the host gets through /mcp is compared with what the same SDK client gets from the odd server directly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent, TextResourceContents, ToolListChangedNotification

from tests.gateway.harness import Env, GatewayProcess, WsClient, wait_until
from tests.support.odd_mcp_server import README_TEXT
from tests.support.procs import start_server
from tests.support.third_party import ServerCommand, odd_server

MODES = ["legacy", "2026-07-28"]
REFUSED = "its tool name 'odd_x_y' is already the name of mcp.odd.x_y"


class World:
    def __init__(self, env: Env, gateway: GatewayProcess, odd: ServerCommand) -> None:
        self.env = env
        self.gateway = gateway
        self.odd = odd

    def url(self, token: str | None = None) -> str:
        return f"{self.gateway.url}/mcp?token={token or self.gateway.token}"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    env = Env()
    try:
        odd = odd_server(extra_tools=["x_y"])
        servers = {"odd": odd.registry_entry(), "odd_x": odd_server(extra_tools=["y"]).registry_entry()}
        (env.config_dir / "mcp_servers.yaml").write_text(yaml.safe_dump({"servers": servers}), encoding="utf-8")
        env.backends.append(start_server("upstream", env.env))
        env.start_backend("echo")
        gateway = env.start_gateway()
        asyncio.run(_routed(gateway, {"mcp.odd.x_y", "mcp.odd_x.y", "mcp.odd.prompts.list", "mcp.echo.say"}))
        yield World(env, gateway, odd)
    finally:
        env.close()


async def _routed(gateway: GatewayProcess, methods: set[str]) -> None:
    async with WsClient.connect(gateway.ws_url, gateway.token) as client:
        async def present() -> bool:
            caps = await client.call("mcp.listCapabilities")
            return methods <= {c["method"] for s in caps for c in s["capabilities"]}

        await wait_until(present, 60, what=f"{sorted(methods)} routed")


async def _tools(client: Client) -> dict[str, Any]:
    tools: dict[str, Any] = {}
    cursor = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.update((t.name, t) for t in page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools


def _same(result: Any) -> dict[str, Any]:
    """A tool result as the host reads it, without the `_meta` the gateway adds in the 2026-07-28 era."""
    dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    dumped.pop("_meta", None)
    return dumped


@pytest.mark.parametrize("mode", MODES)
async def test_results_reach_the_host_as_the_upstream_sent_them(world: World, mode: str) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("image", {}), ("resource", {}), ("add", {"a": 20, "b": 22}), ("fail", {}), ("echo", {"text": "é ✓"})]
    async with Client(world.odd.stdio_params()) as direct, Client(world.url(), mode=mode) as host:
        for tool, arguments in calls:
            straight = await direct.call_tool(tool, arguments)
            through = await host.call_tool(f"odd_{tool}", arguments)
            assert _same(through) == _same(straight), tool
        image = await host.call_tool("odd_image", {})
        assert image.content[0].type == "image" and image.content[0].mime_type == "image/png"
        kinds = [c.type for c in (await host.call_tool("odd_resource", {})).content]
        assert kinds == ["resource", "resource_link"]
        added = await host.call_tool("odd_add", {"a": 1, "b": 2})
        assert added.structured_content == {"sum": 3} and added.is_error is False
        assert (await host.call_tool("odd_fail", {})).is_error is True


@pytest.mark.parametrize("mode", MODES)
async def test_tools_are_listed_as_the_upstream_listed_them(world: World, mode: str) -> None:
    async with Client(world.odd.stdio_params()) as direct, Client(world.url(), mode=mode) as host:
        listed = {t.name: t for t in (await direct.list_tools()).tools}
        tools = await _tools(host)
        for name, tool in listed.items():
            ours = tools[f"odd_{name}"]
            assert ours.title == tool.title and ours.description == tool.description
            assert ours.input_schema == tool.input_schema and ours.output_schema == tool.output_schema
            assert ours.annotations == tool.annotations
            assert ours.meta is not None and ours.meta["llmbasedos/method"] == f"mcp.odd.{name}"
        assert tools["odd_echo"].title == "Echo" and tools["odd_echo"].annotations.read_only_hint is True
        assert "echo_say" in tools  # the appliance's own tools beside them
        assert not [n for n in tools if "prompts" in n or "resources" in n]


async def test_a_colliding_tool_is_refused_and_listed(world: World) -> None:
    async with Client(world.url(), mode="2026-07-28") as host:
        tools = await _tools(host)
    assert tools["odd_x_y"].meta["llmbasedos/method"] == "mcp.odd.x_y"  # the server that sorts first keeps it
    assert "odd_x_echo" in tools
    only_odd_x = world.gateway.create_token("only-odd-x", allow=("mcp.odd_x.*",))
    async with Client(world.url(only_odd_x), mode="legacy") as host:
        seen = await _tools(host)
        assert "odd_x_y" not in seen and "odd_x_echo" in seen  # not shown under a name that is another's
        with pytest.raises(MCPError):
            await host.call_tool("odd_x_y", {"text": "x"})
    async with httpx.AsyncClient(base_url=world.gateway.url, timeout=20) as http:
        status = (await http.get("/status", headers={"Authorization": f"Bearer {world.gateway.token}"})).json()
        theirs = (await http.get("/status", headers={"Authorization": f"Bearer {only_odd_x}"})).json()
    assert status["upstreams"]["servers"]["odd_x"]["name_collisions"] == {"y": REFUSED}
    assert status["upstreams"]["servers"]["odd"]["state"] == "ready"
    assert sorted(theirs["upstreams"]["servers"]) == ["odd_x"]
    assert theirs["upstreams"]["servers"]["odd_x"]["name_collisions"] == {"y": REFUSED}
    assert world.gateway.output().count("mcp.odd_x.y is not served on /mcp") == 1  # said once, loudly


@pytest.mark.parametrize("mode", MODES)
async def test_prompts_and_resources_are_namespaced(world: World, mode: str) -> None:
    async with Client(world.odd.stdio_params()) as direct, Client(world.url(), mode=mode) as host:
        prompts = {p.name: p for p in (await host.list_prompts()).prompts}
        assert {"odd_greet", "odd_x_greet"} <= set(prompts)
        assert [a.name for a in prompts["odd_greet"].arguments or []] == ["name"]
        got = await host.get_prompt("odd_greet", {"name": "Ada"})
        straight = await direct.get_prompt("greet", {"name": "Ada"})
        assert [m.model_dump() for m in got.messages] == [m.model_dump() for m in straight.messages]
        first = got.messages[0].content
        assert isinstance(first, TextContent) and "Hello, Ada!" in first.text
        uris = [str(r.uri) for r in (await host.list_resources()).resources]
        assert "odd://readme" in uris
        readme = (await host.read_resource("odd://readme")).contents[0]
        assert isinstance(readme, TextResourceContents) and readme.text == README_TEXT
        templates = [t.uri_template for t in (await host.list_resource_templates()).resource_templates]
        assert "odd://item/{item_id}" in templates and "llmbasedos://fs/{+path}" in templates
        item = (await host.read_resource("odd://item/42")).contents[0]
        assert isinstance(item, TextResourceContents) and item.text == "item 42\n"
        with pytest.raises(MCPError):
            await host.read_resource("nobody://nothing")


async def test_the_allowlist_governs_prompts_and_resources(world: World) -> None:
    only_odd = world.gateway.create_token("prompts-odd", allow=("mcp.odd.*",))
    only_echo = world.gateway.create_token("prompts-echo", allow=("mcp.echo.*",))
    async with Client(world.url(only_odd), mode="2026-07-28") as host:
        names = [p.name for p in (await host.list_prompts()).prompts]
        assert "odd_greet" in names and not [n for n in names if n.startswith("odd_x_")]
        with pytest.raises(MCPError):
            await host.get_prompt("odd_x_greet", {"name": "Ada"})
    async with Client(world.url(only_echo), mode="legacy") as host:
        assert (await host.list_prompts()).prompts == []
        assert (await host.list_resources()).resources == []
        assert [t.uri_template for t in (await host.list_resource_templates()).resource_templates] == [
            "llmbasedos://fs/{+path}"]
        for uri in ("odd://readme", "odd://item/7"):  # odd://readme was listed by others: recorded, still refused
            with pytest.raises(MCPError):
                await host.read_resource(uri)
        with pytest.raises(MCPError):
            await host.get_prompt("odd_greet", {"name": "Ada"})
    audit = next(world.env.state.rglob("audit.jsonl")).read_text(encoding="utf-8")
    asked = [e for e in map(json.loads, audit.splitlines()) if e.get("name") == "prompts-echo"
             and str(e.get("method", "")).startswith("mcp.odd")]
    assert not [e for e in asked if e.get("outcome") == "ok"]  # never a call that reached the server


async def test_a_tool_list_change_upstream_reaches_a_connected_host(world: World) -> None:
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification) or "tools/list_changed" in repr(message):
            changed.set()

    async with Client(world.url(), mode="legacy", message_handler=on_message) as host:
        assert "odd_added_later" not in await _tools(host)
        said = await host.call_tool("odd_change_tools", {})
        assert isinstance(said.content[0], TextContent) and "added_later" in said.content[0].text
        await asyncio.wait_for(changed.wait(), 30)

        async def listed() -> bool:
            return "odd_added_later" in await _tools(host)

        await wait_until(listed, 30, what="odd_added_later on /mcp")
        later = (await host.call_tool("odd_added_later", {"text": "now"})).content[0]
        assert isinstance(later, TextContent) and later.text == "later: now"


@pytest.mark.parametrize("mode", MODES)
async def test_progress_of_an_upstream_tool_reaches_the_host(world: World, mode: str) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(world.url(), mode=mode) as host:
        done = await host.call_tool("odd_slow", {"seconds": 0.2, "steps": 3}, progress_callback=on_progress)
    assert done.is_error is False
    assert len(seen) == 3 and seen == sorted(seen)
