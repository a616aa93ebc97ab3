"""The README's picture of the cockpit, made again: a demo stream, a few /stream.mp4 viewers
(one of them too slow for the top rendition), a minute of figures, then a screenshot of
/broadcaster in Debian's Chromium with JavaScript off.

Usage: python bench/cockpit_screenshot.py [--out docs/cockpit.png] [--seconds 60]
Loopback only; everything it starts stops when it ends.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "tests"))

import requests  # noqa: E402
from support import free_port, wait_for  # noqa: E402
from test_cockpit import slow_reader  # noqa: E402

PASSWORD = "screenshot-only"


def reader(url: str, seconds: float) -> None:
    try:
        with requests.get(url, stream=True, timeout=seconds + 10) as response:
            started = time.monotonic()
            for _ in response.iter_content(65536):
                if time.monotonic() - started > seconds:
                    return
    except requests.RequestException:
        return


def live(url: str) -> bool:
    try:
        return requests.get(url + "/stream/stream.m3u8", timeout=2).ok
    except requests.RequestException:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT / "docs" / "cockpit.png")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        config = Path(work) / "config.toml"
        config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\nstate_dir = "state"\n'
                          f'[stream]\ndir = "stream"\n[broadcaster]\npassword = "{PASSWORD}"\n'
                          f'[ingest]\nenabled = true\nhost = "127.0.0.1"\nport = {free_port()}\n')
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "--config", str(config),
                                   "serve", "--demo"], cwd=PROJECT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: live(url), 30, 0.5, "the demo stream")
            for quality in ("", "", "?quality=low", "?quality=low", "?quality=low"):
                threading.Thread(target=reader, args=(url + "/stream.mp4" + quality,
                                                      args.seconds), daemon=True).start()
            threading.Thread(target=slow_reader, args=(url, 60_000, args.seconds, {}),
                             daemon=True).start()
            time.sleep(args.seconds)
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                context = browser.new_context(
                    viewport={"width": 1400, "height": 1250}, java_script_enabled=False,
                    http_credentials={"username": "broadcaster", "password": PASSWORD})
                page = context.new_page()
                page.goto(url + "/broadcaster", wait_until="load")
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            server.terminate()
            server.wait(15)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
