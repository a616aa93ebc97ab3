"""Watch party: time from a host control to the change reaching a no-JS viewer.

A real `livestream serve` and `livestream play --party` on a generated 90 s clip; one viewer
reads /stream.mp4 throughout. Each round presses pause, resume, seek -10 and seek +10 through
the control socket (what `livestream party` and the /broadcaster forms send), and the last
round then next (to the queue's second item, the same clip), and times:
  pause  -> the info frame says "Paused by the host" (and the video stops)
  resume, seek, next -> the new position's first bytes at the viewer (ffmpeg restarts from
           the position; its first fragment comes a part later)
With --remote, the party is `livestream cloud play` to a "droplet" on this machine (a fake
DigitalOcean, the droplet's own server and folders, a real sshd on loopback: see
tests/fake_droplet.py): the viewer watches the droplet, and the rounds alternate between the
host's control socket (`livestream party` on the host) and the droplet's (its /broadcaster
form, carried back over the SSH session).
Usage: python bench/party_controls.py [--rounds 3] [--remote]   (about 20 s per round)
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT / "tests"), str(PROJECT)]

import requests  # noqa: E402
from chat_support import chat_server  # noqa: E402
from fake_droplet import rented  # noqa: E402
from support import cli, wait_for  # noqa: E402
from test_party import Viewer, make_clip  # noqa: E402

from app.sources.party import control  # noqa: E402

TOKEN = "dop_v1_" + "b" * 64
PLAY_OPTIONS = ["--preset", "ultrafast", "--bitrate", "600"]


def local_party(work: Path, clip: Path, stack: ExitStack) -> tuple[str, list[Path]]:
    """A server and a party on this machine: (its URL, [its control socket's state folder])."""
    server = chat_server(work, work / "stream").start()
    stack.callback(server.stop)
    play = subprocess.Popen(cli(server.config_path, "play", str(clip), "--party",
                                *PLAY_OPTIONS, "--", str(clip)), cwd=PROJECT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    stack.callback(lambda: (play.terminate(), play.wait(15)))
    server.wait_live(30)
    return server.url, [work / "state"]


def remote_party(work: Path, clip: Path, stack: ExitStack) -> tuple[str, list[Path]]:
    """`cloud play` to a droplet on this machine: (the droplet's URL, [the host's state
    folder, the droplet's])."""
    rental = stack.enter_context(rented(work, TOKEN))
    log = (work / "cloud.log").open("wb")
    stack.callback(log.close)
    evening = subprocess.Popen(cli(rental.config(), "cloud", "play", str(clip), *PLAY_OPTIONS,
                                   "--", str(clip)),
                               cwd=PROJECT, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT,
                               env=dict(os.environ, DIGITALOCEAN_TOKEN=TOKEN))
    stack.callback(lambda: (evening.terminate(), evening.wait(60)))
    wait_for(lambda: online(rental.url), 90, 0.25, "the party on the droplet")
    return rental.url, [rental.host_state, rental.droplet_state()]


def online(url: str) -> bool:
    """The droplet's server says it is live (before it runs, its receiver has the port)."""
    try:
        return bool(requests.get(url + "/api/status", timeout=5).json().get("online"))
    except (requests.RequestException, ValueError):
        return False


def rounds_of_controls(url: str, sockets: list[Path], rounds: int, work: Path,
                       record: Callable[[str, float], None]) -> None:
    viewer = Viewer(url + "/stream.mp4", work / "viewer.mp4")
    viewer.start()
    wait_for(lambda: viewer.arrivals, 10, what="first bytes")
    for number in range(rounds):
        state = sockets[number % len(sockets)]
        side = "" if len(sockets) == 1 else (" (host)" if number % 2 == 0 else " (droplet)")
        time.sleep(3)
        pressed = time.monotonic()
        control.send(state, "pause")
        wait_for(lambda: "Paused by the host" in requests.get(url + "/info", timeout=5).text,
                 10, interval=0.01, what="the paused notice")
        record("pause" + side, time.monotonic() - pressed)
        time.sleep(2)
        for name, command, argument in (("resume", "resume", ""), ("seek -10", "seek", "-10"),
                                        ("seek +10", "seek", "+10")):
            pressed = time.monotonic()
            control.send(state, command, argument)
            record(name + side, viewer.new_video_after(pressed))
            time.sleep(2)
    pressed = time.monotonic()
    control.send(sockets[-1], "next")  # the queue's second item
    record("next" + ("" if len(sockets) == 1 else " (droplet)"), viewer.new_video_after(pressed))
    assert viewer.is_alive() and viewer.error is None, "the viewer's response ended"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--remote", action="store_true",
                        help="`cloud play` to a droplet on this machine, through SSH")
    args = parser.parse_args()
    rounds = max(1, min(20, args.rounds))
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as temp, ExitStack() as stack:
        work = Path(temp)
        clip = make_clip(work / "film.mkv", 90, "testsrc=size=640x360:rate=25",
                         "sine=f=440:r=48000", ["-c:v", "libx264", "-preset", "ultrafast",
                                                "-pix_fmt", "yuv420p", "-c:a", "aac"])
        start = remote_party if args.remote else local_party
        url, sockets = start(work, clip, stack)
        rounds_of_controls(url, sockets, rounds, work,
                           lambda name, seconds: times.setdefault(name, []).append(seconds))
    where = "the droplet's viewer (cloud play through SSH)" if args.remote else "viewers"
    print(f"watch party controls, {rounds} rounds, seconds from control to {where}:")
    for name, values in times.items():
        print(f"  {name:20s} median {statistics.median(values):5.2f}  max {max(values):5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
