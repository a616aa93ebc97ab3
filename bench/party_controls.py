"""Watch party: time from a host control to the change reaching a no-JS viewer.

A real `livestream serve` and `livestream play --party` on a generated 90 s clip; one viewer
reads /stream.mp4 throughout. Each round presses pause, resume, seek -10 and seek +10 through
the control socket (what `livestream party` and the /broadcaster forms send) and times:
  pause  -> the info frame says "Paused by the host" (and the video stops)
  resume, seek -> the new position's first bytes at the viewer (ffmpeg restarts from the
           position and writes one segment in real time, so about one segment length)
Usage: python bench/party_controls.py [--rounds 3]   (about 20 s per round)
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT / "tests"), str(PROJECT)]

import requests  # noqa: E402
from chat_support import chat_server  # noqa: E402
from support import cli, wait_for  # noqa: E402
from test_party import Viewer, make_clip  # noqa: E402

from app.sources.party import control  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = max(1, min(20, parser.parse_args().rounds))
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        clip = make_clip(work / "film.mkv", 90, "testsrc=size=640x360:rate=25",
                         "sine=f=440:r=48000", ["-c:v", "libx264", "-preset", "ultrafast",
                                                "-pix_fmt", "yuv420p", "-c:a", "aac"])
        server = chat_server(work, work / "stream").start()
        play = subprocess.Popen(cli(server.config_path, "play", str(clip), "--party",
                                    "--preset", "ultrafast", "--bitrate", "600"),
                                cwd=PROJECT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state = work / "state"
        times: dict[str, list[float]] = {"pause": [], "resume": [], "seek -10": [],
                                         "seek +10": []}
        try:
            server.wait_live(30)
            viewer = Viewer(server.url + "/stream.mp4", work / "viewer.mp4")
            viewer.start()
            wait_for(lambda: viewer.arrivals, 10, what="first bytes")
            for _ in range(rounds):
                time.sleep(3)
                pressed = time.monotonic()
                control.send(state, "pause")
                wait_for(lambda: "Paused by the host" in requests.get(
                    server.url + "/info", timeout=5).text, 10, interval=0.01,
                    what="the paused notice")
                times["pause"].append(time.monotonic() - pressed)
                time.sleep(2)
                for name, command, argument in (("resume", "resume", ""),
                                                ("seek -10", "seek", "-10"),
                                                ("seek +10", "seek", "+10")):
                    pressed = time.monotonic()
                    control.send(state, command, argument)
                    times[name].append(viewer.new_video_after(pressed))
                    time.sleep(2)
            assert viewer.is_alive() and viewer.error is None, "the viewer's response ended"
        finally:
            play.terminate()
            play.wait(15)
            server.stop()
    print(f"watch party controls, {rounds} rounds, seconds from control to viewers:")
    for name, values in times.items():
        print(f"  {name:9s} median {statistics.median(values):5.2f}  max {max(values):5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
