"""When a plain <video> on /stream.mp4 decides it can play: events and readyState over time.

Plain Chromium through Tor is bimodal: some viewers play 0.9 s behind live, others about
2.9 s, having held the video in HAVE_FUTURE_DATA (readyState 3) for a second or two before
autoplaying. This opens fresh viewers of `?player=plain` in Chromium and prints, for each,
the media events and every 250 ms the readyState, networkState (1 idle, 2 loading),
currentTime and buffered end, from navigation until a little after `playing`:

    python bench/plain_readiness.py [--runs 6] [--privnet]

Loopback only (with --privnet, the private Tor network of bench/privnet_site.py); the test
stream is stream.sh's at 640x360, 30 fps, 2 s segments in 200 ms parts.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "tests"))
sys.path.insert(0, str(PROJECT / "bench"))

from browser import CHROMIUM_ARGS, chromium_path  # noqa: E402
from privnet_site import stream_site  # noqa: E402
from support import TestStream  # noqa: E402

EVENTS = ("loadedmetadata", "loadeddata", "canplay", "canplaythrough", "playing", "waiting",
          "suspend")
# Runs in the page before its own scripts (which the plain page does not need).
PROBE = """
(() => {
  window.readiness = [];
  const t0 = performance.now();
  const note = (what) => {
    const v = document.querySelector('video');
    if (!v) return;
    const b = v.buffered;
    window.readiness.push([Math.round(performance.now() - t0), what, v.readyState,
      v.networkState, v.currentTime, b.length ? b.end(b.length - 1) : -1]);
  };
  document.addEventListener('DOMContentLoaded', () => {
    const v = document.querySelector('video');
    for (const e of %s) v.addEventListener(e, () => note(e));
    const timer = setInterval(() => {
      note('tick');
      if (performance.now() - t0 > 9000) clearInterval(timer);
    }, 250);
  });
})();
""" % list(EVENTS)


def watch(browser, page_url: str) -> list:
    context = browser.new_context()
    context.add_init_script(PROBE)
    try:
        page = context.new_page()
        page.goto(page_url + "/?player=plain", timeout=120_000)
        time.sleep(9.5)
        return page.evaluate("() => window.readiness")
    finally:
        context.close()


def report(index: int, log: list) -> None:
    playing = next((row[0] for row in log if row[1] == "playing"), None)
    ready = next((row for row in log if row[1] == "loadeddata"), None)
    print(f"viewer {index + 1}: playing after {playing} ms; readyState at loadeddata "
          f"{ready[2] if ready else '-'}")
    for ms, what, ready_state, network, now, buffered in log:
        if what == "tick" and playing is not None and ms > playing + 300:
            break
        print(f"  {ms:6d} ms {what:<15} readyState {ready_state} networkState {network} "
              f"currentTime {now:8.2f} buffered to {buffered:8.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6, help="viewers, one after another")
    parser.add_argument("--privnet", action="store_true",
                        help="viewers through a private Tor network on this machine")
    args = parser.parse_args()
    if chromium_path() is None:
        print("chromium is not installed: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    def run(page_url: str, proxy: str) -> None:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium_path(), args=CHROMIUM_ARGS,
                proxy={"server": proxy} if proxy else None)
            try:
                for index in range(args.runs):
                    report(index, watch(browser, page_url))
            finally:
                browser.close()

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        stream = TestStream(work / "stream", size="640x360", segment_seconds=2,
                            video_bitrate="2500k", framerate=30, low_latency=True).start()
        try:
            stream.wait_segments(3, timeout=30)
            with stream_site(work, stream.directory, args.privnet) as site:
                run(site.page_url, site.proxy)
        finally:
            stream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
