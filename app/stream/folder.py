"""The stream folder contract: the names every source writes and every reader expects.

ffmpeg (stream.sh, `livestream play`, the RTMP ingest, through our segmenter when they write
parts) and OBS write fMP4 HLS into one folder: an init segment, numbered media segments and a
playlist, ended with ENDLIST when the broadcast is over. The watcher, the file views and the
sources all take the names from here.

Renditions: the top one (the source quality) keeps the single-rendition names (the configured
playlist, init.mp4, stream%d.m4s), so a folder with one playlist (OBS) is simply a stream with
one rendition. Each lower rendition NAME writes NAME.m3u8, NAME-init.mp4 and NAME-%d.m4s, cut at
the same keyframe times, so segment N of every rendition covers the same media time. The
master playlist (master.m3u8) lists them all for HLS players and tells the watcher which
renditions exist.

Parts (low latency, written by our segmenter, app/sources/segmenter.py: `livestream segment`,
and in-process for `play`, the party and the ingest with stream.part_ms): while segment N
is being written, each of its fragments is a file of its own, stream{N}.{K}.m4s (NAME-{N}.{K}.m4s
for a lower rendition), listed after the last finished segment as `#EXT-X-PART` lines (the
segment in progress) with an `#EXT-X-PRELOAD-HINT` for the next; a part that starts with a
keyframe says `INDEPENDENT=YES` (a new /stream.mp4 viewer may begin there). Segment N, once
finished, is its parts joined byte for byte, listed with `#EXTINF` as any segment; its parts
stay listed (and on disk) for the three newest segments. A part is written whole and renamed
into place before the playlist naming it, like every other file. Readers that know nothing of
parts (OBS-era players, an older edge) read the same folder at segment latency.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SEGMENT_SECONDS = 2
# Segments start at keyframes: a source whose keyframes come further apart than this (OBS's
# default keyint 250) makes segments that long, so viewers start late and the stream flaps.
LONG_SEGMENT_SECONDS = 4.0
PLAYLIST_SIZE = 15
INIT_NAME = "init.mp4"
SEGMENT_PATTERN = "stream%d.m4s"
ENDLIST = "#EXT-X-ENDLIST"
DEFAULT_PLAYLIST = "stream.m3u8"
MASTER_PLAYLIST = "master.m3u8"
TITLE_FILE = "title.txt"  # the stream's title, one line; the broadcaster page writes it
TITLE_MAX = 200
# Watch party (app/sources/party): while this file exists and is fresh the writer is holding
# the stream on purpose (paused by the host, or switching position), so the watcher keeps it
# online and /stream.mp4 responses stay open. Its one line says why: "host" or "seek".
HOLD_FILE = "paused"
HOLD_FRESH_SECONDS = 15.0  # the writer rewrites it every few seconds; older means it died
COUNTDOWN_FILE = "starts_at"  # unix time the host's queue starts for everyone
# what the file views answer with, by suffix
MIME_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".mp4": "video/mp4",
              ".m4s": "video/iso.segment"}



@dataclass(frozen=True)
class RenditionFiles:
    """The three names one rendition writes into the stream folder."""

    playlist: str
    init: str
    segment_pattern: str  # printf-style, as ffmpeg's -hls_segment_filename takes it


def rendition_files(name: str, top: bool, playlist: str = DEFAULT_PLAYLIST) -> RenditionFiles:
    """The file names of rendition `name`; the top one keeps the single-rendition names."""
    if top:
        return RenditionFiles(playlist, INIT_NAME, SEGMENT_PATTERN)
    return RenditionFiles(f"{name}.m3u8", f"{name}-init.mp4", f"{name}-%d.m4s")


@dataclass(frozen=True)
class Variant:
    """One line of the master playlist: what an HLS player (and the watcher) may choose."""

    name: str
    playlist: str
    bandwidth: int  # bits per second, video and audio together
    width: int = 0
    height: int = 0


def master_playlist(variants: list[Variant]) -> str:
    """The master playlist text, top rendition first (HLS players take the first to start)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for variant in variants:
        attributes = f"BANDWIDTH={variant.bandwidth}"
        if variant.width and variant.height:
            attributes += f",RESOLUTION={variant.width}x{variant.height}"
        attributes += f',NAME="{variant.name}"'
        lines += [f"#EXT-X-STREAM-INF:{attributes}", variant.playlist]
    return "\n".join(lines) + "\n"


def write_master(stream_dir: Path, variants: list[Variant]) -> None:
    """Written once when a broadcast starts, atomically: the watcher never reads half of it."""
    path = Path(stream_dir) / MASTER_PLAYLIST
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(master_playlist(variants))
    os.replace(temp, path)


def prepare_stream_dir(stream_dir: Path, playlist: str = DEFAULT_PLAYLIST) -> None:
    """A new broadcast starts clean: stale segments from the last one must not be served.

    Every playlist, segment and init segment goes, whichever rendition wrote it, so a
    rendition dropped from the config does not linger in the master playlist's place.
    """
    stream_dir = Path(stream_dir)
    stream_dir.mkdir(parents=True, exist_ok=True)
    for path in stream_dir.iterdir():
        name = path.name
        if (name in (INIT_NAME, playlist, playlist + ".tmp")
                or name.endswith((".m4s", ".m3u8", ".m3u8.tmp", "-init.mp4"))
                or (name.startswith("stream") and name.endswith(".tmp"))):
            path.unlink(missing_ok=True)


def ensure_endlist(playlist_path: Path) -> bool:
    """Make sure viewers see 'ended', not a stalled stream. True when we had to add it."""
    path = Path(playlist_path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return False
    if ENDLIST in text.split():
        return False
    temp = path.with_name(path.name + ".end.tmp")
    temp.write_text(text.rstrip("\n") + "\n" + ENDLIST + "\n")
    os.replace(temp, path)  # atomic, like ffmpeg's temp_file flag
    return True




def write_file(stream_dir: Path, name: str, data: bytes) -> None:
    """Replace one file of the folder atomically (temp file + rename): readers see the old
    bytes or the new, never half of them."""
    fd, temp = tempfile.mkstemp(prefix=".write.", dir=stream_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, Path(stream_dir) / name)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def clean_title(text: str, default: str) -> str:
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    return text[:TITLE_MAX] or default


def write_title(stream_dir: Path, text: str) -> None:
    """Replace title.txt atomically: the watcher never reads half a title."""
    fd, temp = tempfile.mkstemp(prefix=".title.", dir=stream_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.replace(temp, Path(stream_dir) / TITLE_FILE)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_marker(stream_dir: Path, name: str, text: str) -> None:
    """Replace a one-line marker file (HOLD_FILE, COUNTDOWN_FILE) atomically."""
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", dir=stream_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.replace(temp, Path(stream_dir) / name)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_hold(stream_dir: Path, now: float | None = None) -> str:
    """Why the writer holds the stream ("host", "seek"), or "" when it does not (or died)."""
    path = Path(stream_dir) / HOLD_FILE
    try:
        if (now or time.time()) - path.stat().st_mtime > HOLD_FRESH_SECONDS:
            return ""
        with path.open("rb") as handle:
            reason = handle.read(32).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return reason if reason in ("host", "seek") else ""


def read_countdown(stream_dir: Path) -> float | None:
    """When the host's queue starts (unix time), if a countdown is set."""
    try:
        with (Path(stream_dir) / COUNTDOWN_FILE).open("rb") as handle:
            starts_at = float(handle.read(32).decode("ascii"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return starts_at if math.isfinite(starts_at) else None  # "inf" is not a time
