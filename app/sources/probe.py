"""ffprobe: what an input holds (duration, video, audio and subtitle tracks), asked once
before anything runs so a wrong file or track number gets a message, not an ffmpeg error."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from app.sources.options import INSTALL_HINT, SourceError, is_url


@dataclass(frozen=True)
class Track:
    """One track; `number` counts among tracks of its kind, as --audio and --subs do."""

    number: int
    codec: str
    language: str = ""
    title: str = ""
    width: int = 0
    height: int = 0
    fps: float = 0.0
    pix_fmt: str = ""
    channels: int = 0

    def describe(self) -> str:
        bits = [str(self.number), self.codec]
        if self.width:
            bits.append(f"{self.width}x{self.height}")
        if self.language:
            bits.append(self.language)
        if self.title:
            bits.append(repr(self.title))
        return " ".join(bits)


@dataclass(frozen=True)
class MediaInfo:
    source: str
    duration: float | None
    video: tuple[Track, ...] = ()
    audio: tuple[Track, ...] = ()
    subtitles: tuple[Track, ...] = ()


def require_ffmpeg() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise SourceError(f"{tool} is not installed. {INSTALL_HINT}")


def probe(source: str, timeout: float = 30.0) -> MediaInfo:
    """Ask ffprobe what the input holds; fail with a message a person can act on."""
    require_ffmpeg()
    if not is_url(source):
        path = Path(source)
        if not path.exists():
            raise SourceError(f"{source}: no such file. Check the path (or give a URL).")
        if not path.is_file():
            raise SourceError(f"{source}: not a file")
        if not os.access(path, os.R_OK):
            raise SourceError(f"{source}: not readable (permissions)")
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    if is_url(source):
        cmd += ["-rw_timeout", str(int(timeout * 1_000_000))]
    cmd.append(source)
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout + 5,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SourceError(f"{source}: no answer within {timeout:.0f} s; is it reachable?") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        what = "cannot reach or read" if is_url(source) else "cannot read"
        raise SourceError(f"{source}: {what} it as a media file: {reason}")
    return parse_probe(source, json.loads(done.stdout or "{}"))


def parse_probe(source: str, data: dict) -> MediaInfo:
    kinds: dict[str, list[Track]] = {"video": [], "audio": [], "subtitle": []}
    for stream in data.get("streams", []):
        kind = stream.get("codec_type")
        if kind not in kinds:
            continue
        if kind == "video" and stream.get("disposition", {}).get("attached_pic"):
            continue  # cover art is not a picture track
        tags = stream.get("tags", {})
        kinds[kind].append(Track(
            number=len(kinds[kind]),
            codec=stream.get("codec_name", "unknown"),
            language=tags.get("language", ""),
            title=tags.get("title", ""),
            width=int(stream.get("width") or 0),
            height=int(stream.get("height") or 0),
            fps=_rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")),
            pix_fmt=stream.get("pix_fmt", ""),
            channels=int(stream.get("channels") or 0),
        ))
    try:
        duration = float(data.get("format", {}).get("duration"))
    except (TypeError, ValueError):
        duration = None
    return MediaInfo(source, duration, tuple(kinds["video"]), tuple(kinds["audio"]),
                     tuple(kinds["subtitle"]))


def _rate(text: str | None) -> float:
    try:
        num, _, den = (text or "0/1").partition("/")
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


