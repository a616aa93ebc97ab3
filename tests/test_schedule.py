"""The next stream on the offline page (issue 24, item 4): set with `livestream schedule` or
on /broadcaster, shown in UTC and as a countdown with JavaScript off, an .ics to download,
the chat kept closed until then when asked."""
from __future__ import annotations

import html
import re
from datetime import datetime, timedelta, timezone

import pytest
import requests
from chat_support import ChatViewer, broadcaster_post, chat_server
from firefox import firefox  # noqa: F401 - the shared browser fixture
from support import livestream

from app.community.schedule import Next, ScheduleError, parse_when


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    work = tmp_path_factory.mktemp("schedule")
    server = chat_server(work, work / "no-stream-here").start()
    yield server
    server.stop()


def test_the_offline_page_shows_the_next_stream_without_javascript(offline, firefox):  # noqa: F811
    soon = datetime.now(timezone.utc) + timedelta(hours=2, minutes=10, seconds=30)
    at = soon.strftime("%Y-%m-%dT%H:%M")
    done = livestream(offline.config_path, "schedule", "set", at, "--note", "Film club: Stalker",
                      "--chat-closed")
    assert done.returncode == 0, done.stderr
    assert re.search(r"\(in 2 h (9|10) min\)", done.stdout), done.stdout  # whole minutes
    firefox.open(offline.url + "/")  # Tor Browser at Safest: no JavaScript
    shown = firefox.content_script("return document.querySelector('.next-stream').textContent;")
    assert soon.strftime("%H:%M UTC") in shown and re.search(r"in 2 h (9|10) min", shown), shown
    assert "Film club: Stalker" in shown and "The chat opens with the stream" in shown

    calendar = requests.get(offline.url + "/schedule.ics", timeout=5)
    assert calendar.headers["Content-Type"].startswith("text/calendar")
    assert "\r\nDTSTART:" + soon.strftime("%Y%m%dT%H%M00Z") + "\r\n" in calendar.text
    assert "SUMMARY:" in calendar.text and "DESCRIPTION:Film club: Stalker" in calendar.text

    refused = ChatViewer(offline).post("anyone here?")
    assert refused.status_code == 400
    assert "The chat opens with the next stream" in html.unescape(refused.text)

    assert broadcaster_post(offline, "schedule", clear="1").status_code == 303
    assert "next-stream" not in requests.get(offline.url + "/", timeout=5).text
    assert requests.get(offline.url + "/schedule.ics", timeout=5).status_code == 404
    assert ChatViewer(offline).post("open again").status_code == 303


def test_the_broadcaster_form_and_bad_times(offline):
    later = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert broadcaster_post(offline, "schedule", at=later, note="Tomorrow",
                            chat_open="1").status_code == 303
    page = requests.get(offline.url + "/", timeout=5).text
    assert re.search(r"Next stream: <strong>\w+ \d+ \w+ \d{4}, \d\d:\d\d UTC</strong> "
                     r"\(in (1 d|23 h)", page), page
    bad = livestream(offline.config_path, "schedule", "set", "yesterday")
    assert bad.returncode == 2 and "2026-12-08T20:00" in bad.stderr
    with pytest.raises(ScheduleError, match="future"):
        parse_when("2001-01-01T00:00")
    assert Next(1000 + 26 * 3600 + 5 * 60 + 30).countdown(now=1000) == "in 1 d 2 h 5 min"
    assert Next(1000 + 3 * 3600).countdown(now=1000) == "in 3 h"
    assert Next(1000).countdown(now=2000) == "any moment now"
    broadcaster_post(offline, "schedule", clear="1")
