"""The ASGI plumbing of `/mcp`: bodies read within a bound, JSON and empty responses, event streams, Accept."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import orjson
from starlette.types import Message, Receive, Send

from llmbasedos.protocol import errors

__all__ = ["Disconnected", "JSON_HEADERS", "KEEPALIVE", "SSE_HEADERS", "accepts", "error_answer", "read_body",
           "relay_events", "send_empty", "send_json", "sse_event", "watch_disconnect"]

KEEPALIVE = 15.0  # seconds between keep-alive comments on an idle event stream
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform"),
               (b"x-accel-buffering", b"no")]


class Disconnected(Exception):
    """The client went away while its request was read."""


def sse_event(message: Any) -> bytes:
    return b"event: message\ndata: " + orjson.dumps(message) + b"\n\n"


def error_answer(rid: Any, exc: errors.RPCError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": exc.to_error()}


def accepts(headers: dict[str, str]) -> tuple[bool, bool]:
    """(json, sse) acceptable to the client, with wildcards."""
    return _accepts_value(headers.get("accept", ""))


@functools.lru_cache(maxsize=64)  # clients repeat one Accept value on every call
def _accepts_value(accept: str) -> tuple[bool, bool]:
    if not accept:
        return True, False
    types = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    anything = "*/*" in types
    return (anything or "application/json" in types or "application/*" in types,
            anything or "text/event-stream" in types or "text/*" in types)


async def send_json(send: Send, status: int, message: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(message)
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_empty(send: Send, status: int, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", b"0"), *(extra or [])]})
    await send({"type": "http.response.body", "body": b""})


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            return None
        chunks.append(body)
        if not message.get("more_body"):
            return b"".join(chunks)


async def watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


async def relay_events(queue: asyncio.Queue[bytes | None], send: Send) -> None:
    """Write the events put on `queue` to an open event stream until None is put, with a keep-alive comment
    every KEEPALIVE seconds of silence."""
    while True:
        try:
            event = await asyncio.wait_for(queue.get(), KEEPALIVE)
        except TimeoutError:
            event = b": ping\n\n"
        if event is None:
            return
        await send({"type": "http.response.body", "body": event, "more_body": True})
