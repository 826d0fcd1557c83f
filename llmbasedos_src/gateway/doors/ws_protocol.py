"""uvicorn's sans-I/O WebSocket protocol with a direct lane for `/ws`.

Through ASGI, every message a client sends becomes a dict in a queue that the app's task awaits, and uvicorn
stops reading the socket after each message until that task has taken it (two epoll changes per message);
every answer is an awaited `send` of another dict. For a door whose messages are small JSON-RPC calls this
machinery cost more than routing the call. The app may instead attach a `DirectLane`: messages are handed to
its callback from `data_received`, answers are framed and written at once (the corked transport under it
gathers one loop turn's writes into one), and reading pauses only while the client is not reading its answers.

Once the lane is attached, the common frame (final, unfragmented text or binary) is read and written here
(`ws_frames`); any other frame goes whole to uvicorn's websockets protocol, so the handshake, close, ping,
fragments, size limit, protocol errors and disconnect handling stay theirs; the ASGI app still sees
`websocket.disconnect` through `receive()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from llmbasedos.gateway.doors.http_protocol import CorkedTransport
from llmbasedos.gateway.doors.ws_frames import FINAL_BINARY, FINAL_TEXT, apply_mask, frame_extent, text_frame
from llmbasedos.rpc.read_scope import READS

__all__ = ["DIRECT_LANE", "DirectLane", "DirectWebSocketProtocol", "UVICORN_ATTRIBUTES", "UVICORN_METHODS"]

log = logging.getLogger("llmbasedos.gateway.doors.ws")

DIRECT_LANE = "llmbasedos.direct_lane"  # the scope extension under which the protocol offers its lane

# Past _HIGH_WATER bytes of answers the client has not read, its requests stop being read until it has read
# most of them; the calls already in flight still answer, and past `max_unread` (LLMBDO_WS_MAX_UNREAD) the
# connection is closed (1013) rather than allowed to eat memory.
_HIGH_WATER = 1 << 20
_LOW_WATER = _HIGH_WATER // 4
_POLL_S = 0.01
# The second byte of a masked frame whose payload is under 126 bytes (no extended length): a call's frame.
_SHORT_MASKED_MIN, _SHORT_MASKED_MAX = 0x80, 0x80 | 125

# What of uvicorn's WebSocketsSansIOProtocol this module relies on, beyond its public ASGI behaviour: the
# attributes its __init__ and handshake set, and the methods extended here. uvicorn is pinned to one minor
# version in pyproject.toml; tests/gateway/doors/test_ws_protocol_contract.py fails, naming what moved, when
# a new uvicorn changes any of them.
UVICORN_ATTRIBUTES = ("transport", "conn", "queue", "frames", "loop", "read_paused", "close_sent", "disconnected",
                      "handshake_initiated", "curr_msg_data_type", "close_timer", "close_timeout")
UVICORN_METHODS = ("connection_made", "handle_connect", "data_received", "send_receive_event_to_app",
                   "handle_parser_exception")

MessageFn = Callable[[str | bytes], None]
"""Receives one complete message: text as str (valid UTF-8), binary as bytes."""


class DirectLane:
    """What the app gets: `attach` a message callback, then `send_text` answers."""

    __slots__ = ("_protocol", "send_text")

    def __init__(self, protocol: DirectWebSocketProtocol) -> None:
        self._protocol = protocol
        # Send one text message; its argument is the UTF-8 encoding. The protocol's own method: one call
        # fewer per answer.
        self.send_text: Callable[[bytes], None] = protocol._send_text_now

    def attach(self, on_message: MessageFn) -> None:
        """From now on messages go to `on_message`. Call it right after accepting, before any await."""
        self._protocol._attach(on_message)

    def close(self, code: int, reason: str) -> None:
        """Close the connection now with this code (answers already sent go first); the app's `receive()`
        then gets `websocket.disconnect`."""
        self._protocol._close_now(code, reason)


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """Pass `max_unread` with functools.partial: uvicorn builds the protocol with its own arguments only."""

    transport: Any  # a CorkedTransport from connection_made on; uvicorn sets None first

    def __init__(self, *args: Any, max_unread: int = 64 * 1024 * 1024, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_unread = max_unread
        self._on_message: MessageFn | None = None
        self._held_back = False  # reading paused because the client is not reading its answers
        self._websockets_framing = False  # websockets finds the frame boundaries on this connection
        self._unparsed = bytearray()  # the start of a frame that has not all arrived
        self._wanted = 0  # how many bytes `_unparsed` must hold before a frame in it can be complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Answers go through a CorkedTransport (write_counted); the gateway's HTTP protocol hands over its own.
        if not isinstance(transport, CorkedTransport):
            transport = CorkedTransport(transport, asyncio.get_running_loop())  # type: ignore[assignment]
        super().connection_made(transport)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake is going to the app: offer it the lane
            scope["extensions"][DIRECT_LANE] = DirectLane(self)

    # -- the lane

    def _attach(self, on_message: MessageFn) -> None:
        self._on_message = on_message
        # Anything that came before the lane was attached is still in the ASGI queue: deliver it first, in order.
        leftovers = []
        while not self.queue.empty():
            leftovers.append(self.queue.get_nowait())
        for message in leftovers:
            if message["type"] == "websocket.receive":
                text = message.get("text")
                on_message(text if text is not None else message.get("bytes") or b"")
            else:
                self.queue.put_nowait(message)  # a disconnect: the app's receive() still gets it
        if self.read_paused and not self._held_back:
            self.read_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._on_message is None or self._websockets_framing:
            # Until the lane is attached, websockets reads everything. Frame bytes it saw may have left its
            # parser mid-frame, and then only it knows where the next frame starts: it keeps the framing.
            # A client that follows RFC 6455 (no frame before the 101 answer) keeps the lane's.
            before = self.handshake_initiated
            super().data_received(data)
            if before or (self.handshake_initiated and not data.endswith(b"\r\n\r\n")):
                self._websockets_framing = True
            return
        if self._unparsed:
            self._unparsed += data
            if len(self._unparsed) < self._wanted:
                return  # a big frame still arriving: do not rescan it
            buf: bytes | bytearray = self._unparsed
            self._unparsed = bytearray()
        else:
            buf = data
        self._wanted = 0
        with READS:  # the calls' writes to backends (and quick answers) leave when this read is handled
            self._read_frames(buf)

    def _read_frames(self, buf: bytes | bytearray) -> None:
        """Deliver the common frames in `buf` here and hand any other frame, whole, to websockets."""
        conn = self.conn
        on_message = self._on_message
        assert on_message is not None
        limit = conn.max_message_size
        pos, end = 0, len(buf)
        while pos < end:
            second = buf[pos + 1] if end - pos >= 6 else 0
            if _SHORT_MASKED_MIN <= second <= _SHORT_MASKED_MAX:  # the usual call: its header read here
                header, length = 6, second & 0x7F
            else:
                extent = frame_extent(buf, pos, end)
                if extent is None:
                    break
                header, length = extent
            if limit is not None and length > limit:
                # websockets refuses it (1009) from the header alone: do not wait for the payload.
                self._websockets_framing = True
                super().data_received(bytes(buf[pos:]))
                return
            stop = pos + header + length
            if stop > end:
                self._wanted = header + length
                break
            first = buf[pos]
            if (first in (FINAL_TEXT, FINAL_BINARY) and buf[pos + 1] & 0x80
                    and conn.current_size is None and conn.state is State.OPEN and not self.close_sent):
                payload = apply_mask(buf[pos + header:stop], buf[pos + header - 4:pos + header])
                if not self._hand_over(on_message, payload, first == FINAL_TEXT):
                    return
            else:
                super().data_received(bytes(buf[pos:stop]))
                if conn.state is not State.OPEN or self.transport.is_closing():
                    return  # closing: websockets discards what follows a close frame
            pos = stop
        else:
            return
        self._unparsed = bytearray(buf[pos:])

    def send_receive_event_to_app(self) -> None:
        on_message = self._on_message
        if on_message is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # past our close: discard, as uvicorn does
        self._hand_over(on_message, bytes(data), self.curr_msg_data_type == "text")

    def _hand_over(self, on_message: MessageFn, data: bytes, is_text: bool) -> bool:
        """One whole message to the lane: text decoded, or the connection closed (1007) if it is not UTF-8.
        False when the connection was closed."""
        if not is_text:
            on_message(data)
            return True
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.conn.send_close(1007, "invalid UTF-8")
            self.handle_parser_exception()
            return False
        on_message(text)
        return True

    def _send_text_now(self, data: bytes) -> None:
        if self.close_sent or self.disconnected:
            return
        transport = self.transport
        if self.conn.state is State.OPEN:
            unread = transport.write_counted(text_frame(data))
            if unread < 0:
                return  # the transport is closing
        else:
            if transport.is_closing():
                return
            self.conn.send_text(data)  # raises as websockets does for a connection that is closing
            transport.write(b"".join(self.conn.data_to_send()))
            unread = transport.get_write_buffer_size()
        if unread > _HIGH_WATER:
            if unread > self._max_unread:
                log.warning("closing a WebSocket whose client does not read its answers")
                self._close_now(1013, "too many unread answers")
            else:
                self._hold_back()

    def _close_now(self, code: int, reason: str) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    # -- flow control: a client that sends but does not read is not read from either

    def _hold_back(self) -> None:
        # Checked here rather than left to pause_writing(): after the upgrade, the transport under uvicorn's
        # HTTP protocol never called it (the buffer grew to megabytes unannounced), so the lane watches the
        # buffer itself and polls until the client has read most of it.
        if not self._held_back:
            self._held_back = True
            self.transport.pause_reading()
            self.loop.call_later(_POLL_S, self._check_drained)

    def _check_drained(self) -> None:
        if not self._held_back or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() > _LOW_WATER:
            self.loop.call_later(_POLL_S, self._check_drained)
            return
        self._held_back = False
        if not self.read_paused:
            self.transport.resume_reading()
