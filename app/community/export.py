"""The chat as a file for the broadcaster: JSON, CSV or plain text, hidden messages marked.

Times are UTC (the server never guesses a time zone). What is written is what viewers saw
(name, tag, tripcode, text) plus whether the broadcaster hid it; never a viewer's internal id.
"""
from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterable
from datetime import datetime, timezone

from app.community.store import Message

FORMATS = {"json": "application/json", "csv": "text/csv", "txt": "text/plain"}
FIELDS = ("id", "time", "name", "tag", "tripcode", "broadcaster", "hidden", "text")
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SinceError(ValueError):
    """--since / ?since= that is neither a UTC time nor a duration."""


def parse_since(text: str, now: float | None = None) -> float:
    """'2h', '90m', '1d', '30s' (that long ago) or a UTC time '2026-12-06T20:00[:00][Z]'."""
    text = text.strip()
    if not text:
        return 0.0
    found = DURATION.fullmatch(text)
    if found:
        return (time.time() if now is None else now) - float(found[1]) * UNITS[found[2]]
    try:
        moment = datetime.fromisoformat(text.removesuffix("Z"))
    except ValueError:
        raise SinceError(f"{text!r} is neither a duration (30m, 2h, 1d) nor a UTC time "
                         "(2026-12-06T20:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def utc(created: float) -> str:
    return datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rows(messages: Iterable[Message]) -> list[dict]:
    return [{"id": m.id, "time": utc(m.created), "name": m.name, "tag": m.tag,
             "tripcode": m.tripcode, "broadcaster": m.broadcaster, "hidden": m.hidden,
             "text": m.body} for m in messages]


def export(messages: Iterable[Message], fmt: str) -> str:
    """The messages in `fmt` (a key of FORMATS)."""
    table = rows(messages)
    if fmt == "json":
        return json.dumps(table, ensure_ascii=False, indent=1) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in table:
            # a cell starting with = + - @ would be run as a formula by a spreadsheet
            writer.writerow({key: ("'" + value if isinstance(value, str)
                                   and value[:1] in ("=", "+", "-", "@") else value)
                             for key, value in row.items()})
        return out.getvalue()
    if fmt == "txt":
        lines = []
        for row in table:
            who = f"{row['name']} #{row['tag']}" + (f" !{row['tripcode']}"
                                                    if row["tripcode"] else "")
            hidden = " [hidden]" if row["hidden"] else ""
            text = row["text"].replace("\n", "\n    ")
            lines.append(f"{row['time']} {who}{hidden}: {text}")
        return "\n".join(lines) + ("\n" if lines else "")
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
