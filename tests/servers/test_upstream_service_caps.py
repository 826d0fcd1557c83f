"""An upstream's listing as the capability file of its service: what is published, what is left out and why."""

from __future__ import annotations

from pathlib import Path

from llmbasedos.protocol.caps import parse_caps
from llmbasedos.servers.upstream.link import Listing
from llmbasedos.servers.upstream.registry import parse_registry
from llmbasedos.servers.upstream.service_caps import build_caps


def _entry(tools: dict[str, list[str]] | None = None):  # type: ignore[no-untyped-def]
    raw: dict[str, object] = {"command": "node"}
    if tools is not None:
        raw["tools"] = tools
    return parse_registry({"servers": {"srv": raw}}, config_dir=Path("/nonexistent")).servers["srv"]


ECHO = {"name": "echo", "title": "Echo", "description": "Say it back",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        "outputSchema": {"type": "object", "properties": {"result": {"type": "string"}}},
        "annotations": {"readOnlyHint": True, "destructiveHint": False, "somethingNew": 1},
        "icons": [{"src": "data:image/png;base64,AAAA"}], "_meta": {"vendor/x": 1}}


def test_tools_become_capabilities_the_gateway_accepts() -> None:
    listing = Listing(tools=[ECHO, {"name": "get-time", "inputSchema": {"type": "object"}}], prompts=True,
                      server_info={"name": "srv-impl", "version": "2.1"})
    published = build_caps(_entry(), listing, "/run/x/upstream.sock")
    assert published.caps is not None
    caps = parse_caps(published.caps, "srv.cap.json", require_socket=True)
    assert caps.upstream == {"server": "srv", "transport": "stdio"}
    assert caps.version == "2.1"
    by_method = {c.method: c for c in caps.capabilities}
    echo = by_method["mcp.srv.echo"]
    assert echo.mcp_tool == ECHO  # exactly as listed, unknown keys included
    assert echo.params_schema == ECHO["inputSchema"] and echo.result_schema == ECHO["outputSchema"]
    assert echo.annotations == {"readOnlyHint": True, "destructiveHint": False, "title": "Echo"}
    assert "mcp.srv.get-time" in by_method
    assert {c.mcp_kind for c in caps.capabilities if c.mcp_tool is None} == {"prompts/list", "prompts/get"}
    assert published.tool_names == {"echo": "mcp.srv.echo", "get-time": "mcp.srv.get-time"}


def test_policy_and_duplicate_actions_leave_tools_out_with_a_reason() -> None:
    listing = Listing(tools=[{"name": "delete_all"}, {"name": "a.b"}, {"name": "a/b"}, {"name": "keep"}])
    published = build_caps(_entry({"deny": ["delete_*"]}), listing, "/run/x/upstream.sock")
    assert "delete_all" in published.refused_tools and "policy" in published.refused_tools["delete_all"]
    assert set(published.tool_names) == {"a.b", "a/b", "keep"}  # distinct names keep distinct actions
    assert len(set(published.tool_names.values())) == 3


def test_a_bad_schema_costs_the_tool_only_its_schema() -> None:
    bad = {"name": "odd", "inputSchema": {"type": "object", "properties": {"x": {"type": 12}}},
           "outputSchema": {"type": "nonsense"}}
    published = build_caps(_entry(), Listing(tools=[bad]), "/run/x/upstream.sock")
    assert published.caps is not None
    caps = parse_caps(published.caps, "srv.cap.json", require_socket=True)
    (cap,) = caps.capabilities
    assert cap.params_schema == {"type": "object"} and cap.result_schema is None
    assert cap.mcp_tool == bad


def test_nothing_to_offer_publishes_nothing() -> None:
    published = build_caps(_entry({"allow": ["x*"]}), Listing(tools=[{"name": "y"}]), "/run/x/upstream.sock")
    assert published.caps is None and published.refused_tools == {"y": "denied by the tools policy in the registry"}
