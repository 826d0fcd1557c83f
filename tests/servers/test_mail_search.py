"""Structured search -> IMAP SEARCH keys: one argument per value, never syntax from the caller."""

from __future__ import annotations

from datetime import date

import pytest

from llmbasedos.protocol import errors
from llmbasedos.servers.mail.search import build_criteria


def test_empty_search_is_all() -> None:
    assert build_criteria(None) == (["ALL"], None)
    assert build_criteria({}) == (["ALL"], None)


def test_every_kind_of_key() -> None:
    criteria, charset = build_criteria({"from": "alice", "subject": "hello world", "since": "2025-01-02",
                                        "before": "2025-02-01", "unseen": True, "flagged": False,
                                        "larger": 100})
    assert criteria == ["FROM", "alice", "SUBJECT", "hello world", "SINCE", date(2025, 1, 2),
                        "BEFORE", date(2025, 2, 1), "UNSEEN", "UNFLAGGED", "LARGER", 100]
    assert charset is None


def test_non_ascii_asks_for_utf8() -> None:
    assert build_criteria({"subject": "réunion"}) == (["SUBJECT", "réunion"], "UTF-8")


def test_paging_by_uid() -> None:
    assert build_criteria({"seen": False}, before_uid=10) == (["UNSEEN", "UID", "1:9"], None)
    assert build_criteria(None, before_uid=1) == ([], None)  # nothing before the first UID


@pytest.mark.parametrize(("search", "message"), [
    ({"subject": "a\r\nA1 DELETE INBOX"}, "params.search.subject: control characters"),
    ({"from": "\x00"}, "params.search.from: control characters"),
    ({"text": ""}, "params.search.text: must be a non-empty string"),
    ({"text": 5}, "params.search.text: must be a non-empty string"),
    ({"since": "yesterday"}, "params.search.since: 'yesterday' is not a date"),
    ({"unseen": "yes"}, "params.search.unseen: must be true or false"),
    ({"larger": -1}, "params.search.larger"),
    ({"header": "X-Spam"}, "params.search.header: unknown criterion"),
])
def test_bad_values_are_invalid_params(search: dict[str, object], message: str) -> None:
    with pytest.raises(errors.InvalidParams, match=message):
        build_criteria(search)
