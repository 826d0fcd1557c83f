"""Capabilities as MCP tools: names, schemas, pages and results (pure code, no I/O)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llmbasedos.gateway.doors.mcp_http.resources import path_of, uri_of
from llmbasedos.gateway.doors.mcp_http.tools import (
    PAGE_SIZE,
    ToolCatalog,
    call_result,
    decode_cursor,
    error_result,
    tool_name,
)
from llmbasedos.protocol import errors

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def cap(method: str, result_schema: Any = None, **extra: Any) -> dict[str, Any]:
    return {"method": method, "description": f"does {method}", "params_schema": {"type": "object"},
            "result_schema": result_schema, "annotations": {}, **extra}


def services(*caps: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"service_name": "x", "capabilities": list(caps)}]


def test_names_follow_service_and_action() -> None:
    assert tool_name("mcp.fs.list") == "fs_list"
    assert tool_name("mcp.llm.chat") == "llm_chat"
    assert tool_name("mcp.agent.run.status") == "agent_run_status"
    assert tool_name("mcp.weird.a:b c") == "weird_a_b_c"
    long = tool_name("mcp.service." + "a" * 100)
    assert NAME.match(long) and len(long) == 64
    assert long != tool_name("mcp.service." + "a" * 99 + "b")  # cut names stay apart


def test_collisions_are_resolved_the_same_way_whatever_the_order() -> None:
    a, b = cap("mcp.a.b.c"), cap("mcp.a.b_c")
    one = {t.name: t.method for t in ToolCatalog(services(a, b)).tools}
    two = {t.name: t.method for t in ToolCatalog(services(b, a)).tools}
    assert one == two == {"a_b_c": "mcp.a.b.c", "a_b_c_2": "mcp.a.b_c"}


def test_schemas_and_annotations() -> None:
    catalog = ToolCatalog(services(
        cap("mcp.s.obj", {"type": "object", "properties": {"n": {"type": "integer"}}},
            annotations={"readOnlyHint": True, "title": "Object", "streaming": True}),
        cap("mcp.s.arr", {"type": "array"}),
        cap("mcp.s.none", None, params_schema={"type": "array"}),
    ))
    obj, arr, none = (catalog.by_name[n] for n in ("s_obj", "s_arr", "s_none"))
    assert obj.descriptor["outputSchema"]["properties"]["n"] == {"type": "integer"}
    assert obj.descriptor["annotations"] == {"readOnlyHint": True, "title": "Object"}  # MCP keys only
    assert arr.descriptor["outputSchema"] == {"type": "object", "properties": {"result": {"type": "array"}},
                                              "required": ["result"]}
    assert "outputSchema" not in none.descriptor
    assert none.descriptor["inputSchema"] == {"type": "object"}
    assert call_result(obj, {"n": 1})["structuredContent"] == {"n": 1}
    assert call_result(arr, [1, 2])["structuredContent"] == {"result": [1, 2]}
    assert call_result(none, "text") == {"content": [{"type": "text", "text": "text"}], "isError": False}


def test_pages_cover_every_tool_once() -> None:
    catalog = ToolCatalog(services(*(cap(f"mcp.s.m{i:03d}") for i in range(PAGE_SIZE * 2 + 5))))
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = catalog.page(cursor)
        seen.extend(t["name"] for t in page)
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == PAGE_SIZE * 2 + 5
    for bad in ("not-a-cursor", 3, "bzo5OTk5"):
        with pytest.raises(errors.InvalidParams):
            decode_cursor(bad, 10)


def test_error_results_carry_the_message() -> None:
    result = error_result(errors.RateLimited("Too many requests", {"retry_after": 2.5}))
    assert result["isError"] is True
    assert result["content"][0]["text"] == "Too many requests (retry after 2.5 s)"


def test_resource_uris_round_trip() -> None:
    for vpath in ("/a.txt", "/docs/with space/é.md", "/x#y?.txt"):
        assert path_of(uri_of(vpath)) == vpath
    with pytest.raises(errors.RPCError) as caught:
        path_of("file:///etc/passwd")
    assert caught.value.code == -32602 and caught.value.data == {"uri": "file:///etc/passwd"}
    with pytest.raises(errors.InvalidParams):
        path_of("llmbasedos://fs/")
