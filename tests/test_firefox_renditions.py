"""Choosing a quality in Firefox ESR (Tor Browser's engine): with JavaScript off by plain links
(Safest level), with JavaScript on by the MSE player's menu (Standard level).

One Firefox for the whole session (tests/firefox.py) and one two-rendition stream and server for
this module (conftest's two_renditions: the top is 320x180, the low rendition 160x90).
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from firefox import firefox  # noqa: F401 - the shared browser fixture
from support import wait_for

pytestmark = pytest.mark.slow

HEIGHTS = {"source": 180, "low": 90}
# Every link and form of the page and of its frames, with the window it loads into.
LINKS = ("var docs = [document].concat(Array.from(document.querySelectorAll('iframe'),"
         " function (f) { return f.contentDocument; }).filter(Boolean));"
         "var out = [];"
         "docs.forEach(function (d) {"
         "  d.querySelectorAll('a[href], form').forEach(function (e) {"
         "    out.push({frame: d === document ? '' : d.URL, url: e.href || e.action,"
         "              target: e.target, chooser: e.hasAttribute('data-quality')});"
         "  });"
         "});"
         "return out;")
FRAMES_SHOWN = ("return Array.from(document.querySelectorAll('iframe')).every(function (f) {"
                " var d = f.contentDocument;"
                " return d && d.URL !== 'about:blank' && d.body && d.body.children.length > 0;"
                "});")
QUALITY_LINKS = ("return Array.from(document.querySelectorAll('p.qualities a'), function (a) {"
                 " return {quality: a.dataset.quality, current: a.getAttribute('aria-current')};"
                 "});")
MENU = ("return Array.from(document.querySelectorAll('#player-controls select.quality option'),"
        " function (o) { return o.value; });")


def page_links(browser) -> list[dict]:
    """The links and forms that load the viewer's own page or video into the top window (those
    that carry the token); the quality links themselves are left out: they change it."""
    links = []
    for link in browser.content_script(LINKS):
        parts = urlsplit(link["url"])
        into_top = link["target"] in ("_top", "_parent") or (
            not link["frame"] and link["target"] in ("", "_self"))
        if into_top and not link["chooser"] and "token" in parse_qs(parts.query):
            links.append({**link, "query": parse_qs(parts.query)})
    return links


def assert_plays(browser, quality: str) -> None:
    """Click play: /stream.mp4 of that quality plays, at that rendition's size, and advances."""
    start = browser.play(timeout=20)
    assert "/stream.mp4?" in start["src"], start
    assert parse_qs(urlsplit(start["src"]).query).get("quality") == (
        [quality] if quality != "source" else None), start
    wait_for(lambda: browser.video()["height"] == HEIGHTS[quality], 10, 0.1,
             f"{quality} pictures")
    wait_for(lambda: browser.video()["time"] > start["time"] + 2, 15, 0.1,
             "the video to advance")


def test_without_javascript_the_low_link_plays_the_low_rendition(two_renditions, firefox):  # noqa: F811
    from marionette_driver.by import By

    _, server = two_renditions
    firefox.open(server.url + "/")
    assert firefox.content_script(QUALITY_LINKS) == [
        {"quality": "", "current": "true"}, {"quality": "low", "current": None}]
    assert "quality=" not in firefox.video()["src"]
    firefox.follow(firefox.client.find_element(By.CSS_SELECTOR,
                                               'p.qualities a[data-quality="low"]'))
    assert parse_qs(urlsplit(firefox.content_script("return document.URL;")).query)[
        "quality"] == ["low"]
    assert firefox.content_script(QUALITY_LINKS)[1] == {"quality": "low", "current": "true"}
    assert_plays(firefox, "low")
    # The choice rides, like the token, on every link into the top window, in the page or in
    # its frames (today the reload link and the external players' links).
    wait_for(lambda: firefox.content_script(FRAMES_SHOWN), 10, 0.1, "the frames' documents")
    links = page_links(firefox)
    assert len(links) >= 3, links
    assert all(link["query"].get("quality") == ["low"] for link in links), links
    # ...so reloading (as after Esc) still plays the low rendition.
    firefox.follow(firefox.client.find_element(By.PARTIAL_LINK_TEXT, "Reload the page"))
    assert_plays(firefox, "low")


def choose(browser, value: str) -> None:
    """Pick `value` in the player's quality menu as a viewer would (a click on the option)."""
    from marionette_driver.by import By

    browser.client.find_element(
        By.CSS_SELECTOR, f"#player-controls select.quality option[value='{value}']").click()


def switch_while_playing(browser, quality: str) -> None:
    """Choose `quality` by hand: it plays at its own size and playback goes on without a
    long stall (the seconds played keep up with the seconds passed, give or take the player's
    gentle rate steering)."""
    before = browser.player()
    choose(browser, quality)
    wait_for(lambda: browser.player()["quality"] == quality, 15, 0.1, f"the switch to {quality}")
    wait_for(lambda: browser.player()["height"] == HEIGHTS[quality], 15, 0.1,
             f"{quality} pictures")
    wait_for(lambda: browser.player()["now"] - before["now"] > 6000, 20, 0.2, "6 s to pass")
    after = browser.player()
    passed = (after["now"] - before["now"]) / 1000
    played = after["time"] - before["time"]
    assert after["state"] == "live" and after["quality"] == quality, after
    assert played > passed - 2.0, f"played {played:.1f} s of {passed:.1f} s across the switch"


def test_with_javascript_the_quality_menu_switches_while_playing(two_renditions,
                                                                 firefox):  # noqa: F811
    _, server = two_renditions
    client = firefox.client
    with client.using_prefs({"javascript.enabled": True, "media.autoplay.default": 0}):
        try:
            firefox.open(server.url + "/", wait_complete=10.0)
            first = wait_for(lambda: (s := firefox.player())["mode"] == "mse"
                             and s["state"] == "live" and s["time"] > 1 and s, 30, 0.2,
                             "the MSE player to play")
            assert first["src"].startswith("blob:"), first
            assert firefox.content_script(MENU) == ["", "source", "low"]
            assert firefox.content_script("return document.getElementById('qualities').hidden;"), \
                "the menu replaces the page's plain quality links"
            switch_while_playing(firefox, "low")
            assert firefox.player()["auto"] == "0", "a choice by hand turns Auto off"
            switch_while_playing(firefox, "source")
            choose(firefox, "")
            wait_for(lambda: firefox.player()["auto"] == "1", 10, 0.2, "Auto again")
        finally:
            client.navigate("about:blank")  # no JS page left running after the pref flips back
