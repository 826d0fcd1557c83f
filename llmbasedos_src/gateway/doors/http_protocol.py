"""uvicorn's httptools protocol with its writes gathered: one send per response instead of two.

uvicorn writes the status line and headers of a response in one `transport.write` and the body in another,
and uvloop turns each into its own send system call (and the peer into two wake-ups). On loopback those
calls were the largest single cost of a small `/mcp` answer. `CorkedTransport` keeps what is written during
one turn of the event loop (or one read the gateway is handling: `read_scope`) and hands it to the real
transport as one buffer at the end of it, so headers and body leave together; nothing is held across a turn,
so no answer waits for another.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llmbasedos.rpc.gathered_writes import GatheredWrites

__all__ = ["CorkedHttpToolsProtocol", "CorkedTransport"]


class CorkedTransport(GatheredWrites):
    """A transport proxy whose writes within one read or loop turn go out as one write. Everything else is
    passed through; `close()` sends what is pending first."""

    __slots__ = ("_transport",)

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self.start_gathering(loop)  # its byte count is kept: a WebSocket answer asks for it each time

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self.gather(bytes(data))

    def write_counted(self, data: bytes) -> int:
        """Write `data` unless the connection is closing, and say how many bytes now wait to leave (-1: it is
        closing, nothing was written). The WebSocket door asks both of every answer: one call, not three."""
        transport = self._transport
        if transport.is_closing():
            return -1
        self.gather(data)
        return int(transport.get_write_buffer_size()) + self._gathered

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def send_gathered(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return int(self._transport.get_write_buffer_size()) + self._gathered

    def is_closing(self) -> bool:  # asked on every answer: not through __getattr__
        return bool(self._transport.is_closing())

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self.drop_gathered()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol, writing through a CorkedTransport (WebSocket upgrades keep it too)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]
