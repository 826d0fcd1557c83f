"""The one JSON decoder of every door and every peer: orjson, with a limit on nesting.

orjson decodes up to 1024 levels of nesting but encodes at most 254, so a request nested 255 levels deep was
accepted, then blew up when the gateway encoded its forward to a backend, or its answer: the connection
dropped with a traceback. Messages are therefore refused here, at parse time, when they are nested deeper than
MAX_DEPTH (well below 254, leaving room for the envelopes answers are wrapped in), with NestingTooDeep
(-32600) carrying the request's id when it can be read, so the refusal answers the request and the
connection goes on.

The check costs nothing on the usual frame: a value cannot be nested deeper than the number of `[` and `{`
in its text, so only a text holding more than `limit` of them is looked at further, and then it is the
decoded value that is walked (brackets inside strings cannot fool it), level by level, stopping as soon as it
is past the limit.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from llmbasedos.protocol.errors import NestingTooDeep, ParseError
from llmbasedos.protocol.messages import answer_id

__all__ = ["MAX_DEPTH", "MAX_ANSWER_DEPTH", "ORJSON_MAX_DEPTH", "decode_json", "nesting_depth"]

MAX_DEPTH = 128  # a request (or a batch) from a client, or any message to a server
# What a peer answers may nest somewhat deeper than what it was asked (a workflow's outputs hold its inputs),
# and only has to be encodable again, inside one more envelope, under orjson's 254.
MAX_ANSWER_DEPTH = 240
ORJSON_MAX_DEPTH = 1024  # deeper than this orjson does not decode at all
_ORJSON_DEPTH_ERROR = "depth limit"  # its JSONDecodeError for that case says so

# A request's top-level id when it comes before any container member (the usual order: jsonrpc, id, method,
# params), read without decoding: a message too deep for orjson is still answered with its id.
_LEADING_ID = re.compile(
    rb'\s*\{(?:\s*"(?:[^"\\]|\\.)*"\s*:\s*(?:"(?:[^"\\]|\\.)*"|-?\d+|true|false|null)\s*,)*?'
    rb'\s*"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")\s*[,}]')


def nesting_depth(value: Any, stop_above: int | None = None) -> int:
    """How deep `value` nests (a scalar is 0, `[]` is 1); once past `stop_above`, the depth reached so far."""
    if type(value) is not dict and type(value) is not list:
        return 0
    # Level by level rather than node by node: one list per level, no (node, depth) pair per container,
    # which made a frame of millions of small containers cost more to walk than to decode.
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        if stop_above is not None and depth > stop_above:
            return depth
        below: list[Any] = []
        for node in level:
            for child in (node.values() if type(node) is dict else node):
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level = below
    return depth


def _openers(data: bytes | str) -> int:
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def _request_id(value: Any) -> str | int | None:
    return answer_id(value.get("id")) if type(value) is dict else None


def _leading_id(data: bytes | str) -> str | int | None:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    match = _LEADING_ID.match(raw)
    if match is None:
        return None
    try:
        return _request_id({"id": orjson.loads(match.group(1))})
    except orjson.JSONDecodeError:
        return None


def _too_deep(depth: str, limit: int, request_id: str | int | None) -> NestingTooDeep:
    return NestingTooDeep(f"Message is nested {depth} levels deep; the limit is {limit}",
                          {"limit": limit}, request_id=request_id)


def decode_json(data: bytes | str, limit: int = MAX_DEPTH) -> Any:
    """Decode one message (or batch). Raises ParseError for text that is not UTF-8 JSON, NestingTooDeep for
    a value nested deeper than `limit`."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if _ORJSON_DEPTH_ERROR in str(exc):
            raise _too_deep(f"more than {ORJSON_MAX_DEPTH}", limit, _leading_id(data)) from None
        # orjson reports invalid UTF-8 as a decode error too; tell the two apart for the client.
        if isinstance(data, bytes):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise ParseError("Frame is not valid UTF-8") from exc
        raise ParseError("Frame is not valid JSON") from exc
    if len(data) > 2 * limit and _openers(data) > limit and nesting_depth(value, limit) > limit:
        raise _too_deep(str(nesting_depth(value)), limit, _request_id(value))
    return value
