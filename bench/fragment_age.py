"""How old each fragment is when it reaches a /stream.mp4 viewer.

The source is ffmpeg's test picture read in real time (`-re`): media time 0 is the moment
ffmpeg was started (the mp4 muxers start their timestamps at 0, whatever
`-output_ts_offset` says), so a fragment's age on arrival is the viewer's clock minus the
wall time of its first frame (that moment plus its start, from `tfdt`): how long the oldest
picture in it waited; the newest waited its duration less.
ffmpeg takes a moment to start, which that moment does not know: the ages printed are that
much too high, never too low.

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
    if mode == "hls":
        return subprocess.Popen(
            [*inputs, "-f", "hls", "-hls_time", "2", "-hls_list_size", "15",
             "-hls_segment_type", "fmp4", "-hls_flags", "delete_segments+temp_file",
             "-hls_segment_filename", str(folder / "stream%d.m4s"),
             str(folder / "stream.m3u8")], stdin=subprocess.DEVNULL)
    encoder = subprocess.Popen(
        [*inputs, "-f", "mp4", "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
         "-frag_duration", str(part_ms * 1000), "pipe:1"], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE)
    subprocess.Popen([sys.executable, "-m", "app.cli", "segment", "--locked"], cwd=PROJECT,
                     stdin=encoder.stdout, env=dict(os.environ, LIVESTREAM_STREAM_DIR=str(folder)))
    encoder.stdout.close()
    return encoder


def viewer(connect, seconds: float, ages: list[float], started: float) -> None:
    """Read /stream.mp4 raw (a socket, no HTTP library in between), note each fragment's age
    when its last byte arrived."""
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
                    ages.append(now - (started + info.start))
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
            privnet: bool = False, edge: bool = False) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stream = folder / "stream"
        stream.mkdir()
        port = free_port()
        config_text = (f'[server]\nport = {port}\nstate_dir = "{folder / "state"}"\n'
                       f'[stream]\ndir = "{stream}"\n')
        started = time.time()
        encoder = source(mode, stream, seconds + (240 if privnet else 0), part_ms)
        try:
            if privnet:
                with onion_site(folder, config_text) as site:
                    wait_for(lambda: _live(port), 60, 0.5, "the stream to go live")
                    return _read(viewers, seconds, started,
                                 lambda i: lambda: site.connect(f"viewer-{i}"))
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
                return _read(viewers, seconds, started, lambda i: lambda: (
                    socket.create_connection(("127.0.0.1", port), timeout=10)))
            finally:
                for server in servers:
                    server.terminate()
                    server.wait(15)
        finally:
            encoder.terminate()
            encoder.wait(15)


def _read(viewers: int, seconds: float, started: float, connect_for) -> list[float]:
    ages: list[float] = []
    threads = [threading.Thread(target=viewer, args=(connect_for(i), seconds, ages, started))
               for i in range(viewers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return ages


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
        ages = sorted(measure(mode, args.seconds, args.viewers, part_ms, args.privnet,
                              args.edge))
        name = f"parts of {part_ms} ms" if mode == "parts" else "hls segments"
        if not ages:
            print(f"{name}: no fragment arrived")
            continue
        p95 = ages[int(len(ages) * 0.95)]
        print(f"{name}: {len(ages)} fragments at {args.viewers} viewers; age of the first "
              f"frame on arrival p50 {statistics.median(ages):.3f} s, p95 {p95:.3f} s, "
              f"max {ages[-1]:.3f} s")


if __name__ == "__main__":
    main()
