"""Messages as clients see them: summaries from IMAP FETCH data, and full messages from their MIME bytes.

Pure functions, no I/O. Headers are decoded (RFC 2047 encoded words, RFC 2231 file names), so non-ASCII text
arrives as text. Attachments are numbered from 0 in the order of the MIME tree: every leaf part that is not
the chosen plain or HTML body (an attached message counts as one part).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from llmbasedos.protocol import errors
from llmbasedos.servers.mail.ical import IcsError, parse_ics

__all__ = ["SUMMARY_FETCH", "summarize", "parse_message", "get_attachment", "flag_names", "clean_text",
           "decode_base64"]

_SUMMARY_HEADERS = "SUBJECT FROM TO CC DATE MESSAGE-ID"
SUMMARY_FETCH = ["FLAGS", "RFC822.SIZE", "INTERNALDATE", "BODYSTRUCTURE",
                 f"BODY.PEEK[HEADER.FIELDS ({_SUMMARY_HEADERS})]"]
_CALENDAR_TYPES = {"text/calendar", "application/ics"}


def clean_text(value: str) -> str:
    """Undo the surrogate escapes the email package uses for undecodable bytes (JSON cannot carry them)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def flag_names(flags: Any) -> list[str]:
    out = []
    for f in flags or ():
        out.append(f.decode("utf-8", "replace") if isinstance(f, bytes) else str(f))
    return out


def _parse_bytes(raw: bytes, headers_only: bool = False) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw, headersonly=headers_only)
    assert isinstance(msg, EmailMessage)
    return msg


def _header(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
    except (ValueError, IndexError, TypeError):  # a malformed header: fall back to its raw text
        value = msg.get_all(name, failobj=[None])[0] if hasattr(msg, "get_all") else None
    if value is None:
        return None
    return clean_text(" ".join(str(value).split()))


def _addresses(msg: Message, name: str) -> list[str]:
    try:
        header = msg.get(name)
        if header is None:
            return []
        addrs = getattr(header, "addresses", None)
        if addrs is not None:
            return [clean_text(str(a)) for a in addrs]
        return [clean_text(str(header))]
    except (ValueError, IndexError, TypeError):
        raw = _header(msg, name)
        return [raw] if raw else []


def _date(msg: Message, fallback: Any) -> str | None:
    try:
        header = msg.get("date")
        dt = getattr(header, "datetime", None)
        if isinstance(dt, datetime):
            return dt.isoformat()
    except (ValueError, IndexError, TypeError):
        pass
    return fallback.isoformat() if isinstance(fallback, datetime) else None


def _structure_has_attachment(node: Any) -> bool:
    # BODYSTRUCTURE is deeply nested tuples whose layout varies by part type; an ATTACHMENT disposition or a
    # FILENAME parameter anywhere in it is what mail clients show as a paper clip.
    if isinstance(node, bytes):
        return node.lower() in (b"attachment", b"filename")
    if isinstance(node, (list, tuple)):
        return any(_structure_has_attachment(item) for item in node)
    return False


def summarize(uid: int, fetched: dict[bytes, Any]) -> dict[str, Any]:
    header_bytes = b""
    for key, value in fetched.items():
        if key.upper().startswith(b"BODY[HEADER") and isinstance(value, bytes):
            header_bytes = value
    msg = _parse_bytes(header_bytes, headers_only=True)
    return {
        "uid": uid,
        "subject": _header(msg, "subject") or "",
        "from": ", ".join(_addresses(msg, "from")),
        "to": _addresses(msg, "to"),
        "cc": _addresses(msg, "cc"),
        "date": _date(msg, fetched.get(b"INTERNALDATE")),
        "message_id": _header(msg, "message-id"),
        "flags": flag_names(fetched.get(b"FLAGS")),
        "size": int(fetched.get(b"RFC822.SIZE") or 0),
        "has_attachments": _structure_has_attachment(fetched.get(b"BODYSTRUCTURE")),
    }


def _leaves(part: EmailMessage) -> Iterator[EmailMessage]:
    if part.get_content_maintype() == "multipart":
        for sub in part.iter_parts():
            yield from _leaves(sub)  # type: ignore[arg-type]
    else:
        yield part


def _payload(part: EmailMessage) -> bytes:
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return inner[0].as_bytes(policy=policy.default)
        return b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _text_of(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):  # an unknown charset: keep what UTF-8 can read
        content = _payload(part).decode("utf-8", "replace")
    text = content if isinstance(content, str) else str(content)
    # Mail travels with CRLF line ends; clients (and LLMs) want plain newlines.
    return clean_text(text.replace("\r\n", "\n"))


def _split(msg: EmailMessage) -> tuple[EmailMessage | None, EmailMessage | None, list[EmailMessage]]:
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    plain = plain if isinstance(plain, EmailMessage) and plain.get_content_type() == "text/plain" else None
    html = html if isinstance(html, EmailMessage) and html.get_content_type() == "text/html" else None
    rest = [p for p in _leaves(msg) if p is not plain and p is not html]
    return plain, html, rest


def _attachment_info(index: int, part: EmailMessage) -> dict[str, Any]:
    filename = part.get_filename()
    return {
        "index": index,
        "filename": clean_text(filename) if filename else None,
        "content_type": part.get_content_type(),
        "size": len(_payload(part)),
        "disposition": part.get_content_disposition(),
        "content_id": _header(part, "content-id"),
    }


def _is_calendar(part: EmailMessage) -> bool:
    filename = (part.get_filename() or "").lower()
    return part.get_content_type() in _CALENDAR_TYPES or filename.endswith(".ics")


def parse_message(raw: bytes, *, max_body: int) -> dict[str, Any]:
    """Headers, bodies (cut at `max_body` characters), attachments and calendar events of one message."""
    msg = _parse_bytes(raw)
    plain, html, rest = _split(msg)
    result: dict[str, Any] = {
        "headers": {
            "subject": _header(msg, "subject") or "",
            "from": ", ".join(_addresses(msg, "from")),
            "to": _addresses(msg, "to"),
            "cc": _addresses(msg, "cc"),
            "reply_to": _addresses(msg, "reply-to"),
            "date": _date(msg, None),
            "message_id": _header(msg, "message-id"),
            "in_reply_to": _header(msg, "in-reply-to"),
            "references": _header(msg, "references"),
        },
        "text": None,
        "html": None,
        "truncated": False,
        "attachments": [_attachment_info(i, p) for i, p in enumerate(rest)],
        "calendar": [],
    }
    for key, part in (("text", plain), ("html", html)):
        if part is not None:
            body = _text_of(part)
            if len(body) > max_body:
                body = body[:max_body]
                result["truncated"] = True
            result[key] = body
    for i, part in enumerate(rest):
        if _is_calendar(part):
            try:
                cal = parse_ics(_payload(part))
                result["calendar"].append({"attachment": i, **cal})
            except IcsError as exc:
                result["calendar"].append({"attachment": i, "error": str(exc), "method": None, "events": []})
    return result


def get_attachment(raw: bytes, index: int) -> dict[str, Any]:
    """One attachment with its content in base64. Raises NotFound for an index the message lacks."""
    _, _, rest = _split(_parse_bytes(raw))
    if not 0 <= index < len(rest):
        raise errors.NotFound(f"the message has no attachment {index} (it has {len(rest)})")
    part = rest[index]
    data = _payload(part)
    return {**_attachment_info(index, part), "content_base64": base64.b64encode(data).decode("ascii")}


def decode_base64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise errors.InvalidParams(f"{where}: not valid base64") from None
