"""The upstream program against real MCP servers over stdio: the odd test server (tests/support/
odd_mcp_server.py) for the cases real servers rarely show. The npm and PyPI servers are in
test_upstream_third_party.py."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from llmbasedos.protocol import errors
from tests.servers.upstream_harness import UpstreamWorld, pid_alive, until
from tests.support.odd_mcp_server import PNG_BASE64
from tests.support.procs import ServerHandle, wait_for
from tests.support.third_party import odd_server

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def world(start_server: Callable[..., ServerHandle], tmp_path: Path) -> AsyncIterator[UpstreamWorld]:
    entry = odd_server(cancelled_file=tmp_path / "cancelled").registry_entry(timeouts={"connect": 10})
    # A secret in the program's own environment: no upstream child may see it.
    w = UpstreamWorld.start(start_server, {"odd": entry}, env={"LLMBDO_TEST_SECRET": "s3cret"})
    w.wait_state("odd", "ready")
    yield w
    await w.close()


async def test_tools_are_published_and_results_pass_through_unchanged(world: UpstreamWorld) -> None:
    cap = world.wait_cap("odd")
    assert cap["upstream"] == {"server": "odd", "transport": "stdio"}
    assert {"echo", "add", "image", "resource", "fail", "slow"} <= world.tools("odd")
    echo = next(c for c in cap["capabilities"] if c.get("mcp_tool", {}).get("name") == "echo")
    assert echo["annotations"]["readOnlyHint"] is True and echo["annotations"]["title"] == "Echo"

    assert await world.call("mcp.odd.echo", {"text": "héllo"}) == {
        "content": [{"type": "text", "text": "héllo"}], "isError": False}
    added = await world.call("mcp.odd.add", {"a": 2, "b": 3})
    assert added["structuredContent"] == {"sum": 5} and added["isError"] is False
    image = await world.call("mcp.odd.image")
    assert image["content"] == [{"type": "image", "data": PNG_BASE64, "mimeType": "image/png"}]
    resource = await world.call("mcp.odd.resource")
    kinds = [block["type"] for block in resource["content"]]
    assert kinds == ["resource", "resource_link"]
    assert resource["content"][0]["resource"]["uri"].startswith("odd://")
    failed = await world.call("mcp.odd.fail")
    assert failed["isError"] is True  # a tool's failure is its result, not a protocol error

    with pytest.raises(errors.MethodNotFound):
        await world.call("mcp.odd.no_such_tool")
    with pytest.raises(errors.MethodNotFound):
        await world.call("mcp.nobody.echo")


async def test_prompts_and_resources_are_forwarded(world: UpstreamWorld) -> None:
    prompts = await world.call("mcp.odd.prompts.list")
    assert [p["name"] for p in prompts["prompts"]] == ["greet"]
    got = await world.call("mcp.odd.prompts.get", {"name": "greet", "arguments": {"name": "Ada"}})
    assert "Ada" in got["messages"][0]["content"]["text"]
    listed = await world.call("mcp.odd.resources.list")
    assert "odd://readme" in [r["uri"] for r in listed["resources"]]
    templates = await world.call("mcp.odd.resources.templates")
    assert templates["resourceTemplates"][0]["uriTemplate"].startswith("odd://item/")
    read = await world.call("mcp.odd.resources.read", {"uri": "odd://readme"})
    assert "odd MCP server" in read["contents"][0]["text"]


async def test_progress_arrives_and_cancellation_reaches_the_upstream(world: UpstreamWorld, tmp_path: Path) -> None:
    seen: list[Any] = []
    result = await world.call("mcp.odd.slow", {"seconds": 0.4, "steps": 4},
                              on_notification=lambda method, params: seen.append((method, params)))
    assert result["isError"] is False
    assert [p["progress"] for m, p in seen if m == "mcp.progress"] == [1, 2, 3, 4]

    call = asyncio.ensure_future(world.call("mcp.odd.slow", {"seconds": 30, "steps": 30},
                                            on_notification=lambda m, p: seen.append((m, p))))
    await until(lambda: len(seen) >= 5, 10, what="the second slow call under way")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await until((tmp_path / "cancelled").exists, 10, what="the upstream to see the cancellation")
    assert (await world.call("mcp.odd.echo", {"text": "after"}))["content"][0]["text"] == "after"


async def test_children_get_a_clean_environment_and_a_process_group_of_their_own(world: UpstreamWorld) -> None:
    info = (await world.call("mcp.odd.pid"))["structuredContent"]
    assert "LLMBDO_TEST_SECRET" not in info["env"]
    assert not [k for k in info["env"] if k.startswith("LLMBDO_")]
    # LC_CTYPE: the server is a Python program, which sets it for itself (PEP 538).
    assert set(info["env"]) <= {"PATH", "HOME", "ODD_CANCELLED_FILE", "LC_CTYPE"}
    program_group = os.getpgid(world.handle.proc.pid)
    assert info["pgid"] != program_group
    assert info["pgid"] == info["ppid"]  # the launcher leads the group; the server is its child


async def test_a_crash_mid_call_is_an_error_and_the_next_call_gets_a_fresh_session(world: UpstreamWorld) -> None:
    before = (await world.call("mcp.odd.pid"))["structuredContent"]["pid"]
    with pytest.raises(errors.RPCError) as crashed:
        await world.call("mcp.odd.crash")
    assert "odd" in crashed.value.message
    # The next call waits for the restart rather than failing on a dead session.
    after = await world.call("mcp.odd.pid")
    assert after["structuredContent"]["pid"] != before
    assert world.server("odd")["restarts"] >= 1
    assert not pid_alive(before)


async def test_kill_9_of_a_child_under_load(world: UpstreamWorld) -> None:
    child = (await world.call("mcp.odd.pid"))["structuredContent"]["pid"]
    calls = [asyncio.ensure_future(world.call("mcp.odd.slow", {"seconds": 20, "steps": 2})) for _ in range(6)]
    await asyncio.sleep(0.5)
    os.kill(child, signal.SIGKILL)
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, errors.RPCError) for o in outcomes), outcomes
    fresh = await world.call("mcp.odd.echo", {"text": "still here"})
    assert fresh["content"][0]["text"] == "still here"


async def test_kill_9_of_the_program_leaves_no_process_behind(world: UpstreamWorld) -> None:
    info = (await world.call("mcp.odd.pid"))["structuredContent"]
    launcher, child = info["ppid"], info["pid"]
    os.kill(world.handle.proc.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(child) and not pid_alive(launcher), 15, what="the children to die with it")


async def test_a_huge_result_is_refused_and_nothing_else_suffers(start_server: Callable[..., ServerHandle]) -> None:
    w = UpstreamWorld.start(start_server, {"odd": odd_server().registry_entry()}, env={"LLMBDO_MAX_FRAME": "2000000"})
    try:
        w.wait_state("odd", "ready")
        with pytest.raises(errors.PayloadTooLarge) as big:
            await w.call("mcp.odd.huge", {"megabytes": 3})
        assert "LLMBDO_MAX_FRAME" in big.value.message
        assert (await w.call("mcp.odd.echo", {"text": "ok"}))["content"][0]["text"] == "ok"
        await until(lambda: "frame size" in (w.server("odd")["last_error"] or ""), 5, what="the error reported")
    finally:
        await w.close()


async def test_registry_changes_apply_to_the_running_program(world: UpstreamWorld) -> None:
    odd = world.cap("odd")
    assert odd is not None
    second = odd_server(name="second", extra_tools=["hello"]).registry_entry()
    first = odd_server().registry_entry()
    world.write_registry({"odd": first, "second": second})
    world.wait_cap("second")
    assert "hello" in world.tools("second")
    assert (await world.call("mcp.second.hello", {"text": "x"}))["content"][0]["text"].endswith("x")

    denied = {**second, "tools": {"deny": ["hel*"]}}
    world.write_registry({"second": denied})
    wait_for(lambda: world.cap("odd") is None, 10, what="odd to go away")
    world.wait_cap("second", lambda c: not any(x.get("mcp_tool", {}).get("name") == "hello"
                                                for x in c["capabilities"]))
    await until(lambda: "hello" in world.server("second").get("refused_tools", {}), 5, what="hello refused")
    with pytest.raises(errors.MethodNotFound):
        await world.call("mcp.odd.echo", {"text": "gone"})

    world.write_registry("servers: [this is: not valid")
    wait_for(lambda: world.state().get("registry_error"), 10, what="the registry error reported")
    assert world.server("second")["state"] == "ready"  # what runs keeps running

    world.write_registry({"second": denied, "Bad Name": first})
    wait_for(lambda: world.server("Bad Name").get("state") == "refused", 10, what="the bad entry refused")
    assert world.state()["registry_error"] is None
    assert world.server("second")["state"] == "ready"


async def test_list_changed_from_the_upstream_updates_its_service(world: UpstreamWorld) -> None:
    assert "added_later" not in world.tools("odd")
    await world.call("mcp.odd.change_tools")
    world.wait_cap("odd", lambda c: any(x.get("mcp_tool", {}).get("name") == "added_later"
                                        for x in c["capabilities"]), timeout=15)
    assert (await world.call("mcp.odd.added_later", {"text": "new"}))["content"][0]["text"].endswith("new")


async def test_servers_that_misbehave_get_a_clear_state_and_others_are_not_affected(
        start_server: Callable[..., ServerHandle]) -> None:
    quick = {"timeouts": {"connect": 2, "list": 2}, "retry": {"count": 0, "backoff": 1}}
    w = UpstreamWorld.start(start_server, {
        "good": odd_server().registry_entry(),
        "garbage": odd_server("garbage").registry_entry(),
        "silent": odd_server("silent").registry_entry(**quick),
        "quits": odd_server("exit").registry_entry(**quick),
        "missing": {"command": "/nonexistent/mcp-server", **quick},
    })
    try:
        w.wait_state("good", "ready")
        # Garbage lines between messages are skipped: the server still works.
        w.wait_state("garbage", "ready")
        assert (await w.call("mcp.garbage.echo", {"text": "g"}))["content"][0]["text"] == "g"
        silent = w.wait_state("silent", "failed")
        assert "timed out" in silent["last_error"] or "no answer" in silent["last_error"]
        quits = w.wait_state("quits", "failed")
        assert "closed" in quits["last_error"]
        missing = w.wait_state("missing", "failed")
        assert missing["last_error"]
        for name in ("silent", "quits", "missing"):
            assert w.cap(name) is None  # never up: nothing is published
        # A silent server does not slow the others.
        assert (await w.call("mcp.good.echo", {"text": "fine"}, timeout=5))["content"][0]["text"] == "fine"
    finally:
        await w.close()
