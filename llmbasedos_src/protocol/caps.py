"""Capability files (`caps.json`, `<service>.cap.json`): shape checks shared by servers and the gateway."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

__all__ = ["CapsError", "Capability", "ServiceCaps", "parse_caps", "METHOD_RE", "SERVICE_RE", "MCP_KINDS"]

SERVICE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# `-` in an action: upstream MCP tools are often named like `get-current-time`.
METHOD_RE = re.compile(r"^mcp\.([a-z][a-z0-9_-]{0,31})\.[A-Za-z][A-Za-z0-9_.-]{0,63}$")
# What an upstream MCP server's capability stands for on /mcp: one of its tools (the default), or one of the
# MCP requests the gateway forwards to it for its prompts and resources (never listed as tools).
MCP_KINDS = frozenset({"tool", "prompts/list", "prompts/get", "resources/list", "resources/templates/list",
                       "resources/read"})
_ANNOTATION_KEYS = {"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint", "title", "streaming"}


class CapsError(ValueError):
    """A capability file is malformed; the message names the file and the fault."""


@dataclass(frozen=True)
class Capability:
    method: str
    description: str
    params_schema: dict[str, Any]
    result_schema: dict[str, Any] | None
    positional: tuple[str, ...]
    annotations: dict[str, Any] = field(default_factory=dict)
    # Upstream MCP servers only: the tool as the upstream listed it (passed to hosts as it is), and the kind.
    mcp_tool: dict[str, Any] | None = None
    mcp_kind: str = "tool"


@dataclass(frozen=True)
class ServiceCaps:
    service_name: str
    description: str
    version: str
    socket: str | None
    capabilities: tuple[Capability, ...]
    # Upstream MCP servers only: {"server": name, "transport": "stdio" | "http"}. Its tools' results are
    # MCP CallToolResults, passed to hosts unchanged.
    upstream: dict[str, Any] | None = None

    def methods(self) -> list[str]:
        return [c.method for c in self.capabilities]


def _fail(source: str, where: str, fault: str) -> CapsError:
    return CapsError(f"{source}: {where}: {fault}")


def _check_schema(source: str, where: str, schema: Any) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise _fail(source, where, "must be a JSON Schema object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise _fail(source, where, f"not a valid JSON Schema 2020-12 at {path}: {exc.message}") from None
    return schema


def parse_caps(data: Any, source: str = "caps.json", *, require_socket: bool = False) -> ServiceCaps:
    """Check a decoded capability file and return it typed. Raises CapsError."""
    if not isinstance(data, dict):
        raise _fail(source, "(root)", "must be a JSON object")
    name = data.get("service_name")
    if not isinstance(name, str) or not SERVICE_RE.match(name):
        raise _fail(source, "service_name", "must be a lower-case name like 'fs'")
    socket = data.get("socket")
    if require_socket and (not isinstance(socket, str) or not socket):
        raise _fail(source, "socket", "must be the path of the service's UNIX socket")
    if socket is not None and not isinstance(socket, str):
        raise _fail(source, "socket", "must be a string")
    caps_raw = data.get("capabilities")
    if not isinstance(caps_raw, list) or not caps_raw:
        raise _fail(source, "capabilities", "must be a non-empty array")
    caps: list[Capability] = []
    seen: set[str] = set()
    for i, raw in enumerate(caps_raw):
        where = f"capabilities[{i}]"
        if not isinstance(raw, dict):
            raise _fail(source, where, "must be an object")
        method = raw.get("method")
        if not isinstance(method, str):
            raise _fail(source, f"{where}.method", "must be a string")
        m = METHOD_RE.match(method)
        if not m:
            raise _fail(source, f"{where}.method", f"{method!r} is not of the form mcp.<service>.<action>")
        if m.group(1) != name:
            raise _fail(source, f"{where}.method", f"{method!r} does not belong to service {name!r}")
        if method in seen:
            raise _fail(source, f"{where}.method", f"{method!r} is declared twice")
        seen.add(method)
        params_schema = _check_schema(source, f"{method}.params_schema",
                                      raw.get("params_schema", {"type": "object"}))
        result_schema = raw.get("result_schema")
        if result_schema is not None:
            result_schema = _check_schema(source, f"{method}.result_schema", result_schema)
        positional = raw.get("positional", [])
        if not isinstance(positional, list) or not all(isinstance(p, str) for p in positional):
            raise _fail(source, f"{method}.positional", "must be an array of property names")
        props = params_schema.get("properties", {})
        for p in positional:
            if p not in props:
                raise _fail(source, f"{method}.positional", f"{p!r} is not a property of params_schema")
        annotations = raw.get("annotations", {})
        if not isinstance(annotations, dict) or not set(annotations) <= _ANNOTATION_KEYS:
            raise _fail(source, f"{method}.annotations", f"keys must be among {sorted(_ANNOTATION_KEYS)}")
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise _fail(source, f"{method}.description", "must be a string")
        mcp_tool = raw.get("mcp_tool")
        if mcp_tool is not None and (not isinstance(mcp_tool, dict) or not isinstance(mcp_tool.get("name"), str)):
            raise _fail(source, f"{method}.mcp_tool", "must be an MCP tool object with a name")
        mcp_kind = raw.get("mcp_kind", "tool")
        if mcp_kind not in MCP_KINDS:
            raise _fail(source, f"{method}.mcp_kind", f"must be one of {sorted(MCP_KINDS)}")
        caps.append(Capability(method, description, params_schema, result_schema, tuple(positional),
                               dict(annotations), mcp_tool, mcp_kind))
    upstream = data.get("upstream")
    if upstream is not None and (not isinstance(upstream, dict) or not isinstance(upstream.get("server"), str)):
        raise _fail(source, "upstream", "must be an object naming the upstream server")
    return ServiceCaps(name, str(data.get("description", "")), str(data.get("version", "0")), socket,
                       tuple(caps), upstream)
