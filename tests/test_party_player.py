"""The watch party seen by the JavaScript (MSE) player in a real headless Chromium: two
viewers stay within 0.5 s of each other across a pause and a seek (the sync test's bar)."""
from __future__ import annotations

import subprocess
import time

import pytest
from chat_support import chat_server
from support import PROJECT, cli, wait_for
from test_party import film
from test_player import open_viewer, state, stream_time_at, wait_playing  # noqa: F401

from app.sources.party import control

pytestmark = pytest.mark.slow


def apart(first, second) -> float:
    a, b = state(first), state(second)
    instant = max(a["now"], b["now"])
    return abs(stream_time_at(a, instant) - stream_time_at(b, instant))


def notice(page) -> str:
    """The watch party's line in the JavaScript live bar; "" while hidden."""
    return page.evaluate("(n => n && !n.hidden ? n.textContent : '')"
                         "(document.querySelector('.live-info .notice'))")


def test_mse_viewers_stay_together_across_pause_and_seek(tmp_path, open_viewer):  # noqa: F811
    clip = film(tmp_path / "film.mkv", 60, 48000)
    server = chat_server(tmp_path, tmp_path / "stream").start()
    play = subprocess.Popen(cli(server.config_path, "play", str(clip), "--party", "--preset",
                                "ultrafast", "--bitrate", "300"), cwd=PROJECT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state_dir = tmp_path / "state"
    try:
        server.wait_live(30)
        first = open_viewer(server.url + "/")
        wait_playing(first)
        second = open_viewer(server.url + "/")
        wait_playing(second)
        time.sleep(2)

        control.send(state_dir, "pause")
        for page in (first, second):  # the live bar says so (it replaces the no-JS info frame)
            wait_for(lambda page=page: "Paused by the host" in notice(page), 10, 0.1,
                     "the paused notice")
        time.sleep(6)
        stalled = state(first)["time"]
        time.sleep(1)
        assert state(first)["time"] - stalled < 0.2, "the picture went on while paused"

        control.send(state_dir, "resume")
        wait_for(lambda: state(first)["time"] > stalled + 1.5
                 and state(second)["time"] > stalled + 1.5, 20, 0.1, "both to play again")
        wait_for(lambda: notice(first) == "", 5, 0.1, "the notice to go")
        gaps = [apart(first, second) for _ in range(4) if time.sleep(0.5) is None]
        assert max(gaps[-2:]) < 0.5, f"apart by {gaps} s after resume"

        control.send(state_dir, "seek", "-10")
        moved = state(first)["time"]
        wait_for(lambda: state(first)["time"] > moved + 2.5
                 and state(second)["time"] > moved + 2.5, 20, 0.1, "both past the seek")
        gaps = [apart(first, second) for _ in range(4) if time.sleep(0.5) is None]
        assert max(gaps[-2:]) < 0.5, f"apart by {gaps} s after a seek"
    finally:
        play.terminate()
        play.wait(15)
        server.stop()
