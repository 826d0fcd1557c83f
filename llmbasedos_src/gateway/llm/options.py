"""Chat options a client may pass: a closed list, checked before anything reaches a provider.

The configured model name, base URL and key live in the registry and are never options, so a client cannot
override them however it spells its request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmbasedos.protocol.errors import InvalidParams

__all__ = ["KNOWN_OPTIONS", "DEFAULT_MAX_TOKENS", "check_options", "OptionError"]

KNOWN_OPTIONS: tuple[str, ...] = (
    "temperature", "top_p", "max_tokens", "stop", "seed", "tools", "tool_choice", "response_format",
)

# The max_tokens of a call that names none where one is needed: the Anthropic API requires one, and a client
# with a daily token quota always reserves (and sends) one. The alias's options or the tier's cap come first.
DEFAULT_MAX_TOKENS = 1024


class OptionError(ValueError):
    """An option is unknown or has the wrong type; the message names it."""


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"option {name!r} must be a number")
    if not low <= value <= high:
        raise OptionError(f"option {name!r} must be between {low:g} and {high:g}")
    return float(value)


def _integer(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"option {name!r} must be an integer")
    if value < low:
        raise OptionError(f"option {name!r} must be at least {low}")
    return value


def _stop(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) <= 16 and all(isinstance(s, str) and s for s in value):
        return list(value)
    raise OptionError("option 'stop' must be a string or a list of at most 16 non-empty strings")


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise OptionError("option 'tools' must be a list of tool objects")
    for tool in value:
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise OptionError("each tool must look like {'type': 'function', 'function': {'name': ...}}")
    return list(value)


def _check_one(name: str, value: Any) -> Any:
    if name == "temperature":
        return _number(name, value, 0.0, 2.0)
    if name == "top_p":
        return _number(name, value, 0.0, 1.0)
    if name == "max_tokens":
        return _integer(name, value, 1)
    if name == "seed":
        return _integer(name, value, -(2**63))
    if name == "stop":
        return _stop(value)
    if name == "tools":
        return _tools(value)
    if name == "tool_choice":
        if not isinstance(value, (str, dict)):
            raise OptionError("option 'tool_choice' must be a string or an object")
        return value
    if name == "response_format":
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            raise OptionError("option 'response_format' must be an object with a 'type'")
        return value
    known = ", ".join(KNOWN_OPTIONS)
    raise OptionError(f"unknown option {name!r} (known options: {known})")


def check_options(options: Any, *, as_params: bool = True) -> dict[str, Any]:
    """Return a checked copy of `options`. Raises InvalidParams (client input) or OptionError (config)."""
    if options is None:
        return {}
    try:
        if not isinstance(options, Mapping):
            raise OptionError("options must be an object")
        return {str(k): _check_one(str(k), v) for k, v in options.items()}
    except OptionError as exc:
        if as_params:
            raise InvalidParams(str(exc)) from None
        raise
