"""`GatheredWrites`: what is written while one read is handled (READS), or else during one pass of the event
loop, leaves in one write.

A busy connection makes many small writes (an answer, a forwarded call); a system call and a wake-up of the
peer for each was the largest cost of a cheap call. The gateway's upstream sockets, its HTTP and WebSocket
transport and every backend connection gather their writes this one way.
"""

from __future__ import annotations

import asyncio

from llmbasedos.rpc.read_scope import READS

__all__ = ["GatheredWrites"]


class GatheredWrites:
    """A base: the class calls `start_gathering(loop)` in its __init__ and says in `send_gathered` where the
    joined bytes go."""

    __slots__ = ("_chunks", "_gathered", "_loop", "_scheduled")

    def start_gathering(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._chunks: list[bytes] = []
        self._gathered = 0  # bytes waiting in _chunks
        self._scheduled = False

    def gather(self, data: bytes) -> None:
        if not self._scheduled:
            self._scheduled = True
            if not READS.defer(self):
                self._loop.call_soon(self.flush)
        self._chunks.append(data)
        self._gathered += len(data)

    def flush(self) -> None:
        """Send what was gathered now (also called when the read or the loop pass ends)."""
        self._scheduled = False
        chunks = self._chunks
        if not chunks:
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._gathered = 0
        self.send_gathered(data)

    def drop_gathered(self) -> None:
        """Forget what was gathered (the connection is gone)."""
        self._chunks.clear()
        self._gathered = 0

    def send_gathered(self, data: bytes) -> None:
        raise NotImplementedError
