"""One peer's connection to a backend server, and the context a handler gets for one call on it.

`Connection` is an asyncio protocol: a read is decoded and dispatched in the callback that delivers it, and
the answers finished in one loop pass leave in one write. It knows its server only through the `dispatch`
function and the set of open connections it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

from llmbasedos.protocol.framing import NulFrameDecoder, encode_answer
from llmbasedos.protocol.messages import RequestId, notification, refusal
from llmbasedos.rpc.gathered_writes import GatheredWrites
from llmbasedos.rpc.read_scope import READS
from llmbasedos.rpc.write_gate import WriteGate

__all__ = ["Connection", "CallContext", "PROGRESS_METHOD"]

log = logging.getLogger("llmbasedos.server")

PROGRESS_METHOD = "mcp.progress"  # notification {"id", "progress", "total"?, "message"?}
_HIGH_WATER = 1 << 20


class Connection(GatheredWrites, asyncio.Protocol):
    """One client connection: bytes in through the frame decoder, answers out in one write per loop pass.

    A protocol rather than a StreamReader loop: a read is handled in the callback that delivers it, with
    no task to wake and no future per read, which was a good part of the cost of a cheap call.
    """

    __slots__ = ("_connections", "_decoder", "_dispatch", "_gate", "closed", "tasks", "transport")

    def __init__(self, dispatch: Callable[[Connection, Any], None], connections: set[Connection],
                 max_frame: int) -> None:
        self._dispatch = dispatch  # each decoded message or batch, to the server
        self._connections = connections  # the server's open connections: this one is in it while open
        self.start_gathering(asyncio.get_running_loop())
        self._decoder = NulFrameDecoder(max_frame)
        self._gate = WriteGate(self._loop)
        self.tasks: dict[RequestId, asyncio.Task[None]] = {}
        self.closed = False
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UNIX transport is a read-write transport without being registered as one: cast, not check.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)
        self._connections.add(self)

    def data_received(self, data: bytes) -> None:
        dispatch = self._dispatch
        with READS:  # every inline answer to this read leaves in one write as it ends: no callback to schedule
            for frame in self._decoder.receive_data(data):
                if frame.error is not None:
                    self.send(refusal(frame.error))
                else:
                    dispatch(self, frame.value)

    def eof_received(self) -> bool:
        return False  # the peer is done sending: close once our answers are out

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._connections.discard(self)
        self.drop_gathered()
        # The caller is gone: nobody will read these answers, so stop the work.
        for task in list(self.tasks.values()):
            task.cancel()
        self._gate.open()

    def pause_writing(self) -> None:
        # The peer sends but does not read: stop reading its requests until it catches up, so the answers
        # waiting for it stay bounded.
        self._gate.close()
        assert self.transport is not None
        with contextlib.suppress(RuntimeError):
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        with contextlib.suppress(RuntimeError):
            self.transport.resume_reading()
        self._gate.open()

    # -- sending ------------------------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        """Queue one message; called on the loop thread only."""
        if self.closed:
            return
        data, encoded = encode_answer(message, b"\0")
        if not encoded:
            log.error("handler result is not JSON-serialisable")
        self.gather(data)

    def send_gathered(self, data: bytes) -> None:
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain_if_needed(self) -> None:
        """Wait while the peer is not reading what it was sent (after a task's answer)."""
        if not self.closed:
            await self._gate.wait()

    def close(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()  # what is buffered is still written out first


class CallContext:
    """What a handler knows of its call, and how it talks back to its caller before it returns."""

    __slots__ = ("_conn", "_loop", "caller", "method", "request_id")

    def __init__(self, request_id: RequestId, method_name: str, conn: Connection,
                 loop: asyncio.AbstractEventLoop, caller: Any = None) -> None:
        self.request_id = request_id
        self.method = method_name
        self.caller = caller  # {"client_id", "name", "tier"} as forwarded by the gateway, or None
        self._conn = conn
        self._loop = loop

    def notify(self, method_name: str, params: dict[str, Any]) -> None:
        """Send a notification to the caller; `params["id"]` is set to this call's id. Thread-safe."""
        msg = notification(method_name, {**params, "id": self.request_id})
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._conn.send(msg)
        else:
            self._loop.call_soon_threadsafe(self._conn.send, msg)

    def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        params: dict[str, Any] = {"progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        self.notify(PROGRESS_METHOD, params)

    @property
    def connected(self) -> bool:
        return not self._conn.closed
