"""The `upstreams` section of /status, in process: the real Router and Policy, a state file in a real run dir, and
who sees which server (the owner everything; another client only the servers its rights reach, cut down)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy
from llmbasedos.gateway.routing.router import Router
from llmbasedos.gateway.status import StatusSource, upstreams_section
from llmbasedos.protocol.caps import parse_caps
from llmbasedos.settings import Settings
from llmbasedos.upstream_state import STATE_FILE
from tests.gateway.harness import OPEN_FREE_TIER

STATE = {"pid": os.getpid(), "updated": 1.0, "registry": "mcp_servers.yaml", "registry_error": None, "servers": {
    "memory": {"state": "ready", "transport": "stdio", "tools": 2, "calls": 5, "errors": 1, "restarts": 0,
               "last_error": "spawn of /home/someone/bin/server failed once", "since": 1.0,
               "tool_names": {"read_graph": "mcp.memory.read_graph", "graph": "mcp.memory.graph"},
               "refused_tools": {"delete_all": "denied by the tools policy in the registry"}},
    "memory_read": {"state": "ready", "transport": "http", "tools": 1, "calls": 0, "errors": 0, "restarts": 0,
                    "last_error": None, "tool_names": {"graph": "mcp.memory_read.graph"}, "refused_tools": {}},
    "github": {"state": "failed", "transport": "stdio", "tools": 0, "calls": 0, "errors": 3, "restarts": 4,
               "last_error": "initialize timed out after 30 s", "tool_names": {}, "refused_tools": {}},
    "hidden": {"state": "failed", "transport": "stdio", "tools": 0, "last_error": "x", "tool_names": {},
               "refused_tools": {}},
}}


def caps(server: str, socket: str, *actions: str) -> Any:
    return parse_caps({"service_name": server, "socket": socket, "upstream": {"server": server, "transport": "stdio"},
                       "capabilities": [{"method": f"mcp.{server}.{a}", "mcp_tool": {"name": a}} for a in actions]},
                      f"{server}.cap.json")


@dataclass
class Setup:
    source: StatusSource
    run_dir: Path
    owner: ClientIdentity


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    state = Path(tempfile.mkdtemp(prefix="gss", dir="/tmp"))
    (state / "config").mkdir()
    (state / "config" / "licence_tiers.yaml").write_text(OPEN_FREE_TIER, encoding="utf-8")
    run_dir = state / "run"
    run_dir.mkdir()
    settings = Settings(state_dir=state, run_dir=run_dir, data_dir=state / "data", log_dir=state / "logs",
                        config_dir=state / "config", virtual_root=state / "files")
    policy = Policy.load(settings)
    router = Router(policy)
    socket = str(run_dir / "upstream.sock")  # nobody listens: /status never calls the services
    router.add_service(caps("memory", socket, "read_graph", "graph"), "memory.cap.json")
    router.add_service(caps("memory_read", socket, "graph"), "memory_read.cap.json")
    router.add_service(caps("time", socket, "now"), "time.cap.json")  # published, not in the state file yet
    source = cast(StatusSource, SimpleNamespace(router=router, policy=policy,
                                                discovery=SimpleNamespace(run_dir=run_dir)))
    try:
        yield Setup(source, run_dir, policy.local_identity())
    finally:
        await router.pool.close()
        policy.close()
        shutil.rmtree(state, ignore_errors=True)


def section(setup: Setup, client: ClientIdentity) -> dict[str, Any]:
    everything = client.is_owner
    visible = set(setup.source.router.methods() if everything else setup.source.router.methods_for(client))
    return upstreams_section(setup.source, client, everything, visible)


async def test_the_owner_sees_every_server_its_collisions_and_the_programs_report(setup: Setup) -> None:
    (setup.run_dir / STATE_FILE).write_text(json.dumps(STATE), encoding="utf-8")
    got = section(setup, setup.owner)
    servers = got["servers"]
    assert sorted(servers) == ["github", "hidden", "memory", "memory_read", "time"]
    assert servers["memory"]["calls"] == 5 and servers["memory"]["last_error"].startswith("spawn")
    assert servers["memory"]["refused_tools"] == {"delete_all": "denied by the tools policy in the registry"}
    assert servers["memory"]["name_collisions"] == {}
    assert servers["memory_read"]["name_collisions"] == {
        "graph": "its tool name 'memory_read_graph' is already the name of mcp.memory.read_graph"}
    assert servers["time"] == {"state": "unknown", "transport": "stdio", "tools": 1, "tool_names": {},
                               "refused_tools": {}, "name_collisions": {}}
    assert got["program"] == {"present": True, "error": None, "pid": os.getpid(), "running": True, "updated": 1.0,
                              "registry": "mcp_servers.yaml", "registry_error": None}


async def test_another_client_sees_only_the_servers_its_rights_reach_and_less_of_them(setup: Setup) -> None:
    (setup.run_dir / STATE_FILE).write_text(json.dumps(STATE), encoding="utf-8")
    client = ClientIdentity("c_x", "x", "FREE", ("mcp.memory.read_graph", "mcp.github.*"), False)
    got = section(setup, client)
    assert sorted(got["servers"]) == ["github", "memory"]  # github: failed, unpublished, but wholly allowed
    assert "program" not in got
    for row in got["servers"].values():
        assert not {"calls", "errors", "last_error", "tool_names"} & set(row)
    assert got["servers"]["github"]["state"] == "failed" and got["servers"]["github"]["restarts"] == 4
    assert "/home/" not in json.dumps(got)
    any_upstream = ClientIdentity("c_y", "y", "FREE", ("mcp.upstream.*",), False)
    assert "hidden" in section(setup, any_upstream)["servers"]  # rights over every upstream, published or not


async def test_no_state_file_and_a_malformed_one(setup: Setup) -> None:
    got = section(setup, setup.owner)
    assert got["program"]["present"] is False and got["program"]["error"] is None
    assert sorted(got["servers"]) == ["memory", "memory_read", "time"]  # what is published still shows
    (setup.run_dir / STATE_FILE).write_text("{half a file", encoding="utf-8")
    got = section(setup, setup.owner)
    assert "not valid JSON" in got["program"]["error"]
    assert got["servers"]["memory_read"]["name_collisions"]  # the gateway's own refusals still show
