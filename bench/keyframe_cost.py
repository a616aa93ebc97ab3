"""What a keyframe every second costs against one per 2 s segment.

Firefox (and Tor Browser) plays a progressive /stream.mp4 about one keyframe interval behind
what it has, so every source here puts a keyframe every second inside 2 s segments. Keyframes
are large: this encodes the same picture both ways with stream.sh's encoder settings and
prints the bitrate at a fixed quality (x264's CRF) and the quality (SSIM against the source,
1.0 = identical) at a fixed bitrate (stream.sh's CBR-like cap), for two pictures: ffmpeg's
moving test pattern, and a still picture (a screen left alone: the worst
case, where the frames between keyframes cost little).

    python bench/keyframe_cost.py [--seconds 20] [--size 1280x720] [--bitrate 1200k]

Only local files and ffmpeg; nothing on the network.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PICTURES = {
    "test pattern": "testsrc2=size={size}:rate={fps}",
    "still picture": "smptehdbars=size={size}:rate={fps}",
}


def encode(source: str, seconds: int, fps: int, keyframe_seconds: int, rate: list[str],
           out: Path) -> float:
    """Encode; the video's bitrate in kbit/s."""
    keyint = str(fps * keyframe_seconds)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", source, "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast",
                    "-pix_fmt", "yuv420p", *rate, "-g", keyint, "-keyint_min", keyint,
                    "-sc_threshold", "0", "-an", str(out)], check=True, timeout=600,
                   stdin=subprocess.DEVNULL)
    return out.stat().st_size * 8 / 1000 / seconds


def ssim(source: str, seconds: int, encoded: Path) -> float:
    done = subprocess.run(["ffmpeg", "-hide_banner", "-i", str(encoded), "-f", "lavfi", "-i",
                           source, "-t", str(seconds), "-lavfi", "[0:v][1:v]ssim",
                           "-f", "null", "-"], capture_output=True, text=True, timeout=600,
                          check=True, stdin=subprocess.DEVNULL)
    return float(re.findall(r"All:([\d.]+)", done.stderr)[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", default="1200k", help="stream.sh's VIDEO_BITRATE")
    parser.add_argument("--crf", type=int, default=23)
    args = parser.parse_args()
    kbps = int(args.bitrate.rstrip("k"))
    capped = ["-b:v", args.bitrate, "-maxrate", args.bitrate, "-bufsize", f"{kbps * 2}k"]
    print(f"{args.size} at {args.fps} fps, {args.seconds} s, x264 veryfast")
    print(f"{'picture':<14}{'keyframes':<12}{'kbit/s at CRF ' + str(args.crf):<20}"
          f"{'SSIM at ' + args.bitrate:<14}")
    with tempfile.TemporaryDirectory() as folder:
        for name, pattern in PICTURES.items():
            source = pattern.format(size=args.size, fps=args.fps)
            for every in (2, 1):
                at_crf = encode(source, args.seconds, args.fps, every, ["-crf", str(args.crf)],
                                Path(folder) / "crf.mp4")
                out = Path(folder) / "capped.mp4"
                encode(source, args.seconds, args.fps, every, capped, out)
                print(f"{name:<14}{'every ' + str(every) + ' s':<12}{at_crf:<20.0f}"
                      f"{ssim(source, args.seconds, out):<14.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
