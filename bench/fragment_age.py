"""How old each fragment is when it reaches a /stream.mp4 viewer.

The source is ffmpeg's test picture read in real time (`-re`); the mp4 muxers start their
timestamps at 0 (whatever `-output_ts_offset` or `-copyts` says), so a fragment's age on
arrival is the viewer's clock minus the wall time of its first frame: the wall time of media
time 0 plus the fragment's start (`tfdt`). How long the oldest picture in it waited; the
newest waited its duration less. Two estimates of media time 0 bound the age:
- "from launch": the moment ffmpeg was started; ffmpeg takes about 70 ms to read its first
  frame, so these ages are that much too high, never too low;
- "from ffmpeg's clock": ffmpeg reports how far its output has got 10 times a second
  (`-progress`); the earliest report less that position is at most the encoder's own delay
  (a few ms at `-tune zerolatency`) after media time 0, so these ages are never too high by
  more than that, and may be that much low.

Two ways from encoder to server, the same picture (640x360, 30 fps, a keyframe every 2 s):
- parts: fragmented MP4 every 200 ms through `livestream segment` (stream.sh LOW_LATENCY=1);
- hls: ffmpeg's HLS muxer, a whole 2 s segment at a time (stream.sh's default).

    python bench/fragment_age.py --seconds 20 --viewers 20
    python bench/fragment_age.py --privnet --modes parts   # through a private Tor network
    python bench/fragment_age.py --edge --modes parts      # viewers of an edge of the server

With --privnet the server is an onion service of a private Tor network on this machine
(bench/privnet_site.py) and every viewer reads through the network's SOCKS port on a circuit
of its own. Loopback only; every loop ends with --seconds.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))
from privnet_site import onion_site  # noqa: E402
from support import free_port, wait_for  # noqa: E402

from app.stream import boxes  # noqa: E402

ENCODE = ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", "1200k",
          "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-c:a", "aac", "-b:a", "96k"]


def source(mode: str, folder: Path, seconds: float, part_ms: int) -> subprocess.Popen:
    inputs = ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i",
              "testsrc2=size=640x360:rate=30", "-re", "-f", "lavfi", "-i",
              "sine=frequency=440:sample_rate=48000", "-t", str(seconds + 30), *ENCODE]
    inputs += ["-progress", "pipe:2", "-stats_period", "0.1"]
    if mode == "hls":
        encoder = subprocess.Popen(
            [*inputs, "-f", "hls", "-hls_time", "2", "-hls_list_size", "15",
             "-hls_segment_type", "fmp4", "-hls_flags", "delete_segments+temp_file",
             "-hls_segment_filename", str(folder / "stream%d.m4s"),
             str(folder / "stream.m3u8")], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    else:
        encoder = subprocess.Popen(
            [*inputs, "-f", "mp4", "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
             "-frag_duration", str(part_ms * 1000), "pipe:1"], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        subprocess.Popen([sys.executable, "-m", "app.cli", "segment", "--locked"], cwd=PROJECT,
                         stdin=encoder.stdout,
                         env=dict(os.environ, LIVESTREAM_STREAM_DIR=str(folder)))
        encoder.stdout.close()
    return encoder


class Clock:
    """Media time 0 on the wall clock, from ffmpeg's progress reports (the earliest report
    less the output position it gives); read in a thread until ffmpeg ends."""

    def __init__(self, stderr) -> None:
        self.zero = float("inf")
        threading.Thread(target=self._read, args=(stderr,), daemon=True).start()

    def _read(self, stderr) -> None:
        for line in stderr:
            now = time.time()
            if line.startswith(b"out_time_us="):
                try:
                    position = int(line.split(b"=", 1)[1]) / 1e6
                except ValueError:
                    continue  # "N/A" before the first packet
                if position > 0:
                    self.zero = min(self.zero, now - position)


def viewer(connect, seconds: float, arrivals: list[tuple[float, float]]) -> None:
    """Read /stream.mp4 raw (a socket, no HTTP library in between), note when each
    fragment's last byte arrived, beside its start in media time."""
    with connect() as sock:
        sock.sendall(b"GET /stream.mp4 HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = bytearray()
        head_done, deadline = False, time.monotonic() + seconds
        init = defaults = None
        offset = 0
        while time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return
            now = time.time()
            data += chunk
            if not head_done:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    continue
                del data[:end + 4]
                head_done = True
            body = _unchunk(data)
            while True:  # every complete moof+mdat from `offset` on
                found = list(boxes.boxes(bytes(body[offset:offset + 16 << 20])))
                if init is None:
                    moov = next((k for k in found if k[0] == b"moov"), None)
                    if moov is None:
                        break
                    init_bytes = bytes(body[:offset + moov[2]])
                    init, defaults = boxes.parse_init(init_bytes), boxes.track_defaults(
                        init_bytes)
                    offset += moov[2]
                    continue
                if found and found[0][0] not in (b"moof", b"mdat"):
                    offset += found[0][2]  # styp, sidx, prft: not media
                    continue
                if len(found) < 2 or found[0][0] != b"moof" or found[1][0] != b"mdat":
                    break
                fragment = bytes(body[offset:offset + found[1][2]])
                info = boxes.describe_fragment(fragment, init, defaults)
                if info is not None:
                    arrivals.append((now, info.start))
                offset += found[1][2]


def _unchunk(data: bytearray) -> bytearray:
    """The body of a chunked response read so far (complete chunks only)."""
    body, at = bytearray(), 0
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return body
        size = int(data[at:end], 16)
        if end + 2 + size + 2 > len(data):
            return body
        body += data[end + 2:end + 2 + size]
        at = end + 2 + size + 2


def measure(mode: str, seconds: float, viewers: int, part_ms: int,
            privnet: bool = False, edge: bool = False) -> dict[str, list[float]]:
    """Each fragment's age on arrival, from each estimate of media time 0."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stream = folder / "stream"
        stream.mkdir()
        port = free_port()
        config_text = (f'[server]\nport = {port}\nstate_dir = "{folder / "state"}"\n'
                       f'[stream]\ndir = "{stream}"\n')
        started = time.time()
        encoder = source(mode, stream, seconds + (240 if privnet else 0), part_ms)
        clock = Clock(encoder.stderr)

        def ages(arrivals: list[tuple[float, float]]) -> dict[str, list[float]]:
            return {"from launch": sorted(now - (started + at) for now, at in arrivals),
                    "from ffmpeg's clock": sorted(now - (clock.zero + at)
                                                  for now, at in arrivals)}

        try:
            if privnet:
                with onion_site(folder, config_text) as site:
                    wait_for(lambda: _live(port), 60, 0.5, "the stream to go live")
                    return ages(_read(viewers, seconds,
                                      lambda i: lambda: site.connect(f"viewer-{i}")))
            config = folder / "config.toml"
            config.write_text(config_text)
            servers = [subprocess.Popen([sys.executable, "-m", "app.cli", "--config",
                                         str(config), "serve"], cwd=PROJECT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
            try:
                wait_for(lambda: _live(port), 60, 0.5, "the stream to go live")
                if edge:  # a second server following the first; the viewers read from it
                    origin, port = port, free_port()
                    edge_config = folder / "edge.toml"
                    edge_config.write_text(
                        f'[server]\nport = {port}\nstate_dir = "{folder / "edge-state"}"\n'
                        f'[stream]\ndir = "{folder / "edge-stream"}"\n')
                    servers.append(subprocess.Popen(
                        [sys.executable, "-m", "app.cli", "--config", str(edge_config), "serve",
                         "--origin", f"http://127.0.0.1:{origin}"],
                        cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    wait_for(lambda: _live(port), 60, 0.5, "the edge to go live")
                return ages(_read(viewers, seconds, lambda i: lambda: (
                    socket.create_connection(("127.0.0.1", port), timeout=10))))
            finally:
                for server in servers:
                    server.terminate()
                    server.wait(15)
        finally:
            encoder.terminate()
            encoder.wait(15)


def _read(viewers: int, seconds: float, connect_for) -> list[tuple[float, float]]:
    arrivals: list[tuple[float, float]] = []
    threads = [threading.Thread(target=viewer, args=(connect_for(i), seconds, arrivals))
               for i in range(viewers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return arrivals


def _live(port: int) -> bool:
    import requests

    try:
        return b"<video" in requests.get(f"http://127.0.0.1:{port}/", timeout=2).content
    except requests.RequestException:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["hls", "parts"])
    parser.add_argument("--part-ms", type=int, nargs="+", default=[200],
                        help="fragment lengths to try in parts mode (stream.sh's PART_MS)")
    parser.add_argument("--privnet", action="store_true",
                        help="viewers through a private Tor network (../shared/tools)")
    parser.add_argument("--edge", action="store_true",
                        help="viewers of an edge (`serve --origin`) of the server")
    args = parser.parse_args()
    runs = [(mode, part_ms) for mode in args.modes
            for part_ms in (args.part_ms if mode == "parts" else [0])]
    for mode, part_ms in runs:
        measured = measure(mode, args.seconds, args.viewers, part_ms, args.privnet, args.edge)
        name = f"parts of {part_ms} ms" if mode == "parts" else "hls segments"
        for anchor, ages in measured.items():
            if not ages:
                print(f"{name}: no fragment arrived")
                break
            p95 = ages[int(len(ages) * 0.95)]
            print(f"{name}: {len(ages)} fragments at {args.viewers} viewers; age of the first "
                  f"frame on arrival, {anchor}: p50 {statistics.median(ages):.3f} s, "
                  f"p95 {p95:.3f} s, max {ages[-1]:.3f} s")


if __name__ == "__main__":
    main()
