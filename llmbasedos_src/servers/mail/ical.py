"""iCalendar text -> plain events, with the `icalendar` library. Pure: no I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from icalendar import Calendar

__all__ = ["IcsError", "parse_ics", "MAX_ICS"]

MAX_ICS = 4 * 1024 * 1024


class IcsError(ValueError):
    """The text is not usable iCalendar; the message says why."""


def parse_ics(text: str | bytes) -> dict[str, Any]:
    """Return {"method", "events": [...]} for a VCALENDAR text. Raises IcsError."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if len(text) > MAX_ICS:
        raise IcsError(f"the calendar is larger than {MAX_ICS} characters")
    if "BEGIN:VCALENDAR" not in text.upper():
        raise IcsError("not an iCalendar text: no BEGIN:VCALENDAR")
    try:
        cal = Calendar.from_ical(text)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise IcsError(f"not an iCalendar text: {_short(exc)}") from None
    if getattr(cal, "name", None) != "VCALENDAR":
        raise IcsError("not an iCalendar text: the outer component must be VCALENDAR")
    events = []
    for i, ev in enumerate(cal.walk("VEVENT")):
        try:
            events.append(_event(ev))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            uid = ev.get("UID")
            label = f"event {i} (UID {uid})" if uid else f"event {i}"
            raise IcsError(f"{label}: {_short(exc)}") from None
    method = cal.get("METHOD")
    return {"method": str(method) if method is not None else None, "events": events}


def _event(ev: Any) -> dict[str, Any]:
    start_prop = ev.get("DTSTART")
    start, tz, all_day = _when(start_prop)
    end_prop = ev.get("DTEND")
    if end_prop is not None:
        end, _, _ = _when(end_prop)
    elif ev.get("DURATION") is not None and start_prop is not None:
        end = _iso(start_prop.dt + ev.get("DURATION").dt)
    elif all_day and start_prop is not None:
        end = _iso(start_prop.dt + timedelta(days=1))  # RFC 5545: a date without end lasts the day
    else:
        end = None
    rrule = ev.get("RRULE")
    if isinstance(rrule, list):
        rrule = rrule[0] if rrule else None
    organizer = ev.get("ORGANIZER")
    attendees = ev.get("ATTENDEE") or []
    if not isinstance(attendees, list):
        attendees = [attendees]
    return {
        "uid": _text(ev.get("UID")),
        "summary": _text(ev.get("SUMMARY")),
        "start": start,
        "end": end,
        "all_day": all_day,
        "timezone": tz,
        "location": _text(ev.get("LOCATION")),
        "organizer": _address(organizer) if organizer is not None else None,
        "attendees": [_address(a) for a in attendees],
        "rrule": rrule.to_ical().decode("ascii", "replace") if rrule is not None else None,
        "exdates": _exdates(ev.get("EXDATE")),
        "recurrence_id": _when(ev.get("RECURRENCE-ID"))[0],
        "description": _text(ev.get("DESCRIPTION")),
        "status": _text(ev.get("STATUS")),
        "sequence": int(ev.get("SEQUENCE")) if ev.get("SEQUENCE") is not None else None,
    }


def _when(prop: Any) -> tuple[str | None, str | None, bool]:
    if prop is None:
        return None, None, False
    value = prop.dt
    if isinstance(value, datetime):
        tzid = prop.params.get("TZID") if hasattr(prop, "params") else None
        return _iso(value), str(tzid) if tzid else _tz_name(value), False
    if isinstance(value, date):
        return value.isoformat(), None, True
    raise ValueError(f"unsupported date value {value!r}")


def _tz_name(value: datetime) -> str | None:
    tz = value.tzinfo
    if tz is None:
        return None  # floating time: the same wall clock in every zone
    if value.utcoffset() == timedelta(0) and (tz is UTC or value.tzname() in ("UTC", "Z")):
        return "UTC"
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)
    return str(key) if key else value.tzname()


def _iso(value: date) -> str:
    return value.isoformat()


def _exdates(prop: Any) -> list[str]:
    if prop is None:
        return []
    out: list[str] = []
    for item in prop if isinstance(prop, list) else [prop]:
        for d in getattr(item, "dts", []):
            out.append(_iso(d.dt))
    return out


def _address(prop: Any) -> dict[str, Any]:
    value = str(prop)
    email = value[7:] if value.lower().startswith("mailto:") else value
    params = getattr(prop, "params", {})
    out: dict[str, Any] = {"email": email, "name": _text(params.get("CN"))}
    for key, name in (("ROLE", "role"), ("PARTSTAT", "status")):
        if params.get(key):
            out[name] = str(params[key])
    if params.get("RSVP"):
        out["rsvp"] = str(params["RSVP"]).upper() == "TRUE"
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0] if value else None
        if value is None:
            return None
    return str(value)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or exc.__class__.__name__
