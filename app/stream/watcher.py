"""The one watcher of `stream/` and the stream state every viewer reads.

ffmpeg (or OBS) writes segments, then rewrites the playlist. We react to the playlist change
(inotify; polling only when inotify is missing), parse it once, read each new segment from
disk once, and publish an immutable snapshot. Viewers never touch the disk: they wait for the
next snapshot and send the bytes it holds.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import gevent
import gevent.event
import gevent.socket

from app.config import StreamConfig
from app.stream import boxes, folder
from app.stream import playlist as hls
from app.stream.folder import TITLE_FILE, TITLE_MAX, clean_title

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Segment:
    name: str
    sequence: int
    duration: float
    data: bytes = field(repr=False)
    seen_at: float = 0.0  # wall clock when the watcher saw it listed: the player's timeline
    # Offsets of each fragment's sequence number, so /stream.mp4 can renumber per response.
    fragment_offsets: tuple[int, ...] = ()
    # Where each fragment starts (boxes.fragment_starts), found once for every /fragments.
    fragment_starts: tuple[int, ...] = ()


@dataclass(frozen=True)
class Partial:
    """The segment in progress of a source that writes parts (app/sources/segmenter.py): its
    fragments so far, joined. The finished segment holds the same bytes and more, so a
    viewer sent part of it goes on from where it stopped."""

    sequence: int
    data: bytes = field(repr=False)
    parts: int
    duration: float
    fragment_offsets: tuple[int, ...] = ()
    seen_at: float = 0.0  # wall clock when the watcher saw its newest part
    fragment_starts: tuple[int, ...] = ()
    # Where each part the playlist marks INDEPENDENT starts: a new /stream.mp4 can begin there.
    keyframe_starts: tuple[int, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """What viewers see at one moment. Replaced, never mutated."""

    online: bool = False
    ended: bool = False
    generation: int = 0
    init: bytes | None = field(default=None, repr=False)
    init_name: str | None = None
    segments: tuple[Segment, ...] = ()
    playlist: bytes | None = field(default=None, repr=False)
    entries: tuple[hls.Entry, ...] = ()  # every segment the playlist lists, parsed once
    listed: frozenset[str] = frozenset()
    started_at: float | None = None  # wall clock, from the init segment's mtime
    title: str = ""
    target_duration: float = 2.0
    hold: str = ""  # folder.HOLD_FILE: "host" (paused by the host), "seek", or "" (playing)
    starts_at: float | None = None  # folder.COUNTDOWN_FILE: when the host's queue starts
    # Renditions (see folder.py): this snapshot is the top one's view; `lower` holds one view
    # per lower rendition (the same status, their own init and segments), read the same way.
    quality: str = ""
    qualities: tuple[hls.Variant, ...] = ()  # every rendition the master lists, top first
    lower: tuple[Snapshot, ...] = field(default=(), repr=False)
    master: bytes | None = field(default=None, repr=False)
    partial: Partial | None = field(default=None, repr=False)
    part_target: float | None = None  # seconds per part, when the source writes parts

    def view(self, quality: str | None) -> Snapshot:
        """The view of rendition `quality`; the top one for None or a name not live now."""
        for view in self.lower:
            if view.quality == quality:
                return view
        return self

    @property
    def views(self) -> tuple[Snapshot, ...]:
        return (self, *self.lower)

    def segment(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def uptime(self, now: float | None = None) -> float | None:
        if not self.online or self.started_at is None:
            return None
        return max(0.0, (now or time.time()) - self.started_at)

    @property
    def paused(self) -> bool:
        return self.online and self.hold == "host"

    @property
    def status(self) -> str:
        return "live" if self.online else ("ended" if self.ended else "offline")


class Generations:
    """Numbers the broadcasts: a restart or a return online is the next generation, which
    ends open video responses and tells pages and players to start again.

    This one counts for one process. Workers share a ledger instead (RedisGenerations in
    app/community/shared.py): each runs its own watcher, and a worker started later, or one
    that missed an offline spell, would otherwise number the same broadcast differently, so
    players whose requests land on either worker would see a restart at every request."""

    shared = False

    def current(self) -> int:
        """The generation a fresh watcher starts from (the broadcast already on, if any)."""
        return 0

    def next(self, previous: int) -> int:
        return previous + 1

    def agree(self, mine: int) -> int:
        """The generation this process should show now (only a shared ledger says other)."""
        return mine


AGREE_SECONDS = 2.0  # how often a watcher checks its generation against the shared ledger
# Two sources writing one folder (two OBS recordings, or OBS beside a source that could not
# take the folder lock) show as restarts again and again. This many restarts within
# TWO_WRITERS_SECONDS is taken for that: one warning, and the generation is held, so viewers
# are not told to reload every few seconds.
TWO_WRITERS_RESTARTS = 3
TWO_WRITERS_SECONDS = 30.0


class StreamState:
    """Holds the current Snapshot and wakes everyone waiting when it changes."""

    def __init__(self, directory: Path, settings: StreamConfig,
                 generations: Generations | None = None):
        self.directory = Path(directory)
        self.settings = settings
        self.generations = generations or Generations()
        # the broadcast other workers already numbered is kept, not counted again, when this
        # watcher's first look finds it live
        self.snapshot = Snapshot(title=settings.title, generation=self.generations.current())
        self.first_generation = self.snapshot.generation  # restarts since start: the cockpit
        self._first_look = True
        self._changed = gevent.event.Event()
        self._playlist_key = None
        self._init_keys: dict[str, tuple] = {}  # per rendition playlist name
        self._title_key = None
        self._master_key = None
        self._variants: tuple[hls.Variant, ...] = ()
        self._media: dict[str, Snapshot] = {}  # lower renditions' last read, by playlist name
        self._media_keys: dict[str, tuple] = {}
        self._greenlets: list[gevent.Greenlet] = []
        self._restarts: deque[float] = deque(maxlen=TWO_WRITERS_RESTARTS)
        self.two_writers = False  # a restart storm is going on (see TWO_WRITERS_SECONDS)

    # --- reading side ---------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block this greenlet until the next snapshot; False on timeout."""
        return self._changed.wait(timeout)

    def set_title(self, text: str) -> None:
        """A new title for everyone: written to the folder, seen at once."""
        folder.write_title(self.directory, text)
        self.refresh()

    # --- writing side (only the watcher calls these) ------------------------------

    def _publish(self, snapshot: Snapshot) -> None:
        if snapshot == self.snapshot:
            return
        self.snapshot = snapshot
        changed, self._changed = self._changed, gevent.event.Event()
        changed.set()

    def refresh(self) -> None:
        """Re-read what changed on disk; never raises for a broken stream."""
        try:
            self._publish(self._with_renditions(self._read()))
        except OSError as exc:
            log.warning("stream folder unreadable: %s", exc)
            self._publish(replace(self.snapshot, online=False, segments=(), listed=frozenset()))
        self._first_look = False

    def _read(self) -> Snapshot:
        snap = replace(self.snapshot, title=self._read_title(),
                       hold=folder.read_hold(self.directory),
                       starts_at=folder.read_countdown(self.directory))
        path = self.directory / self.settings.playlist
        try:
            st = path.stat()
        except FileNotFoundError:
            self._playlist_key = None
            return replace(snap, online=False, ended=False, segments=(), listed=frozenset(),
                           playlist=None, entries=())
        age = time.time() - st.st_mtime
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._playlist_key:
            return replace(snap, online=snap.online and (bool(snap.hold)
                                                         or age < self.offline_after(snap)))
        raw = path.read_bytes()
        try:
            parsed = hls.parse(raw.decode("utf-8"))
        except (hls.PlaylistError, UnicodeDecodeError) as exc:
            log.warning("ignoring unreadable playlist %s: %s", path.name, exc)
            return replace(snap, online=False)
        self._playlist_key = key
        fresh = bool(snap.hold) or age < self.offline_after(
            replace(snap, target_duration=parsed.target_duration))
        return self._apply(snap, parsed, raw, fresh)

    def _with_renditions(self, top: Snapshot) -> Snapshot:
        """Attach the lower renditions the master playlist lists (each read like the top)."""
        master, variants = self._read_master()
        lower = []
        for variant in variants:
            if variant.uri == self.settings.playlist:
                continue
            media = self._read_rendition(variant.uri, top)
            lower.append(replace(
                media, online=top.online, ended=top.ended, generation=top.generation,
                started_at=top.started_at, title=top.title, hold=top.hold,
                starts_at=top.starts_at, quality=variant.name,
                qualities=variants, lower=(), master=None))
        names = {v.uri for v in variants}
        for gone in [k for k in self._media if k not in names]:
            del self._media[gone], self._media_keys[gone]
        top_name = next((v.name for v in variants if v.uri == self.settings.playlist), "")
        return replace(top, quality=top_name, qualities=variants, lower=tuple(lower),
                       master=master)

    def _read_master(self) -> tuple[bytes | None, tuple[hls.Variant, ...]]:
        """master.m3u8, when a source wrote one: which renditions exist. None: only the top."""
        path = self.directory / folder.MASTER_PLAYLIST
        try:
            st = path.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key == self._master_key:
                return self.snapshot.master, self._variants
            if st.st_size > 64 * 1024:
                raise hls.PlaylistError("over 64 KiB")
            raw = path.read_bytes()
            variants = hls.parse_master(raw.decode("utf-8"))
        except FileNotFoundError:
            self._master_key, self._variants = None, ()
            return None, ()
        except (hls.PlaylistError, UnicodeDecodeError) as exc:
            log.warning("ignoring unreadable master playlist: %s", exc)
            self._master_key, self._variants = None, ()
            return None, ()
        if not any(v.uri == self.settings.playlist for v in variants):
            log.warning("the master playlist does not list %s; serving that one alone",
                        self.settings.playlist)
            variants = ()
        self._master_key, self._variants = key, variants
        return raw, variants

    def _read_rendition(self, name: str, top: Snapshot) -> Snapshot:
        """One lower rendition's playlist, init and new segments; unchanged files are not
        read again, and a restart of the top rendition starts it afresh too."""
        previous = self._media.get(name)
        if previous is not None and previous.generation != top.generation:
            previous = None
        path = self.directory / name
        try:
            st = path.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if previous is not None and key == self._media_keys.get(name):
                return previous
            raw = path.read_bytes()
            parsed = hls.parse(raw.decode("utf-8"))
        except FileNotFoundError:
            return Snapshot(generation=top.generation)
        except (hls.PlaylistError, UnicodeDecodeError) as exc:
            log.warning("ignoring unreadable playlist %s: %s", name, exc)
            return previous or Snapshot(generation=top.generation)
        base = previous or Snapshot(generation=top.generation)
        init, changed = self._read_init(parsed.init_uri, base, name)
        known = {} if changed else {s.sequence: s for s in base.segments}
        media = replace(base, generation=top.generation, init=init,
                        init_name=parsed.init_uri, segments=self._read_segments(
                            parsed.entries, known), playlist=raw, entries=parsed.entries,
                        listed=parsed.uris, target_duration=parsed.target_duration,
                        part_target=parsed.part_target,
                        partial=self._read_partial(parsed, None if changed else base.partial))
        self._media[name], self._media_keys[name] = media, key
        return media

    def offline_after(self, snap: Snapshot) -> float:
        """Seconds without a playlist update before the stream counts as offline: at least
        1.5 segments, since the writer updates the playlist once per segment (OBS's default
        keyframe interval makes 8-17 s segments, longer than offline_after)."""
        return max(self.settings.offline_after, 1.5 * snap.target_duration)

    def _apply(self, snap: Snapshot, parsed: hls.Playlist, raw: bytes, fresh: bool) -> Snapshot:
        init, init_changed = self._read_init(parsed.init_uri, snap)
        online = fresh and not parsed.ended and bool(parsed.entries) and init is not None
        last_seen = snap.segments[-1].sequence if snap.segments else None
        newest = parsed.entries[-1].sequence if parsed.entries else None
        restarted = init_changed or (
            last_seen is not None and newest is not None and newest < last_seen
        )
        generation = snap.generation
        started_at = snap.started_at
        known = {} if restarted else {s.sequence: s for s in snap.segments}
        storm = restarted and self._restart_storm()
        if online and (restarted or not snap.online) and not storm:
            if not (self._first_look and generation):
                generation = self.generations.next(generation)
            started_at = self._init_mtime(parsed.init_uri)
            log.info("stream live (generation %d)", generation)
        elif snap.online and not online:
            log.info("stream %s", "ended" if parsed.ended else "offline")
        segments = self._read_segments(parsed.entries, known)
        return replace(
            snap,
            partial=self._read_partial(parsed, None if restarted else snap.partial),
            online=online,
            ended=parsed.ended,
            generation=generation,
            init=init,
            init_name=parsed.init_uri,
            segments=segments,
            playlist=raw,
            entries=parsed.entries,
            listed=parsed.uris,
            started_at=started_at,
            target_duration=parsed.target_duration,
            part_target=parsed.part_target,
        )

    def _restart_storm(self) -> bool:
        """Count a restart; True while restarts come too often to be one source's."""
        now = time.monotonic()
        if self._restarts and now - self._restarts[-1] > TWO_WRITERS_SECONDS:
            self._restarts.clear()
            self.two_writers = False
        self._restarts.append(now)
        storm = (len(self._restarts) == TWO_WRITERS_RESTARTS
                 and now - self._restarts[0] < TWO_WRITERS_SECONDS)
        if storm and not self.two_writers:
            log.warning("the stream restarted %d times within %.0f s: two sources seem to write "
                        "into %s (two OBS recordings, or OBS beside stream.sh or play). Stop "
                        "one; viewers are not asked to reload meanwhile", len(self._restarts),
                        now - self._restarts[0], self.directory)
        self.two_writers = self.two_writers or storm
        return storm

    def _read_init(self, name: str | None, snap: Snapshot,
                   rendition: str = "") -> tuple[bytes | None, bool]:
        if name is None:
            return None, False
        try:
            st = (self.directory / name).stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key == self._init_keys.get(rendition) and snap.init is not None:
                return snap.init, False
            data = boxes.scrub_init((self.directory / name).read_bytes())
        except FileNotFoundError:
            log.warning("playlist names a missing init segment %s", name)
            return None, False
        self._init_keys[rendition] = key
        return data, snap.init is not None and data != snap.init

    def _init_mtime(self, name: str | None) -> float:
        try:
            return (self.directory / name).stat().st_mtime
        except (OSError, TypeError):
            return time.time()

    def _read_segments(self, entries, known: dict) -> tuple[Segment, ...]:
        """Keep the newest listed segments in memory, reading only the ones not yet held."""
        wanted = entries[-self.settings.memory_segments:]
        segments = []
        for entry in wanted:
            seg = known.get(entry.sequence)
            if seg is None or seg.name != entry.uri:
                seg = self._load(entry)
            if seg is not None:
                segments.append(seg)
        return tuple(segments)

    def _read_partial(self, parsed: hls.Playlist, known: Partial | None) -> Partial | None:
        """The parts listed after the last segment, each part file read once."""
        if not parsed.pending or parsed.ended:
            return None
        if known is None or known.sequence != parsed.pending_sequence:
            known = Partial(parsed.pending_sequence, b"", 0, 0.0)
        data, parts, duration = known.data, known.parts, known.duration
        keyframe_starts = list(known.keyframe_starts)
        for part in parsed.pending[known.parts:]:
            try:
                chunk = (self.directory / part.uri).read_bytes()
            except FileNotFoundError:
                break  # listed before it was written (it cannot be): wait for the next look
            if len(data) + len(chunk) > self.settings.max_segment_bytes:
                log.warning("the segment in progress is over stream.max_segment_bytes")
                return None
            if part.independent:
                keyframe_starts.append(len(data))
            data, parts, duration = data + chunk, parts + 1, duration + part.duration
        if parts == known.parts:
            return known
        return Partial(known.sequence, data, parts, duration,
                       boxes.fragment_sequence_offsets(data), time.time(),
                       boxes.fragment_starts(data), tuple(keyframe_starts))

    def _load(self, entry: hls.Entry) -> Segment | None:
        path = self.directory / entry.uri
        try:
            size = path.stat().st_size
            if size > self.settings.max_segment_bytes:
                log.warning("skipping %s: %d bytes is over stream.max_segment_bytes",
                            entry.uri, size)
                return None
            data = path.read_bytes()
        except FileNotFoundError:
            log.warning("playlist lists a missing segment %s", entry.uri)
            return None
        return Segment(entry.uri, entry.sequence, entry.duration, data, time.time(),
                       boxes.fragment_sequence_offsets(data), boxes.fragment_starts(data))

    def _read_title(self) -> str:
        path = self.directory / TITLE_FILE
        try:
            st = path.stat()
        except OSError:
            self._title_key = None
            return self.settings.title
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._title_key:
            return self.snapshot.title
        try:
            with path.open("rb") as f:
                text = f.read(TITLE_MAX * 4).decode("utf-8", "replace")
        except OSError:
            return self.settings.title
        self._title_key = key
        return clean_title(text.splitlines()[0] if text else "", self.settings.title)

    # --- the watcher loop -------------------------------------------------------------

    def start(self) -> None:
        self.refresh()
        self._greenlets = [gevent.spawn(self._watch)]
        if self.generations.shared:
            self._greenlets.append(gevent.spawn(self._keep_in_step))

    def stop(self) -> None:
        gevent.killall(self._greenlets)
        self._greenlets = []

    def _keep_in_step(self) -> None:
        """Take the shared ledger's generation when it settled ahead of this watcher's (a
        return online that only other workers saw). Its own greenlet: the watcher, which feeds
        the video, never waits on the ledger for this."""
        while True:
            gevent.sleep(AGREE_SECONDS)
            snap = self.snapshot
            agreed = self.generations.agree(snap.generation)
            if agreed > snap.generation and self.snapshot is snap:
                log.info("stream generation %d taken from the other workers", agreed)
                self._publish(replace(snap, generation=agreed, lower=tuple(
                    replace(view, generation=agreed) for view in snap.lower)))

    def _watch(self) -> None:
        try:
            import inotify_simple
        except ImportError:
            inotify_simple = None
        if inotify_simple is None:
            log.info("inotify unavailable: polling %s every %ss", self.directory,
                     self.settings.poll_interval)
            while True:
                gevent.sleep(self.settings.poll_interval)
                self.refresh()
        self._watch_inotify(inotify_simple)

    def _watch_inotify(self, inotify_simple) -> None:
        flags = inotify_simple.flags
        mask = (flags.CLOSE_WRITE | flags.MOVED_TO | flags.DELETE | flags.CREATE
                | flags.DELETE_SELF | flags.MOVE_SELF)
        interesting = {self.settings.playlist, TITLE_FILE, folder.MASTER_PLAYLIST,
                       folder.HOLD_FILE, folder.COUNTDOWN_FILE}
        with inotify_simple.INotify() as notifier:
            watching = False
            next_check = 0.0
            while True:
                if not watching and self.directory.is_dir():
                    notifier.add_watch(str(self.directory), mask)
                    watching = True
                    self.refresh()
                try:
                    gevent.socket.wait_read(notifier.fileno(), timeout=1.0)
                    events = notifier.read(timeout=0)
                except gevent.socket.timeout:
                    events = []
                if any(e.mask & (flags.IGNORED | flags.DELETE_SELF | flags.MOVE_SELF)
                       for e in events):
                    watching = False  # the folder went away; watch it again once it is back
                if any(e.name in interesting or e.name.endswith(".m3u8") for e in events):
                    self.refresh()
                if time.monotonic() >= next_check:  # staleness: the writer may have died
                    next_check = time.monotonic() + 1.0
                    self.refresh()
