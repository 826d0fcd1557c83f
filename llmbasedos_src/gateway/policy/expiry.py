"""When a token expires, as a person writes it on the command line: a duration or an ISO date/time.

    30d, 12h, 45m, 90s, 2w          from now
    2026-12-31                      through that day (UTC): it expires at the next midnight UTC
    2026-12-31T18:00, ...+02:00     at that instant (UTC when no offset is given)
"""

from __future__ import annotations

import datetime as dt
import re
import time

__all__ = ["ExpiryError", "parse_expiry", "describe_expiry"]

_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ExpiryError(ValueError):
    """An expiry that is neither a duration nor an ISO date/time, or not in the future."""


def parse_expiry(text: str, now: float | None = None) -> float:
    """The Unix time `text` names; ExpiryError (naming the problem) when it is malformed or not in the future."""
    now = time.time() if now is None else now
    match = _DURATION.match(text)
    if match:
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        if seconds <= 0:
            raise ExpiryError(f"--expires {text!r} is not in the future: give a duration above zero")
        return now + seconds
    value = text.strip()
    try:
        if len(value) == 10:  # a date alone means "valid through that day", as a licence's expiry does
            day = dt.date.fromisoformat(value)
            instant = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
        else:
            instant = dt.datetime.fromisoformat(value)
            if instant.tzinfo is None:
                instant = instant.replace(tzinfo=dt.UTC)
    except ValueError:
        raise ExpiryError(
            f"--expires {text!r} is neither a duration (30d, 12h, 45m, 90s, 2w) nor an ISO date or date/time"
        ) from None
    when = instant.timestamp()
    if when <= now:
        raise ExpiryError(f"--expires {text!r} is in the past")
    return when


def describe_expiry(expires: float | None) -> str:
    """For listings: `never`, or the UTC time to the second."""
    if expires is None:
        return "never"
    return dt.datetime.fromtimestamp(expires, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
