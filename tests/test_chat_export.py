"""`livestream chat export` and the broadcaster's download: every kept message, in UTC, with
hidden ones marked, never a viewer's internal id (issue 24, item 6)."""
from __future__ import annotations

import csv
import io
import json
import re
import time

import requests
from chat_support import BROADCASTER, ChatViewer, broadcaster_post
from support import livestream

CHAT_STREAM = "none"


def test_the_chat_exports_as_json_csv_and_text_with_hidden_messages_marked(server):
    viewer = ChatViewer(server)
    assert viewer.post("first words", tripcode="secret trip").status_code == 303
    time.sleep(1.1)
    assert viewer.post("=HYPERLINK(\"http://x\")").status_code == 303
    time.sleep(1.1)
    assert viewer.post("to be hidden").status_code == 303
    page = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=10).text
    hidden_id = int(re.search(r'id="bm(\d+)"(?:(?!</li>).)*to be hidden', page, re.S).group(1))
    assert broadcaster_post(server, "hide", message_id=hidden_id).status_code == 303

    run = livestream(server.config_path, "chat", "export", "--format", "json")
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    by_text = {row["text"]: row for row in rows}
    assert set(by_text) >= {"first words", "to be hidden", "=HYPERLINK(\"http://x\")"}
    assert by_text["to be hidden"]["hidden"] is True
    assert by_text["first words"]["hidden"] is False and by_text["first words"]["tripcode"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", by_text["first words"]["time"])
    assert all("viewer_id" not in row for row in rows)

    table = list(csv.DictReader(io.StringIO(
        livestream(server.config_path, "chat", "export", "--format", "csv").stdout)))
    formula = next(row for row in table if "HYPERLINK" in row["text"])
    assert formula["text"].startswith("'="), "a spreadsheet would run it as a formula"

    text = livestream(server.config_path, "chat", "export").stdout
    assert re.search(r"Z Anonymous #\w+ \[hidden\]: to be hidden", text)

    # --since: only what is newer (a UTC time, or a duration ago); a bad value is a clear error
    since = by_text["to be hidden"]["time"]
    recent = json.loads(livestream(server.config_path, "chat", "export", "--format", "json",
                                   "--since", since).stdout)
    assert "first words" not in {row["text"] for row in recent}
    assert "to be hidden" in {row["text"] for row in recent}
    today = json.loads(livestream(server.config_path, "chat", "export", "--format", "json",
                                  "--since", "1d").stdout)
    assert {row["text"] for row in today} >= {"first words", "to be hidden"}
    bad = livestream(server.config_path, "chat", "export", "--since", "yesterday")
    assert bad.returncode == 2 and "neither a duration" in bad.stderr

    # the same from /broadcaster, behind its login
    download = requests.get(server.url + "/broadcaster/chat-export",
                            params={"format": "csv"}, auth=BROADCASTER, timeout=10)
    assert download.status_code == 200
    assert download.headers["Content-Disposition"] == 'attachment; filename="chat.csv"'
    assert "to be hidden" in download.text
    assert requests.get(server.url + "/broadcaster/chat-export", timeout=10).status_code == 401
    assert requests.get(server.url + "/broadcaster/chat-export", params={"format": "exe"},
                        auth=BROADCASTER, timeout=10).status_code == 400
