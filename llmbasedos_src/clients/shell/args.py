"""Turning a typed line into a method call: `mcp.fs.read path=/a.txt`, `mcp.fs.read {"path": "/a.txt"}`."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

__all__ = ["split_line", "parse_raw_params", "is_raw_method", "parse_value"]

_RAW_METHOD = re.compile(r"^mcp\.[A-Za-z0-9_.-]+$")


def split_line(line: str) -> list[str]:
    """Split like a POSIX shell; raises ValueError on an unclosed quote."""
    return shlex.split(line, comments=False, posix=True)


def is_raw_method(word: str) -> bool:
    return bool(_RAW_METHOD.match(word))


def parse_value(text: str) -> Any:
    """`3` is a number, `true` a boolean, `[1,2]` a list; anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_raw_params(rest: str) -> Any:
    """Params for a raw call: a JSON object/array, or key=value words, or nothing."""
    rest = rest.strip()
    if not rest:
        return None
    if rest[0] in "[{":
        try:
            value = json.loads(rest)
        except ValueError as exc:
            raise ValueError(f"params are not valid JSON: {exc}") from None
        return value
    params: dict[str, Any] = {}
    for word in split_line(rest):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {word!r}")
        params[key] = parse_value(value)
    return params
