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
from typing import Any, Protocol

import orjson

from llmbasedos.protocol import errors
from llmbasedos.protocol.framing import DEFAULT_MAX_FRAME, NulFrameDecoder, encode_frame
from llmbasedos.protocol.messages import notification, request
from llmbasedos.rpc.calls import CallTable, NotificationHandler, Pending

__all__ = ["RPCClient", "Writer"]

_HIGH_WATER = 1 << 20  # bytes waiting to be written past which a call waits for the peer to read


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
        self._calls = CallTable(on_notification)
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
                    self._calls.deliver(frame.value)
            return
        for payload in payloads:
            if payload:
                try:
                    value = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                self._calls.deliver(value)

    def lost(self) -> None:
        """The connection is gone: every call still waiting fails with ServiceUnavailable."""
        self.closed.set()
        self._calls.fail_all(errors.ServiceUnavailable("Connection to the service was lost"))

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
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        rid = self._calls.open(fut, on_notification)
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
            self._calls.forget(rid)

    def send(self, method: str, params: Any, pending: Pending, caller: dict[str, Any] | None = None) -> int:
        """Send a call without waiting: the read loop resolves `pending` when its answer comes.

        The sender owns the entry from then on and calls `forget(rid)` once its call has ended.
        """
        if self.closed.is_set():
            raise errors.ServiceUnavailable("Connection to the service is closed")
        rid = self._calls.open(pending)
        self._writer.write(_frame(rid, method, params, caller))
        return rid

    def forget(self, rid: Any) -> None:
        self._calls.forget(rid)

    def in_flight(self) -> list[Pending]:
        """The calls in flight on this connection, oldest first."""
        return self._calls.in_flight()

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
