"""The delay an edge (`serve --origin`) adds: segment listed on the origin's disk -> first byte
of that segment at a /stream.mp4 viewer of the origin, and at a viewer of an edge.

Starts its own test stream (./stream.sh --test), an origin `livestream serve` and an edge
`livestream serve --origin` on loopback; watches the origin's playlist file every 2 ms and
notes when each segment is first listed; two viewers read /stream.mp4 (one from each server)
on raw sockets and note when each chunk arrives; each segment's bytes are then found in what
each viewer received (segments are sent verbatim), which gives its arrival time exactly.

    python bench/relay_delay.py [--seconds 40] [--segment-seconds 1] [--poll 0.25]
"""
from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "tests"))

from support import Server, TestStream  # noqa: E402


class Viewer(threading.Thread):
    """GET /stream.mp4 on a raw socket; keeps every byte and when each recv() returned."""

    def __init__(self, port: int, seconds: float):
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.data = bytearray()
        self.marks: list[tuple[int, float]] = []  # (offset of the chunk's end, monotonic time)

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"GET /stream.mp4 HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                self.data += chunk
                self.marks.append((len(self.data), time.monotonic()))

    def arrival(self, segment: bytes) -> float | None:
        """When the first byte of `segment` reached this viewer (None: never). Found by its
        last bytes (media samples): /stream.mp4 renumbers each fragment's header per response,
        so the segment's first bytes differ from the file's; its length does not."""
        tail = min(512, len(segment))
        found = self.data.find(segment[-tail:])
        if found < 0:
            return None
        where = found + tail - len(segment)
        for end, when in self.marks:
            if end > where:
                return when
        return None


def watch_playlist(directory: Path, listed: dict[str, tuple[float, bytes]],
                   stop: threading.Event) -> None:
    """Note the moment each segment name first appears in the origin's playlist file, and
    its bytes (ffmpeg deletes old segments before the run is over)."""
    path = directory / "stream.m3u8"
    last = None
    while not stop.is_set():
        try:
            st = path.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key != last:
                last = key
                now = time.monotonic()
                for line in path.read_text().splitlines():
                    if line.endswith(".m4s") and line not in listed:
                        listed[line] = (now, (directory / line).read_bytes())
        except (FileNotFoundError, ValueError):  # between ffmpeg's rename and our read
            pass
        time.sleep(0.002)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--segment-seconds", type=int, default=1)
    parser.add_argument("--poll", type=float, default=0.25, help="edge relay.poll_interval")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        base = Path(tmp)
        for name in ("origin", "edge"):
            (base / name).mkdir()
        stream = TestStream(base / "origin-stream", segment_seconds=args.segment_seconds)
        origin = Server(base / "origin", stream.directory)
        edge = Server(base / "edge", base / "edge-stream",
                      extra_config=f"[relay]\npoll_interval = {args.poll}\n")
        listed: dict[str, tuple[float, bytes]] = {}
        stop = threading.Event()
        try:
            stream.start()
            stream.wait_segments(2)
            origin.start()
            origin.wait_live()
            edge.start("--origin", origin.url)
            edge.wait_live(30)
            watcher = threading.Thread(target=watch_playlist,
                                       args=(stream.directory, listed, stop), daemon=True)
            watcher.start()
            time.sleep(0.5)
            already = set(listed)
            viewers = {"origin": Viewer(origin.port, args.seconds),
                       "edge": Viewer(edge.port, args.seconds)}
            for viewer in viewers.values():
                viewer.start()
            for viewer in viewers.values():
                viewer.join(args.seconds + 15)
            stop.set()
            rows: dict[str, list[float]] = {"origin": [], "edge": [], "added": []}
            for name, (when, data) in sorted(listed.items(), key=lambda item: item[1][0]):
                if name in already:
                    continue
                at_origin = viewers["origin"].arrival(data)
                at_edge = viewers["edge"].arrival(data)
                if at_origin is None or at_edge is None:
                    continue
                rows["origin"].append(at_origin - when)
                rows["edge"].append(at_edge - when)
                rows["added"].append(at_edge - at_origin)
        finally:
            stop.set()
            edge.stop()
            origin.stop()
            stream.stop()
    count = len(rows["added"])
    if count < 5:
        print(f"only {count} segments matched; is ffmpeg running?", file=sys.stderr)
        return 1
    print(f"{count} segments of {args.segment_seconds} s, edge poll_interval {args.poll} s")
    print("| listed on the origin's disk -> first byte at | p50 | p95 | max |")
    print("|---|---|---|---|")
    labels = {"origin": "an origin viewer", "edge": "an edge viewer",
              "added": "edge minus origin (the added delay)"}
    for key, label in labels.items():
        values = [v * 1000 for v in rows[key]]
        print(f"| {label} | {statistics.median(values):.0f} ms | {pct(values, 0.95):.0f} ms "
              f"| {max(values):.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
