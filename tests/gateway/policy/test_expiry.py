"""Token expiries as written on the command line (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from llmbasedos.gateway.policy.expiry import ExpiryError, describe_expiry, parse_expiry

NOW = dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 12 * 3600), ("45m", 2700),
                                               ("90s", 90), ("2w", 14 * 86400), (" 1H ", 3600)])
def test_durations_count_from_now(text: str, seconds: int) -> None:
    assert parse_expiry(text, NOW) == NOW + seconds


def test_dates_and_times() -> None:
    # A date alone: valid through that day, UTC.
    assert parse_expiry("2026-12-31", NOW) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()
    assert parse_expiry("2026-12-31T18:00", NOW) == dt.datetime(2026, 12, 31, 18, tzinfo=dt.UTC).timestamp()
    assert parse_expiry("2026-12-31T18:00+02:00", NOW) == dt.datetime(2026, 12, 31, 16,
                                                                     tzinfo=dt.UTC).timestamp()
    assert parse_expiry("2026-12-31T18:00:00Z", NOW) == dt.datetime(2026, 12, 31, 18, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(("text", "message"), [
    ("soon", "neither a duration"), ("30x", "neither a duration"), ("", "neither a duration"),
    ("-5d", "neither a duration"), ("2026-13-01", "neither a duration"), ("0d", "not in the future"),
    ("2026-12-02", "in the past"), ("2026-12-03T07:59", "in the past"),
])
def test_bad_expiries_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ExpiryError, match=message):
        parse_expiry(text, NOW)


def test_describe() -> None:
    assert describe_expiry(None) == "never"
    assert describe_expiry(NOW) == "2026-12-03 08:00:00Z"
