"""Chat delivery latency and capacity, against a real `livestream serve` on loopback.

1. latency: a viewer posts through the form (Post/Redirect/Get); we time post -> message seen
   in a no-JS viewer's live chat frame and in a JS viewer's server-sent events stream.
2. capacity: N viewers hold the live chat frame open; we time page loads (/, the chat form,
   the polling frame) while they are connected, and post -> seen at every one of them.

Usage: python bench/chat_latency.py [--viewers 2000] [--messages 40] [--pages 300]
       [--workers 2]   (N worker processes on one port, a local redis-server shared by them:
                        the frames are spread over the workers, posts land on any of them)
All clients are greenlets in this one process; the run is bounded (about a minute).
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import requests  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{name:<44} n={len(ms):<6} p50={percentile(ms, 50):7.1f} ms  "
            f"p95={percentile(ms, 95):7.1f} ms  p99={percentile(ms, 99):7.1f} ms  "
            f"max={max(ms):7.1f} ms")


class FrameReader:
    """A no-JS viewer's live chat frame on a raw socket, noting when each marker arrives."""

    def __init__(self, port: int, path: str):
        self.seen: dict[str, float] = {}
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.ready = gevent.event.Event()
        self.greenlet = gevent.spawn(self._read)

    def _read(self) -> None:
        tail = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                now = time.perf_counter()
                self.ready.set()
                text = tail + data
                for marker in re.findall(rb"bench-(\d+)-end", text):
                    self.seen.setdefault(marker.decode(), now)
                tail = text[-32:]
        except OSError:
            return

    def close(self) -> None:
        self.greenlet.kill()
        self.sock.close()


def start_server(workdir: Path, port: int, viewers: int, workers: int = 1,
                 redis_url: str = "") -> subprocess.Popen:
    config = workdir / "config.toml"
    store = f'[store]\nredis_url = "{redis_url}"\n' if redis_url else ""
    config.write_text(
        f'[server]\nport = {port}\nstate_dir = "{workdir / "state"}"\nlog_level = "warning"\n'
        f"workers = {workers}\n" + store +
        f'[stream]\ndir = "{workdir / "stream"}"\n'
        f"[chat]\nmin_interval = 0.01\nwindow_messages = 1000\nmax_streams = {viewers + 100}\n"
        "[captcha]\nenabled = false\n"
        '[broadcaster]\npassword = "bench-password"\n')
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "--config", str(config),
                                "serve"], cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            if workers > 1:
                time.sleep(4)  # the other workers bind the port a moment later
            return process
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not start: see " + str(workdir / "server.log"))


def post(base: str, token: str, text: str) -> float:
    """Fetch the form (for its one-use nonce), post, follow nothing; return the send time."""
    form = requests.get(f"{base}/chat/form?token={token}", timeout=10).text
    nonce = re.search(r'name="nonce" value="([^"]+)"', form).group(1)
    sent = time.perf_counter()
    response = requests.post(f"{base}/chat/form?token={token}", allow_redirects=False,
                             data={"token": token, "nonce": nonce, "message": text}, timeout=10)
    if response.status_code != 303:
        raise SystemExit(f"posting failed: {response.status_code} {response.text[:300]}")
    return sent


def sse_reader(base: str, seen: dict[str, float], ready: gevent.event.Event) -> None:
    with requests.get(f"{base}/events", stream=True, timeout=120) as response:
        for line in response.iter_lines():
            ready.set()
            for marker in re.findall(rb"bench-(\d+)-end", line):
                seen.setdefault(marker.decode(), time.perf_counter())


def latency(base: str, port: int, messages: int) -> None:
    frame = FrameReader(port, f"/chat/messages?token={'latencyframe' + 'x' * 12}")
    sse_seen: dict[str, float] = {}
    sse_ready = gevent.event.Event()
    sse = gevent.spawn(sse_reader, base, sse_seen, sse_ready)
    frame.ready.wait(5)
    sse_ready.wait(5)
    poster = "latencyposter" + "y" * 10
    sent = {}
    for i in range(messages):
        sent[str(i)] = post(base, poster, f"bench-{i}-end")
        gevent.sleep(0.05)
    gevent.sleep(1)
    frame.close()
    sse.kill()
    nojs = [frame.seen[k] - t for k, t in sent.items() if k in frame.seen]
    js = [sse_seen[k] - t for k, t in sent.items() if k in sse_seen]
    print(summary("post -> no-JS live frame", nojs))
    print(summary("post -> JS viewer (SSE)", js))
    missing = messages - min(len(nojs), len(js))
    if missing:
        print(f"  missing deliveries: {missing}")


def capacity(base: str, port: int, viewers: int, pages: int, messages: int) -> bool:
    frames = []
    opened = time.perf_counter()
    for i in range(viewers):
        frames.append(FrameReader(port, f"/chat/messages?token=benchviewer{i:08d}zzzz"))
        if i % 200 == 199:
            gevent.sleep(0.05)
    for f in frames:
        f.ready.wait(10)
    connected = sum(1 for f in frames if f.ready.is_set())
    print(f"{connected} of {viewers} live chat frames connected in "
          f"{time.perf_counter() - opened:.1f} s")

    page_times = []
    session = requests.Session()  # one keep-alive client, like a browser loading pages
    paths = ["/", "/chat/form?token=pagevisitor0000000000", "/chat/users?token=pagevisitor00000",
             "/chat/messages?mode=poll&token=pagevisitor00000000"]
    for i in range(pages):
        start = time.perf_counter()
        response = session.get(base + paths[i % len(paths)], timeout=10)
        page_times.append(time.perf_counter() - start)
        assert response.status_code == 200, response.status_code
        gevent.sleep(0.01)
    print(summary(f"page load with {connected} frames open", page_times))

    fanout = []
    poster = "capacityposter" + "q" * 8
    for i in range(messages):
        key = str(10_000 + i)
        sent = post(base, poster, f"bench-{key}-end")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(key in f.seen for f in frames) < connected:
            gevent.sleep(0.01)
        fanout += [f.seen[key] - sent for f in frames if key in f.seen]
        gevent.sleep(0.1)
    print(summary(f"post -> seen by each of {connected} frames", fanout))
    for f in frames:
        f.close()
    return percentile(page_times, 99) < 0.1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        redis_server = None
        if args.workers > 1:
            sys.path.insert(0, str(PROJECT / "tests"))
            from redis_support import RedisServer

            redis_server = RedisServer(Path(tmp) / "redis").start()
        print(f"workers: {args.workers}")
        server = start_server(Path(tmp), port, args.viewers, args.workers,
                              redis_server.url() if redis_server else "")
        try:
            latency(base, port, args.messages)
            ok = capacity(base, port, args.viewers, args.pages, max(5, args.messages // 4))
        finally:
            server.terminate()
            server.wait(15)
            if redis_server:
                redis_server.stop()
    print("p99 page latency under 100 ms:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
