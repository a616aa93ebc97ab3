"""Finding 3 of the second review: a Redis that hangs must not stall video or pages.

redis-server is stopped with SIGSTOP (as on a link that drops packets: connections stay open,
nothing answers) under `serve --workers 2`. Run with -s for the figures.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import statistics
import threading
import time

import pytest
import redis
import requests
from chat_support import ChatViewer, broadcaster_csrf, chat_server, login_link
from redis_support import RedisServer
from support import wait_for


@pytest.fixture(scope="module")
def frozen_setup(tmp_path_factory, live_stream):
    workdir = tmp_path_factory.mktemp("frozen")
    redis_server = RedisServer(workdir / "redis").start()
    server = chat_server(workdir, live_stream.directory, redis_url=redis_server.url(0)).start()
    server.wait_live()
    yield server, redis_server
    if redis_server.process.poll() is None:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    server.stop()
    redis_server.stop()


def first_byte(url: str) -> float:
    started = time.monotonic()
    with requests.get(url, stream=True, timeout=20) as response:
        assert response.status_code == 200
        next(response.iter_content(1))
    return time.monotonic() - started


def page_time(url: str) -> tuple[float, int]:
    started = time.monotonic()
    response = requests.get(url, timeout=20)
    return time.monotonic() - started, response.status_code


class Watching:
    """A viewer already watching /stream.mp4: the longest pause between two chunks."""

    def __init__(self, url: str):
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()
        wait_for(lambda: len(self.arrivals) > 3, 15, what="video to flow")

    def _read(self, url: str) -> None:
        try:
            with requests.get(url, stream=True, timeout=30) as response:
                for _ in response.iter_content(4096):
                    self.arrivals.append(time.monotonic())
                    if self._stop.is_set():
                        return
        except requests.RequestException:
            pass  # the server stopped under it at the end of the module

    def longest_gap(self, since: float) -> float:
        times = [t for t in self.arrivals if t >= since]
        return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))

    def stop(self) -> None:
        self._stop.set()


def test_a_frozen_redis_leaves_video_and_pages_as_fast_and_the_chat_says_so(frozen_setup):
    server, redis_server = frozen_setup
    viewer = ChatViewer(server)
    assert viewer.post("before the freeze").status_code == 303
    token = viewer.token
    # new viewers each time: one token's closed responses hold its 4 slots until the
    # server's next write to them notices
    video_url = f"{server.url}/stream.mp4"
    before = {"first byte": [first_byte(video_url) for _ in range(5)],
              "page": [page_time(f"{server.url}/?token={token}")[0] for _ in range(5)]}
    watching = Watching(f"{video_url}?token={token}")
    try:
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        pages = [page_time(f"{server.url}/?token={token}") for _ in range(6)]
        firsts = [first_byte(video_url) for _ in range(5)]
        form_time, form_status = page_time(f"{server.url}/chat/form?token={token}")
        form = viewer.form()
        time.sleep(max(0.0, 8.0 - (time.monotonic() - frozen_at)))
        gap = watching.longest_gap(frozen_at)
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
        watching.stop()
    during = {"first byte": firsts, "page": [t for t, _ in pages]}
    for name in before:
        print(f"\n{name}: median {statistics.median(before[name]) * 1000:.1f} ms with Redis, "
              f"{statistics.median(during[name]) * 1000:.1f} ms frozen (max "
              f"{max(during[name]) * 1000:.0f} ms)", end="")
    print(f"\nchat form while frozen: {form_status} in {form_time * 1000:.0f} ms; longest "
          f"pause of a running /stream.mp4: {gap:.2f} s")
    assert all(status == 200 for _, status in pages), pages
    assert max(firsts) < 0.5, f"a new /stream.mp4 waited {max(firsts):.2f} s on Redis"
    # the first page to meet the frozen Redis waits one short timeout (1 s); then none
    assert statistics.median(during["page"]) < 0.3 and max(during["page"]) < 1.6
    assert gap < 2.5, f"a running video paused {gap:.2f} s while Redis was frozen"
    assert form_status == 503 and form_time < 0.5
    assert "temporarily unavailable" in form
    # Redis back: the chat works again by itself
    wait_for(lambda: viewer.post("after the thaw").status_code == 303, 20, interval=1.0,
             what="the chat to work again")


# --- finding 4: Redis is a trust boundary ------------------------------------------------------

def redis_values(url: str) -> bytes:
    """Everything the shared Redis holds, as one blob (what a reader of it could see)."""
    client = redis.Redis.from_url(url)
    parts = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            parts.append(client.get(key))
        elif kind == b"hash":
            for field_name, value in client.hgetall(key).items():
                parts += [field_name, value]
    client.close()
    return b"\n".join(parts)


def test_writing_redis_does_not_open_the_broadcaster_page(frozen_setup):
    """One HSET of a session digest opened /broadcaster (401 to 200)."""
    server, redis_server = frozen_setup
    client = redis.Redis.from_url(redis_server.url(0))
    chosen = "a-session-id-the-attacker-chose-0001"
    far = time.time() + 86400
    for digest in (hashlib.sha256(b"broadcaster-session\0" + chosen.encode()).digest(),):
        client.hset("livestream:session", digest.hex(), json.dumps([far, far]))
    client.close()
    time.sleep(0.5)
    page = requests.get(server.url + "/broadcaster", cookies={"broadcaster_session": chosen},
                        timeout=10, allow_redirects=False)
    assert page.status_code == 401, "a session written into Redis opened /broadcaster"


def test_reading_redis_gives_neither_the_csrf_token_nor_a_session(frozen_setup):
    server, redis_server = frozen_setup
    link = login_link(server)
    browser = requests.Session()
    assert browser.get(link, timeout=10).status_code == 200
    session = browser.cookies.get("broadcaster_session")
    csrf = broadcaster_csrf(server)
    held = redis_values(redis_server.url(0))
    assert session and csrf
    assert session.encode() not in held and csrf.encode() not in held
    assert hashlib.sha256(b"broadcaster-session\0" + session.encode()).digest().hex().encode() \
        not in held, "the session's digest can be computed from the session alone"
    key = link.rsplit("=", 1)[1]
    assert key.encode() not in held
