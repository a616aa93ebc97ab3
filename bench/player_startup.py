"""Start-up time and live delay: the MSE player against the plain /stream.mp4, on loopback.

Starts its own test stream (./stream.sh --test) and server, then opens the viewer page in
headless Chromium (or Firefox ESR) again and again, alternating `?player=mse` and `?player=plain`,
and in Chromium a viewer without JavaScript who presses play (Chromium's default autoplay policy,
as a first visit meets it: a video with sound waits for the viewer):

  start-up   navigation start (Firefox plain, Chromium pressed: the press) -> the video's
             currentTime moves
  delay      live edge - currentTime, sampled for a few seconds after start-up; the live edge
             is the server's `now - origin` (/api/playlist, both on the server's private
             clock), carried to the moment the position is read

    python bench/player_startup.py [--runs 6] [--segment-seconds 1] [--size 320x180]
    python bench/player_startup.py --segment-seconds 2 --low-latency [--bitrate 2500k]
    python bench/player_startup.py --segment-seconds 2 --low-latency --privnet
    python bench/player_startup.py --segment-seconds 2 --low-latency --hls-js | --firefox

With --privnet the server is an onion service of a private Tor network on this machine
(bench/privnet_site.py, ../shared/tools/privnet.py) and the browser reaches it through the
network's SOCKS port; the live edge is still read from the server on loopback. --hls-js adds
npm's hls.js in low-latency mode (Chromium), --firefox runs Firefox ESR instead of Chromium.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "tests"))

from browser import CHROMIUM_ARGS, chromium_path  # noqa: E402
from support import TestStream, wait_for  # noqa: E402

sys.path.insert(0, str(PROJECT / "bench"))
from privnet_site import stream_site  # noqa: E402

# Runs in the page before its own scripts: notes when playback first really moves.
FIRST_FRAME_PROBE = """
(() => {
  let last = null;
  const timer = setInterval(() => {
    const v = document.querySelector('video');
    if (!v || v.paused || v.seeking || v.readyState < 3) { last = null; return; }
    if (last !== null && v.currentTime > last) {
      window.benchFirstFrame = performance.now();
      clearInterval(timer);
    }
    last = v.currentTime;
  }, 5);
})();
"""


def measure(browser, server_url: str, mode: str, samples: int,
            page_url: str = "") -> tuple[float, float]:
    """(start-up ms, mean delay s) for one fresh viewer of `page_url` (the server's own
    address unless given); the live edge is read from `server_url`."""
    context = browser.new_context()
    context.add_init_script(FIRST_FRAME_PROBE)
    page = context.new_page()
    try:
        page.goto(f"{page_url or server_url}/?player={mode}", timeout=120_000)
        wait_for(lambda: page.evaluate("() => window.benchFirstFrame"), 90, 0.05, "playback")
        startup = page.evaluate("() => window.benchFirstFrame")
        time.sleep(1.0)  # let the MSE player settle on its target
        return startup, behind_live(server_url, samples, lambda: page.evaluate(
            "() => document.querySelector('video').currentTime"))
    finally:
        context.close()


def measure_pressed(browser, server_url: str, samples: int,
                    page_url: str = "") -> tuple[float, float]:
    """A viewer with JavaScript off whose Chromium does not autoplay presses play (Space on
    the focused video, as the controls' play button does). Chromium starts a played video at
    HAVE_FUTURE_DATA; autoplay waits for HAVE_ENOUGH_DATA, which a live response of unknown
    length may reach late (docs/benchmarks.md, "fifth part")."""
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()

    def position() -> float:
        return page.evaluate("() => document.querySelector('video').currentTime")

    try:
        page.goto(f"{page_url or server_url}/", timeout=120_000)
        page.focus("video")
        pressed = time.monotonic()
        page.keyboard.press("Space")
        first = position()
        wait_for(lambda: position() > first, 90, 0.02, "playback")
        startup = (time.monotonic() - pressed) * 1000
        time.sleep(1.0)
        return startup, behind_live(server_url, samples, position)
    finally:
        context.close()


def measure_hls_js(browser, server_url: str, samples: int,
                   page_url: str = "") -> tuple[float, float]:
    """npm's hls.js in low-latency mode on the parts playlist (tests/hlsjs.py): start-up to
    the first moving picture, and its own `latency` (hls.js counts currentTime on the
    playlist's timeline, not the media's, so the server's live edge does not apply)."""
    from hlsjs import open_hls_js_page

    context = browser.new_context()
    context.add_init_script(FIRST_FRAME_PROBE)
    page = context.new_page()
    try:
        open_hls_js_page(page, page_url or server_url)
        wait_for(lambda: page.evaluate("() => window.benchFirstFrame"), 90, 0.05, "playback")
        startup = page.evaluate("() => window.benchFirstFrame")
        time.sleep(3.0)  # hls.js steers towards its target by playback rate
        latencies = []
        for _ in range(samples):
            latencies.append(page.evaluate("() => window.hls.latency"))
            time.sleep(0.5)
        return startup, statistics.mean(latencies)
    finally:
        context.close()


def behind_live(server_url: str, samples: int, position: Callable[[], float]) -> float:
    """Mean of `samples` readings of the live edge minus the player's position.

    The origin only tightens as segments arrive: read the current one each time. Both it and
    `now` are on the server's private scale (app/stream/clock.py), so the server's `now` is
    carried to the moment the position is read, on this machine's clock."""
    delays = []
    for _ in range(samples):
        asked = time.time()
        timeline = requests.get(server_url + "/api/playlist", timeout=5).json()
        answered = time.time()
        at = position()
        server_now = timeline["now"] + (time.time() - (asked + answered) / 2)
        delays.append((server_now - timeline["origin"]) - at)
        time.sleep(0.5)
    return statistics.mean(delays)


def measure_firefox(firefox, server_url: str, mode: str, samples: int,
                    page_url: str = "") -> tuple[float, float]:
    """The same in Firefox ESR: `plain` at Tor Browser's Safest level (no JavaScript, the
    viewer clicks play), `mse` with JavaScript on. Firefox counts a progressive response's
    currentTime from its first picture: the next keyframe when play was clicked
    (app/stream/fanout.py), stream.sh's come every second from each segment's start."""
    url = f"{page_url or server_url}/?player={mode}"

    def next_keyframe() -> float | None:
        partial = requests.get(server_url + "/api/playlist", timeout=5).json()["partial"]
        if partial is None:
            return None  # between segments
        return partial["start"] + math.ceil(partial["duration"] - 0.01)

    if mode == "mse":
        with firefox.client.using_prefs({"javascript.enabled": True,
                                         "media.autoplay.default": 0}):
            try:
                started = time.monotonic()
                firefox.open(url, wait_complete=60.0)
                wait_for(lambda: (firefox.video() or {}).get("time", 0) > 0, 60, 0.02,
                         "playback")
                startup = (time.monotonic() - started) * 1000
                time.sleep(1.0)
                return startup, behind_live(server_url, samples,
                                            lambda: firefox.video()["time"])
            finally:
                firefox.client.navigate("about:blank")
    for _ in range(5):
        firefox.open(url, wait_complete=60.0)
        first = next_keyframe()
        started = time.monotonic()
        firefox.click_play()
        if first is not None and next_keyframe() == first:
            break  # else a keyframe came meanwhile: which one the response took is unknown
    firefox.wait_playing(timeout=60)
    startup = (time.monotonic() - started) * 1000
    time.sleep(2.0)
    delay = behind_live(server_url, samples, lambda: first + firefox.video()["time"])
    firefox.open("about:blank")
    return startup, delay


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6, help="viewers per player (default 6)")
    parser.add_argument("--segment-seconds", type=int, default=1, help="HLS segment length")
    parser.add_argument("--size", default="320x180", help="video size of the test stream")
    parser.add_argument("--framerate", type=int, default=30,
                        help="frames per second of the test stream (stream.sh's default, 30)")
    parser.add_argument("--bitrate", default="300k",
                        help="video bitrate of the test stream (stream.sh VIDEO_BITRATE)")
    parser.add_argument("--samples", type=int, default=6, help="delay samples per viewer")
    parser.add_argument("--low-latency", action="store_true",
                        help="the stream through `livestream segment` (stream.sh LOW_LATENCY=1)")
    parser.add_argument("--hls-js", action="store_true",
                        help="npm's hls.js in low-latency mode too (Chromium; .ci/setup --test)")
    parser.add_argument("--firefox", action="store_true",
                        help="Firefox ESR (plain at Tor Browser's Safest level) for Chromium")
    parser.add_argument("--privnet", action="store_true",
                        help="viewers through a private Tor network on this machine")
    args = parser.parse_args()
    if args.hls_js and args.firefox:
        parser.error("--hls-js runs in Chromium: leave out --firefox")
    path = chromium_path()
    if path is None and not args.firefox:
        print("chromium is not installed: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        stream = TestStream(work / "stream", size=args.size,
                            segment_seconds=args.segment_seconds, video_bitrate=args.bitrate,
                            framerate=args.framerate,
                            low_latency=args.low_latency).start()
        results: dict[str, list[tuple[float, float]]] = {"mse": [], "plain": []}
        if not args.firefox:
            results["pressed"] = []
        if args.hls_js:
            results["hls.js"] = []

        def run_viewers(server_url: str, page_url: str = "", proxy: str = "") -> dict:
            timeline = requests.get(server_url + "/api/playlist", timeout=5).json()
            if args.firefox:
                run_firefox(work, server_url, page_url, proxy)
                return timeline
            with sync_playwright() as playwright:
                proxies = {"server": proxy} if proxy else None
                browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS,
                                                     proxy=proxies)
                # the default autoplay policy: a video with sound waits to be played
                no_autoplay = playwright.chromium.launch(
                    executable_path=path, proxy=proxies,
                    args=[a for a in CHROMIUM_ARGS if not a.startswith("--autoplay-policy")])
                for _ in range(args.runs):
                    for mode in results:
                        if mode == "hls.js":
                            measured = measure_hls_js(browser, server_url, args.samples, page_url)
                        elif mode == "pressed":
                            measured = measure_pressed(no_autoplay, server_url, args.samples,
                                                       page_url)
                        else:
                            measured = measure(browser, server_url, mode, args.samples, page_url)
                        results[mode].append(measured)
                no_autoplay.close()
                browser.close()
            return timeline

        def run_firefox(work: Path, server_url: str, page_url: str, proxy: str) -> None:
            from firefox import SAFEST_PREFS, Firefox

            prefs = dict(SAFEST_PREFS)
            if proxy:  # socks5://127.0.0.1:PORT, names resolved by tor
                host, port = proxy.rsplit("/", 1)[1].rsplit(":", 1)
                prefs.update({"network.proxy.type": 1, "network.proxy.socks": host,
                              "network.proxy.socks_port": int(port),
                              "network.proxy.socks_remote_dns": True,
                              "network.proxy.allow_hijacking_localhost": True})
            firefox = Firefox(work / "firefox", prefs).start()
            try:
                for _ in range(args.runs):
                    for mode in results:
                        results[mode].append(measure_firefox(firefox, server_url, mode,
                                                             args.samples, page_url))
            finally:
                firefox.stop()

        try:
            stream.wait_segments(3, timeout=30)
            with stream_site(work, stream.directory, args.privnet) as site:
                timeline = run_viewers(site.server_url, site.page_url, site.proxy)
            # what the stream really carries (x264 stays under VIDEO_BITRATE on a test
            # picture): Chromium's plain player reads a response in 32 KiB blocks
            segments = list((work / "stream").glob("stream*.m4s"))
            kbps = (sum(p.stat().st_size for p in segments) * 8 / 1000
                    / (len(segments) * args.segment_seconds)) if segments else 0.0
        finally:
            stream.stop()

    print(f"{args.size} at {args.framerate} fps and {args.bitrate} (measured {kbps:.0f} "
          f"kbit/s with audio), {args.segment_seconds} s segments, target delay of the MSE "
          f"player {timeline['delay']} s, {args.runs} viewers each, "
          f"{'Firefox ESR' if args.firefox else 'Chromium'}, "
          f"{'through a private Tor network' if args.privnet else 'loopback'}")
    print(f"{'player':<22}{'start-up ms (median, min-max)':<34}{'live delay s (median, min-max)'}")
    labels = {"mse": "MSE (?player=mse)", "plain": "/stream.mp4 (plain)",
              "pressed": "plain, no JS, pressed", "hls.js": "hls.js (low latency)"}
    for mode in results:
        label = labels[mode]
        startups = [r[0] for r in results[mode]]
        delays = [r[1] for r in results[mode]]
        print(f"{label:<22}"
              f"{statistics.median(startups):6.0f}  ({min(startups):.0f}-{max(startups):.0f})"
              f"{'':<16}"
              f"{statistics.median(delays):5.2f}  ({min(delays):.2f}-{max(delays):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
