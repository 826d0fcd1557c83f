"""Per-client rate limits (sliding window), daily request quotas and daily LLM token use.

Counting happens in memory under a lock, so `admit` is O(1), exact under any concurrency (asyncio tasks or
threads), and does no I/O. The counters are written to SQLite (`usage` and `rate_windows` tables of the
gateway database) by `flush()`, which the policy calls every half second and at close, so a restart keeps
them. Days are UTC days.

The rate limit is exact: a client with a limit of N requests per W seconds never has more than N requests
admitted in any W-second span. It keeps the times of the last N admitted requests in a ring; a request is
admitted when the oldest of them is at least W seconds old.

LLM tokens are reserved before a model is called and settled to the real use after (`reserve`, `settle`):
a call is admitted while anything of the day is neither used nor reserved, so calls made at once take the
day at most one call past its quota. Reservations are written with the use (as if spent), so a gateway that
dies mid-call has charged the calls it was making; a reservation made before midnight is settled on the
new day.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbasedos.gateway.policy.tokens import connect
from llmbasedos.protocol.errors import QuotaExceeded, RateLimited

__all__ = ["Limiter", "Remaining", "TokenReservation", "DAY_SECONDS"]

DAY_SECONDS = 86400
_KEEP_DAYS = 90
_SMALL_WINDOW = 4096  # rate windows up to this many requests are written at every flush

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    client_id TEXT NOT NULL,
    day INTEGER NOT NULL,          -- days since 1970-01-01 UTC
    requests INTEGER NOT NULL,
    llm_tokens INTEGER NOT NULL,
    PRIMARY KEY (client_id, day)
);
CREATE TABLE IF NOT EXISTS rate_windows (
    client_id TEXT PRIMARY KEY,
    stamps BLOB NOT NULL           -- admitted request times, oldest first, float64 native order
);
"""


def _retry(seconds: float) -> float:
    return max(0.001, math.ceil(seconds * 1000) / 1000)


class _State:
    __slots__ = ("capacity", "day", "dirty", "head", "requests", "reserved", "stamps", "stamps_dirty", "tokens",
                 "window")

    def __init__(self, day: int) -> None:
        self.stamps = array("d")
        self.head = 0  # index of the oldest stamp once the ring is full
        self.capacity: int | None = None
        self.window = 0.0
        self.day = day
        self.requests = 0
        self.tokens = 0
        self.reserved = 0  # LLM tokens held by calls in flight; not reset at midnight (they settle on the new day)
        self.dirty = False
        self.stamps_dirty = False

    def ordered(self) -> array[float]:
        return self.stamps[self.head:] + self.stamps[: self.head]

    def resize(self, capacity: int) -> None:
        ordered = self.ordered()
        self.stamps = ordered[-capacity:] if len(ordered) > capacity else ordered
        self.head = 0
        self.capacity = capacity

    def in_window(self, now: float, window: float) -> int:
        start = now - window
        return sum(1 for t in self.stamps if t > start)


@dataclass(eq=False)
class TokenReservation:
    """LLM tokens held for one call until `Limiter.settle`; only its first settle counts."""

    client_id: str
    tokens: int
    settled: bool = False


@dataclass(frozen=True)
class Remaining:
    requests_in_window: int | None  # None: unlimited
    requests_today: int | None
    llm_tokens_today: int | None
    requests_used_today: int
    llm_tokens_used_today: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests_in_window": self.requests_in_window,
            "requests_today": self.requests_today,
            "llm_tokens_today": self.llm_tokens_today,
            "requests_used_today": self.requests_used_today,
            "llm_tokens_used_today": self.llm_tokens_used_today,
        }


class Limiter:
    def __init__(self, db_path: Path, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._day, self._day_starts = -1, math.inf  # the day `_state` last saw, and when it began
        self._conn = connect(db_path)
        self._conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        self._load()

    def _today(self, now: float) -> int:
        return int(now // DAY_SECONDS)

    def _load(self) -> None:
        today = self._today(self._clock())
        self._conn.execute("DELETE FROM usage WHERE day < ?", (today - _KEEP_DAYS,))
        for client_id, requests, tokens in self._conn.execute(
            "SELECT client_id, requests, llm_tokens FROM usage WHERE day = ?", (today,)
        ):
            st = self._states.setdefault(client_id, _State(today))
            st.requests, st.tokens = int(requests), int(tokens)
        for client_id, blob in self._conn.execute("SELECT client_id, stamps FROM rate_windows"):
            st = self._states.setdefault(client_id, _State(today))
            stamps = array("d")
            stamps.frombytes(bytes(blob)[: len(blob) - len(blob) % stamps.itemsize])
            st.stamps = stamps

    def _state(self, client_id: str, now: float) -> _State:
        if not self._day_starts <= now < self._day_starts + DAY_SECONDS:  # a new day (or the clock went back)
            self._day = self._today(now)
            self._day_starts = float(self._day * DAY_SECONDS)
        day = self._day
        st = self._states.get(client_id)
        if st is None:
            st = self._states[client_id] = _State(day)
        elif st.day != day:
            st.day, st.requests, st.tokens, st.dirty = day, 0, 0, True
        return st

    def admit(self, client_id: str, rate: int | None, window: float, per_day: int | None) -> None:
        """Count one request, or raise RateLimited / QuotaExceeded (data.retry_after, seconds) without counting."""
        with self._lock:
            now = self._clock()
            st = self._state(client_id, now)
            st.window = window
            if per_day is not None and st.requests >= per_day:
                raise QuotaExceeded(
                    f"Daily request quota of {per_day} used up",
                    {"retry_after": _retry((st.day + 1) * DAY_SECONDS - now), "limit": per_day},
                )
            if rate is not None:
                if st.capacity != rate:
                    st.resize(rate)
                stamps = st.stamps
                if len(stamps) < rate:
                    stamps.append(now)
                else:
                    oldest = stamps[st.head]
                    if oldest > now + window:  # the clock went back: forget the future
                        stamps[:] = array("d")
                        st.head = 0
                        stamps.append(now)
                    else:
                        wait = oldest + window - now
                        if wait > 0:
                            raise RateLimited(
                                f"Rate limit of {rate} requests per {window:g} s reached",
                                {"retry_after": _retry(wait), "limit": rate, "window": window},
                            )
                        stamps[st.head] = now
                        st.head = (st.head + 1) % rate
            st.requests += 1
            st.dirty = True
            st.stamps_dirty = rate is not None or st.stamps_dirty

    def tokens_left(self, client_id: str, per_day: int | None) -> int | None:
        """LLM tokens this client may still use today (None: unlimited)."""
        if per_day is None:
            return None
        with self._lock:
            st = self._state(client_id, self._clock())
            return max(0, per_day - st.tokens - st.reserved)

    def reserve(self, client_id: str, tokens: int, per_day: int | None, who: str = "") -> TokenReservation:
        """Hold `tokens` for one call while anything of today's `per_day` is neither used nor reserved.

        Raises QuotaExceeded (data: retry_after, limit, left, used, reserved) without holding anything; `who` (e.g.
        "tier FREE") is named in its message.
        """
        if tokens < 0:
            raise ValueError("a reservation cannot be negative")
        with self._lock:
            now = self._clock()
            st = self._state(client_id, now)
            if per_day is not None and st.tokens + st.reserved >= per_day:
                raise self._token_quota_error(st, per_day, now, who)
            st.reserved += tokens
            st.dirty = True
            return TokenReservation(client_id, tokens)

    def settle(self, reservation: TokenReservation, used: int) -> bool:
        """Replace the reservation by the `used` tokens; False (and nothing changes) if it was settled before."""
        with self._lock:
            if reservation.settled:
                return False
            reservation.settled = True
            st = self._state(reservation.client_id, self._clock())
            st.reserved = max(0, st.reserved - reservation.tokens)
            st.tokens += max(0, int(used))
            st.dirty = True
            return True

    def check_tokens(self, client_id: str, per_day: int | None, who: str = "") -> None:
        """Raise the QuotaExceeded of `reserve` when this client could not reserve anything now."""
        if per_day is None:
            return
        with self._lock:
            now = self._clock()
            st = self._state(client_id, now)
            if st.tokens + st.reserved >= per_day:
                raise self._token_quota_error(st, per_day, now, who)

    def _token_quota_error(self, st: _State, per_day: int, now: float, who: str) -> QuotaExceeded:
        where = f" for {who}" if who else ""
        held = f", {st.reserved} held by calls in progress" if st.reserved else ""
        return QuotaExceeded(
            f"Daily LLM token quota of {per_day}{where} reached ({st.tokens} used{held}, 0 left)",
            {"retry_after": _retry((st.day + 1) * DAY_SECONDS - now), "limit": per_day, "left": 0,
             "used": st.tokens, "reserved": st.reserved},
        )

    def add_tokens(self, client_id: str, tokens: int) -> None:
        if tokens <= 0:
            return
        with self._lock:
            st = self._state(client_id, self._clock())
            st.tokens += tokens
            st.dirty = True

    def remaining(
        self, client_id: str, rate: int | None, window: float, per_day: int | None, tokens_per_day: int | None
    ) -> Remaining:
        with self._lock:
            now = self._clock()
            st = self._state(client_id, now)
            return Remaining(
                requests_in_window=None if rate is None else max(0, rate - st.in_window(now, window)),
                requests_today=None if per_day is None else max(0, per_day - st.requests),
                llm_tokens_today=(None if tokens_per_day is None
                                  else max(0, tokens_per_day - st.tokens - st.reserved)),
                requests_used_today=st.requests,
                llm_tokens_used_today=st.tokens,
            )

    def usage(self) -> dict[str, dict[str, int]]:
        """Today's use per client that has any."""
        with self._lock:
            now = self._clock()
            today = self._today(now)
            out: dict[str, dict[str, int]] = {}
            for client_id, st in self._states.items():
                requests, tokens = (st.requests, st.tokens) if st.day == today else (0, 0)
                in_window = st.in_window(now, st.window) if st.window else 0
                if requests or tokens or in_window:
                    out[client_id] = {
                        "requests_today": requests, "llm_tokens_today": tokens, "requests_in_window": in_window,
                    }
            return out

    def flush(self, windows: bool = True) -> int:
        """Write changed counters to SQLite; returns how many clients were written.

        With `windows` False, rate windows bigger than a few thousand requests wait for a later flush: they
        are megabytes at high limits, and losing a few seconds of one in a crash only eases the limit.
        """
        with self._flush_lock:
            with self._lock:
                rows: list[tuple[str, int, int, int]] = []
                stamps: list[tuple[str, bytes]] = []
                for client_id, st in self._states.items():
                    if st.dirty:
                        rows.append((client_id, st.day, st.requests, st.tokens + st.reserved))
                        st.dirty = False
                    if st.stamps_dirty and (windows or len(st.stamps) <= _SMALL_WINDOW):
                        stamps.append((client_id, st.ordered().tobytes()))
                        st.stamps_dirty = False
            if not rows and not stamps:
                return 0
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO usage (client_id, day, requests, llm_tokens) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (client_id, day) DO UPDATE SET requests = excluded.requests, "
                    "llm_tokens = excluded.llm_tokens",
                    rows,
                )
                self._conn.executemany(
                    "INSERT INTO rate_windows (client_id, stamps) VALUES (?, ?) "
                    "ON CONFLICT (client_id) DO UPDATE SET stamps = excluded.stamps",
                    stamps,
                )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                with self._lock:  # try again at the next flush
                    for client_id, *_ in rows:
                        if client_id in self._states:
                            self._states[client_id].dirty = True
                    for client_id, _blob in stamps:
                        if client_id in self._states:
                            self._states[client_id].stamps_dirty = True
                raise
            return len({r[0] for r in rows} | {s[0] for s in stamps})

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conn.close()
