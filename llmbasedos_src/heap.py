"""The garbage collector's view of a long-running program's start-up heap."""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap"]


def freeze_startup_heap() -> None:
    """Take everything built at start-up (modules, caps, validators) out of the garbage collector's sight.

    It lives as long as the process, yet each full collection under load walked all of it and stalled the
    loop for milliseconds (the p99 of cheap calls). Called once, by a program, when it is ready to serve.
    """
    gc.collect()
    gc.freeze()
