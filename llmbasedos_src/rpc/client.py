"""The one asyncio JSON-RPC client over a NUL-framed UNIX socket: persistent and multiplexed.

Ids, the calls in flight, cancellation, notifications routed to their call, and the `caller` member (the
identity a call is made for) live here and nowhere else. Used by the gateway's upstream pool, the agent's
line to the gateway, the tests and the benchmarks.

A call in flight is a `Pending`: the future of `call`, or what the caller of `send` hands in (the gateway's
waiters, resolved in the read callback itself, with no future and no task in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from llmbasedos.protocol import errors
from llmbasedos.protocol.framing import DEFAULT_MAX_FRAME, NulFrameDecoder, encode_frame
from llmbasedos.protocol.messages import Notification, Response, notification, parse_message, request

__all__ = ["RPCClient", "NotificationHandler", "Pending", "Writer"]

NotificationHandler = Callable[[str, Any], None]
_HIGH_WATER = 1 << 20  # bytes waiting to be written past which a call waits for the peer to read


class Pending(Protocol):
    """A call in flight, resolved by the read loop as a future is. It may also `relay` its call's notifications
    (a waiter does; a future's are relayed by the listener given to `call`)."""

    def done(self) -> bool: ...

    def set_result(self, value: Any) -> None: ...

    def set_exception(self, exc: BaseException) -> None: ...


class Writer(Protocol):
    """Where requests are written: an asyncio StreamWriter, or a protocol that gathers writes (the gateway's)."""

    @property
    def transport(self) -> asyncio.WriteTransport: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class RPCClient:
    def __init__(self, reader: asyncio.StreamReader | None, writer: Writer, *,
                 max_frame: int = DEFAULT_MAX_FRAME, on_notification: NotificationHandler | None = None) -> None:
        """`reader` None: the bytes come from elsewhere (a protocol calling `feed` and `lost`), not a read loop."""
        self._reader = reader
        self._writer = writer
        self._decoder = NulFrameDecoder(max_frame)
        self._ids = itertools.count(1)
        self._pending: dict[Any, Pending] = {}
        self._listeners: dict[Any, NotificationHandler] = {}
        self._on_notification = on_notification
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop()) if reader is not None else None
        self.closed = asyncio.Event()

    @classmethod
    async def connect_unix(cls, path: str, **kwargs: Any) -> RPCClient:
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
        except (OSError, ValueError) as exc:
            raise errors.ServiceUnavailable("Cannot connect to the service socket") from exc
        return cls(reader, writer, **kwargs)

    @property
    def is_open(self) -> bool:
        return not self.closed.is_set()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(1 << 16)
                if not data:
                    break
                self.feed(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.lost()

    def feed(self, data: bytes) -> None:
        """Bytes from the server: answers resolve their calls, notifications reach their listeners.

        A frame that is not JSON is dropped: it answers nothing that could be matched to a call."""
        payloads = self._decoder.whole_frames(data)
        if payloads is None:
            for frame in self._decoder.receive_data(data):
                if frame.error is None:
                    self._deliver(frame.value)
            return
        for payload in payloads:
            if payload:
                try:
                    value = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                self._deliver(value)

    def _listener_for(self, rid: Any) -> NotificationHandler | None:
        # A waiter relays its own call's notifications: no listener entry to add and remove per call.
        listener = self._listeners.get(rid)
        if listener is None:
            listener = getattr(self._pending.get(rid), "relay", None)
        return listener

    def lost(self) -> None:
        """The connection is gone: every call still waiting fails with ServiceUnavailable."""
        self.closed.set()
        # Taken out first: what a waiter does when it fails may touch the table (the gateway's calls do).
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(errors.ServiceUnavailable("Connection to the service was lost"))

    def _deliver(self, value: Any) -> None:
        if (type(value) is dict and "result" in value and "error" not in value and "method" not in value
                and value.get("jsonrpc") == "2.0"):
            rid = value.get("id")
            if type(rid) is int or type(rid) is str:  # the common case, a plain answer: no Response built
                fut = self._pending.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_result(value["result"])
                return
        items = value if isinstance(value, list) else [value]
        for item in items:
            try:
                msg = parse_message(item)
            except errors.InvalidRequest:
                continue
            if isinstance(msg, Response):
                fut = self._pending.pop(msg.id, None)
                if fut is not None and not fut.done():
                    if msg.error is not None:
                        fut.set_exception(errors.from_error_object(msg.error))
                    else:
                        fut.set_result(msg.result)
            elif isinstance(msg, Notification):
                rid = msg.params.get("id") if isinstance(msg.params, dict) else None
                listener = self._listener_for(rid) if type(rid) is int or type(rid) is str else None
                if listener is not None:
                    listener(msg.method, msg.params)
                elif self._on_notification is not None:
                    self._on_notification(msg.method, msg.params)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests use this to send malformed frames)."""
        self._writer.write(data)

    async def call(self, method: str, params: Any = None, *, timeout: float | None = None,
                   on_notification: NotificationHandler | None = None, caller: dict[str, Any] | None = None) -> Any:
        """Call `method`; raises the RPCError the server answered with. `caller` is sent as the request's
        `caller` member: the identity the call is made for (the gateway forwards it to backends; the agent
        sends it to the gateway)."""
        if self.closed.is_set():
            raise errors.ServiceUnavailable("Connection to the service is closed")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        if on_notification is not None:
            self._listeners[rid] = on_notification
        try:
            self._writer.write(_frame(rid, method, params, caller))
            if self.backlogged:
                await self._writer.drain()
            if timeout is None:
                return await fut
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                self.cancel(rid)
                raise errors.Timeout(f"{method} timed out after {timeout:g} s") from None
        except asyncio.CancelledError:
            self.cancel(rid)
            raise
        finally:
            self._pending.pop(rid, None)
            self._listeners.pop(rid, None)

    def send(self, method: str, params: Any, pending: Pending, caller: dict[str, Any] | None = None) -> int:
        """Send a call without waiting: the read loop resolves `pending` when its answer comes.

        The sender owns the entry from then on and calls `forget(rid)` once its call has ended.
        """
        if self.closed.is_set():
            raise errors.ServiceUnavailable("Connection to the service is closed")
        rid = next(self._ids)
        self._writer.write(_frame(rid, method, params, caller))
        self._pending[rid] = pending
        return rid

    def forget(self, rid: Any) -> None:
        self._pending.pop(rid, None)
        self._listeners.pop(rid, None)

    def in_flight(self) -> list[Pending]:
        """The calls in flight on this connection, oldest first."""
        return list(self._pending.values())

    @property
    def backlogged(self) -> bool:
        """More is waiting to be written than the peer has read: new calls should wait for it."""
        return bool(self._writer.transport.get_write_buffer_size() > _HIGH_WATER)

    def cancel(self, rid: Any) -> None:
        if not self._writer.is_closing():
            self._writer.write(encode_frame(notification("mcp.cancel", {"id": rid})))

    async def notify(self, method: str, params: Any = None) -> None:
        self._writer.write(encode_frame(notification(method, params)))
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task


def _frame(rid: int, method: str, params: Any, caller: dict[str, Any] | None) -> bytes:
    message = request(rid, method, params)
    if caller is not None:
        message["caller"] = caller
    return encode_frame(message)
