"""The chat frame's entry page: short, complete, and on to the live frame (no JS needed)."""
from __future__ import annotations

import html
import re

import pytest


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from app import create_app
    from app.config import from_dict

    folder = tmp_path_factory.mktemp("enter")
    app = create_app(from_dict({"server": {"state_dir": str(folder / "state")},
                                "stream": {"dir": str(folder / "stream")}}))
    return app.test_client(use_cookies=False)


def test_the_page_frames_the_entry_page_not_the_live_frame(client):
    page = client.get("/").get_data(as_text=True)
    src = html.unescape(re.search(r'<iframe class="messages"[^>]* src="([^"]+)"', page).group(1))
    assert src.startswith("/chat/messages?token=") and src.endswith("&mode=enter")


def test_the_entry_page_is_complete_and_moves_on_to_the_live_frame(client):
    token = client.application.services.identities.new_token()
    response = client.get(f"/chat/messages?token={token}&mode=enter")
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and body.rstrip().endswith("</html>")
    refresh = html.unescape(re.search(r'http-equiv="refresh" content="([^"]+)"', body).group(1))
    assert refresh == f"1; url=/chat/messages?token={token}&first=1"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "-5", "x"])
def test_hostile_lifetimes_are_harmless(client, value):
    response = client.get(f"/chat/messages?token=abcdefghijklmnopqrstuvwx&mode=enter&for={value}")
    assert response.status_code == 200
    refresh = re.search(r'http-equiv="refresh" content="([^"]+)"',
                        response.get_data(as_text=True)).group(1)
    found = re.search(r"for=(\d+)", refresh)
    assert found is None or 1 <= int(found.group(1)) <= 3600
