"""iCalendar text -> events (the pure parser behind mcp.mail.parseIcalendar and invitations in messages)."""

from __future__ import annotations

import pytest

from llmbasedos.servers.mail.ical import IcsError, parse_ics
from tests.support.dovecot import INVITE_ICS


def _cal(*events: str) -> str:
    body = "".join(f"BEGIN:VEVENT\n{e.strip()}\nEND:VEVENT\n" for e in events)
    return f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//t//EN\n{body}END:VCALENDAR\n"


def test_invitation() -> None:
    cal = parse_ics(INVITE_ICS)
    assert cal["method"] == "REQUEST"
    (ev,) = cal["events"]
    assert ev["summary"] == "Réunion hebdomadaire" and ev["location"] == "Salle Lovelace"
    assert (ev["start"], ev["end"], ev["timezone"], ev["all_day"]) == (
        "2025-01-10T10:00:00+01:00", "2025-01-10T11:00:00+01:00", "Europe/Paris", False)
    assert ev["rrule"] == "FREQ=WEEKLY;COUNT=10;BYDAY=FR"
    assert ev["organizer"] == {"email": "alice@example.org", "name": "Alice Martin"}
    assert ev["attendees"][0] == {"email": "bob@example.org", "name": "Bob Stone", "role": "REQ-PARTICIPANT",
                                  "status": "NEEDS-ACTION", "rsvp": True}
    assert ev["description"] == "Ordre du jour:\n1. chiffres\n2. questions"


def test_all_day_utc_duration_and_floating() -> None:
    cal = parse_ics(_cal("UID:a\nDTSTART;VALUE=DATE:20250301",
                         "UID:b\nDTSTART:20250301T120000Z\nDURATION:PT1H30M",
                         "UID:c\nDTSTART:20250301T090000\nDTEND:20250301T093000"))
    a, b, c = cal["events"]
    assert (a["start"], a["end"], a["all_day"], a["timezone"]) == ("2025-03-01", "2025-03-02", True, None)
    assert (b["start"], b["end"], b["timezone"]) == ("2025-03-01T12:00:00+00:00", "2025-03-01T13:30:00+00:00",
                                                     "UTC")
    assert (c["start"], c["end"], c["timezone"]) == ("2025-03-01T09:00:00", "2025-03-01T09:30:00", None)
    assert cal["method"] is None


def test_exdates_and_recurrence_id() -> None:
    (ev,) = parse_ics(_cal("UID:r\nDTSTART:20250106T080000Z\nRRULE:FREQ=DAILY;COUNT=5\n"
                           "EXDATE:20250107T080000Z,20250108T080000Z"))["events"]
    assert ev["exdates"] == ["2025-01-07T08:00:00+00:00", "2025-01-08T08:00:00+00:00"]
    assert ev["recurrence_id"] is None


def test_calendar_without_events() -> None:
    assert parse_ics(_cal()) == {"method": None, "events": []}


@pytest.mark.parametrize(("text", "message"), [
    ("", "no BEGIN:VCALENDAR"),
    ("hello world", "no BEGIN:VCALENDAR"),
    ("BEGIN:VEVENT\nUID:x\nEND:VEVENT\n", "no BEGIN:VCALENDAR"),
    ("BEGIN:VCALENDAR\nthis is junk\n", "not an iCalendar text"),
    (_cal("UID:bad\nDTSTART:garbage"), r"event 0 \(UID bad\)"),
])
def test_junk_is_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(IcsError, match=message):
        parse_ics(text)


def test_bytes_are_accepted() -> None:
    assert parse_ics(INVITE_ICS.encode())["events"][0]["uid"] == "weekly-sync-42@example.org"
