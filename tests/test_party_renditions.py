"""The watch party with two renditions: the lower one continues across a pause and a seek
like the top one (numbering goes on, one init, timestamps only forward, online while paused)."""
from __future__ import annotations

import subprocess
import time

import pytest
import requests
from chat_support import chat_server
from support import PROJECT, cli, wait_for
from test_party import Viewer, film, packet_times

from app.sources.party import control
from app.stream import playlist as hls

RENDITIONS = ('[[stream.renditions]]\nname = "source"\n'
              '[[stream.renditions]]\nname = "low"\nheight = 120\nvideo_kbps = 150\n'
              'audio_kbps = 48\n')


@pytest.mark.slow
def test_lower_rendition_continues_across_pause_and_seek(tmp_path):
    clip = film(tmp_path / "clip.mkv", 20)
    stream_dir = tmp_path / "stream"
    server = chat_server(tmp_path, stream_dir, RENDITIONS).start()
    log = (tmp_path / "play.log").open("wb")
    play = subprocess.Popen(cli(server.config_path, "play", str(clip), "--party", "--preset",
                                "ultrafast", "--bitrate", "300"), cwd=PROJECT, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    state = tmp_path / "state"
    seen: list[int] = []
    try:
        server.wait_live(30)
        assert (stream_dir / "master.m3u8").exists()
        wait_for(lambda: (stream_dir / "low.m3u8").exists(), 15, what="the low playlist")
        viewer = Viewer(server.url + "/stream.mp4?quality=low", tmp_path / "low.mp4")
        viewer.start()
        wait_for(lambda: viewer.arrivals, 15, what="the low rendition's first bytes")
        time.sleep(2.5)
        control.send(state, "pause")
        time.sleep(7)  # past the offline rule: only the hold marker keeps it online
        assert viewer.is_alive() and viewer.error is None, "the low response ended while paused"
        assert requests.get(server.url + "/api/status", timeout=5).json()["online"]
        seen += [e.sequence for e in hls.parse((stream_dir / "low.m3u8").read_text()).entries]
        control.send(state, "resume")
        time.sleep(4)
        control.send(state, "seek", "-3")
        time.sleep(4)
        seen += [e.sequence for e in hls.parse((stream_dir / "low.m3u8").read_text()).entries]
        assert play.wait(60) == 0
        viewer.join(20)
        assert not viewer.is_alive() and viewer.error is None, viewer.error
    finally:
        if play.poll() is None:
            play.terminate()
            play.wait(10)
        log.close()
        server.stop()
    assert max(seen) > min(seen) + 3, seen  # later runs numbered on, not from 0 again
    data = (tmp_path / "low.mp4").read_bytes()
    assert data.count(b"ftyp") == 1, "more than one init segment reached the low viewer"
    times = packet_times(tmp_path / "low.mp4")
    assert len(times) == 2, times.keys()
    for index, stamps in times.items():
        backwards = [(a, b) for a, b in zip(stamps, stamps[1:], strict=False) if b < a]
        assert not backwards, f"stream {index} goes back: {backwards[:3]}"
    assert times[0][-1] - times[0][0] > 8
    height = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0",
                             "-show_entries", "stream=height", "-of", "csv=p=0",
                             str(tmp_path / "low.mp4")], capture_output=True, text=True,
                            check=True)
    assert height.stdout.strip() == "120", height.stdout
