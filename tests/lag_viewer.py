"""A /stream.mp4 viewer that reports how far behind live it falls: run inside a namespace.

`python lag_viewer.py URL SECONDS` reads the response for SECONDS and prints JSON: for each
fragment the wall time it arrived and its media time (from tfdt), the bytes read and whether
the server ended the response early (it drops a viewer that fell out of its memory window).
"""
from __future__ import annotations

import json
import struct
import sys
import time
import urllib.request


def fragments(buffer: bytearray, timescale: dict) -> list[float]:
    """Media start (seconds) of each complete moof at the front of buffer, consumed."""
    found = []
    while len(buffer) >= 8:
        size, kind = struct.unpack_from(">I4s", buffer, 0)
        if size < 8 or len(buffer) < size:
            break
        box = bytes(buffer[:size])
        del buffer[:size]
        if kind == b"moov":
            at = box.find(b"mdhd")
            if at > 0:
                version = box[at + 4]
                scale_at = at + 4 + 4 + (16 if version == 1 else 8)
                timescale["video"] = struct.unpack_from(">I", box, scale_at)[0]
        elif kind == b"moof":
            at = box.find(b"tfdt")
            if at > 0 and timescale.get("video"):
                version = box[at + 4]
                value = (struct.unpack_from(">Q", box, at + 8)[0] if version == 1
                         else struct.unpack_from(">I", box, at + 8)[0])
                found.append(value / timescale["video"])
    return found


def main(url: str, seconds: float) -> None:
    started = time.monotonic()
    deadline = started + seconds
    samples, total, ended = [], 0, False
    buffer, timescale = bytearray(), {}
    while True:
        try:
            response = urllib.request.urlopen(url, timeout=30)
            break
        except OSError:
            if time.monotonic() > deadline:
                print(json.dumps({"error": "no answer"}))
                return
            time.sleep(0.5)
    first_byte = time.monotonic() - started
    with response:
        while time.monotonic() < deadline:
            chunk = response.read1(65536)
            if not chunk:
                ended = True
                break
            total += len(chunk)
            buffer += chunk
            now = time.monotonic() - started
            samples += [[round(now, 3), round(media, 3)] for media in fragments(buffer, timescale)]
    print(json.dumps({"samples": samples, "bytes": total, "ended_early": ended,
                      "first_byte": round(first_byte, 3),
                      "elapsed": round(time.monotonic() - started, 3)}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
