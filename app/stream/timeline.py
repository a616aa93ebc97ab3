"""The shared timeline JavaScript viewers play against, so a watch party sees the same frame.

Every listed segment gets its media start time, read from its own fragments, so "stream time"
is simply the media time a browser reports as `currentTime`. For the segments held in memory
the watcher also noted the wall-clock moment it saw each one complete. From those the server
derives one `origin`: the server time at which media time 0 was live. Every viewer aims at
`server now - origin - delay`; viewers that know the server's clock land on the same frame.

Why this and not ffmpeg's EXT-X-PROGRAM-DATE-TIME: program date times come from the encoder's
clock and its idea of elapsed time, so they need every source (stream.sh, OBS, RTMP ingest,
`livestream play`) to emit them, and they drift from the wall clock when an encoder runs slower
than real time. The watcher's own clock works for every source and measures what viewers can
actually fetch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from app.stream import boxes
from app.stream import playlist as hls
from app.stream.clock import StreamClock
from app.stream.watcher import Snapshot

# Seconds behind the live edge on top of one segment: room for noticing, fetching and
# appending the newest segment before the play position reaches it.
DELAY_MARGIN = 0.75
# With a source that writes parts the player follows fragment by fragment (fragments.py):
# it aims this many parts behind the edge, plus a margin for the request and the append.
DELAY_PARTS = 2
PART_MARGIN = 0.2
STREAM_PREFIX = "/stream/"


@dataclass(frozen=True)
class TimedSegment:
    sequence: int
    uri: str
    start: float  # media seconds, the browser's currentTime at its first frame
    duration: float
    seen_at: float | None  # wall clock when the watcher saw it complete; None if not held


@dataclass(frozen=True)
class Timeline:
    status: str
    online: bool
    generation: int
    title: str
    target_duration: float
    init: str | None
    codecs: str
    origin: float | None  # server time at which media time 0 was live
    delay: float  # how far behind the live edge every viewer aims to play
    segments: tuple[TimedSegment, ...]
    quality: str = ""  # the rendition these segments belong to ("" with a single one)
    # every rendition: {"name", "bandwidth", "resolution"}, top first, for the player's choice
    qualities: tuple[dict, ...] = ()
    # the segment in progress of a source writing parts: {"sequence", "start", "duration"}
    partial: dict | None = None
    part_target: float | None = None  # seconds per part, when the source writes parts

    def as_json(self, clock: StreamClock) -> dict:
        """For the player: every moment on the public clock (app/stream/clock.py)."""
        data = asdict(self)
        data["origin"] = clock.of(self.origin)
        for segment in data["segments"]:
            segment["seen_at"] = clock.of(segment["seen_at"])
        data["now"] = clock.now()
        return data


class TimelineBuilder:
    """One timeline per rendition and snapshot; every request between two snapshots shares it.

    Renditions are cut at the same media times, so their timelines line up segment by
    segment and a player may switch between them at any sequence number.
    """

    def __init__(self) -> None:
        self._builders: dict[str, _RenditionTimeline] = {}

    def get(self, snap: Snapshot) -> Timeline:
        """`snap` is a rendition's view (Snapshot.view); its name picks the cached builder."""
        names = {v.name for v in snap.qualities} | {""}
        for gone in [name for name in self._builders if name not in names]:
            del self._builders[gone]  # bounded by the renditions the master lists
        builder = self._builders.get(snap.quality)
        if builder is None:
            builder = self._builders[snap.quality] = _RenditionTimeline()
        return builder.get(snap)


class _RenditionTimeline:
    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._timeline: Timeline | None = None
        self._init_bytes: bytes | None = None
        self._init = boxes.InitInfo()
        self._starts: dict[tuple[int, int, str], float | None] = {}
        # the tightest origin bound any part of a segment gave while it was in progress
        self._part_bounds: dict[tuple[int, int], float] = {}

    def get(self, snap: Snapshot) -> Timeline:
        if snap is not self._snapshot or self._timeline is None:
            self._timeline = self._build(snap)
            self._snapshot = snap
        return self._timeline

    def _build(self, snap: Snapshot) -> Timeline:
        if snap.init is not self._init_bytes:
            self._init_bytes = snap.init
            self._init = boxes.parse_init(snap.init) if snap.init else boxes.InitInfo()
        entries = snap.entries
        held = {seg.sequence: seg for seg in snap.segments}
        starts = self._media_starts(snap, held)
        segments = place(entries, starts, held)
        partial = in_progress(snap, segments)
        origin = live_origin(segments, self._note_part_bound(snap, segments, partial))
        longest = max((s.duration for s in segments), default=snap.target_duration)
        delay = longest + DELAY_MARGIN
        if snap.part_target:
            delay = min(delay, DELAY_PARTS * snap.part_target + PART_MARGIN)
        return Timeline(
            status=snap.status, online=snap.online, generation=snap.generation,
            title=snap.title, target_duration=snap.target_duration,
            init=STREAM_PREFIX + snap.init_name if snap.init_name else None,
            codecs=self._init.codecs, origin=origin,
            delay=round(delay, 3), segments=segments, partial=partial,
            part_target=snap.part_target,
            quality=snap.quality,
            qualities=tuple({"name": v.name, "bandwidth": v.bandwidth,
                             "resolution": v.resolution} for v in snap.qualities),
        )

    def _note_part_bound(self, snap: Snapshot, segments: tuple[TimedSegment, ...],
                         partial: dict | None) -> list[float]:
        """Origin bounds from parts, one per segment still listed: a segment is only seen
        complete once the next one's first part is written, so its parts said more."""
        if partial is not None and snap.partial.seen_at:
            key = (snap.generation, partial["sequence"])
            bound = snap.partial.seen_at - (partial["start"] + partial["duration"])
            self._part_bounds[key] = min(bound, self._part_bounds.get(key, bound))
        listed = {(snap.generation, s.sequence) for s in segments}
        if partial is not None:
            listed.add((snap.generation, partial["sequence"]))
        for gone in [key for key in self._part_bounds if key not in listed]:
            del self._part_bounds[gone]  # bounded by the segments listed
        return list(self._part_bounds.values())

    def _media_starts(self, snap: Snapshot, held: dict) -> dict[int, float]:
        """Start times read from the held segments' bytes, each segment read only once."""
        known = {}
        for seg in held.values():
            key = (snap.generation, seg.sequence, seg.name)
            if key not in self._starts:
                self._starts[key] = boxes.segment_start(seg.data, self._init)
            if self._starts[key] is not None:
                known[seg.sequence] = self._starts[key]
        wanted = {(snap.generation, seq, seg.name) for seq, seg in held.items()}
        for key in [k for k in self._starts if k not in wanted]:
            del self._starts[key]  # bounded: only what the snapshot holds
        return known


def place(entries: Sequence[hls.Entry], starts: dict[int, float],
          held: dict) -> tuple[TimedSegment, ...]:
    """Media start for every listed entry: read where possible, else from its neighbours."""
    if not entries:
        return ()
    times: list[float | None] = [starts.get(e.sequence) for e in entries]
    anchor = next((i for i, t in enumerate(times) if t is not None), None)
    if anchor is None:
        anchor, times[0] = 0, 0.0
    for i in range(anchor - 1, -1, -1):  # older entries not held in memory
        times[i] = times[i + 1] - entries[i].duration
    for i in range(anchor + 1, len(entries)):
        if times[i] is None:
            times[i] = times[i - 1] + entries[i - 1].duration
    return tuple(
        TimedSegment(e.sequence, STREAM_PREFIX + e.uri, round(t, 4), e.duration,
                     held[e.sequence].seen_at if e.sequence in held else None)
        for e, t in zip(entries, times, strict=True)
    )


def in_progress(snap: Snapshot, segments: tuple[TimedSegment, ...]) -> dict | None:
    """The segment in progress right after the newest listed one, where the player may
    follow it fragment by fragment."""
    partial = snap.partial
    if partial is None or not segments or partial.sequence != segments[-1].sequence + 1:
        return None
    start = segments[-1].start + segments[-1].duration
    return {"sequence": partial.sequence, "start": round(start, 4),
            "duration": round(partial.duration, 4)}


def live_origin(segments: tuple[TimedSegment, ...],
                part_bounds: Sequence[float] = ()) -> float | None:
    """Server time at which media time 0 was live.

    A segment (or a part) cannot be seen before its last frame was captured, so each seen
    one gives an upper bound `seen_at - end`; the smallest is the tightest. Using the
    smallest also keeps the estimated live edge at or behind what has really been written.
    Parts give tighter bounds than segments with a source writing them (`part_bounds`).
    """
    bounds = [s.seen_at - (s.start + s.duration) for s in segments if s.seen_at]
    bounds += part_bounds
    return round(min(bounds), 4) if bounds else None
