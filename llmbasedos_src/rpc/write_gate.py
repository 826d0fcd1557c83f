"""`WriteGate`: a transport's pause_writing/resume_writing, as something a coroutine can wait on.

Protocols that write without awaiting (answers leave from callbacks) still have coroutines that should wait
while the peer is behind on reading; this is the one place that turns the two callbacks into that wait.
"""

from __future__ import annotations

import asyncio

__all__ = ["WriteGate"]


class WriteGate:
    __slots__ = ("_loop", "_resumed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._resumed: asyncio.Future[None] | None = None  # set while the peer is behind on reading

    def close(self) -> None:
        """From pause_writing: writers wait from now on."""
        if self._resumed is None:
            self._resumed = self._loop.create_future()

    def open(self) -> None:
        """From resume_writing or connection_lost: the writers waiting go on."""
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    async def wait(self) -> None:
        """Return once the peer has caught up (at once when it is not behind)."""
        resumed = self._resumed
        if resumed is not None:
            await asyncio.shield(resumed)
