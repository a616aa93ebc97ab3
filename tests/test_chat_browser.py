"""The chat in a real browser: JavaScript off posts and sees messages; JavaScript on gets them
pushed over server-sent events."""
from __future__ import annotations

import time

import pytest
from chat_support import ChatViewer, broadcaster_post

pytestmark = pytest.mark.slow


# this module's chat server: the `server` fixture in conftest.py
CHAT_CONFIG = "[chat]\nmin_interval = 0.1\n"
CHAT_STREAM = "none"  # an offline server: no stream


def test_a_viewer_without_javascript_posts_and_another_sees_it(server, browser):
    poster = browser.new_context(java_script_enabled=False)
    reader = browser.new_context(java_script_enabled=False)
    try:
        reader_page = reader.new_page()
        reader_page.goto(server.url + "/", wait_until="commit")
        reader_frame = reader_page.frame_locator("iframe.messages")
        reader_page.frame_locator("iframe.chat-form").locator("textarea").wait_for()

        page = poster.new_page()
        page.goto(server.url + "/", wait_until="commit")
        form = page.frame_locator("iframe.chat-form")
        form.locator("textarea").fill("typed in a browser <b>without</b> JS")
        form.locator("summary").click()
        form.locator("input[name=name]").fill("NoScript")
        captcha_id = form.locator("input[name=captcha_id]").get_attribute("value")
        form.locator("input[name=captcha]").fill(ChatViewer(server, "x" * 20).answer(captcha_id))
        poster.clear_cookies()  # the token in the form is all it takes; cookies are optional
        sent_at = time.monotonic()
        form.locator("button[type=submit]").click()
        form.locator("p.ok").wait_for(timeout=5000)

        message = reader_frame.locator(".msg", has_text="typed in a browser <b>without</b> JS")
        message.wait_for(timeout=5000)
        assert time.monotonic() - sent_at < 3
        assert "NoScript" in message.inner_text()
        assert message.locator("b").count() == 0  # shown as text, not markup
        assert message.is_visible()  # the newest message is in view without scrolling
    finally:
        poster.close()
        reader.close()


def test_a_viewer_with_javascript_gets_messages_pushed_live(server, browser):
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        page.locator("html[data-chat=live]").wait_for(timeout=5000)
        assert page.locator("iframe.messages").count() == 0  # replaced by the live list
        broadcaster_post(server, "post", message="pushed to <i>JS</i> viewers")
        pushed = page.locator(".chat-live .msg.by-broadcaster",
                              has_text="pushed to <i>JS</i> viewers")
        pushed.wait_for(timeout=3000)
        assert pushed.locator("i").count() == 0
    finally:
        context.close()


def test_the_offline_page_still_refreshes_itself_with_the_live_chat_frame(server, browser):
    """The live chat frame never finishes loading; offline, it closes early so the page's
    meta refresh (which waits for the page to load) can check for the stream again."""
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(server.url + "/", wait_until="commit")
        first = page.evaluate("performance.timeOrigin")  # read by the driver, not the page
        deadline = time.monotonic() + 35
        reloaded = False
        while time.monotonic() < deadline and not reloaded:
            time.sleep(0.5)
            try:
                reloaded = page.evaluate("performance.timeOrigin") != first
            except Exception:  # between two documents
                continue
        assert reloaded, "the offline page did not refresh itself"
    finally:
        context.close()


def test_the_offline_page_checks_again_as_often_as_it_says(server, browser):
    """"This page checks again every N seconds": the time between two reloads is N, not the
    chat frame's lifetime plus N (a meta refresh only counts down once the page has loaded)."""
    import re

    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(server.url + "/", wait_until="commit")
        promised = int(re.search(r"checks again every (\d+) seconds",
                                 page.content()).group(1))
        reloads, origin = [], page.evaluate("performance.timeOrigin")
        deadline = time.monotonic() + 2 * promised + 15
        while time.monotonic() < deadline and len(reloads) < 2:
            time.sleep(0.2)
            try:
                now = page.evaluate("performance.timeOrigin")  # read by the driver
            except Exception:  # between two documents
                continue
            if now != origin:
                reloads.append(now / 1000)
                origin = now
        assert len(reloads) == 2, "the offline page did not refresh itself twice"
        interval = reloads[1] - reloads[0]
        assert promised - 2 < interval < promised + 2.5, (
            f"the page says every {promised} s but reloaded after {interval:.1f} s")
    finally:
        context.close()
