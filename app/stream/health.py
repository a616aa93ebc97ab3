"""Stream health for the cockpit: what the server reads, rendition by rendition, and the
warnings a streamer can act on.

Measured on what already exists: the segments the watcher holds in memory (about the last
30 s at the default 15 segments of 2 s), their sizes, durations and the wall-clock time the
watcher saw each one (`seen_at`), and the init segment. Nothing here runs on the video path:
the figures are worked out when the cockpit or /metrics asks.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from app.stream import boxes, folder
from app.stream.deliveries import RenditionViewers

CIRCUIT_KBPS = 1000  # what a slow Tor circuit carries: the lowest rendition must fit with room
REAL_TIME_SHARE = 0.9  # media seconds per wall second below this: the source cannot keep up
DISK_LOW_BYTES = 1 << 30


@dataclass
class RenditionHealth:
    quality: str
    segments: int = 0
    bitrate_kbps: float = 0.0
    duration_avg: float = 0.0
    duration_max: float = 0.0
    target: float = 0.0
    keyframe_interval: float = 0.0  # every segment starts at a keyframe: its longest gap
    fps: float = 0.0
    width: int = 0
    height: int = 0
    codecs: str = ""
    real_time: float | None = None  # media seconds per wall second over the held segments


@dataclass
class Health:
    renditions: list[RenditionHealth] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def rendition_health(view) -> RenditionHealth:
    health = RenditionHealth(view.quality or "source", target=view.target_duration)
    segments = view.segments
    if view.init is not None:
        info = boxes.parse_init(view.init)
        health.codecs = info.codecs
        size = boxes.video_size(view.init)
        if size:
            health.width, health.height = size
    if not segments:
        return health
    seconds = sum(s.duration for s in segments)
    health.segments = len(segments)
    health.bitrate_kbps = sum(len(s.data) for s in segments) * 8 / 1000 / max(seconds, 1e-6)
    health.duration_avg = seconds / len(segments)
    health.duration_max = max(s.duration for s in segments)
    health.keyframe_interval = health.duration_max
    main = boxes.parse_init(view.init).main_track if view.init else None
    if main is not None and main.handler == "vide":
        frames = sum(boxes.sample_count(s.data, main.track_id) for s in segments[-5:])
        health.fps = frames / max(sum(s.duration for s in segments[-5:]), 1e-6)
    arrived = [s for s in segments if s.seen_at]
    if len(arrived) >= 4:
        wall = arrived[-1].seen_at - arrived[0].seen_at
        media = sum(s.duration for s in arrived[1:])
        health.real_time = media / wall if wall > 0 else None
    return health


def assess(snapshot, viewers: dict[str, RenditionViewers], stream_dir: Path,
           captcha_ready: int | None) -> Health:
    """Every rendition's figures and the warnings, each in plain words with what to do."""
    health = Health([rendition_health(view) for view in snapshot.views])
    warn = health.warnings.append
    top, lowest = health.renditions[0], health.renditions[-1]
    if snapshot.online and top.keyframe_interval > folder.LONG_SEGMENT_SECONDS:
        warn(f"Keyframes are {top.keyframe_interval:.0f} s apart (segments that long): viewers "
             "start late and the stream may look offline between segments. Set the keyframe "
             "interval to 1 s (OBS: Settings > Output > Keyframe Interval).")
    if snapshot.online and top.real_time is not None and not snapshot.hold \
            and top.real_time < REAL_TIME_SHARE:
        warn(f"The source is slower than real time ({top.real_time:.2f} s of video per second): "
             "your encoder cannot keep up, so viewers stall. Lower the resolution, frame rate "
             "or bitrate, or pick a faster preset (ultrafast).")
    if snapshot.online and lowest.bitrate_kbps > CIRCUIT_KBPS * 0.8:
        warn(f"The lowest quality ({lowest.quality}) runs at {lowest.bitrate_kbps:.0f} kbit/s: "
             f"a {CIRCUIT_KBPS / 1000:.0f} Mbit/s Tor circuit cannot carry it with room to "
             "spare. Add a lower rendition in [[stream.renditions]] or lower its bitrate.")
    for row in viewers.values():
        if row.watching >= 3 and row.keeping_up < row.watching / 2:
            warn(f"{row.watching - row.keeping_up} of {row.watching} viewers of "
                 f"{row.quality or 'source'} cannot keep up: their connections are slower than "
                 "the stream. Offer a lower rendition or lower the bitrate.")
    try:
        disk = shutil.disk_usage(stream_dir)
        if disk.free < DISK_LOW_BYTES or disk.free < disk.total * 0.05:
            warn(f"The disk of the stream folder has {disk.free / (1 << 30):.1f} GiB free: when "
                 "it is full, segments, the chat store and tor all fail. Free some space.")
    except OSError:
        pass
    if captcha_ready == 0:
        warn("No captcha is ready: newcomers cannot post until the pool refills (many people "
             "joined at once, or someone is draining it). It refills at "
             "[captcha] generate_per_second.")
    return health
