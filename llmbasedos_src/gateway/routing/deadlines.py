"""Per-call deadlines for every upstream, kept by one sweeping timer instead of a timer per call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

__all__ = ["Deadlines", "Sender", "Waiter"]

log = logging.getLogger("llmbasedos.gateway.upstream")


class Waiter(Protocol):
    """What `RPCClient.send` is given: the read loop treats it as it treats a future (done/set_result/set_exception),
    so the answer reaches the call in the read callback itself, with no future and no task in between. It
    also carries its own deadline and relays its call's notifications, so that a call adds one entry to one
    table (the client's pending calls) and nothing else."""

    deadline: float  # time.perf_counter() past which `expire` is called

    def done(self) -> bool: ...

    def set_result(self, value: Any) -> None: ...

    def set_exception(self, exc: BaseException) -> None: ...

    def expire(self) -> None: ...

    def relay(self, method: str, params: Any) -> None: ...


class Sender(Protocol):
    """An upstream whose waiters the sweep expires (`Upstream`)."""

    watched: bool  # set while the sweep looks at it; the sweep clears it when nothing is in flight

    def waiters(self) -> Iterable[Waiter]: ...


class Deadlines:
    """Per-call timeouts for every upstream, enforced by one sweeping timer instead of a timer per call.

    A call awaited in a task (`Upstream.call`) is registered here, and past its deadline its task is cancelled
    and the cancellation turned into Timeout. A waiter (`Upstream.send`) carries its own deadline: the sweep
    looks through the calls in flight of the upstreams that sent some, and expires those past it. The
    resolution is a tenth of a second, which is plenty for deadlines counted in seconds.
    """

    _TICK = 0.1

    def __init__(self) -> None:
        self._calls: dict[int, tuple[float, Callable[[], Any]]] = {}
        self._expired: set[int] = set()
        self._ids = 0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[Sender] = set()  # upstreams that may have waiters in flight

    def watch(self, upstream: Sender) -> None:
        """Watch the waiters `upstream` sends until it has none in flight."""
        self._sending.add(upstream)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._TICK, self._sweep)

    def add(self, timeout: float, on_expiry: Callable[[], Any] | None = None) -> int:
        """Watch a call: at its deadline `on_expiry` runs (by default, the current task is cancelled)."""
        if on_expiry is None:
            task = asyncio.current_task()
            assert task is not None
            on_expiry = task.cancel
        self._ids += 1
        self._calls[self._ids] = (time.monotonic() + timeout, on_expiry)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._TICK, self._sweep)
        return self._ids

    def done(self, key: int) -> bool:
        """Forget the call; True when it was cancelled because its deadline passed."""
        self._calls.pop(key, None)
        if key in self._expired:
            self._expired.discard(key)
            return True
        return False

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        for key, (deadline, on_expiry) in list(self._calls.items()):
            if deadline <= now and key not in self._expired:
                self._expired.add(key)
                try:
                    on_expiry()
                except Exception:  # one broken call must not stop the sweep for the others
                    log.exception("expiring a call failed")
        now = time.perf_counter()
        for upstream in list(self._sending):
            waiters = upstream.waiters()
            if not waiters:
                self._sending.discard(upstream)
                upstream.watched = False
            for waiter in waiters:
                if waiter.deadline <= now and not waiter.done():
                    try:
                        waiter.expire()
                    except Exception:
                        log.exception("expiring a call failed")
        if self._calls or self._sending:
            self._timer = asyncio.get_running_loop().call_later(self._TICK, self._sweep)
