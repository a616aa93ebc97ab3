"""npm's hls.js (installed by .ci/setup --test into .cache/npm, never committed) on a test page.

The page and the library are handed to the browser by playwright on the server's own address
(a page of ours never loads a script from elsewhere); the playlist and its parts come from
the server itself, through whatever network the browser uses.
"""
from __future__ import annotations

import json
from pathlib import Path

HLS_JS = Path(__file__).resolve().parent.parent / ".cache" / "npm" / "node_modules" / "hls.js" \
    / "dist" / "hls.min.js"
HLS_JS_PAGE = """<!doctype html><video id="v" muted autoplay playsinline></video>
<script src="/test-only/hls.min.js"></script>
<script>
const hls = new Hls({lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5});
hls.loadSource("/stream/stream.m3u8");
hls.attachMedia(document.getElementById("v"));
window.hls = hls;
</script>"""


def hls_js_version() -> str:
    """The installed version, from its package.json."""
    return json.loads((HLS_JS.parent.parent / "package.json").read_text())["version"]


def open_hls_js_page(page, base_url: str) -> None:
    """Load hls.js in low-latency mode on `base_url`'s live playlist in a playwright page."""
    if not HLS_JS.exists():
        raise FileNotFoundError("hls.js is not installed: run .ci/setup --test")
    page.route(base_url + "/test-only/page.html",
               lambda route: route.fulfill(body=HLS_JS_PAGE, content_type="text/html"))
    page.route(base_url + "/test-only/hls.min.js",
               lambda route: route.fulfill(path=str(HLS_JS), content_type="text/javascript"))
    page.goto(base_url + "/test-only/page.html", timeout=120_000)
