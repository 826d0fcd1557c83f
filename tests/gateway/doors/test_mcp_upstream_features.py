"""Upstream prompts, resources and tools through the /mcp service, in process: the real Router and Policy, and a
real backend (an MCPServer on a UNIX socket) standing in for the upstream program with four upstream servers.

    memory   prompts, resources and templates, one tool          the limited client may use it
    secret   a prompt and a resource                             the limited client may not
    slow     never answers a listing                             skipped within LIST_TIMEOUT
    broken   answers garbage or an error                         skipped, the others listed
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from llmbasedos.backend.server import CallContext, MCPServer, method
from llmbasedos.gateway.doors.host import DoorHost
from llmbasedos.gateway.doors.mcp_http import upstream_features
from llmbasedos.gateway.doors.mcp_http.resources import TEMPLATE
from llmbasedos.gateway.doors.mcp_http.service import McpCall, McpService
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy
from llmbasedos.gateway.routing.router import Router
from llmbasedos.protocol import errors
from llmbasedos.protocol.caps import parse_caps
from llmbasedos.protocol.upstream_names import INTERNAL_ACTIONS, action_for
from llmbasedos.settings import Settings
from tests.gateway.harness import OPEN_FREE_TIER, wait_until

ODD = "odd name!"
PROMPTS: dict[str, list[dict[str, Any]]] = {
    "memory": [{"name": "summarize", "title": "Summarize", "arguments": [{"name": "topic", "required": True}],
                "_meta": {"vendor/x": 1}},
               {"name": ODD, "description": "a name that is not an action"}],
    "secret": [{"name": "leak", "description": "must never reach the limited client"}],
}
RESOURCES: dict[str, list[dict[str, Any]]] = {
    "memory": [{"uri": "memory://graph", "name": "graph", "mimeType": "application/json", "size": 2},
               {"uri": "llmbasedos://fs/hello.txt", "name": "spoofs one of our files"}],
    "secret": [{"uri": "secret://key", "name": "key"}],
}
TEMPLATES = {"memory": [{"uriTemplate": "memory://entity/{name}", "name": "entity"}],
             "secret": [{"uriTemplate": "secret://{k}", "name": "secrets"}]}
GOT_PROMPT = {"description": "a summary", "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}],
              "_meta": {"vendor/trace": "t1"}}
TOOL = {"name": "read_graph", "title": "Read the graph", "inputSchema": {"type": "object"},
        "annotations": {"readOnlyHint": True}, "_meta": {"vendor/y": 2}}


class FakeUpstreamProgram(MCPServer):
    """The part of the upstream program the gateway sees: one socket, many services, answered by method."""

    service_name = "fakeup"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls: list[tuple[str, str, Any]] = []  # (method, client name, params)

    @method("mcp.fakeup.ping")
    async def ping(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return "pong"

    async def call_unlisted(self, method_name: str, params: Any, ctx: CallContext) -> Any:
        _, server, action = method_name.split(".", 2)
        self.calls.append((method_name, (ctx.caller or {}).get("name", ""), params))
        if server == "slow":
            await asyncio.sleep(60)
        if server == "broken":
            if action == "prompts.list":
                return "garbage"
            raise errors.UpstreamError("the upstream server is down")
        if action == "prompts.list":
            return {"prompts": PROMPTS[server]}
        if action == "prompts.get":
            return {**GOT_PROMPT, "description": f"{params['name']} with {params.get('arguments')}"}
        if action == "resources.list":
            return {"resources": RESOURCES[server]}
        if action == "resources.templates":
            return {"resourceTemplates": TEMPLATES[server]}
        if action == "resources.read":
            uri = params["uri"]
            if uri.startswith(f"{server}://"):
                return {"contents": [{"uri": uri, "text": f"{server} has {uri}"}], "_meta": {"from": server}}
            raise errors.InvalidParams(f"no resource {uri}")
        if action == "read_graph":
            return {"content": [{"type": "image", "data": "AA==", "mimeType": "image/png"}], "isError": False,
                    "structuredContent": {"nodes": 0}, "_meta": {"vendor/z": 3}}
        raise errors.MethodNotFound(method_name)


def service_caps(server: str, socket: str, tools: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    caps: list[dict[str, Any]] = [{"method": f"mcp.{server}.{action_for(t['name'])}", "description": "t",
                                   "params_schema": {"type": "object"}, "mcp_tool": t} for t in tools]
    caps += [{"method": f"mcp.{server}.{action}", "mcp_kind": kind, "description": kind}
             for kind, action in INTERNAL_ACTIONS.items()]
    return {"service_name": server, "description": f"upstream {server}", "version": "1", "socket": socket,
            "upstream": {"server": server, "transport": "stdio"}, "capabilities": caps}


@dataclass
class Stack:
    router: Router
    service: McpService
    program: FakeUpstreamProgram
    owner: ClientIdentity
    limited: ClientIdentity

    async def ask(self, client: ClientIdentity, method: str, params: dict[str, Any] | None = None, *,
                  modern: bool = False) -> dict[str, Any]:
        return await self.service.handle(McpCall(client, modern), method, params or {})

    def calls_of(self, client: ClientIdentity) -> list[str]:
        return [m for m, name, _ in self.program.calls if name == client.name]


@pytest.fixture
async def stack(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    monkeypatch.setattr(upstream_features, "LIST_TIMEOUT", 0.5)
    state = Path(tempfile.mkdtemp(prefix="gwu", dir="/tmp"))
    (state / "config").mkdir()
    (state / "config" / "licence_tiers.yaml").write_text(OPEN_FREE_TIER, encoding="utf-8")
    caps_file = state / "fakeup_caps.json"
    caps_file.write_text(json.dumps({"service_name": "fakeup", "capabilities": [{"method": "mcp.fakeup.ping"}]}),
                         encoding="utf-8")
    monkeypatch.setattr(FakeUpstreamProgram, "caps_file", caps_file, raising=False)
    settings = Settings(state_dir=state, run_dir=state / "run", data_dir=state / "data", log_dir=state / "logs",
                        config_dir=state / "config", virtual_root=state / "files")
    policy = Policy.load(settings)
    program = FakeUpstreamProgram(settings)
    serving = asyncio.create_task(program.serve())
    try:
        await wait_until(program.ready.is_set, what="the fake upstream program to listen")
        router = Router(policy)
        socket = str(program.socket_path)
        router.add_service(parse_caps(service_caps("memory", socket, (TOOL,)), "memory.cap.json"), "memory.cap.json")
        for server in ("secret", "slow", "broken"):
            router.add_service(parse_caps(service_caps(server, socket), f"{server}.cap.json"), f"{server}.cap.json")
        service = McpService(cast(DoorHost, SimpleNamespace(router=router)))
        limited = ClientIdentity("c_limited", "limited", "FREE", ("mcp.memory.*", "mcp.slow.*", "mcp.broken.*"),
                                 False)
        yield Stack(router, service, program, policy.local_identity(), limited)
    finally:
        program.request_stop()
        await asyncio.wait_for(serving, 20)
        policy.close()
        shutil.rmtree(state, ignore_errors=True)


async def test_prompts_are_namespaced_and_a_slow_or_broken_server_is_skipped(stack: Stack) -> None:
    started = time.monotonic()
    listed = (await stack.ask(stack.owner, "prompts/list"))["prompts"]
    assert time.monotonic() - started < 3  # the slow server costs LIST_TIMEOUT, not the router's timeout
    names = [p["name"] for p in listed]
    assert names == sorted([f"memory_{action_for(ODD)}", "memory_summarize", "secret_leak"])
    summarize = next(p for p in listed if p["name"] == "memory_summarize")
    assert summarize == {**PROMPTS["memory"][0], "name": "memory_summarize",
                         "_meta": {"vendor/x": 1, "llmbasedos/method": "mcp.memory.prompts.get",
                                   "llmbasedos/name": "summarize"}}


async def test_prompts_get_maps_the_name_back_and_passes_the_result_through(stack: Stack) -> None:
    got = await stack.ask(stack.owner, "prompts/get", {"name": "memory_summarize", "arguments": {"topic": "x"}})
    assert got == {**GOT_PROMPT, "description": "summarize with {'topic': 'x'}"}
    odd = await stack.ask(stack.owner, "prompts/get", {"name": f"memory_{action_for(ODD)}"})
    assert odd["description"] == f"{ODD} with None"
    modern = await stack.ask(stack.owner, "prompts/get", {"name": "memory_summarize"}, modern=True)
    assert modern["_meta"]["vendor/trace"] == "t1" and "io.modelcontextprotocol/serverInfo" in modern["_meta"]
    for bad in ({"name": "memory_nope"}, {"name": "nobody_summarize"}, {"name": 3},
                {"name": "memory_summarize", "arguments": {"topic": 1}}):
        with pytest.raises(errors.InvalidParams):
            await stack.ask(stack.owner, "prompts/get", bad)


async def test_prompts_list_pages(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmbasedos.gateway.doors.mcp_http import tools
    monkeypatch.setattr(tools, "PAGE_SIZE", 2)
    first = await stack.ask(stack.owner, "prompts/list")
    second = await stack.ask(stack.owner, "prompts/list", {"cursor": first["nextCursor"]})
    assert len(first["prompts"]) == 2 and len(second["prompts"]) == 1 and "nextCursor" not in second
    with pytest.raises(errors.InvalidParams):
        await stack.ask(stack.owner, "prompts/list", {"cursor": "not-ours"})


async def test_resources_keep_their_uris_and_are_read_back_from_their_server(stack: Stack) -> None:
    listed = (await stack.ask(stack.owner, "resources/list"))["resources"]
    assert [r["uri"] for r in listed] == ["memory://graph", "secret://key"]  # no fs server: upstreams only
    assert listed[0] == {**RESOURCES["memory"][0], "_meta": {"llmbasedos/method": "mcp.memory.resources.read"}}
    read = await stack.ask(stack.owner, "resources/read", {"uri": "memory://graph"})
    assert read == {"contents": [{"uri": "memory://graph", "text": "memory has memory://graph"}],
                    "_meta": {"from": "memory"}}
    assert stack.calls_of(stack.owner).count("mcp.memory.resources.read") == 1  # straight to its server
    # A URI nobody listed (made from a template) is tried on the servers that read resources.
    entity = await stack.ask(stack.owner, "resources/read", {"uri": "memory://entity/bob"})
    assert entity["contents"][0]["text"] == "memory has memory://entity/bob"
    with pytest.raises(errors.RPCError) as caught:
        await stack.ask(stack.owner, "resources/read", {"uri": "nobody://x"})
    assert caught.value.code == -32602 and caught.value.data == {"uri": "nobody://x"}
    templates = (await stack.ask(stack.owner, "resources/templates/list"))["resourceTemplates"]
    assert [t["uriTemplate"] for t in templates] == [TEMPLATE["uriTemplate"], "memory://entity/{name}",
                                                     "secret://{k}"]


async def test_a_server_the_client_may_not_use_is_never_listed_asked_or_read(stack: Stack) -> None:
    # The owner lists first, so the gateway has recorded which server secret://key belongs to.
    assert "secret://key" in [r["uri"] for r in (await stack.ask(stack.owner, "resources/list"))["resources"]]
    assert "secret_leak" in [p["name"] for p in (await stack.ask(stack.owner, "prompts/list"))["prompts"]]
    client = stack.limited
    prompts = [p["name"] for p in (await stack.ask(client, "prompts/list"))["prompts"]]
    assert prompts and not any(n.startswith("secret") for n in prompts)
    assert [r["uri"] for r in (await stack.ask(client, "resources/list"))["resources"]] == ["memory://graph"]
    templates = (await stack.ask(client, "resources/templates/list"))["resourceTemplates"]
    assert "secret://{k}" not in [t["uriTemplate"] for t in templates]
    with pytest.raises(errors.InvalidParams):
        await stack.ask(client, "prompts/get", {"name": "secret_leak"})
    for uri in ("secret://key", "secret://other"):
        with pytest.raises(errors.RPCError) as caught:
            await stack.ask(client, "resources/read", {"uri": uri})
        assert caught.value.code == -32602 and "TOPSECRET" not in str(caught.value.data)
    assert not [m for m in stack.calls_of(client) if m.startswith("mcp.secret.")]
    # And straight through the router, the allowlist refuses it.
    with pytest.raises(errors.Forbidden):
        await stack.router.call(client, "mcp.secret.resources.read", {"uri": "secret://key"})


async def test_upstream_tools_are_listed_as_listed_and_answer_as_they_answered(stack: Stack) -> None:
    tools = (await stack.ask(stack.owner, "tools/list"))["tools"]
    names = [t["name"] for t in tools]
    assert "memory_read_graph" in names
    assert not any("prompts" in n or "resources" in n for n in names)  # requests of other kinds are not tools
    listed = next(t for t in tools if t["name"] == "memory_read_graph")
    assert listed == {**TOOL, "name": "memory_read_graph",
                      "_meta": {"vendor/y": 2, "llmbasedos/method": "mcp.memory.read_graph"}}
    result = await stack.ask(stack.owner, "tools/call", {"name": "memory_read_graph", "arguments": {}})
    assert result == {"content": [{"type": "image", "data": "AA==", "mimeType": "image/png"}], "isError": False,
                      "structuredContent": {"nodes": 0}, "_meta": {"vendor/z": 3}}
    modern = await stack.ask(stack.owner, "tools/call", {"name": "memory_read_graph"}, modern=True)
    assert modern["_meta"]["vendor/z"] == 3 and modern["structuredContent"] == {"nodes": 0}


async def test_a_colliding_upstream_tool_is_refused_for_everyone(stack: Stack) -> None:
    socket = str(stack.program.socket_path)
    clash = {"name": "graph", "inputSchema": {"type": "object"}}
    stack.router.add_service(parse_caps(service_caps("memory_read", socket, (clash,)), "x"), "memory_read.cap.json")
    assert stack.service.names.refused == {
        "mcp.memory_read.graph": "its tool name 'memory_read_graph' is already the name of mcp.memory.read_graph"}
    for client in (stack.owner, stack.limited):  # limited may not use memory_read, owner may use both
        tools = [t["name"] for t in (await stack.ask(client, "tools/list"))["tools"]]
        assert tools.count("memory_read_graph") == 1
    listed = next(t for t in (await stack.ask(stack.owner, "tools/list"))["tools"] if t["name"] == "memory_read_graph")
    assert listed["_meta"]["llmbasedos/method"] == "mcp.memory.read_graph"
