"""The JavaScript player in a real headless Chromium, JavaScript on, against a real stream."""
from __future__ import annotations

import re
import signal
import time
from urllib.parse import urlsplit

import pytest
import requests
from support import wait_for

pytestmark = pytest.mark.slow

STATE_JS = """() => {
  const v = document.querySelector('video.player');
  const root = document.getElementById('player-controls');
  return {src: v ? v.currentSrc : '', time: v ? v.currentTime : 0, rate: v ? v.playbackRate : 1,
          paused: v ? v.paused : true, now: Date.now() / 1000,
          data: Object.assign({}, root.dataset),
          behindText: (root.querySelector('.behind') || {}).textContent || ''};
}"""


@pytest.fixture
def open_viewer(browser):
    """Opens pages, each in its own browser context (its own profile), closed afterwards."""
    contexts = []

    def open_page(url, init_script=None):
        context = browser.new_context()
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        page.goto(url)
        return page

    yield open_page
    for context in contexts:
        context.close()


def state(page) -> dict:
    return page.evaluate(STATE_JS)


def wait_playing(page, mode="mse", timeout=20.0) -> dict:
    """Until the player reports live in `mode` and currentTime has moved on by a second."""
    first = wait_for(lambda: (s := state(page))["data"].get("mode") == mode
                     and s["data"].get("state") == "live" and s["time"] > 0 and s,
                     timeout, 0.1, f"the {mode} player to start")
    wait_for(lambda: state(page)["time"] > first["time"] + 1.0, 10, 0.1, "currentTime to advance")
    return state(page)


def stream_time_at(sample: dict, instant: float) -> float:
    """Where a viewer's stream position was (or will be) at `instant`, from one sample."""
    return sample["time"] + (instant - sample["now"]) * (0 if sample["paused"] else sample["rate"])


def test_mse_player_starts_near_live_and_shows_its_delay(live_server, open_viewer):
    page = open_viewer(live_server.url + "/")
    first = wait_playing(page)
    assert first["src"].startswith("blob:"), "MSE is not in use"
    assert "fallback" not in first["data"]
    time.sleep(2)
    later = state(page)
    assert later["time"] > first["time"] + 1.5, "currentTime did not advance"
    timeline = requests.get(live_server.url + "/api/playlist", timeout=5).json()
    behind = float(later["data"]["behind"])
    assert timeline["delay"] - 0.5 < behind < timeline["delay"] + 1.5
    assert re.fullmatch(r"\d+\.\d s behind live", later["behindText"]), later["behindText"]
    newest = timeline["segments"][-1]
    assert newest["start"] + newest["duration"] - later["time"] < 3.0, "not near the live edge"


def test_two_viewers_end_up_at_the_same_moment(live_server, open_viewer):
    first = open_viewer(live_server.url + "/")
    wait_playing(first)
    time.sleep(3)
    second = open_viewer(live_server.url + "/")
    wait_playing(second)
    differences = []
    for _ in range(6):
        a, b = state(first), state(second)
        instant = max(a["now"], b["now"])
        differences.append(abs(stream_time_at(a, instant) - stream_time_at(b, instant)))
        time.sleep(0.5)
    assert max(differences[-3:]) < 0.5, f"viewers apart by {differences} s of stream time"


def test_scrubbing_back_plays_older_segments_then_back_to_live(live_server, open_viewer):
    page = open_viewer(live_server.url + "/")
    fetched = []
    page.on("request", lambda request: fetched.append(request.url))
    start = wait_playing(page)
    fetched_before = set(fetched)
    timeline = requests.get(live_server.url + "/api/playlist", timeout=5).json()
    goal = max(timeline["segments"][0]["start"] + 0.5, start["time"] - 6.0)
    page.evaluate("""goal => {
      const scrub = document.querySelector('#player-controls .scrub');
      scrub.value = goal;
      scrub.dispatchEvent(new Event('input'));
      scrub.dispatchEvent(new Event('change'));
    }""", goal)
    replay = wait_for(lambda: (s := state(page))["data"].get("state") == "dvr"
                      and abs(s["time"] - goal) < 1.0 and not s["paused"] and s, 10, 0.1,
                      "the player to jump back")
    time.sleep(2)
    later = state(page)
    assert later["time"] > replay["time"] + 1.0, "the older part does not play"
    assert float(later["data"]["behind"]) > 4.0
    older = [url for url in set(fetched) - fetched_before
             if urlsplit(url).path.endswith(".m4s")]
    assert older, "no older segment was fetched"
    page.click("#player-controls .go-live")
    live = wait_for(lambda: (s := state(page))["data"].get("state") == "live"
                    and float(s["data"].get("behind", 99)) < timeline["delay"] + 1.0 and s,
                    10, 0.1, "back to live")
    assert live["time"] > later["time"] + 3.0


def test_a_segment_that_never_arrives_does_not_stop_the_player(live_server, open_viewer):
    """One request lost on the way (a circuit that died under it): the player asks again."""
    page = open_viewer(live_server.url + "/")
    start = wait_playing(page)
    timeline = requests.get(live_server.url + "/api/playlist", timeout=5).json()
    newest = timeline["segments"][-1]  # two segments on: asked for once the player is there
    lost = re.sub(r"\d+(?=\.m4s)", str(newest["sequence"] + 2), newest["uri"])
    held = []

    def hold_the_first(route):
        if held:
            route.continue_()
        else:
            held.append(route)  # never answered: the request hangs like a dead circuit

    page.route(re.compile(re.escape(lost) + r"(\?|$)"), hold_the_first)
    # Route handlers run while Playwright is called: wait through the page, not time.sleep.
    wait_for(lambda: page.evaluate("1") and held, 15, 0.1, f"the player to ask for {lost}")
    page.wait_for_timeout(20000)
    later = state(page)
    print(f"played {later['time'] - start['time']:.1f} s while one segment request hung")
    assert later["data"]["state"] == "live", later
    assert later["data"]["mode"] == "mse", "it did not give up on MSE"
    assert later["time"] - start["time"] > 18, "playback went on past the lost request"


def test_stream_restart_recovers_without_reload(own_stream, open_viewer):
    stream, server = own_stream
    stream.start()
    stream.wait_segments(2)
    server.start()
    server.wait_live()
    page = open_viewer(server.url + "/")
    before = wait_playing(page)
    page.evaluate("() => { window.notReloaded = true; }")
    generation = int(before["data"]["generation"])

    stream.stop(signal.SIGKILL)
    wait_for(lambda: state(page)["data"].get("state") == "offline", 15, 0.2,
             "the player to notice the stream went offline")
    (stream.directory / "title.txt").write_text("Second half\n")
    stream.start()
    wait_for(lambda: int(state(page)["data"].get("generation", 0)) > generation, 30, 0.2,
             "the player to pick up the restarted stream")
    after = wait_playing(page, timeout=20)
    assert page.evaluate("() => window.notReloaded === true"), "the page was reloaded"
    assert after["src"].startswith("blob:")
    assert after["time"] < before["time"] + 60, "still on the old stream's timeline"
    wait_for(lambda: page.inner_text(".live-info .title") == "Second half", 10, 0.2,
             "the title to update from the push channel")
    assert page.title() == "Second half"
    assert page.inner_text(".live-info .status") == "LIVE"


def test_plain_choice_plays_stream_mp4_and_follows_links(live_server, open_viewer):
    page = open_viewer(live_server.url + "/?player=plain")
    playing = wait_playing(page, mode="plain")
    assert urlsplit(playing["src"]).path == "/stream.mp4"
    assert "fallback" not in playing["data"]
    carried = page.evaluate("""() => new Promise(resolve => {
      const link = document.createElement('a');
      link.href = '/info?gen=1';
      const form = document.createElement('form');
      document.body.append(link, form);
      setTimeout(() => resolve([link.href, form.querySelector('input[name=player]')?.value]), 50);
    })""")
    assert "player=plain" in carried[0] and "gen=1" in carried[0]
    assert carried[1] == "plain"
    switch = page.get_attribute("#player-controls .switch-player", "href")
    assert "player=mse" in switch


def test_falls_back_to_stream_mp4_without_mse(live_server, open_viewer):
    no_mse = "Object.defineProperty(window, 'MediaSource', {value: undefined})"
    page = open_viewer(live_server.url + "/", init_script=no_mse)
    playing = wait_playing(page, mode="plain")
    assert urlsplit(playing["src"]).path == "/stream.mp4"
    assert "Media Source" in playing["data"]["fallback"]
    assert page.is_visible("#player-controls .player-note")


def test_page_opened_while_offline_starts_playing_when_the_stream_begins(own_stream, open_viewer):
    stream, server = own_stream
    server.start()
    page = open_viewer(server.url + "/")
    assert page.locator("video").count() == 0
    page.evaluate("() => { window.notReloaded = true; }")
    wait_for(lambda: state(page)["data"].get("state") in ("offline", "ended"), 10, 0.2,
             "the player to say the stream is offline")
    stream.start()
    playing = wait_playing(page, timeout=30)
    assert playing["src"].startswith("blob:")
    assert page.evaluate("() => window.notReloaded === true"), "the page was reloaded"
    assert page.locator(".offline-card").count() == 0
