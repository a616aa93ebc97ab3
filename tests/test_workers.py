"""`serve --workers 2` with Redis: one chat across processes, supervised workers, and video that
does not depend on Redis. Real redis-server, real processes, real sockets on loopback."""
from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from chat_support import BROADCASTER, ChatViewer, chat_server, login_link
from redis_support import (  # noqa: F401 (redis_server is a fixture)
    Pinned,
    RedisServer,
    WorkersServer,
    one_per_worker,
    redis_server,
    wait_workers,
)
from support import PROJECT, Server, free_port, wait_for

from app.community import shared
from app.community.identity import LoginLocked
from app.config import BroadcasterConfig

CHAT = "[chat]\nmin_interval = 0.3\nwindow_seconds = 30.0\nwindow_messages = 4\n"


class RawStream:
    """One streaming GET on its own socket, read in a thread: its client port tells which
    worker serves it (see serving_pid)."""

    def __init__(self, port: int, path: str):
        self.server_port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.client_port = self.sock.getsockname()[1]
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.chunks: list[tuple[float, bytes]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        wait_for(lambda: self.chunks, 10, what=f"{path.split('?')[0]} to start")

    def _read(self) -> None:
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                self.chunks.append((time.monotonic(), data))
        except OSError:
            return

    def arrival(self, needle: str, timeout: float = 3.0) -> float:
        def seen():
            data = b""
            for at, chunk in list(self.chunks):
                data += chunk
                if needle.encode() in data:
                    return at
            return None
        return wait_for(seen, timeout, what=f"{needle!r}")

    def received(self) -> int:
        return sum(len(c) for _, c in list(self.chunks))

    def close(self) -> None:
        self.sock.close()


def streams_per_worker(server: WorkersServer, path: str) -> dict[int, RawStream]:
    return one_per_worker(server.pids, lambda: RawStream(server.port, path))


@pytest.fixture(scope="module")
def workers(tmp_path_factory, live_stream, redis_server):  # noqa: F811
    srv = chat_server(tmp_path_factory.mktemp("workers"), live_stream.directory, CHAT,
                      redis_server.new_database()).start()
    yield srv
    srv.stop()


def test_a_post_through_one_worker_reaches_live_frames_and_events_on_every_worker(workers):
    viewer = ChatViewer(workers)
    frames = streams_per_worker(workers, f"/chat/messages?token={viewer.token}")
    events = streams_per_worker(workers, f"/events?token={viewer.token}")
    try:
        sent = time.monotonic()
        response = viewer.post("across the workers", name="W")
        assert response.status_code == 303, response.text
        for pid, frame in frames.items():
            late = frame.arrival("across the workers") - sent
            assert late < 1.0, f"frame on worker {pid} got it after {late:.2f}s"
        for pid, listener in events.items():
            late = listener.arrival("across the workers") - sent
            assert late < 1.0, f"/events on worker {pid} got it after {late:.2f}s"
    finally:
        for stream in [*frames.values(), *events.values()]:
            stream.close()


def test_both_workers_serve_video_and_list_the_same_viewers(workers):
    viewer = ChatViewer(workers)
    assert viewer.post("counting", name="Watcher").status_code == 303
    videos = streams_per_worker(workers, f"/stream.mp4?token={viewer.token}")
    try:
        wait_for(lambda: all(v.received() > 10_000 for v in videos.values()), 15,
                 what="video from both workers")

        def listed_everywhere():
            pages = [requests.get(f"{workers.url}/chat/users?token={viewer.token}",
                                  timeout=5, headers={"Connection": "close"}).text
                     for _ in range(8)]  # new connections: both workers answer some
            return all(re.search(r'<li class="watching"><span[^>]*>Watcher</span>', page)
                       for page in pages)
        assert wait_for(listed_everywhere, 10, what="the viewer listed by every worker")
    finally:
        for v in videos.values():
            v.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_failed_logins_lock_every_worker_at_once_and_a_login_link_still_opens(
        tmp_path, redis_server):  # noqa: F811
    """failed_logins = 3 in all: the guesses alternate between the workers, so a lock of each
    worker's own would still answer the fourth. Then both refuse the right password, and the
    owner's login link opens a session both accept."""
    srv = chat_server(tmp_path, tmp_path / "stream",
                      redis_url=redis_server.new_database()).start()
    pinned = one_per_worker(srv.pids, lambda: Pinned(srv.port))
    try:
        first, second = pinned.values()
        statuses = [(first if n % 2 else second).get(
            "/broadcaster", Authorization=basic("broadcaster", f"guess{n}")).status
            for n in range(1, 5)]
        assert statuses == [401, 401, 401, 429]
        for pid, worker in pinned.items():
            refused = worker.get("/broadcaster", Authorization=basic(*BROADCASTER))
            assert refused.status == 429, f"worker {pid} let the password in while locked"
            assert int(refused.headers["Retry-After"]) > 0
        owner = requests.Session()
        entered = owner.get(login_link(srv), timeout=10)
        assert entered.status_code == 200 and "csrf" in entered.text, entered.text[:200]
        session = owner.cookies.get("broadcaster_session", path="/broadcaster")
        for pid, worker in pinned.items():
            page = worker.get("/broadcaster", Cookie=f"broadcaster_session={session}")
            assert page.status == 200, f"worker {pid} refused the owner's session"
    finally:
        for connection in pinned.values():
            connection.close()
        srv.stop()


def test_the_shared_login_window_expires_by_itself_and_a_right_password_does_not_count(
        redis_server):  # noqa: F811
    """In process, on the real Redis: the window is an expiring key, so a lock never
    outlives failed_window, even if every worker that counted it died."""
    client = shared.connect(redis_server.new_database())
    failures = shared.RedisFailedLogins(client, BroadcasterConfig(failed_logins=2,
                                                                  failed_window=1.0))
    failures.forget(failures.attempt())  # the right password: taken back
    failures.attempt()
    failures.attempt()
    with pytest.raises(LoginLocked) as locked:
        failures.attempt()
    assert 0 < locked.value.seconds <= 1.0 and failures.locked_for() > 0
    wait_for(lambda: failures.locked_for() == 0, 5, what="the window to expire")
    failures.attempt()
    client.close()


def test_workers_without_redis_are_refused_with_a_reason(tmp_path):
    server = Server(tmp_path, tmp_path / "stream")
    done = subprocess.run([sys.executable, "-m", "app.cli", "--config", str(server.config_path),
                           "serve", "--workers", "2"], cwd=PROJECT, capture_output=True,
                          check=False, text=True, timeout=30)
    assert done.returncode == 2
    assert "redis_url" in done.stderr and "LIVESTREAM_REDIS_URL" in done.stderr


def test_unreachable_redis_is_named_without_its_password(tmp_path):
    port = free_port()
    server = Server(tmp_path, tmp_path / "stream",
                    f'[store]\nredis_url = "redis://:hunter2secret@127.0.0.1:{port}/0"\n')
    done = subprocess.run([sys.executable, "-m", "app.cli", "--config", str(server.config_path),
                           "serve", "--workers", "2"], cwd=PROJECT, capture_output=True,
                          check=False, text=True, timeout=30)
    assert done.returncode == 1
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in done.stderr
    assert "hunter2secret" not in done.stderr + done.stdout


def test_a_killed_worker_is_restarted_and_ctrl_c_stops_them_all(tmp_path, live_stream,
                                                                 redis_server):  # noqa: F811
    srv = chat_server(tmp_path, live_stream.directory,
                      redis_url=redis_server.new_database()).start()
    try:
        first = srv.pids
        os.kill(first[0], signal.SIGKILL)
        after = wait_for(lambda: (p := wait_workers(srv, 2)) and first[0] not in p and p,
                         20, what="the killed worker to be replaced")
        assert first[1] in after and len(after) == 2
        assert "restarting it" in srv.log()
        assert requests.get(srv.url + "/", timeout=5).status_code == 200
        srv.process.send_signal(signal.SIGINT)
        srv.process.wait(20)
        for pid in after:
            wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}") or
                     "zombie" in open(f"/proc/{pid}/status").read().lower(), 10,
                     what=f"worker {pid} to exit")
    finally:
        srv.stop()


def test_a_redis_restart_does_not_stop_the_video_and_the_chat_comes_back(tmp_path,
                                                                        live_stream):
    own = RedisServer(tmp_path / "redis").start()
    srv = chat_server(tmp_path, live_stream.directory, CHAT, own.url())
    video = None
    try:
        srv.start()
        viewer = ChatViewer(srv)
        video = RawStream(srv.port, f"/stream.mp4?token={viewer.token}")
        wait_for(lambda: video.received() > 10_000, 15, what="video")
        own.stop()
        before = video.received()
        time.sleep(4)
        assert video.received() > before + 10_000, "video stalled while Redis was down"
        down = viewer.get("/chat/form")
        assert down.status_code == 503 and "try again" in down.text.lower(), down.text[:300]
        own.start()
        after = video.received()

        def posted():
            return viewer.post("redis is back").status_code == 303
        wait_for(posted, 20, interval=0.5, what="a post once Redis is back")
        # each worker's relay reconnects on its own and reads on from the last event it saw
        wait_for(lambda: srv.log().count("chat push resumed") >= 2, 15,
                 what="both workers' push relays back")
        frames = streams_per_worker(srv, f"/chat/messages?token={viewer.token}")
        try:
            time.sleep(0.5)  # chat.min_interval after the post above
            assert viewer.post("pushed again").status_code == 303
            for frame in frames.values():
                frame.arrival("pushed again", timeout=3)
        finally:
            for frame in frames.values():
                frame.close()
        assert video.received() > after
    finally:
        if video:
            video.close()
        srv.stop()
        own.stop()


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (from /proc), with its command's name."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        parents[int(entry)], names[int(entry)] = int(rest.split()[1]), name
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                found[child] = names[child]
                todo.append(child)
    return found


def listening_pids(port: int, pids: list[int]) -> list[int]:
    """Which of `pids` hold the socket listening on loopback `port`."""
    inodes = {line.split()[9] for line in open("/proc/net/tcp").read().splitlines()[1:]
              if int(line.split()[1].split(":")[1], 16) == port and line.split()[3] == "0A"}
    holders = []
    for pid in pids:
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            holders.append(pid)
    return holders


def test_the_onion_ingest_and_demo_run_once_in_the_parent(tmp_path, redis_server):  # noqa: F811
    ingest_port = free_port()
    srv = WorkersServer(tmp_path, tmp_path / "stream", redis_server.new_database(),
                        f'[ingest]\nenabled = true\nport = {ingest_port}\n'
                        '[tor]\nenabled = true\n[tor.torrc]\nDisableNetwork = 1\n')
    srv.start("--demo")
    try:
        srv.wait_live(40)

        def side_jobs() -> dict[str, list[int]]:
            below = descendants(srv.process.pid)
            return {name: sorted(p for p, n in below.items() if n == name)
                    for name in ("tor", "ffmpeg")}

        jobs = side_jobs()
        assert len(jobs["tor"]) == 1 and len(jobs["ffmpeg"]) == 1, jobs
        for pid in srv.pids:
            assert not set(descendants(pid).values()) & {"tor", "ffmpeg"}, "a worker runs one"
        assert listening_pids(ingest_port, [srv.process.pid, *srv.pids]) == [srv.process.pid]
        os.kill(srv.pids[0], signal.SIGKILL)
        wait_for(lambda: srv.pids[0] not in wait_workers(srv, 2), 30,
                 what="the killed worker to be replaced")
        time.sleep(2)
        assert side_jobs() == jobs, "a new worker starts no second onion, ingest or demo"
    finally:
        srv.stop()  # SIGTERM, as systemd stops it
    for pid in jobs["tor"] + jobs["ffmpeg"]:  # stream.sh's ffmpeg too, not only the script
        wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 15,
                 what=f"side job {pid} to end with the server")


def test_metrics_add_up_the_viewers_of_every_worker(workers):
    """A scrape reaches one worker; its viewer counts are every worker's (the history file
    holds each one's newest 10-second point), one row per rendition."""
    from prometheus_client.parser import text_string_to_metric_families

    videos = streams_per_worker(workers, "/stream.mp4")  # one /stream.mp4 on each worker

    def counted() -> float:
        text = requests.get(workers.url + "/metrics", auth=BROADCASTER, timeout=10).text
        rows = [(s.name, tuple(sorted(s.labels.items())), s.value)
                for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "livestream_viewers"]
        assert len({labels for _, labels, _ in rows}) == len(rows), rows  # no duplicates
        return sum(value for _, _, value in rows)

    try:
        wait_for(lambda: counted() >= 2, 25, interval=1, what="both workers' viewers counted")
    finally:
        for stream in videos.values():
            stream.close()
