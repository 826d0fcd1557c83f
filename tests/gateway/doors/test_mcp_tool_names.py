"""One tool name per method over all services, upstream tools as their servers listed them (pure code, no I/O)."""

from __future__ import annotations

import itertools
import logging
import re
from typing import Any

import pytest

from llmbasedos.gateway.doors.mcp_http.tool_names import ToolNames, assign_tool_names, log_new_refusals
from llmbasedos.gateway.doors.mcp_http.tools import ToolCatalog, call_result, passthrough_result
from llmbasedos.protocol.upstream_names import method_for

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def native(service: str, *actions: str) -> dict[str, Any]:
    return {"service_name": service, "capabilities": [
        {"method": f"mcp.{service}.{a}", "description": a, "params_schema": {"type": "object"},
         "result_schema": None, "annotations": {}} for a in actions]}


def listed_tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": f"the upstream's {name}",
            "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}, **extra}


def upstream(server: str, *tools: dict[str, Any] | str, kinds: tuple[str, ...] = ()) -> dict[str, Any]:
    caps: list[dict[str, Any]] = []
    for tool in tools:
        listed = listed_tool(tool) if isinstance(tool, str) else tool
        caps.append({"method": method_for(server, listed["name"]), "description": listed.get("description", ""),
                     "params_schema": {"type": "object"}, "result_schema": None, "annotations": {},
                     "mcp_tool": listed})
    actions = {"prompts/list": "prompts.list", "prompts/get": "prompts.get", "resources/list": "resources.list",
               "resources/templates/list": "resources.templates", "resources/read": "resources.read"}
    for kind in kinds:
        caps.append({"method": f"mcp.{server}.{actions[kind]}", "description": kind,
                     "params_schema": {"type": "object"}, "result_schema": None, "annotations": {},
                     "mcp_kind": kind})
    return {"service_name": server, "upstream": {"server": server, "transport": "stdio"}, "capabilities": caps}


def test_an_upstream_tool_colliding_with_a_native_one_is_refused_not_suffixed() -> None:
    services = [native("agent", "run_status", "list"), upstream("agent_run", "status", "start")]
    for order in (services, services[::-1]):
        names = assign_tool_names(order)
        assert names.names == {"mcp.agent.run_status": "agent_run_status", "mcp.agent.list": "agent_list",
                               "mcp.agent_run.start": "agent_run_start"}
        assert names.refused == {
            "mcp.agent_run.status": "its tool name 'agent_run_status' is the name of the native tool "
                                    "mcp.agent.run_status"}
        assert "agent_run_status_2" not in names.names.values()


def test_native_suffixes_are_unchanged_by_upstreams() -> None:
    natives = [native("a", "b.c", "b_c")]
    alone = assign_tool_names(natives)
    with_upstream = assign_tool_names([*natives, upstream("a", "b_c_2"), upstream("a_b", "c")])
    assert alone.names == {"mcp.a.b.c": "a_b_c", "mcp.a.b_c": "a_b_c_2"}
    for method, name in alone.names.items():
        assert with_upstream.names[method] == name
    assert with_upstream.refused == {
        "mcp.a.b_c_2": "its tool name 'a_b_c_2' is the name of the native tool mcp.a.b_c",
        "mcp.a_b.c": "its tool name 'a_b_c' is the name of the native tool mcp.a.b.c",
    }
    assert "mcp.a.b_c_2" not in with_upstream.names and "mcp.a_b.c" not in with_upstream.names


def test_between_upstreams_the_server_that_sorts_first_keeps_the_name() -> None:
    services = [native("fs", "read"), upstream("memory_graph", "read"), upstream("memory", "graph_read"),
                upstream("time", "now")]
    expected_names = {"mcp.fs.read": "fs_read", "mcp.memory.graph_read": "memory_graph_read",
                      "mcp.time.now": "time_now"}
    expected_refused = {"mcp.memory_graph.read": "its tool name 'memory_graph_read' is already the name of "
                                                 "mcp.memory.graph_read"}
    for order in itertools.permutations(services):
        names = assign_tool_names(list(order))
        assert names.names == expected_names
        assert names.refused == expected_refused
    assert names.refused_of("memory_graph") == expected_refused
    assert names.refused_of("memory") == {}


def test_non_tool_kinds_take_no_name_and_are_never_tools() -> None:
    services = [upstream("memory", "read_graph",
                         kinds=("prompts/list", "prompts/get", "resources/list", "resources/templates/list",
                                "resources/read"))]
    names = assign_tool_names(services)
    assert names.names == {"mcp.memory.read_graph": "memory_read_graph"}
    catalog = ToolCatalog(services, names)
    assert [t.name for t in catalog.tools] == ["memory_read_graph"]
    # Even a native service's capability marked as a request of another kind is not a tool.
    odd = native("x", "y")
    odd["capabilities"][0]["mcp_kind"] = "prompts/list"
    assert ToolCatalog([odd]).tools == []


def test_the_catalog_uses_the_global_names_whatever_the_client_sees() -> None:
    everything = [native("a", "b.c", "b_c"), upstream("srv", "t"), upstream("srv_t", "x")]
    names = assign_tool_names(everything)
    # A client that sees only mcp.a.b_c still gets the name it has for everybody, not the unsuffixed one.
    only = [native("a", "b_c")]
    assert [t.name for t in ToolCatalog(only, names).tools] == ["a_b_c_2"]
    assert [t.name for t in ToolCatalog(only).tools] == ["a_b_c"]  # a per-view assignment would differ
    refused_only = [upstream("srv_t", "x")]  # mcp.srv_t.x -> srv_t_x, not refused: srv's tool is `srv_t`
    assert [t.name for t in ToolCatalog(refused_only, names).tools] == ["srv_t_x"]


def test_a_refused_tool_is_left_out_of_the_catalog() -> None:
    everything = [upstream("a", "b_c"), upstream("a_b", "c")]
    names = assign_tool_names(everything)
    assert names.refused == {"mcp.a_b.c": "its tool name 'a_b_c' is already the name of mcp.a.b_c"}
    sees_only_the_loser = [upstream("a_b", "c")]
    assert ToolCatalog(sees_only_the_loser, names).tools == []  # never shown under a name that is not its own


@pytest.mark.parametrize("tool", ["get-current-time", "a" * 128, "weird.name/with:chars", "9lives", "ü", "x" * 48])
def test_names_always_match_the_pattern(tool: str) -> None:
    server = "s" + "e" * 30  # the longest service name a cap file may have
    names = assign_tool_names([upstream(server, tool), upstream("s", tool), native(server, "x" * 63)])
    assert names.names and all(NAME.match(n) for n in names.names.values())
    assert len(set(names.names.values())) == len(names.names)


def test_an_upstream_descriptor_is_the_listed_tool_with_our_name() -> None:
    listed = listed_tool("get-current-time", title="Current time",
                         annotations={"readOnlyHint": True, "x-vendor": {"keep": 1}},
                         outputSchema={"type": "object", "properties": {"t": {"type": "string"}}},
                         icons=[{"src": "data:image/png;base64,AA==", "mimeType": "image/png"}],
                         execution={"taskSupport": "optional"},
                         _meta={"vendor/key": "v", "llmbasedos/method": "spoofed"})
    catalog = ToolCatalog([upstream("time", listed)])
    (tool,) = catalog.tools
    assert tool.upstream and tool.name == "time_get-current-time"
    expected = {**listed, "name": "time_get-current-time",
                "_meta": {"vendor/key": "v", "llmbasedos/method": "mcp.time.get-current-time"}}
    assert tool.descriptor == expected
    assert listed["name"] == "get-current-time"  # the cap's own copy is untouched


def test_an_upstream_descriptor_without_an_object_input_schema_gets_one() -> None:
    bad = {"name": "t", "inputSchema": {"type": "array"}}
    (tool,) = ToolCatalog([upstream("s", bad)]).tools
    assert tool.descriptor["inputSchema"] == {"type": "object"}
    (missing,) = ToolCatalog([upstream("s", {"name": "t"})]).tools
    assert missing.descriptor["inputSchema"] == {"type": "object"}


def test_upstream_results_pass_through_unchanged() -> None:
    result = {"content": [{"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"},
                          {"type": "resource", "resource": {"uri": "mem://x", "text": "t", "mimeType": "text/plain"}},
                          {"type": "resource_link", "uri": "mem://y", "name": "y"},
                          {"type": "audio", "data": "AA==", "mimeType": "audio/wav"},
                          {"type": "future-kind", "whatever": [1, 2]}],
              "structuredContent": {"n": 1}, "isError": True, "_meta": {"vendor/trace": "abc"}}
    assert passthrough_result(result) is result
    not_results: list[Any] = [None, "text", 42, [], {"contents": []}, {"content": "x"}]
    for not_a_result in not_results:
        answer = passthrough_result(not_a_result)
        assert answer["isError"] is True and "not a tool result" in answer["content"][0]["text"]
    # Native results are still ours to shape.
    (tool,) = ToolCatalog([native("n", "x")]).tools
    assert not tool.upstream and call_result(tool, "v")["content"] == [{"type": "text", "text": "v"}]


def test_refusals_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    first = assign_tool_names([native("a", "b_c"), upstream("a_b", "c")])
    with caplog.at_level(logging.WARNING, logger="llmbasedos.gateway.mcp"):
        log_new_refusals(None, first)
        log_new_refusals(first, assign_tool_names([native("a", "b_c"), upstream("a_b", "c")]))
        log_new_refusals(first, ToolNames())
    said = [r.getMessage() for r in caplog.records]
    assert said == ["the upstream tool mcp.a_b.c is not served on /mcp: its tool name 'a_b_c' is the name of the "
                    "native tool mcp.a.b_c"]
