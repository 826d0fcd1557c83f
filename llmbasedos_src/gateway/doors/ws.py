"""The WebSocket front door `/ws`: one JSON-RPC message or batch per text (or binary) frame.

The handshake is refused before it completes — 403 for a browser page from a foreign origin, 401 without a
valid token — so a refused client never gets an open socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from llmbasedos.gateway.doors.auth import bearer_token, refusal_response, remote_of
from llmbasedos.gateway.doors.ws_protocol import DIRECT_LANE, DirectLane
from llmbasedos.protocol import errors
from llmbasedos.protocol.decoding import decode_json
from llmbasedos.protocol.framing import encode_answer

if TYPE_CHECKING:
    from llmbasedos.gateway.doors.host import DoorHost
    from llmbasedos.gateway.doors.session import Session
    from llmbasedos.gateway.policy.gatekeeper import ClientIdentity

__all__ = ["WsDoor", "ws_endpoint"]

log = logging.getLogger("llmbasedos.gateway.doors.ws")

# A client that stops reading while answers pile up is dropped rather than allowed to eat memory.
_MAX_BACKLOG = 100_000


def _deliver(session: Session, data: str | bytes | None) -> None:
    """One WebSocket message (text or binary) to the session: a JSON-RPC message or batch, or its error."""
    if not data:
        session.receive_error(errors.InvalidRequest("Empty message"))
        return
    try:
        value = decode_json(data)
    except (errors.ParseError, errors.NestingTooDeep) as exc:
        session.receive_error(exc)
        return
    session.receive(value)


def _serialise(message: Any) -> bytes:
    data, encoded = encode_answer(message)
    if not encoded:
        log.error("an answer could not be serialised")
    return data


class _Outbox:
    """Answers and notifications waiting to be written, in order, by one writer task."""

    __slots__ = ("_items", "_wake", "closing", "overflowed")

    def __init__(self) -> None:
        self._items: collections.deque[str] = collections.deque()
        self._wake = asyncio.Event()
        self.overflowed = False
        self.closing: tuple[int, str] | None = None  # close with this once what is queued is written

    def close(self, code: int, reason: str) -> None:
        self.closing = (code, reason)
        self._wake.set()

    def put(self, message: Any) -> None:
        text = _serialise(message).decode()
        if len(self._items) >= _MAX_BACKLOG:
            self.overflowed = True
        else:
            self._items.append(text)
        self._wake.set()

    async def pump(self, send: Send) -> None:
        items = self._items
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.overflowed:
                await send({"type": "websocket.close", "code": 1013, "reason": "too many unread answers"})
                return
            while items:
                await send({"type": "websocket.send", "text": items.popleft()})
            if self.closing is not None:
                await send({"type": "websocket.close", "code": self.closing[0], "reason": self.closing[1]})
                return


async def _refuse(websocket: WebSocket, exc: errors.RPCError) -> None:
    try:
        await websocket.send_denial_response(refusal_response(exc))
    except RuntimeError:  # the server lacks the denial extension: a plain close still answers 403
        await websocket.close(code=1008)


class WsDoor:
    """The `/ws` endpoint as a plain ASGI app: Starlette for the handshake, raw ASGI messages after it, so
    each frame costs no more than it must."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        gateway: DoorHost = scope["app"].state.gateway
        policy = gateway.policy
        origin = websocket.headers.get("origin")
        if not policy.check_origin(origin):
            log.warning("refused a WebSocket from a foreign origin")
            await _refuse(websocket, errors.Forbidden("Origin not allowed"))
            return
        token = bearer_token(websocket.headers) or websocket.query_params.get("token")
        remote = remote_of(websocket)
        try:
            client = policy.authenticate(token, transport="ws", remote=remote)
        except errors.RPCError as exc:
            await _refuse(websocket, exc)
            return
        await websocket.accept()
        lane = scope.get("extensions", {}).get(DIRECT_LANE)
        if lane is not None:
            await self._serve_direct(lane, gateway, client, remote, receive)
            return
        outbox = _Outbox()
        session = gateway.open_session(client, outbox.put, transport="ws", remote=remote)
        session.end = outbox.close
        writer = asyncio.get_running_loop().create_task(self._pump(outbox, send))
        try:
            while not writer.done():
                message = await receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    break
                if kind != "websocket.receive":
                    continue
                data = message.get("text")
                _deliver(session, message.get("bytes") if data is None else data)
        except (WebSocketDisconnect, ConnectionError):
            pass
        finally:
            gateway.close_session(session)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    @staticmethod
    async def _serve_direct(lane: DirectLane, gateway: DoorHost, client: ClientIdentity, remote: str,
                            receive: Receive) -> None:
        """Messages straight from the protocol's data_received, answers straight to its transport."""

        send_text = lane.send_text

        def send(message: Any) -> None:
            send_text(_serialise(message))

        session = gateway.open_session(client, send, transport="ws", remote=remote)
        session.end = lane.close

        lane.attach(functools.partial(_deliver, session))  # before any await: nothing slips past
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            gateway.close_session(session)

    @staticmethod
    async def _pump(outbox: _Outbox, send: Send) -> None:
        try:
            await outbox.pump(send)
        except (OSError, RuntimeError, WebSocketDisconnect):
            pass  # the client went away; the receive loop sees the disconnect


ws_endpoint = WsDoor()
