"""A compressed "days of uptime": many viewers, tokens and chat messages against one server.

A real `livestream serve` watches a live `./stream.sh --test` stream while client threads
open and close /stream.mp4 connections (each reads the start of the video, then hangs up),
load the page without a token (a brand-new viewer each time) and post chat messages through
the no-JS form. After every tenth of the work the server's RSS, open file descriptors and the
latency of a plain page are sampled, so growth shows up as a trend, not a single number.

    python bench/soak.py              # 100,000 connections, 50,000 tokens, 20,000 messages
    python bench/soak.py --scale 0.1  # a tenth of that, for a quick look
    python bench/soak.py --restarts --redis   # the source restarted after every tenth, the
                                              # store in a redis-server restarted halfway

Greenlets and file descriptors come from the server's own /metrics (the broadcaster's
login), RSS from /proc.

The captcha is disabled in the soak config (it is tested elsewhere) and the flood rules are
relaxed so one process can post fast. Loopback only; every wait is bounded.
"""
from __future__ import annotations

import argparse
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from redis_support import RedisServer  # noqa: E402
from support import Server, TestStream  # noqa: E402

PASSWORD = "soak-only"

ROUNDS = 10
SETTLE = 2.0  # seconds before the last sample: twice the test stream's segment length
VIEWERS = 400  # distinct viewers watching
POSTERS = 2000  # distinct viewers posting
_tokens: dict[str, str] = {}  # name -> a token the server handed out (made ones are not tokens)


def token_for(port: int, name: str) -> str:
    """The same server-made token for the same name, fetched from the page the first time."""
    token = _tokens.get(name)
    if token is None:
        _, page = request(port, get("/"), want=10**9)
        token = _tokens[name] = re.search(rb"/chat/form\?token=([\w-]+)", page).group(1).decode()
    return token


def request(port: int, raw: bytes, want: int = 1, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send one raw HTTP request; read until `want` body bytes arrived (or the end)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and len(body) >= want:
                break
    status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode()


def video(port: int, i: int) -> int:
    token = token_for(port, f"viewer-{i % VIEWERS}")
    return request(port, get(f"/stream.mp4?token={token}"), want=512)[0]


def new_viewer(port: int, i: int) -> int:
    status, data = request(port, get("/"), want=10**9)
    return status


def chat(port: int, i: int) -> int:
    token = token_for(port, f"poster-{i % POSTERS}")
    status, form = request(port, get(f"/chat/form?token={token}"), want=10**9)
    nonce = re.search(rb'name="nonce" value="([^"]+)"', form)
    if status != 200 or not nonce:
        return status or 1
    body = f"token={token}&nonce={nonce.group(1).decode()}&message=soak+message+{i}".encode()
    raw = (f"POST /chat/form?token={token} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
           "Content-Type: application/x-www-form-urlencoded\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return request(port, raw)[0]


def process_figures(port: int) -> dict:
    """Greenlets and open fds as the server counts them (/metrics, the broadcaster login)."""
    import base64

    auth = base64.b64encode(f"broadcaster:{PASSWORD}".encode()).decode()
    raw = (f"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
           f"Authorization: Basic {auth}\r\n\r\n").encode()
    _, text = request(port, raw, want=10**9)
    found = dict(re.findall(rb"^(livestream_greenlets|livestream_open_fds) ([\d.]+)$", text,
                            re.M))
    return {"greenlets": int(float(found.get(b"livestream_greenlets", -1))),
            "server_fds": int(float(found.get(b"livestream_open_fds", -1)))}


def sample(pid: int, port: int) -> dict:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) // 1024
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    times = []
    for _ in range(20):
        started = time.perf_counter()
        request(port, get("/info"), want=10**9)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"rss_mib": rss, "fds": fds, "p50_ms": statistics.median(times),
            "p95_ms": times[int(len(times) * 0.95) - 1], **process_figures(port)}


def run(scale: float, workers: int, restarts: bool = False, with_redis: bool = False) -> int:
    plan = {"video connections": (video, int(100_000 * scale)),
            "new tokens": (new_viewer, int(50_000 * scale)),
            "chat messages": (chat, int(20_000 * scale))}
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    stream = TestStream(workdir / "stream").start()
    redis_server = RedisServer(workdir / "redis").start() if with_redis else None
    store = f'[store]\nredis_url = "{redis_server.url()}"\n' if redis_server else ""
    server = Server(workdir, workdir / "stream",
                    "[captcha]\nenabled = false\n"
                    f'[broadcaster]\npassword = "{PASSWORD}"\n'
                    "[chat]\nmin_interval = 0.001\nwindow_messages = 1000000\n" + store)
    results: dict[str, dict[int, int]] = {name: {} for name in plan}
    lock = threading.Lock()
    samples = []
    try:
        stream.wait_segments(2)
        server.start()
        server.wait_live()
        port, pid = server.port, server.process.pid
        time.sleep(2)
        samples.append(("start", sample(pid, port)))
        started = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            for round_ in range(ROUNDS):
                jobs = []
                for name, (task, total) in plan.items():
                    share = range(round_ * total // ROUNDS, (round_ + 1) * total // ROUNDS)
                    jobs += [(name, pool.submit(task, port, i)) for i in share]
                for name, job in jobs:
                    try:
                        status = job.result(timeout=60)
                    except OSError:
                        status = -1
                    with lock:
                        results[name][status] = results[name].get(status, 0) + 1
                if restarts and round_ < ROUNDS - 1:  # the source stops and starts again
                    stream.stop()
                    stream = TestStream(workdir / "stream").start()
                    stream.wait_segments(1)
                    server.wait_live()
                if redis_server is not None and round_ == ROUNDS // 2 - 1:
                    redis_server.stop()  # the chat says "unavailable" (503) meanwhile
                    time.sleep(1)
                    redis_server.start()
                label = {ROUNDS // 2 - 1: "middle", ROUNDS - 1: "end"}.get(round_,
                                                                          f"{round_ + 1}/10")
                if label == "end":
                    time.sleep(SETTLE)  # closed viewers are noticed at the next segment
                samples.append((label, sample(pid, port)))
                s = samples[-1][1]
                print(f"  {label:>7}: RSS {s['rss_mib']} MiB, {s['fds']} fds, "
                      f"{s['greenlets']} greenlets, /info p50 {s['p50_ms']:.1f} ms "
                      f"({time.monotonic() - started:.0f} s)", flush=True)
        elapsed = time.monotonic() - started
        log = server.log()
    finally:
        server.stop()
        stream.stop()
        if redis_server is not None:
            redis_server.stop()
    print(f"\nsoak at scale {scale}: {elapsed:.0f} s on {workers} client threads")
    for name, (_, total) in plan.items():
        print(f"  {name:>18}: {total:>7}  statuses {dict(sorted(results[name].items()))}")
    print(f"\n  {'when':>7}  {'RSS MiB':>8}  {'fds':>5}  {'greenlets':>9}  {'p50 ms':>7}  "
          f"{'p95 ms':>7}")
    for label, s in samples:
        if label in ("start", "middle", "end") or "--all" in sys.argv:
            print(f"  {label:>7}  {s['rss_mib']:>8}  {s['fds']:>5}  {s['greenlets']:>9}  "
                  f"{s['p50_ms']:>7.1f}  {s['p95_ms']:>7.1f}")
    # with --restarts a video connection may find the stream restarting (503), with --redis
    # the chat answers 503 while Redis is down: both are the server saying so, not failing
    allowed = {200, 303, 429} | ({503} if restarts or with_redis else set())
    failures = sum(n for r in results.values() for status, n in r.items()
                   if status not in allowed)
    limited = results["video connections"].get(429, 0)
    print(f"\n  requests that failed: {failures}; video connections refused with 429 because "
          f"the token already held 4 (the server notices a hang-up at its next write): "
          f"{limited}; tracebacks in the server log: {log.count('Traceback')}")
    growth = samples[-1][1]["rss_mib"] - samples[len(samples) // 2][1]["rss_mib"]
    print(f"  RSS change over the second half: {growth:+d} MiB")
    return 0 if failures == 0 and "Traceback" not in log else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="1.0 = 100,000 connections, 50,000 tokens, 20,000 messages")
    parser.add_argument("--workers", type=int, default=16, help="client threads")
    parser.add_argument("--all", action="store_true", help="print every sample, not 3")
    parser.add_argument("--restarts", action="store_true",
                        help="restart the source after every tenth of the work")
    parser.add_argument("--redis", action="store_true",
                        help="keep the chat in a redis-server, restarted halfway")
    args = parser.parse_args()
    return run(args.scale, args.workers, args.restarts, args.redis)


if __name__ == "__main__":
    sys.exit(main())
