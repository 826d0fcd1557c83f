"""Structured search criteria -> IMAP SEARCH keys, so a client never writes IMAP syntax.

    {"from": "alice", "subject": "réunion", "since": "2025-01-01", "unseen": true}
    -> ["FROM", "alice", "SUBJECT", "réunion", "SINCE", date(2025, 1, 1), "UNSEEN"], charset "UTF-8"

Every value is one argument that imapclient quotes (or sends as a literal when it is 8-bit); a value can
never add keys of its own because control characters, which could end the command line, are refused.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from llmbasedos.protocol import errors

__all__ = ["build_criteria", "SEARCH_KEYS"]

_TEXT = {"from": "FROM", "to": "TO", "cc": "CC", "subject": "SUBJECT", "body": "BODY", "text": "TEXT"}
_DATES = {"since": "SINCE", "before": "BEFORE", "on": "ON"}
_FLAGS = {
    "unseen": ("UNSEEN", "SEEN"),
    "seen": ("SEEN", "UNSEEN"),
    "flagged": ("FLAGGED", "UNFLAGGED"),
    "answered": ("ANSWERED", "UNANSWERED"),
}
_SIZES = {"larger": "LARGER", "smaller": "SMALLER"}
SEARCH_KEYS = frozenset(_TEXT) | frozenset(_DATES) | frozenset(_FLAGS) | frozenset(_SIZES)
_MAX_TEXT = 1000


def build_criteria(search: dict[str, Any] | None, before_uid: int | None = None) -> tuple[list[Any], str | None]:
    """Return (criteria, charset) for `IMAPClient.search`. Raises InvalidParams naming the bad key."""
    search = search or {}
    criteria: list[Any] = []
    charset: str | None = None
    for key, value in search.items():
        where = f"params.search.{key}"
        if key in _TEXT:
            if not isinstance(value, str) or not value:
                raise errors.InvalidParams(f"{where}: must be a non-empty string")
            if len(value) > _MAX_TEXT:
                raise errors.InvalidParams(f"{where}: at most {_MAX_TEXT} characters")
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
                raise errors.InvalidParams(f"{where}: control characters are not allowed")
            if not value.isascii():
                charset = "UTF-8"
            criteria += [_TEXT[key], value]
        elif key in _DATES:
            if not isinstance(value, str):
                raise errors.InvalidParams(f"{where}: must be a date like 2025-01-31")
            try:
                day = date.fromisoformat(value)
            except ValueError:
                raise errors.InvalidParams(f"{where}: {value!r} is not a date like 2025-01-31") from None
            criteria += [_DATES[key], day]
        elif key in _FLAGS:
            if not isinstance(value, bool):
                raise errors.InvalidParams(f"{where}: must be true or false")
            yes, no = _FLAGS[key]
            criteria.append(yes if value else no)
        elif key in _SIZES:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise errors.InvalidParams(f"{where}: must be a number of bytes")
            criteria += [_SIZES[key], value]
        else:
            raise errors.InvalidParams(f"{where}: unknown criterion; known: {', '.join(sorted(SEARCH_KEYS))}")
    if before_uid is not None:
        if before_uid <= 1:
            return [], charset  # nothing can come before UID 1
        criteria += ["UID", f"1:{before_uid - 1}"]
    return criteria or ["ALL"], charset
