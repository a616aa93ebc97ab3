"""What renumbering each /stream.mp4 response's fragments costs per viewer and segment.

Every response numbers its fragments from its own start (VLC needs it when joining
mid-stream): per viewer and segment, a 4 KiB copy of the head with four bytes patched, where
before it sent a slice of the shared buffer. This times both on a real 720p fMP4 segment
made with ffmpeg, in one process, so the figure is free of network and scheduling noise.

    python bench/fragment_renumber.py --rounds 200000
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.stream.boxes import fragment_sequence_offsets  # noqa: E402
from app.stream.fanout import HEAD_BYTES, renumbered  # noqa: E402
from app.stream.watcher import Segment  # noqa: E402


def make_segment(folder: Path) -> bytes:
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "1200k", "-g", "60",
         "-f", "hls", "-hls_time", "2", "-hls_segment_type", "fmp4",
         str(folder / "stream.m3u8")], check=True)
    return (folder / "stream1.m4s").read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_segment(Path(tmp))
    segment = Segment("stream1.m4s", 1, 2.0, data, 0.0, fragment_sequence_offsets(data))
    started = time.perf_counter()
    for _ in range(args.rounds):
        view = memoryview(segment.data)
        pieces = [view[:HEAD_BYTES], view[HEAD_BYTES:]]
    before = (time.perf_counter() - started) / args.rounds
    started = time.perf_counter()
    for number in range(args.rounds):
        pieces = renumbered(segment.data, segment.fragment_offsets, number)
    after = (time.perf_counter() - started) / args.rounds
    started = time.perf_counter()
    for _ in range(1000):
        fragment_sequence_offsets(data)
    find = (time.perf_counter() - started) / 1000
    print(f"segment {len(data)} bytes, {len(segment.fragment_offsets)} fragment(s)")
    print(f"shared slices (before):      {before * 1e6:6.2f} us per viewer and segment")
    print(f"renumbered head (now):       {after * 1e6:6.2f} us per viewer and segment")
    print(f"finding the offsets (once):  {find * 1e6:6.2f} us per segment")
    del pieces


if __name__ == "__main__":
    main()
