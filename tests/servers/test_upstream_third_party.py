"""The upstream program against the real third-party servers people run: server-memory and server-everything
from npm (stdio, and server-everything over Streamable HTTP), mcp-server-time from PyPI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmbasedos.protocol import errors
from tests.servers.upstream_harness import UpstreamWorld
from tests.support.procs import ServerHandle
from tests.support.third_party import EverythingHttp, everything_server, memory_server, time_server

pytestmark = pytest.mark.asyncio


def _text(result: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in result["content"] if b.get("type") == "text")


async def _eventually(w: UpstreamWorld, method: str, params: dict[str, Any], timeout: float) -> Any:
    """The call's result once it succeeds: the link notices a lost session by a ping or a failed call."""
    outcome: list[Any] = []

    async def attempt() -> None:
        try:
            outcome.append(await w.call(method, params, timeout=10))
        except errors.RPCError:
            pass

    async def done() -> bool:
        await attempt()
        return bool(outcome)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await done():
        if loop.time() > deadline:
            raise TimeoutError(f"{method} did not succeed within {timeout:g} s")
        await asyncio.sleep(0.5)
    return outcome[0]


async def test_memory_time_and_everything_over_stdio(start_server: Callable[..., ServerHandle],
                                                     tmp_path: Path) -> None:
    w = UpstreamWorld.start(start_server, {
        "memory": memory_server(tmp_path / "memory.jsonl").registry_entry(),
        "time": time_server().registry_entry(),
        "everything": everything_server().registry_entry(),
    })
    try:
        for name in ("memory", "time", "everything"):
            w.wait_state(name, "ready", timeout=60)
        assert {"create_entities", "read_graph", "search_nodes"} <= w.tools("memory")
        assert {"get_current_time", "convert_time"} <= w.tools("time")
        assert "echo" in w.tools("everything")

        await w.call("mcp.memory.create_entities", {"entities": [
            {"name": "Ada", "entityType": "person", "observations": ["wrote the first program"]}]})
        graph = await w.call("mcp.memory.read_graph")
        assert "Ada" in _text(graph) or "Ada" in json.dumps(graph.get("structuredContent"))
        assert "Ada" in (tmp_path / "memory.jsonl").read_text(encoding="utf-8")  # the env the entry declared

        now = await w.call("mcp.time.get_current_time", {"timezone": "Europe/Paris"})
        assert "Europe/Paris" in _text(now)
        bad = await w.call("mcp.time.get_current_time", {"timezone": "Nowhere/Atlantis"})
        assert bad["isError"] is True and "Nowhere/Atlantis" in _text(bad)  # the upstream's own answer

        echoed = await w.call("mcp.everything.echo", {"message": "through the door"})
        assert "through the door" in _text(echoed)
        tiny = next(t for t in w.tools("everything") if "image" in t)
        image = await w.call(f"mcp.everything.{tiny}")
        assert any(b["type"] == "image" and b["data"] for b in image["content"])
        prompts = await w.call("mcp.everything.prompts.list")
        assert prompts["prompts"]
    finally:
        await w.close()


async def test_everything_over_streamable_http_survives_a_restart_of_the_server(
        start_server: Callable[..., ServerHandle]) -> None:
    with EverythingHttp() as server:
        server.start()
        w = UpstreamWorld.start(start_server, {
            "everything": {"url": server.url, "timeouts": {"connect": 10, "list": 10, "call": 30},
                           "retry": {"count": 0, "backoff": 1}}})
        try:
            cap = w.wait_cap("everything", timeout=60)
            assert cap["upstream"]["transport"] == "http"
            assert "through HTTP" in _text(await w.call("mcp.everything.echo", {"message": "through HTTP"}))
            server.restart()  # the same URL, a new process: its sessions are gone
            echoed = await _eventually(w, "mcp.everything.echo", {"message": "again"}, 40)
            assert "again" in _text(echoed)
        finally:
            await w.close()
