"""How many /stream.mp4 viewers one server process keeps up with, and at what cost.

A 720p ~1.3 Mbit/s clip is replayed in real time without re-encoding into fMP4 HLS, a real
`livestream serve` watches it, and client processes (epoll, no per-viewer threads) hold N
long-lived /stream.mp4 responses open. Reported per N:

- viewers keeping up: still connected at the end and holding the newest segment;
- server CPU (% of one core) and RSS over the measuring window;
- push delay: segment complete on disk (renamed into place by ffmpeg) -> first byte of it at
  each viewer, p50/p95 over every viewer and segment.

    python bench/stream_viewers.py --viewers 1000 5000 --seconds 20
    python bench/stream_viewers.py --viewers 1000 5000 --seconds 12 --workers 2

With --workers N (N > 1) the server runs N worker processes sharing the port, with a real
redis-server on loopback as their shared store; CPU and RSS are summed over the parent,
every worker and redis-server (a column of its own shows Redis's share), and "CPU/viewer"
divides the sum by the viewers.

Loopback only; every loop is bounded by --seconds.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT / "tests"))
from redis_support import RedisServer, worker_pids  # noqa: E402
from support import Server, wait_for  # noqa: E402

CACHE = HERE / ".cache"
QUIET = 0.4  # seconds of silence that separate one segment's burst from the next


def make_clip(seconds: int = 60) -> Path:
    """A 720p H.264/AAC clip at ~1.3 Mbit/s with a keyframe every 2 s (made once, cached)."""
    clip = CACHE / f"clip720p-{seconds}s.mp4"
    if clip.exists():
        return clip
    CACHE.mkdir(exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1200k", "-maxrate", "1300k",
         "-bufsize", "2600k", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", str(clip)],
        check=True,
    )
    return clip


def start_replay(clip: Path, directory: Path, part_ms: int = 0) -> subprocess.Popen:
    """The clip in real time into `directory`: ffmpeg's HLS muxer, or with `part_ms`,
    fragments of that length through `livestream segment` (stream.sh LOW_LATENCY=1)."""
    directory.mkdir(parents=True, exist_ok=True)
    if part_ms:
        encoder = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", str(clip),
             "-c", "copy", "-f", "mp4", "-movflags",
             "+frag_keyframe+empty_moov+default_base_moof", "-frag_duration",
             str(part_ms * 1000), "pipe:1"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        subprocess.Popen([sys.executable, "-m", "app.cli", "segment", "--locked"],
                         cwd=PROJECT, stdin=encoder.stdout,
                         env=dict(os.environ, LIVESTREAM_STREAM_DIR=str(directory)))
        encoder.stdout.close()
        return encoder
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", str(clip),
         "-c", "copy", "-f", "hls", "-hls_time", "2", "-hls_list_size", "10",
         "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
         "-hls_flags", "delete_segments+temp_file+independent_segments",
         "-hls_segment_filename", str(directory / "stream%d.m4s"), str(directory / "stream.m3u8")],
        stdin=subprocess.DEVNULL,
    )


def watch_segments(directory: Path, stop: threading.Event, completed: list) -> None:
    """Record when each segment is renamed into place: the moment it is complete on disk."""
    import inotify_simple

    with inotify_simple.INotify() as notifier:
        notifier.add_watch(str(directory), inotify_simple.flags.MOVED_TO)
        while not stop.is_set():
            for event in notifier.read(timeout=200):
                if re.fullmatch(r"stream\d+\.m4s", event.name):  # segments, not parts
                    now = time.monotonic()
                    try:
                        completed.append((now, os.path.getsize(directory / event.name)))
                    except OSError:
                        completed.append((now, 0))


def viewers(port: int, count: int, seconds: float, measure_from: float, results) -> None:
    """One client process: `count` sockets reading /stream.mp4, bursts timed per socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.nice(19)  # these clients stand in for other machines: the server goes first for CPU
    request = b"GET /stream.mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    selector = selectors.DefaultSelector()
    state = {}
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.sendall(request)
        sock.setblocking(False)
        state[sock] = {"bytes": 0, "last": 0.0, "bursts": [], "open": True, "measured": 0}
        selector.register(sock, selectors.EVENT_READ)
        if i % 200 == 199:
            time.sleep(0.02)  # do not overflow the listen backlog
    buffer = bytearray(1 << 18)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready = [key.fileobj for key, _ in selector.select(timeout=0.2)]
        now = time.monotonic()
        # Stamp the start of every new burst before draining anything, so the time this
        # client spends copying bytes does not count as server delay.
        for sock in ready:
            info = state[sock]
            if now - info["last"] > QUIET:
                info["bursts"].append(now)
            info["last"] = now
        for sock in ready:
            info = state[sock]
            try:
                n = sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                n = 0
            if n == 0:
                info["open"] = False
                selector.unregister(sock)
                sock.close()
                continue
            info["last"] = time.monotonic()
            info["bytes"] += n
            if now >= measure_from:
                info["measured"] += n
    results.put([(i["open"], i["measured"], i["bursts"]) for i in state.values()])
    for sock in list(state):
        if state[sock]["open"]:
            sock.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(server: Server, directory: Path, count: int, seconds: float, processes: int,
        redis_pid: int | None) -> dict:
    completed: list = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch_segments, args=(directory, stop, completed))
    watcher.start()
    results = multiprocessing.Queue()
    per = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    settle = min(6.0, seconds / 3)  # connect and settle before measuring
    measure_from = time.monotonic() + settle
    clients = [multiprocessing.Process(target=viewers,
                                       args=(server.port, n, seconds, measure_from, results))
               for n in per if n]
    for client in clients:
        client.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    pids = [server.process.pid, *worker_pids(server), *([redis_pid] if redis_pid else [])]
    cpu_start, wall_start = sum(map(cpu_seconds, pids)), time.monotonic()
    redis_start = cpu_seconds(redis_pid) if redis_pid else 0.0
    rss_peak = 0.0
    while any(c.is_alive() for c in clients) and results.qsize() < len(clients):
        rss_peak = max(rss_peak, sum(map(rss_mb, pids)))
        time.sleep(0.5)
        if time.monotonic() - wall_start > seconds:
            break
    elapsed = time.monotonic() - wall_start
    cpu = (sum(map(cpu_seconds, pids)) - cpu_start) / elapsed
    redis_cpu = (cpu_seconds(redis_pid) - redis_start) / elapsed if redis_pid else 0.0
    measure_to = time.monotonic()
    gathered = [row for _ in clients for row in results.get(timeout=seconds + 30)]
    for client in clients:
        client.join(10)
    stop.set()
    watcher.join()
    times = [t for t, _ in completed if t >= measure_from]
    # A viewer keeps up when it is still connected and received at least every segment
    # completed in the window (the one in flight at either end excepted).
    expected = sum(size for t, size in completed if measure_from + 0.5 <= t <= measure_to - 2.5)
    delays = []
    keeping_up = 0
    for is_open, measured, bursts in gathered:
        if is_open and measured >= expected:
            keeping_up += 1
        for burst in bursts:
            if burst < measure_from:
                continue
            before = [t for t in times if t <= burst]
            if before and burst - before[-1] < 1.5:
                delays.append(burst - before[-1])
    delays.sort()
    pick = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))] * 1000 if delays else None  # noqa: E731
    return {"viewers": count, "keeping_up": keeping_up, "cpu_pct": cpu * 100,
            "redis_cpu_pct": redis_cpu * 100,
            "rss_mb": rss_peak, "delay_p50_ms": pick(0.5), "delay_p95_ms": pick(0.95),
            "segments": len(times), "samples": len(delays)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1,
                        help="server worker processes (more than 1: with a local Redis)")
    parser.add_argument("--part-ms", type=int, default=0,
                        help="fragments of this length through `livestream segment` (low "
                             "latency) instead of whole HLS segments; push delay is then not "
                             "measured (every part is a burst)")
    args = parser.parse_args()
    if not shutil.which("ffmpeg"):
        sys.exit("ffmpeg is needed: apt-get install ffmpeg")
    clip = make_clip()
    with tempfile.TemporaryDirectory(prefix="bench-viewers-") as tmp:
        tmp = Path(tmp)
        replay = start_replay(clip, tmp / "stream", args.part_ms)
        redis_server = RedisServer(tmp / "redis").start() if args.workers > 1 else None
        store = f'[store]\nredis_url = "{redis_server.url()}"\n' if redis_server else ""
        server = Server(tmp, tmp / "stream", "memory_segments = 6\n" + store)
        try:
            server.config_path.write_text(server.config_path.read_text().replace(
                "offline_after = 4.0", "offline_after = 8.0"))
            server.start("--log-level", "warning", "--workers", str(args.workers))
            if args.workers > 1:
                wait_for(lambda: len(worker_pids(server)) == args.workers, 30, what="workers")
                time.sleep(3)
            wait_for(lambda: (tmp / "stream" / "stream.m3u8").exists(), 30, what="playlist")
            server.wait_live(30)
            print(f"workers: {args.workers}" + (f", parts of {args.part_ms} ms"
                                                 if args.part_ms else ", whole segments"))
            print(f"{'viewers':>8} {'keeping up':>11} {'CPU %core':>10} {'CPU/viewer':>11} "
                  f"{'RSS MB':>8} {'Redis %core':>12} "
                  f"{'push p50 ms':>12} {'push p95 ms':>12} {'segments':>9}")
            for count in args.viewers:
                r = run(server, tmp / "stream", count, args.seconds, args.client_processes,
                        redis_server.process.pid if redis_server else None)
                print(f"{r['viewers']:>8} {r['keeping_up']:>11} {r['cpu_pct']:>10.1f} "
                      f"{r['cpu_pct'] / r['viewers']:>11.4f} {r['rss_mb']:>8.0f} "
                      f"{r['redis_cpu_pct']:>12.1f} "
                      f"{r['delay_p50_ms'] or 0:>12.1f} "
                      f"{r['delay_p95_ms'] or 0:>12.1f} {r['segments']:>9}", flush=True)
                time.sleep(2)
        finally:
            server.stop()
            replay.terminate()
            replay.wait(10)
            if redis_server:
                redis_server.stop()


if __name__ == "__main__":
    main()
