"""How often refused credentials reach the audit log: a client without a valid token must not be able to fill
the disk, nor bury the entries that matter under its own.

Per remote address, the first refusal of a minute is audited as usual; the repeats within that minute are only
counted, and written as one entry ("N refusals from ADDR in the last minute") when the minute is over, or at
close. Memory is bounded: at most `max_addresses` addresses are followed, and at most `max_first` refusals a
minute are audited one by one across all addresses; beyond either bound refusals are counted under "other
addresses". Thread-safe: the doors count on the event loop, the policy's flusher writes the aggregates.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["OTHER_ADDRESSES", "RefusalCounter"]

OTHER_ADDRESSES = "other addresses"
WINDOW = 60.0
MAX_ADDRESSES = 1024
MAX_FIRST = 120


class RefusalCounter:
    def __init__(self, window: float = WINDOW, max_addresses: int = MAX_ADDRESSES, max_first: int = MAX_FIRST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._max_addresses = max_addresses
        self._max_first = max_first
        self._clock = clock
        self._lock = threading.Lock()
        self._by_address: OrderedDict[str, list[float | int]] = OrderedDict()  # remote -> [start, repeats]
        self._others: list[float | int] = [0.0, 0]  # refusals beyond the bounds: [start, count]
        self._first_start = 0.0
        self._first_count = 0

    def first(self, remote: str) -> bool:
        """Count one refusal from `remote`: True when it is to be audited on its own, False when counted."""
        now = self._clock()
        with self._lock:
            seen = self._by_address.get(remote)
            if seen is not None:
                seen[1] += 1
                return False
            if now - self._first_start >= self._window:
                self._first_start, self._first_count = now, 0
            if self._first_count >= self._max_first or len(self._by_address) >= self._max_addresses:
                if not self._others[1]:
                    self._others[0] = now
                self._others[1] += 1
                return False
            self._first_count += 1
            self._by_address[remote] = [now, 0]
            return True

    def due(self, *, everything: bool = False) -> list[tuple[str, int]]:
        """The (address, repeats) whose minute is over (all of them with `everything`), forgotten from now on."""
        now = self._clock()
        out: list[tuple[str, int]] = []
        with self._lock:
            # Insertion order is the order the minutes started in: stop at the first one still running.
            while self._by_address:
                remote, (start, repeats) = next(iter(self._by_address.items()))
                if not everything and now - start < self._window:
                    break
                del self._by_address[remote]
                if repeats:
                    out.append((remote, int(repeats)))
            start, count = self._others
            if count and (everything or now - start >= self._window):
                out.append((OTHER_ADDRESSES, int(count)))
                self._others = [0.0, 0]
        return out
