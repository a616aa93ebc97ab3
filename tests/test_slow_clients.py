"""Slow, idle and greedy clients against a real server process and a live ffmpeg stream.

200 viewers that never read /stream.mp4 (tiny receive windows) must not delay a normal viewer
nor grow the server's memory without bound; slowloris requests are cut off; idle connections
time out; one token cannot open more than stream.max_connections_per_viewer video responses.
"""
from __future__ import annotations

import re
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest
import requests
from support import Server, wait_for

SEND_TIMEOUT = 3.0
HEADER_TIMEOUT = 2.0
PER_VIEWER = 4
SLOW_VIEWERS = 200


@pytest.fixture(scope="module")
def server(tmp_path_factory, live_stream):
    srv = Server(tmp_path_factory.mktemp("slow"), live_stream.directory,
                 f"send_timeout = {SEND_TIMEOUT}\nmax_connections_per_viewer = {PER_VIEWER}\n")
    srv.config_path.write_text(srv.config_path.read_text().replace(
        "[server]\n", f"[server]\nheader_timeout = {HEADER_TIMEOUT}\n", 1))
    srv.start()
    srv.wait_live()
    yield srv
    srv.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def tcp_kernel_kib() -> int:
    """Memory the kernel holds in TCP buffers, all sockets together (/proc/net/sockstat)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * 4  # pages of 4 KiB
    return 0


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


class Reader(threading.Thread):
    """A normal viewer: reads /stream.mp4 as fast as it comes, noting when bytes arrive."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.arrivals: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        with requests.get(self.url + "/stream.mp4", stream=True, timeout=30) as response:
            for _chunk in response.iter_content(4096):
                self.arrivals.append(time.monotonic())
                if self.done.is_set():
                    return


def push_delays(server: Server, playlist: Path, segments: int = 3) -> list[float]:
    """Seconds from a segment listed in the playlist to its first byte at a normal viewer."""
    reader = Reader(server.url)
    reader.start()
    wait_for(lambda: reader.arrivals, 10, what="video bytes")
    delays = []
    try:
        for _ in range(segments):
            before = playlist.stat().st_mtime_ns
            wait_for(lambda b=before: playlist.stat().st_mtime_ns != b, 5, 0.002,
                     "a new segment")
            listed = time.monotonic()
            first = wait_for(lambda at=listed: next((t for t in list(reader.arrivals)
                                                     if t >= at - 0.05), None),
                             5, 0.002, "its bytes")
            delays.append(max(0.0, first - listed))
            time.sleep(0.3)
    finally:
        reader.done.set()
    return delays


def slow_reader(port: int, token: str | None = None) -> socket.socket:
    """A /stream.mp4 viewer with a tiny receive window that never reads a byte."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    query = f"?token={token}" if token else ""
    sock.sendall(f"GET /stream.mp4{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def test_slow_readers_do_not_delay_others_or_grow_memory(server, live_stream):
    playlist = live_stream.directory / "stream.m3u8"
    pid = server.process.pid
    baseline = push_delays(server, playlist)
    rss_before, fds_before, kernel_before = rss_kib(pid), open_fds(pid), tcp_kernel_kib()
    slow = [slow_reader(port_of(server)) for _ in range(SLOW_VIEWERS)]
    try:
        wait_for(lambda: open_fds(pid) >= fds_before + SLOW_VIEWERS * 0.9, 10, 0.1,
                 "the slow viewers to be accepted")
        loaded = push_delays(server, playlist)
        rss_loaded, kernel_loaded = rss_kib(pid), tcp_kernel_kib()
        # the stuck viewers are dropped once a write to them stalls for send_timeout
        wait_for(lambda: open_fds(pid) <= fds_before + 10, SEND_TIMEOUT + 10, 0.2,
                 "the stuck viewers to be dropped")
        rss_after = rss_kib(pid)
    finally:
        for sock in slow:
            sock.close()
    print(f"\npush delay p50 without / with {SLOW_VIEWERS} stuck viewers: "
          f"{statistics.median(baseline) * 1000:.0f} ms / {statistics.median(loaded) * 1000:.0f} "
          f"ms (max {max(loaded) * 1000:.0f} ms); RSS {rss_before // 1024} -> "
          f"{rss_loaded // 1024} -> {rss_after // 1024} MiB; kernel TCP buffers "
          f"{kernel_before // 1024} -> {kernel_loaded // 1024} MiB")
    assert max(loaded) < 0.5, f"a normal viewer waited {max(loaded):.3f}s behind stuck ones"
    assert rss_loaded - rss_before < 64 * 1024, "200 stuck viewers cost more than 64 MiB"
    assert rss_after - rss_before < 64 * 1024
    assert kernel_loaded - kernel_before < 200 * 1024, "stuck viewers pin kernel buffers"
    assert requests.get(server.url + "/info", timeout=5).status_code == 200


def test_slowloris_requests_are_cut_off_without_delaying_others(server):
    port = port_of(server)
    pid = server.process.pid
    fds_before = open_fds(pid)
    dribblers = []
    for _ in range(SLOW_VIEWERS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        dribblers.append(sock)
    started = time.monotonic()
    slowest = 0.0
    closed: set[int] = set()
    try:
        while time.monotonic() - started < HEADER_TIMEOUT + 4 and len(closed) < len(dribblers):
            for index, sock in enumerate(dribblers):
                if index in closed:
                    continue
                try:
                    sock.sendall(b"X")  # one more byte of a header that never ends
                except OSError:
                    closed.add(index)
            t0 = time.monotonic()
            assert requests.get(server.url + "/info", timeout=5).status_code == 200
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.3)
            for index, sock in enumerate(dribblers):
                sock.setblocking(False)
                try:
                    if index not in closed and sock.recv(4096) is not None:
                        closed.add(index)  # an answer (400) or EOF: the server let go
                except BlockingIOError:
                    pass
                except OSError:
                    closed.add(index)
        elapsed = time.monotonic() - started
    finally:
        for sock in dribblers:
            sock.close()
    print(f"\n{len(closed)}/{len(dribblers)} slowloris connections cut after {elapsed:.1f}s; "
          f"slowest normal page meanwhile {slowest * 1000:.0f} ms")
    assert len(closed) == len(dribblers), "some dribbling requests were kept open"
    assert elapsed < HEADER_TIMEOUT + 3
    assert slowest < 0.5
    wait_for(lambda: open_fds(pid) <= fds_before + 5, 5, 0.1, "their sockets to be closed")


def test_idle_connections_time_out(server):
    port = port_of(server)
    silent = socket.create_connection(("127.0.0.1", port), timeout=SEND_TIMEOUT + 10)
    keepalive = socket.create_connection(("127.0.0.1", port), timeout=SEND_TIMEOUT + 10)
    try:
        started = time.monotonic()
        keepalive.sendall(b"GET /api/clock HTTP/1.1\r\nHost: x\r\n\r\n")
        assert keepalive.recv(65536).startswith(b"HTTP/1.1 200")
        assert silent.recv(1) == b""  # the server hung up on a connection that said nothing
        waited = time.monotonic() - started
        while keepalive.recv(65536):  # and on a keep-alive connection left idle
            pass
        waited_keepalive = time.monotonic() - started
    finally:
        silent.close()
        keepalive.close()
    assert SEND_TIMEOUT - 0.5 < waited < SEND_TIMEOUT + 3, waited
    assert SEND_TIMEOUT - 0.5 < waited_keepalive < SEND_TIMEOUT + 3, waited_keepalive


def server_token(server) -> str:
    """A token the server handed out (a made-up one is not a token there)."""
    page = requests.get(server.url + "/", timeout=10).text
    return re.search(r"/chat/form\?token=([\w-]+)", page).group(1)


def test_one_token_cannot_open_many_video_connections(server):
    token = server_token(server)
    url = f"{server.url}/stream.mp4?token={token}"
    held = [requests.get(url, stream=True, timeout=10) for _ in range(PER_VIEWER)]
    try:
        assert [r.status_code for r in held] == [200] * PER_VIEWER
        refused = requests.get(url, timeout=10)
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        assert "max_connections_per_viewer" in refused.text
        other = requests.get(f"{server.url}/stream.mp4?token={server_token(server)}",
                             stream=True, timeout=10)
        assert other.status_code == 200  # other viewers are not affected
        other.close()
        held.pop().close()
        again = wait_for(lambda: (r := requests.get(url, stream=True, timeout=10))
                         .status_code == 200 and r, 5, 0.1, "a freed slot")
        held.append(again)
    finally:
        for response in held:
            response.close()
    # clients that hang up before reading anything give their slots back too
    for _ in range(3 * PER_VIEWER):
        slow_reader(port_of(server), token).close()

    def all_free():
        tries = [requests.get(url, stream=True, timeout=10) for _ in range(PER_VIEWER)]
        ok = all(r.status_code == 200 for r in tries)
        for r in tries:
            r.close()
        return ok
    wait_for(all_free, 10, 0.3, "every slot back after abrupt disconnects")


@pytest.mark.slow
def test_soak_at_a_small_scale_stays_flat():
    """bench/soak.py end to end at 5%: no failures, fds back to the start, no tracebacks."""
    import subprocess
    import sys

    project = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, str(project / "bench" / "soak.py"), "--scale", "0.05"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines()
            if line.strip().split(" ")[0] in ("start", "end")}
    assert int(rows["end"][2]) <= int(rows["start"][2]) + 5  # open file descriptors
    assert "requests that failed: 0" in run.stdout
