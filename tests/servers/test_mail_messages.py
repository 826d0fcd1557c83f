"""MIME bytes -> what getMessage returns: decoded headers, bodies, numbered attachments, calendar events."""

from __future__ import annotations

import base64
import json
from email.message import EmailMessage

import pytest

from llmbasedos.protocol import errors
from llmbasedos.servers.mail.messages import get_attachment, parse_message, summarize
from tests.support.dovecot import PDF_BYTES, sample_messages

SAMPLES = sample_messages()


def test_rfc2047_headers_are_decoded() -> None:
    msg = parse_message(SAMPLES["unicode"].as_bytes(), max_body=10_000)
    assert msg["headers"]["subject"] == "Réunion à 10h — 会議の件"
    assert msg["headers"]["from"] == "Zoë Ünïcode <zoe@example.org>"
    assert msg["text"] == "Grüße aus Köln — 你好\n" and msg["html"] is None


def test_attachments_numbered_with_sizes() -> None:
    raw = SAMPLES["attachments"].as_bytes()
    msg = parse_message(raw, max_body=10_000)
    assert [(a["index"], a["filename"], a["size"]) for a in msg["attachments"]] == [
        (0, "report.pdf", len(PDF_BYTES)), (1, "données été.csv", len("Zahl;Wert\nÄpfel;3\n".encode()))]
    assert base64.b64decode(get_attachment(raw, 0)["content_base64"]) == PDF_BYTES
    with pytest.raises(errors.NotFound, match="no attachment 5 \\(it has 2\\)"):
        get_attachment(raw, 5)


def test_body_is_cut_at_max_body() -> None:
    msg = parse_message(SAMPLES["alternative"].as_bytes(), max_body=5)
    assert msg["text"] == "The p" and msg["truncated"] is True


def test_html_only_and_attached_message() -> None:
    inner = SAMPLES["plain"]
    m = EmailMessage()
    m["Subject"] = "fwd"
    m.set_content("<p>see below</p>", subtype="html")
    m.add_attachment(inner)
    msg = parse_message(m.as_bytes(), max_body=10_000)
    assert msg["text"] is None and msg["html"] == "<p>see below</p>\n"
    (att,) = msg["attachments"]
    assert att["content_type"] == "message/rfc822"
    assert b"Plain hello" in base64.b64decode(get_attachment(m.as_bytes(), 0)["content_base64"])


def test_unknown_charset_and_raw_8bit_headers_do_not_break() -> None:
    raw = ("Subject: caf\xe9 \xff\r\nFrom: x@example.org\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\n"
           "body \xe9\r\n").encode("latin-1")
    msg = parse_message(raw, max_body=10_000)
    json.dumps(msg)  # strings are valid Unicode, whatever the bytes were
    assert msg["headers"]["subject"].startswith("caf")
    assert msg["text"].startswith("body")


def test_broken_calendar_part_is_reported_not_fatal() -> None:
    m = EmailMessage()
    m["Subject"] = "bad invite"
    m.set_content("hi")
    m.add_attachment(b"BEGIN:VCALENDAR\nnot really\n", maintype="text", subtype="calendar", filename="x.ics")
    msg = parse_message(m.as_bytes(), max_body=10_000)
    (cal,) = msg["calendar"]
    assert cal["attachment"] == 0 and cal["events"] == [] and "not an iCalendar text" in cal["error"]


def test_summary_from_fetch_data() -> None:
    header = b"Subject: =?utf-8?q?R=C3=A9sum=C3=A9?=\r\nFrom: A <a@example.org>\r\nTo: b@example.org\r\n\r\n"
    fetched = {b"FLAGS": (b"\\Seen",), b"RFC822.SIZE": 1234, b"INTERNALDATE": None,
               b"BODYSTRUCTURE": ((b"text", b"plain", None, None, None, b"7bit", 10, 1), b"mixed"),
               b"BODY[HEADER.FIELDS (SUBJECT FROM TO CC DATE MESSAGE-ID)]": header}
    s = summarize(7, fetched)
    assert s == {"uid": 7, "subject": "Résumé", "from": "A <a@example.org>", "to": ["b@example.org"], "cc": [],
                 "date": None, "message_id": None, "flags": ["\\Seen"], "size": 1234, "has_attachments": False}
    fetched[b"BODYSTRUCTURE"] = ((b"application", b"pdf", (b"name", b"r.pdf"), None, None, b"base64", 10, None,
                                  (b"attachment", (b"filename", b"r.pdf")), None), b"mixed")
    assert summarize(7, fetched)["has_attachments"] is True
