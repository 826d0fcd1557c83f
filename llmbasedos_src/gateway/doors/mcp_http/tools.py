"""Capabilities as standard MCP tools: names, schemas, annotations, pages, and call results. Pure, no I/O.

A capability `mcp.<service>.<action>` becomes the tool `<service>_<action>`; dots inside the action become
`_`, anything outside `[a-zA-Z0-9_-]` becomes `_`, and a name longer than 64 characters is cut and given a
short hash of the method so it stays unique. When two methods would still share a name, the one that sorts
later by method gets a `_2`, `_3`, ... suffix: the same capability set always yields the same names.

MCP requires `outputSchema` to be an object schema. A capability whose result schema is an object keeps it and
its result is the tool's `structuredContent`; any other result schema is wrapped as
`{"type": "object", "properties": {"result": <schema>}, "required": ["result"]}` and the result travels as
`{"result": <value>}`. Without a result schema there is no `outputSchema` and only text content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from llmbasedos.protocol import errors

__all__ = ["Tool", "ToolCatalog", "tool_name", "call_result", "error_result", "PAGE_SIZE", "decode_cursor",
           "encode_cursor"]

PAGE_SIZE = 100
_NAME_OK = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_ANNOTATION_KEYS = ("title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")


def tool_name(method: str) -> str:
    """The tool name for a method, before collisions are resolved."""
    parts = method.split(".")
    if len(parts) >= 3 and parts[0] == "mcp":
        base = parts[1] + "_" + "_".join(parts[2:])
    else:
        base = "_".join(p for p in parts if p) or "tool"
    base = _NAME_BAD_CHARS.sub("_", base)
    if len(base) > 64:
        digest = hashlib.sha256(method.encode()).hexdigest()[:8]
        base = base[:55] + "_" + digest
    return base


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
    descriptor["_meta"] = {"llmbasedos/method": cap["method"]}
    return Tool(name, cap["method"], wrapped, has_output, descriptor)


class ToolCatalog:
    """The tools one client may see, built from `Router.capabilities_for(client)`."""

    __slots__ = ("by_name", "tools")

    def __init__(self, services: list[dict[str, Any]]) -> None:
        caps = sorted((c for s in services for c in s.get("capabilities", [])), key=lambda c: c["method"])
        taken: set[str] = set()
        tools: list[Tool] = []
        for cap in caps:
            base = tool_name(cap["method"])
            name, n = base, 1
            while name in taken:
                n += 1
                suffix = f"_{n}"
                name = base[:64 - len(suffix)] + suffix
            assert _NAME_OK.match(name), name
            taken.add(name)
            tools.append(_tool(name, cap))
        tools.sort(key=lambda t: t.name)
        self.tools = tools
        self.by_name = {t.name: t for t in tools}

    def page(self, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of tool descriptors and the cursor of the next page (None at the end)."""
        start = decode_cursor(cursor, len(self.tools))
        end = start + PAGE_SIZE
        nxt = encode_cursor(end) if end < len(self.tools) else None
        return [t.descriptor for t in self.tools[start:end]], nxt


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


def error_result(exc: errors.RPCError) -> dict[str, Any]:
    """A failed call as a CallToolResult with isError, so the model can read what went wrong."""
    text = exc.message
    if isinstance(exc.data, dict):
        hint = exc.data.get("retry_after")
        if isinstance(hint, (int, float)):
            text += f" (retry after {hint:g} s)"
    return {"content": [{"type": "text", "text": text}], "isError": True}
