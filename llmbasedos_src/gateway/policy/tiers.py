"""Licence tiers: what a tier may call, how fast, how much, and which LLMs.

Built-in FREE/PRO/ELITE defaults are merged with `licence_tiers.yaml` (`<config_dir>/licence_tiers.yaml`, or
the path in `LLMBDO_TIERS_FILE`). The file maps tier names to fields; a field left out keeps the built-in
value of that tier, and a tier the defaults do not know starts from FREE. `null` means unlimited for the
numeric limits. The file is checked with JSON Schema at start; an error names the file, the line, the tier and
the field.

Capability patterns: an exact method name (`mcp.fs.read`), a prefix (`mcp.fs.*`), or `*` for everything.
A tier allows a method when one of `allowed_capabilities` matches it and none of `denied_capabilities` does.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

__all__ = [
    "DEFAULT_TIERS",
    "TIER_FIELDS",
    "Tier",
    "TierTable",
    "TiersError",
    "load_tiers",
    "tiers_path",
    "match_any",
    "valid_pattern",
]

FREE = "FREE"

DEFAULT_TIERS: dict[str, dict[str, Any]] = {
    # FREE is a whole personal appliance: the owner's files, sync, mail reading and workflows, with the local
    # model only, no mail sending, and limits a person will not hit by hand. Paid tiers add cloud models, mail
    # sending and higher limits.
    "FREE": {
        "rate_limit_requests": 3000,
        "rate_limit_window_seconds": 60,
        "requests_per_day": 50000,
        "allowed_capabilities": [
            "mcp.hello",
            "mcp.listCapabilities",
            "mcp.licence.check",
            "mcp.fs.*",
            "mcp.sync.*",
            "mcp.mail.*",
            "mcp.agent.*",
            "mcp.llm.*",
            "mcp.upstream.*",
        ],
        "denied_capabilities": ["mcp.mail.send"],
        "llm_access": True,
        "allowed_llm_models": ["local"],
        "max_tokens_per_request": 1024,
        "max_tokens_per_day": 50000,
    },
    "PRO": {
        "rate_limit_requests": 30000,
        "rate_limit_window_seconds": 60,
        "requests_per_day": 2000000,
        "allowed_capabilities": ["*"],
        "denied_capabilities": [],
        "llm_access": True,
        "allowed_llm_models": ["*"],
        "max_tokens_per_request": 8192,
        "max_tokens_per_day": 2000000,
    },
    "ELITE": {
        "rate_limit_requests": None,
        "rate_limit_window_seconds": 60,
        "requests_per_day": None,
        "allowed_capabilities": ["*"],
        "denied_capabilities": [],
        "llm_access": True,
        "allowed_llm_models": ["*"],
        "max_tokens_per_request": None,
        "max_tokens_per_day": None,
    },
}

TIER_FIELDS = tuple(DEFAULT_TIERS[FREE])

_TIER_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"
_CAP_PATTERN = r"^(\*|[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*(\.\*)?)$"
_MODEL_PATTERN = r"^(\*|[A-Za-z0-9_.:/@+-]+\*?)$"
_MAX_RATE = 1_000_000  # the rate limiter keeps one timestamp per request of the window

_nullable_count = {"type": ["integer", "null"], "minimum": 0}
_TIER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rate_limit_requests": {"type": ["integer", "null"], "minimum": 1, "maximum": _MAX_RATE},
        "rate_limit_window_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400 * 31},
        "requests_per_day": _nullable_count,
        "allowed_capabilities": {"type": "array", "items": {"type": "string", "pattern": _CAP_PATTERN}},
        "denied_capabilities": {"type": "array", "items": {"type": "string", "pattern": _CAP_PATTERN}},
        "llm_access": {"type": "boolean"},
        "allowed_llm_models": {"type": "array", "items": {"type": "string", "pattern": _MODEL_PATTERN}},
        "max_tokens_per_request": _nullable_count,
        "max_tokens_per_day": _nullable_count,
    },
}
_FILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"pattern": _TIER_NAME},
    "additionalProperties": _TIER_SCHEMA,
}
_VALIDATOR = Draft202012Validator(_FILE_SCHEMA)
_cap_re = re.compile(_CAP_PATTERN)


class TiersError(ValueError):
    """The tiers file is unreadable or invalid; the message names the file, line, tier and field."""


def valid_pattern(pattern: str) -> bool:
    """True when `pattern` is a capability pattern: exact name, `prefix.*` or `*`."""
    return bool(_cap_re.match(pattern))


def _matches(pattern: str, name: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def match_any(patterns: Iterable[str], name: str) -> bool:
    """Whether one of the patterns (exact, `prefix.*`/`prefix*`, `*`) matches `name`."""
    return any(_matches(p, name) for p in patterns)


def names_of(method: str, upstream: bool = False) -> tuple[str, ...]:
    """The names a pattern may match a method by. A method of an upstream MCP server (`mcp.memory.read_graph`)
    is also `mcp.upstream.memory.read_graph`, so that `mcp.upstream.*` in a tier or an allowlist means every
    upstream server a person registers, whatever its name."""
    if upstream and method.startswith("mcp."):
        return (method, "mcp.upstream." + method[4:])
    return (method,)


def match_names(patterns: Iterable[str], names: tuple[str, ...]) -> bool:
    return any(match_any(patterns, n) for n in names)


@dataclass(frozen=True)
class Tier:
    name: str
    rate_limit_requests: int | None
    rate_limit_window_seconds: float
    requests_per_day: int | None
    allowed_capabilities: tuple[str, ...]
    denied_capabilities: tuple[str, ...]
    llm_access: bool
    allowed_llm_models: tuple[str, ...]
    max_tokens_per_request: int | None
    max_tokens_per_day: int | None

    def allows(self, method: str, upstream: bool = False) -> bool:
        names = names_of(method, upstream)
        return match_names(self.allowed_capabilities, names) and not match_names(self.denied_capabilities, names)

    def allows_model(self, alias: str) -> bool:
        return self.llm_access and match_any(self.allowed_llm_models, alias)

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any]) -> Tier:
        return cls(
            name=name,
            rate_limit_requests=data["rate_limit_requests"],
            rate_limit_window_seconds=float(data["rate_limit_window_seconds"]),
            requests_per_day=data["requests_per_day"],
            allowed_capabilities=tuple(data["allowed_capabilities"]),
            denied_capabilities=tuple(data["denied_capabilities"]),
            llm_access=bool(data["llm_access"]),
            allowed_llm_models=tuple(data["allowed_llm_models"]),
            max_tokens_per_request=data["max_tokens_per_request"],
            max_tokens_per_day=data["max_tokens_per_day"],
        )


@dataclass(frozen=True)
class TierTable:
    """All known tiers by upper-case name; lookups are case-insensitive."""

    tiers: Mapping[str, Tier]
    source: str = "built-in defaults"
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.upper() in self.tiers

    def get(self, name: str) -> Tier:
        """The tier called `name`; KeyError when unknown."""
        return self.tiers[name.upper()]

    def names(self) -> list[str]:
        return list(self.tiers)


def tiers_path(config_dir: Path) -> Path:
    env = os.environ.get("LLMBDO_TIERS_FILE")
    return Path(env) if env else config_dir / "licence_tiers.yaml"


def _node_at(node: yaml.Node | None, path: Sequence[Any]) -> yaml.Node | None:
    """The YAML node at a JSON path, to report the line of a schema error; the deepest found when cut short."""
    for part in path:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key, value in node.value:
                if isinstance(part, str) and key.value == part:
                    found = value
                    break
            if found is None:
                return node
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _key_node(node: yaml.Node | None, name: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, _value in node.value:
            if key.value == name:
                return key
    return None


def _line(node: yaml.Node | None) -> str:
    return f"line {node.start_mark.line + 1}: " if node is not None else ""


def _describe(source: str, root: yaml.Node | None, error: Any) -> str:
    path = list(error.absolute_path)
    tier = path[0] if path else None
    field_name = path[1] if len(path) > 1 else None
    node = _node_at(root, path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        # The message lists the unknown field; point at its key rather than at the tier.
        extra = sorted(set(error.instance) - set(_TIER_SCHEMA["properties"]))
        if extra:
            field_name = extra[0]
            node = _key_node(node, extra[0]) or node
            return (f"{source}: {_line(node)}tier {tier}: unknown field {extra[0]!r} "
                    f"(known: {', '.join(TIER_FIELDS)})")
    if "propertyNames" in error.schema_path:
        node = _key_node(root, str(error.instance))
        return f"{source}: {_line(node)}invalid tier name {error.instance!r} (letters, digits, _ and -)"
    where = ""
    if tier is not None:
        where += f"tier {tier}: "
    if field_name is not None:
        where += f"field {field_name}: "
    return f"{source}: {_line(node)}{where}{error.message}"


def _compose(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise TiersError(f"{source}: {where}{problem}") from None
    return data, root


def load_tiers(path: Path | None) -> TierTable:
    """Built-in tiers merged with the file at `path` (absent file: defaults only). Raises TiersError."""
    merged = copy.deepcopy(DEFAULT_TIERS)
    if path is None or not path.exists():
        return _table(merged, "built-in defaults")
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TiersError(f"{source}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    data, root = _compose(text, source)
    if data is None:
        return _table(merged, source)
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if errors:
        raise TiersError(_describe(source, root, errors[0]))
    seen: dict[str, str] = {}
    for name, fields in data.items():
        upper = name.upper()
        if upper in seen:
            node = _key_node(root, name)
            raise TiersError(f"{source}: {_line(node)}tier {name}: defined twice (as {seen[upper]!r} too)")
        seen[upper] = name
        base = merged.get(upper, copy.deepcopy(DEFAULT_TIERS[FREE]))
        base.update(fields or {})
        merged[upper] = base
    return _table(merged, source)


def _table(merged: dict[str, dict[str, Any]], source: str) -> TierTable:
    return TierTable({name: Tier.from_mapping(name, fields) for name, fields in merged.items()}, source, merged)
