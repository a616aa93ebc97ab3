"""Firefox ESR at Tor Browser's Safest level on loopback: page load and chat delivery.

Opens the viewer page N times in one headless Firefox ESR (JavaScript off, autoplay blocked,
cookies refused), timing until the document is `complete` and the tab no longer busy, then
posts a message as another viewer over HTTP and times until the open chat frame shows it.

    python bench/firefox_nojs.py --runs 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from chat_support import ChatViewer, chat_server  # noqa: E402
from firefox import Firefox  # noqa: E402
from support import TestStream, wait_for  # noqa: E402

FRAME = ("var d = document.querySelector('iframe.messages').contentDocument;"
         "return [d.URL, d.readyState, d.body ? d.body.textContent : ''];")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stream = TestStream(tmp / "stream").start()
        server = chat_server(tmp, stream.directory)
        browser = None
        try:
            stream.wait_segments(2)
            server.start()
            server.wait_live()
            browser = Firefox(tmp / "profile").start()
            other = ChatViewer(server)
            loads, shown = [], []
            for run in range(args.runs):
                loads.append(browser.open(server.url + "/", wait_complete=10))
                wait_for(lambda: "mode=enter" not in (f := browser.content_script(FRAME))[0]
                         and f[1] == "loading", 10, 0.02, "the live chat frame")
                text = f"bench message {run}"
                other.post(text)
                posted = time.monotonic()
                wait_for(lambda t=text: t in browser.content_script(FRAME)[2], 5, 0.01,
                         "the message")
                shown.append(time.monotonic() - posted)
            print(f"page complete, tab idle: median {statistics.median(loads):.2f} s, "
                  f"max {max(loads):.2f} s over {args.runs} loads")
            print(f"message shown in the open chat frame: median "
                  f"{statistics.median(shown) * 1000:.0f} ms, max {max(shown) * 1000:.0f} ms")
        finally:
            if browser:
                browser.stop()
            server.stop()
            stream.stop()


if __name__ == "__main__":
    main()
