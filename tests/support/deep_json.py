"""Requests nested to a chosen depth, written as text (orjson cannot encode past 254 levels)."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["deep_request"]


def deep_request(depth: int, rid: Any = 7) -> bytes:
    """A `mcp.echo.say` request whose whole message nests `depth` levels: the envelope and params are two."""
    inner = depth - 2
    head = b'{"jsonrpc":"2.0","id":' + orjson.dumps(rid) + b',"method":"mcp.echo.say","params":{"text":'
    return head + b"[" * inner + b"]" * inner + b"}}"
