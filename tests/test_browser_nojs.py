"""What a viewer with JavaScript off sees, in a real browser."""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow


def video_time(page) -> float:
    # Evaluated by the test driver, not by the page: the page itself runs no script.
    return page.eval_on_selector("video", "v => v.currentTime")


def test_video_plays_with_javascript_off(live_server, nojs_page):
    nojs_page.goto(live_server.url + "/", wait_until="domcontentloaded")  # live chat: no "load"
    assert nojs_page.locator("video").count() == 1
    deadline = time.monotonic() + 20
    first = None
    while time.monotonic() < deadline:
        now = video_time(nojs_page)
        if first is None and now > 0:
            first = now
        if first is not None and now > first + 1.5:
            break
        time.sleep(0.25)
    assert first is not None, "the video never started"
    assert video_time(nojs_page) > first + 1.5, "currentTime did not advance"
    error = nojs_page.eval_on_selector("video", "v => v.error && v.error.code")
    assert error is None


def test_info_frame_shows_title_live_light_and_uptime(live_server, nojs_page, tmp_path):
    nojs_page.goto(live_server.url + "/", wait_until="domcontentloaded")  # live chat: no "load"
    frame = nojs_page.frame_locator("iframe.info")
    assert frame.locator(".status").inner_text() == "LIVE"
    assert frame.locator(".title").inner_text() == "Live stream"
    clock = frame.locator(".uptime")
    first = clock.screenshot(path=str(tmp_path / "uptime1.png"))
    time.sleep(2.2)
    second = clock.screenshot(path=str(tmp_path / "uptime2.png"))
    assert first != second, "uptime does not count without JavaScript"
