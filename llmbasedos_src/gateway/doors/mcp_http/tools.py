"""Capabilities as standard MCP tools: descriptors, schemas, annotations, pages, and call results. Pure, no I/O.

Names come from tool_names.py (one assignment over all services). A native capability's descriptor is built
from its caps entry. MCP requires `outputSchema` to be an object schema: a capability whose result schema is an
object keeps it and its result is the tool's `structuredContent`; any other result schema is wrapped as
`{"type": "object", "properties": {"result": <schema>}, "required": ["result"]}` and the result travels as
`{"result": <value>}`. Without a result schema there is no `outputSchema` and only text content.

An upstream MCP server's tool (its service carries `upstream`) is shown as the upstream listed it (`mcp_tool`:
title, annotations, schemas, icons, `_meta`, ...), with only `name` replaced by ours and `llmbasedos/method`
added to its `_meta`; its result is the upstream's CallToolResult, passed through as it came.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import orjson

from llmbasedos.gateway.doors.mcp_http.tool_names import NAME_RE, ToolNames, assign_tool_names, tool_name
from llmbasedos.protocol import errors

__all__ = ["Tool", "ToolCatalog", "tool_name", "call_result", "error_result", "passthrough_result", "page",
           "PAGE_SIZE", "decode_cursor", "encode_cursor", "METHOD_META"]

PAGE_SIZE = 100
METHOD_META = "llmbasedos/method"
_ANNOTATION_KEYS = ("title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
_NOT_A_RESULT = "The upstream MCP server answered something that is not a tool result"
T = TypeVar("T")


def _input_schema(params_schema: Any) -> dict[str, Any]:
    if isinstance(params_schema, dict) and params_schema.get("type") == "object":
        return params_schema
    # Params are always named on this door: a schema that is not an object one gets an empty object shape.
    schema: dict[str, Any] = {"type": "object"}
    if isinstance(params_schema, dict) and isinstance(params_schema.get("properties"), dict):
        schema["properties"] = params_schema["properties"]
    return schema


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    method: str
    wrapped: bool  # the result travels as {"result": value}
    has_output: bool
    descriptor: dict[str, Any]
    upstream: bool = False  # an upstream MCP server's tool: its result passes through as it came


def _tool(name: str, cap: dict[str, Any]) -> Tool:
    result_schema = cap.get("result_schema")
    descriptor: dict[str, Any] = {"name": name, "description": cap.get("description") or cap["method"],
                                  "inputSchema": _input_schema(cap.get("params_schema"))}
    wrapped = False
    has_output = isinstance(result_schema, dict)
    if isinstance(result_schema, dict):
        if result_schema.get("type") == "object":
            descriptor["outputSchema"] = result_schema
        else:
            wrapped = True
            descriptor["outputSchema"] = {"type": "object", "properties": {"result": result_schema},
                                          "required": ["result"]}
    annotations = cap.get("annotations") or {}
    ann = {k: annotations[k] for k in _ANNOTATION_KEYS if k in annotations}
    if ann:
        descriptor["annotations"] = ann
        if "title" in ann:
            descriptor["title"] = ann["title"]
    descriptor["_meta"] = {METHOD_META: cap["method"]}
    return Tool(name, cap["method"], wrapped, has_output, descriptor)


def _upstream_tool(name: str, cap: dict[str, Any]) -> Tool:
    listed = cap.get("mcp_tool")
    if not isinstance(listed, dict):  # an upstream service always sends it; without it, our own shape
        return replace(_tool(name, cap), upstream=True)
    descriptor = dict(listed)
    descriptor["name"] = name
    schema = descriptor.get("inputSchema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        # A host's SDK drops the whole tools/list over one tool without an object inputSchema.
        descriptor["inputSchema"] = _input_schema(cap.get("params_schema"))
    meta = listed.get("_meta")
    descriptor["_meta"] = {**(meta if isinstance(meta, dict) else {}), METHOD_META: cap["method"]}
    return Tool(name, cap["method"], False, "outputSchema" in descriptor, descriptor, True)


class ToolCatalog:
    """The tools one client may see: its `Router.capabilities_for(client)`, named by the global assignment
    (`names`; computed over these services alone when not given, as for a single view in the tests)."""

    __slots__ = ("by_name", "tools")

    def __init__(self, services: list[dict[str, Any]], names: ToolNames | None = None) -> None:
        if names is None:
            names = assign_tool_names(services)
        tools: list[Tool] = []
        for service in services:
            upstream = isinstance(service.get("upstream"), dict)
            for cap in service.get("capabilities", []):
                name = names.names.get(cap["method"])
                if name is None or (cap.get("mcp_kind") or "tool") != "tool":
                    continue  # refused, not a tool, or routed since the names were assigned
                assert NAME_RE.match(name), name
                tools.append(_upstream_tool(name, cap) if upstream else _tool(name, cap))
        tools.sort(key=lambda t: t.name)
        self.tools = tools
        self.by_name = {t.name: t for t in tools}

    def page(self, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of tool descriptors and the cursor of the next page (None at the end)."""
        return page([t.descriptor for t in self.tools], cursor)


def page(items: list[T], cursor: Any) -> tuple[list[T], str | None]:
    """One page of `items` from `cursor` (None: the first) and the cursor of the next page (None at the end)."""
    start = decode_cursor(cursor, len(items))
    end = start + PAGE_SIZE
    return items[start:end], (encode_cursor(end) if end < len(items) else None)


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def decode_cursor(cursor: Any, limit: int) -> int:
    """The offset a cursor names; InvalidParams for a cursor this server never issued."""
    if cursor is None:
        return 0
    if not isinstance(cursor, str):
        raise errors.InvalidParams("cursor must be a string")
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith("o:"):
            raise ValueError
        offset = int(text[2:])
    except (ValueError, binascii.Error, UnicodeError):
        raise errors.InvalidParams("Invalid cursor") from None
    if not 0 <= offset <= limit:
        raise errors.InvalidParams("Invalid cursor")
    return offset


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def call_result(tool: Tool, value: Any) -> dict[str, Any]:
    """A successful call's value as a CallToolResult."""
    out: dict[str, Any] = {"content": [{"type": "text", "text": _text(value)}], "isError": False}
    if tool.has_output:
        out["structuredContent"] = {"result": value} if tool.wrapped else value
    return out


def passthrough_result(value: Any) -> dict[str, Any]:
    """An upstream tool's answer as the tools/call result: its CallToolResult exactly as it came, or an error
    result when it is not one (a dict with a `content` list)."""
    if isinstance(value, dict) and isinstance(value.get("content"), list):
        return value
    return {"content": [{"type": "text", "text": _NOT_A_RESULT}], "isError": True}


def error_result(exc: errors.RPCError) -> dict[str, Any]:
    """A failed call as a CallToolResult with isError, so the model can read what went wrong."""
    text = exc.message
    if isinstance(exc.data, dict):
        hint = exc.data.get("retry_after")
        if isinstance(hint, (int, float)):
            text += f" (retry after {hint:g} s)"
    return {"content": [{"type": "text", "text": text}], "isError": True}
