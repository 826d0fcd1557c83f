"""An upstream server's listing as the capability file of the service it is published as. Pure, no I/O.

Each tool the server's tool policy allows becomes one capability `mcp.<server>.<action>`: params_schema is
its inputSchema, result_schema its outputSchema, the known annotations and title are carried over, and the
tool exactly as listed rides along as `mcp_tool` so /mcp can show hosts what the upstream showed. A tool is
left out, with the reason recorded, when the policy denies it or when its name maps to the action of a tool
already taken. A schema that is not valid JSON Schema 2020-12 does not cost the tool its place: the gateway
never validates an upstream's arguments (the upstream does), so such a tool is published with an open object
schema and the upstream's own schema still in `mcp_tool`. Prompts and resources, when the server offers
them, add the capabilities that carry those MCP requests (see names.INTERNAL_ACTIONS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from llmbasedos.protocol.upstream_names import INTERNAL_ACTIONS, action_for
from llmbasedos.servers.upstream.link import Listing
from llmbasedos.servers.upstream.registry import ServerEntry

__all__ = ["Published", "build_caps"]

_ANNOTATIONS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
_OPEN = {"type": "object"}
_INTERNAL_PARAMS: dict[str, dict[str, Any]] = {
    "prompts/list": {"type": "object", "properties": {}, "additionalProperties": False},
    "prompts/get": {"type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"name": {"type": "string"},
                                   "arguments": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "resources/list": {"type": "object", "properties": {}, "additionalProperties": False},
    "resources/templates/list": {"type": "object", "properties": {}, "additionalProperties": False},
    "resources/read": {"type": "object", "required": ["uri"], "additionalProperties": False,
                       "properties": {"uri": {"type": "string"}}},
}


@dataclass
class Published:
    caps: dict[str, Any] | None  # None: nothing to publish
    tool_names: dict[str, str] = field(default_factory=dict)  # upstream tool name -> method
    refused_tools: dict[str, str] = field(default_factory=dict)  # upstream tool name -> why


def _schema(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError:
        return None
    return value


def _capability(server: str, action: str, tool: dict[str, Any]) -> dict[str, Any]:
    params = _schema(tool.get("inputSchema"))
    if params is None or params.get("type") != "object":
        params = _OPEN
    cap: dict[str, Any] = {"method": f"mcp.{server}.{action}",
                           "description": str(tool.get("description") or tool.get("title") or tool["name"]),
                           "params_schema": params, "mcp_tool": tool}
    output = _schema(tool.get("outputSchema"))
    if output is not None:
        cap["result_schema"] = output
    found = tool.get("annotations")
    raw_annotations: dict[str, Any] = found if isinstance(found, dict) else {}
    annotations = {k: raw_annotations[k] for k in _ANNOTATIONS if isinstance(raw_annotations.get(k), bool)}
    title = tool.get("title") or raw_annotations.get("title")
    if isinstance(title, str) and title:
        annotations["title"] = title
    if annotations:
        cap["annotations"] = annotations
    return cap


def _internal(server: str, kind: str, what: str) -> dict[str, Any]:
    return {"method": f"mcp.{server}.{INTERNAL_ACTIONS[kind]}", "mcp_kind": kind,
            "description": f"{kind} of the upstream MCP server {server!r} ({what})",
            "params_schema": _INTERNAL_PARAMS[kind], "annotations": {"readOnlyHint": True}}


def build_caps(entry: ServerEntry, listing: Listing, socket: str) -> Published:
    server = entry.name
    out = Published(None)
    capabilities: list[dict[str, Any]] = []
    taken: dict[str, str] = {}  # action -> the tool that has it
    tools = sorted((t for t in listing.tools if isinstance(t.get("name"), str) and t["name"]),
                   key=lambda t: str(t["name"]))
    for tool in tools:
        name = str(tool["name"])
        if not entry.allows_tool(name):
            out.refused_tools[name] = "denied by the tools policy in the registry"
            continue
        action = action_for(name)
        if action in taken:
            out.refused_tools[name] = f"its name maps to {action!r}, already the name of {taken[action]!r}"
            continue
        taken[action] = name
        out.tool_names[name] = f"mcp.{server}.{action}"
        capabilities.append(_capability(server, action, tool))
    if listing.prompts:
        capabilities += [_internal(server, "prompts/list", "all pages"), _internal(server, "prompts/get", "one")]
    if listing.resources:
        capabilities += [_internal(server, "resources/list", "all pages"),
                         _internal(server, "resources/templates/list", "all pages"),
                         _internal(server, "resources/read", "one")]
    if not capabilities:
        return out
    info = listing.server_info or {}
    described = info.get("title") or info.get("name") or server
    out.caps = {"service_name": server, "description": f"Upstream MCP server {server} ({described})",
                "version": str(info.get("version") or "0"), "socket": socket,
                "upstream": {"server": server, "transport": entry.transport}, "capabilities": capabilities}
    return out
