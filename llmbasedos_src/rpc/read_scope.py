"""`READS`: the writes made while the gateway handles one read leave when that read has been handled.

A read from a client or a backend carries one or more calls or answers, and each makes a write to the other
side. The gateway's writers gather a loop pass's writes into one; they used to flush them from a callback
scheduled for the end of the pass, which cost the event loop another iteration (and its poll system call)
per batch. A protocol now wraps its `data_received` in `READS`, and the writers it touches flush as it
returns. Writes made outside a read (tasks, timers) still flush from a callback, as before.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

__all__ = ["READS", "Flushable", "ReadScope"]

log = logging.getLogger("llmbasedos.gateway")


class Flushable(Protocol):
    def flush(self) -> None: ...


class ReadScope:
    """A context manager around read callbacks; they may nest (an answer read can cause another read's work)."""

    __slots__ = ("_depth", "_dirty")

    def __init__(self) -> None:
        self._depth = 0
        self._dirty: list[Flushable] = []

    def __enter__(self) -> None:
        self._depth += 1

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        if self._depth == 0 and self._dirty:
            dirty, self._dirty = self._dirty, []
            for writer in dirty:
                try:
                    writer.flush()
                except Exception:  # one broken connection must not keep the others' writes back
                    log.exception("flushing a connection's writes failed")

    def defer(self, writer: Flushable) -> bool:
        """Register `writer` to flush when the read being handled ends; False when no read is being handled
        (the writer then schedules its own flush)."""
        if self._depth:
            self._dirty.append(writer)
            return True
        return False


READS = ReadScope()  # the gateway runs one event loop, in one thread
