"""What JavaScript viewers following the live edge fragment by fragment cost the server.

Each follower does what static/player/follow.js does while live: one `/fragments` request
whose response pushes every fragment, framed, as it is written. A test stream writes 200 ms
parts (stream.sh LOW_LATENCY=1, 640x360); one `livestream serve` answers. Reported per N
followers: server CPU (% of one core), requests per second, and how many followers kept up
(received a fragment in the last second of the window).

    python bench/fragment_followers.py --followers 100 500 1000 --seconds 15

Compare `bench/stream_viewers.py` for /stream.mp4 viewers (the same fragments, pushed).
Loopback only; every loop ends with --seconds.
"""
from __future__ import annotations

import argparse
import multiprocessing
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT / "tests"))
from support import Server, TestStream, pushed_frames  # noqa: E402

PROCESSES = 4  # client processes, each with many greenlets


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def followers(port: int, count: int, seconds: float, results) -> None:  # results: a Pipe end
    """`count` followers in this process (gevent), until `seconds` have passed."""
    from gevent import monkey

    monkey.patch_all(ssl=False)  # nothing here speaks TLS
    import http.client
    import json

    import gevent

    deadline = time.monotonic() + seconds
    stats = {"requests": 0, "fragments": 0, "kept_up": 0}

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/")  # a viewer's own token, as the page gives it to the player
        token = re.search(rb"token=([\w-]+)", conn.getresponse().read())[1].decode()
        conn.request("GET", f"/api/playlist?token={token}")
        timeline = json.loads(conn.getresponse().read())
        generation, sequence, index = timeline["generation"], \
            timeline["segments"][-1]["sequence"] + 1, 0
        last = 0.0
        conn.request("GET", f"/fragments?gen={generation}&seq={sequence}&k={index}"
                            f"&token={token}")
        response = conn.getresponse()
        stats["requests"] += 1
        frames = pushed_frames(response.read) if response.status == 200 else iter(())
        for _, first, final, _ in frames:
            stats["fragments"] += final - first + 1
            last = time.monotonic()
            if last >= deadline:
                break
        if last > deadline - 1.0:
            stats["kept_up"] += 1

    gevent.joinall([gevent.spawn(one) for _ in range(count)])
    results.send(stats)  # a plain write: a Queue's feeder thread is a greenlet here


def measure(port: int, pid: int, count: int, seconds: float) -> dict:
    share = [count // PROCESSES + (i < count % PROCESSES) for i in range(PROCESSES)]
    pipes = [multiprocessing.Pipe(duplex=False) for n in share if n]
    clients = [multiprocessing.Process(target=followers, args=(port, n, seconds + 3, sender))
               for n, (_, sender) in zip([n for n in share if n], pipes, strict=True)]
    for client in clients:
        client.start()
    time.sleep(3)  # every follower connected and following
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds - 0.5)
    cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
    totals = {"requests": 0, "fragments": 0, "kept_up": 0}
    for receiver, _ in pipes:
        if receiver.poll(seconds + 60):
            for key, value in receiver.recv().items():
                totals[key] += value
    for client in clients:
        client.join(30)
    return {"cpu": cpu, **totals}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        stream = TestStream(work / "stream", size="640x360", segment_seconds=2,
                            framerate=30, video_bitrate="1200k", low_latency=True).start()
        server = Server(work, stream.directory)
        try:
            stream.wait_segments(2, timeout=30)
            server.start()
            server.wait_live()
            print(f"{'followers':>10}{'kept up':>9}{'server CPU':>12}{'CPU/follower':>14}"
                  f"{'requests/s':>12}{'fragments/s':>13}")
            for count in args.followers:
                got = measure(server.port, server.process.pid, count, args.seconds)
                window = args.seconds + 3
                print(f"{count:>10}{got['kept_up']:>9}{got['cpu'] * 100:>11.1f}%"
                      f"{got['cpu'] * 100 / count:>14.4f}{got['requests'] / window:>12.0f}"
                      f"{got['fragments'] / window:>13.0f}")
        finally:
            server.stop()
            stream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
