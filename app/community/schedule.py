"""The next stream: a time and a note the broadcaster sets, shown on the offline page.

Kept in the store (beside its named secrets, shared by every worker). Times are UTC
everywhere: the page says "20:00 UTC" and "in 2 h 10 min", never a guessed local time, and
the .ics download lets each viewer's calendar put it in their own zone.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from app.community.store import Store

STORE_NAME = "schedule"
MAX_NOTE = 300
MAX_AHEAD = 366 * 86400.0


class ScheduleError(ValueError):
    """A time that is not a UTC time in the future, or a note too long; says which."""


@dataclass(frozen=True)
class Next:
    at: float  # Unix time
    note: str = ""
    chat_open: bool = True  # the chat stays open while offline until then

    def when(self) -> str:
        return datetime.fromtimestamp(self.at, timezone.utc).strftime("%A %-d %B %Y, %H:%M UTC")

    def countdown(self, now: float | None = None) -> str:
        left = int(self.at - (time.time() if now is None else now))
        if left <= 0:
            return "any moment now"
        days, rest = divmod(left, 86400)
        hours, rest = divmod(rest, 3600)
        minutes = rest // 60
        parts = [f"{days} d"] * bool(days) + [f"{hours} h"] * bool(hours)
        parts += [f"{minutes} min"] * bool(minutes or not parts)
        return "in " + " ".join(parts)

    def ics(self, title: str) -> str:
        """An iCalendar file with this one event (RFC 5545: CRLF lines, escaped text)."""
        start = datetime.fromtimestamp(self.at, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        uid = hashlib.sha256(f"{self.at}{title}".encode()).hexdigest()[:24]
        lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//livestream//schedule//EN",
                 "BEGIN:VEVENT", f"UID:{uid}@livestream", f"DTSTAMP:{start}",
                 f"DTSTART:{start}", "DURATION:PT2H", f"SUMMARY:{_text(title)}"]
        if self.note:
            lines.append(f"DESCRIPTION:{_text(self.note)}")
        lines += ["END:VEVENT", "END:VCALENDAR"]
        return "\r\n".join(lines) + "\r\n"


def _text(value: str) -> str:
    """RFC 5545 TEXT: backslash, semicolon, comma and line breaks escaped."""
    return (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


def parse_when(text: str, now: float | None = None) -> float:
    """'2026-12-08T20:00' or '2026-12-08 20:00' (UTC; a trailing Z is fine), in the future."""
    now = time.time() if now is None else now
    try:
        moment = datetime.fromisoformat(text.strip().removesuffix("Z").replace(" ", "T"))
    except ValueError:
        raise ScheduleError(f"{text!r} is not a UTC time such as 2026-12-08T20:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    at = moment.timestamp()
    if not now < at < now + MAX_AHEAD:
        raise ScheduleError("the next stream must be in the future, within a year")
    return at


class ScheduleBook:
    def __init__(self, store: Store):
        self.store = store

    def current(self, now: float | None = None) -> Next | None:
        """The next stream, or None (none set, or its time passed more than 6 h ago)."""
        raw = self.store.get_secret(STORE_NAME)
        if not raw:
            return None
        try:
            planned = Next(**json.loads(raw))
        except (ValueError, TypeError):
            return None
        if planned.at < (time.time() if now is None else now) - 6 * 3600:
            return None
        return planned

    def set(self, at: float, note: str = "", chat_open: bool = True) -> Next:
        note = " ".join(note.split())
        if len(note) > MAX_NOTE:
            raise ScheduleError(f"the note is {len(note)} characters; at most {MAX_NOTE}")
        planned = Next(at, note, chat_open)
        self.store.set_secret(STORE_NAME, json.dumps(asdict(planned)).encode())
        return planned

    def clear(self) -> None:
        self.store.set_secret(STORE_NAME, b"")
