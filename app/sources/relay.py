"""`livestream serve --origin URL`: an edge that pulls another server's stream into its own
stream folder, so its watcher and fan-out serve viewers exactly as they serve a local source.

The puller follows the origin's HLS playlist over HTTP (through Tor's SOCKS port when the
origin is an onion address), fetches the init segment and every new media segment, writes each
file atomically (temp file + rename, like ffmpeg's temp_file flag) and writes the playlist
last, so nothing is listed before it is on disk. A bare origin (http://host:port) is followed
through its master playlist, every rendition of it, or through its one media playlist when it
has no master; an explicit playlist URL is followed as given. ENDLIST and restarts (a new init,
numbering from the start again) pass through. A broken origin never stops the edge: the puller
says so once, retries with a growing pause, and the edge's playlist goes stale, which the
watcher shows as offline.

An origin writing parts (low latency) is followed part by part: the edge asks for each
playlist with a blocking reload for the next part (`_HLS_msn`, `_HLS_part`), which the origin
answers as soon as that part is written, fetches the new parts and lists them as its own
segment in progress, so the edge's viewers get each part a moment after the origin's; a
finished segment whose parts it holds is joined from them rather than fetched again.

The origin serves only the files its playlists list, so what the folder's marker files say
(title, the watch party's pause and countdown) comes from its public /api/status instead,
polled beside the video and written into this folder's markers.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from app.stream import playlist as hls
from app.stream.folder import (
    COUNTDOWN_FILE,
    DEFAULT_PLAYLIST,
    HOLD_FILE,
    MASTER_PLAYLIST,
    clean_title,
    prepare_stream_dir,
    write_file,
    write_marker,
    write_title,
)

log = logging.getLogger(__name__)

MAX_PLAYLIST_BYTES = 256 * 1024
MAX_STATUS_BYTES = 16 * 1024
# What an edge takes from an origin at most (anyone on a plain-HTTP path is an origin too):
MAX_SEGMENTS = 16  # the newest segments of a playlist; older ones are not fetched
RENDITION_BYTES = 128 * 1024 * 1024  # on disk per rendition, all its held files together
BITS_PER_SECOND = 50_000_000  # one segment may hold at most its duration at this rate
MAX_COUNTDOWN = 366 * 86400.0  # seconds ahead a countdown may say
STATUS_INTERVAL = 0.5  # the origin's title, pause and countdown reach the edge this often
BLOCKING_PAUSE = 0.02  # between blocking reloads: the origin's answer is the pause
STREAM_INF = "#EXT-X-STREAM-INF"


class RelayError(Exception):
    """The origin answered with something the edge cannot use (said once per outage)."""


class OriginOffline(RelayError):
    """The origin answers but has no stream (no playlist yet, or between broadcasts)."""


@dataclass(frozen=True)
class RelaySettings:
    origin: str  # http://host:port, http://xyz.onion, or the full URL of a playlist
    playlist: str = DEFAULT_PLAYLIST
    poll_interval: float = 0.25
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    retry_max: float = 30.0
    tor_socks: str = "127.0.0.1:9050"
    max_segment_bytes: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class OriginURLs:
    """What the edge fetches from the origin."""

    playlist: str  # the URL given, or a bare origin's top media playlist
    master: str | None  # a bare origin's master playlist, asked for first
    status: str  # the origin's public /api/status


def origin_urls(origin: str, playlist: str = DEFAULT_PLAYLIST) -> OriginURLs:
    """An explicit playlist URL is followed as given; a bare origin (http://host:port) means
    its master playlist under /stream/, or its `playlist` when it has no master."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RelayError(f"origin {origin!r} is not an http:// or https:// address "
                         "(e.g. http://203.0.113.5:8080 or http://xyz.onion)")
    if parts.path.endswith(".m3u8"):
        return OriginURLs(origin, None, urljoin(origin, "../api/status"))
    base = origin.rstrip("/")
    return OriginURLs(f"{base}/stream/{playlist}", f"{base}/stream/{MASTER_PLAYLIST}",
                      f"{base}/api/status")


def is_onion(url: str) -> bool:
    return (urlsplit(url).hostname or "").endswith(".onion")


@dataclass
class _Variant:
    """What the edge holds of one media playlist."""
    held: set[str] = field(default_factory=set)  # segment names on the edge's disk
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of each held file
    previous: frozenset[str] = frozenset()  # names the last written playlist listed
    newest: int | None = None
    last_text: str | None = None
    next_part: tuple[int, int] | None = None  # (segment, part) a blocking reload asks for


class Relay:
    """Pulls the origin's stream into `stream_dir`; `run()` loops until `stop()`."""

    def __init__(self, settings: RelaySettings, stream_dir: Path):
        self.settings = settings
        self.stream_dir = Path(stream_dir)
        self.origin = origin_urls(settings.origin, settings.playlist)
        self.url = self.origin.playlist
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "livestream-edge"
        if is_onion(self.url):
            proxy = f"socks5h://{settings.tor_socks}"  # h: tor resolves the onion name
            self.session.proxies = {"http": proxy, "https": proxy}
        self.variants: dict[str, _Variant] = {}
        # A bare origin's master is asked for on every poll while it has one; after a 404 (one
        # rendition) only again after a restart or an outage, when renditions may have come.
        self.ask_master = self.origin.master is not None
        self.followed: str | None = None
        self.failing_since: float | None = None
        self.offline = False
        # the markers this edge wrote from the origin's status
        self.title: str | None = None
        self.hold = ""  # "host": the origin is paused; "seek": resumed, no new segment yet
        self.countdown: float | None = None  # this machine's time
        self._stopped = False

    def prepare(self) -> None:
        """The folder starts clean; the origin's status brings the markers back."""
        prepare_stream_dir(self.stream_dir, self.settings.playlist)
        for name in (HOLD_FILE, COUNTDOWN_FILE):
            (self.stream_dir / name).unlink(missing_ok=True)

    # ---------------------------------------------------------------- the loop

    def run(self) -> None:
        """Follow the origin forever; every failure is logged and retried, never raised."""
        pause = self.settings.poll_interval
        while not self._stopped:
            try:
                self.poll()
            except OriginOffline as exc:
                if self.failing_since is not None:
                    log.info("origin %s answers again", self._shown())
                    self.failing_since = None
                if not self.offline:
                    log.info("origin %s has no stream (%s); waiting for one", self._shown(), exc)
                self.offline = True
                self.ask_master = self.origin.master is not None  # the next one may have more
                pause = min(self.settings.retry_max, max(1.0, self.settings.poll_interval))
            except (requests.RequestException, RelayError, hls.PlaylistError, OSError) as exc:
                pause = self._failed(exc, pause)
            else:
                if self.failing_since is not None:
                    log.info("origin %s answers again after %.0f s", self._shown(),
                             time.monotonic() - self.failing_since)
                self.failing_since = None
                self.offline = False
                blocking = any(state.next_part for state in self.variants.values())
                pause = BLOCKING_PAUSE if blocking else self.settings.poll_interval
            time.sleep(pause)  # gevent-patched in `serve`: a greenlet pause

    def stop(self) -> None:
        self._stopped = True

    def _failed(self, exc: Exception, pause: float) -> float:
        retry = min(self.settings.retry_max, max(1.0, pause * 2))
        self.ask_master = self.origin.master is not None  # it may come back with renditions
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("origin %s failed: %s. Viewers of this edge see the stream offline "
                        "until it answers; retrying every %.0f s at most (check the origin "
                        "is running and --origin / relay.origin is right)",
                        self._shown(), _reason(exc), self.settings.retry_max)
        else:
            log.debug("origin still failing: %s; next try in %.1f s", _reason(exc), retry)
        return retry

    def _shown(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")

    # ---------------------------------------------------------------- one round

    def poll(self) -> None:
        """Fetch the playlist once; bring the edge's folder up to date with it."""
        if self.ask_master:
            try:
                text = self._get_text(self.origin.master)
            except OriginOffline:  # 404: an origin with one rendition (or none yet)
                self.ask_master = False
                self._drop_master()
            else:
                self._follow(self.origin.master, text)
                return
        text = self._get_text(self._blocking(self.settings.playlist, self.url))
        if self._follow(self.url, text) and self.origin.master:
            self.ask_master = True  # a new broadcast may come with renditions

    def _follow(self, url: str, text: str) -> bool:
        """Sync a master playlist (every variant, then the master) or one media playlist,
        under the names this edge's watcher reads; True when a media playlist restarted."""
        if url != self.followed:
            log.info("edge: following %s", urlsplit(url).path)
            self.followed = url
        if STREAM_INF not in text:
            return self._sync_media(self.settings.playlist, url, text)
        variants = master_variants(text)
        for variant in variants:
            media = urljoin(url, variant.uri)
            self._sync_media(variant.uri, media,
                             self._get_text(self._blocking(variant.uri, media)))
        self._keep_only({variant.uri for variant in variants})
        # last: every variant it names exists; written anew, with only what we understood
        self._write(MASTER_PLAYLIST, render_master(variants).encode())
        return False

    def _drop_master(self) -> None:
        """The origin has no master (any more): neither has the edge, nor lower renditions."""
        (self.stream_dir / MASTER_PLAYLIST).unlink(missing_ok=True)
        self._keep_only({self.settings.playlist})

    def _keep_only(self, names: set[str]) -> None:
        """Delete the files of media playlists the origin no longer names (not those a
        playlist still followed names too)."""
        gone = {name: self.variants.pop(name) for name in set(self.variants) - names}
        kept = set(names).union(*(state.held for state in self.variants.values()))
        for name, state in gone.items():
            for uri in {name, *state.held} - kept:
                (self.stream_dir / uri).unlink(missing_ok=True)

    def _sync_media(self, name: str, url: str, text: str) -> bool:
        """Fetch what the edge lacks of one media playlist, then write it; True on a
        restart of a playlist followed before."""
        state = self.variants.setdefault(name, _Variant())
        if text == state.last_text:
            return False
        parsed = hls.newest(hls.parse(text), MAX_SEGMENTS)
        newest = parsed.entries[-1].sequence if parsed.entries else None
        listed = {(e.sequence, e.uri) for e in parsed.entries}
        restarted = state.last_text is None or (
            newest is not None and state.newest is not None and newest < state.newest)
        if state.last_text is not None and not restarted and state.held:
            restarted = not any(uri in state.held for _, uri in listed)  # lost the thread
        if restarted:  # the listed names are new files; the old unlisted ones go in _forget
            state.held -= parsed.uris
        if parsed.init_uri and parsed.init_uri not in state.held:
            self._hold(state, parsed.init_uri,
                       self._get(urljoin(url, parsed.init_uri), MAX_PLAYLIST_BYTES * 4))
        fetched = [entry for entry in parsed.entries if entry.uri not in state.held]
        for entry in fetched:
            limit = min(self.settings.max_segment_bytes,
                        int(max(entry.duration, 1.0) * BITS_PER_SECOND / 8))
            self._hold(state, entry.uri, self._joined(state, entry, limit)
                       or self._get(urljoin(url, entry.uri), limit))
        for part in parsed.pending if parsed.part_target and not parsed.ended else ():
            if part.uri not in state.held:
                limit = int(max(part.duration, 0.1) * BITS_PER_SECOND / 8)
                self._hold(state, part.uri, self._get(urljoin(url, part.uri), limit))
        state.next_part = ((parsed.pending_sequence, len(parsed.pending))
                           if parsed.can_block and parsed.part_target and not parsed.ended
                           else None)
        self._write(name, hls.render(parsed).encode())  # only the tags we understood
        self._forget(state, parsed)
        if fetched and name == self.settings.playlist:
            self._segment_arrived()
        again = restarted and state.last_text is not None
        if again:
            log.info("origin restarted the stream (%s); following the new one", name)
        elif parsed.ended and not hls.parse(state.last_text or "#EXTM3U").ended:
            log.info("origin ended the stream (%s)", name)
        state.last_text, state.newest = text, newest
        return again

    def _joined(self, state: _Variant, entry: hls.Entry, limit: int) -> bytes | None:
        """A finished segment whose every part is here already: its parts joined (a
        segment is its parts, byte for byte), instead of fetching it again."""
        if not entry.parts or not all(uri in state.held for uri in entry.parts):
            return None
        try:
            data = b"".join((self.stream_dir / uri).read_bytes() for uri in entry.parts)
        except FileNotFoundError:
            return None
        return data if len(data) <= limit else None

    def _blocking(self, name: str, url: str) -> str:
        """The playlist's URL, asking for the next part when the origin writes parts."""
        state = self.variants.get(name)
        if state is None or state.next_part is None:
            return url
        segment, part = state.next_part
        return f"{url}{'&' if '?' in url else '?'}_HLS_msn={segment}&_HLS_part={part}"

    def _forget(self, state: _Variant, parsed: hls.Playlist) -> None:
        """Delete segments neither this playlist nor the one before it lists (a player may
        still be fetching one the origin just dropped)."""
        keep = parsed.uris | state.previous
        for uri in list(state.held):
            if uri not in keep:
                (self.stream_dir / uri).unlink(missing_ok=True)
                state.held.discard(uri)
                state.sizes.pop(uri, None)
        state.previous = parsed.uris

    def _hold(self, state: _Variant, uri: str, data: bytes) -> None:
        """Write one fetched file, within the rendition's byte budget on disk."""
        held = sum(state.sizes.get(name, 0) for name in state.held if name != uri)
        if held + len(data) > RENDITION_BYTES:
            raise RelayError(f"the origin's stream holds more than {RENDITION_BYTES >> 20} "
                             "MiB per rendition; not following it further")
        self._write(uri, data)
        state.held.add(uri)
        state.sizes[uri] = len(data)

    # ---------------------------------------------------------------- the origin's status

    def follow_status(self) -> None:
        """Poll the origin's status beside the video until `stop()`; a failure is said once
        and never touches the video."""
        pause, failing = STATUS_INTERVAL, False
        while not self._stopped:
            try:
                self.poll_status()
            except Exception as exc:  # whatever the origin sends, the follower goes on
                if not failing:
                    log.warning("origin %s: no status (%s); this edge's title, pause and "
                                "countdown wait for it, the video goes on", self._shown(),
                                _reason(exc))
                failing = True
                pause = min(self.settings.retry_max, pause * 2)
            else:
                if failing:
                    log.info("origin %s: status answers again", self._shown())
                failing, pause = False, STATUS_INTERVAL
            time.sleep(pause)

    def poll_status(self) -> None:
        """Write the origin's title, pause and countdown into this folder's markers."""
        status = parse_status(self._get_text(self.origin.status, MAX_STATUS_BYTES))
        if status.title and status.title != self.title:
            write_title(self.stream_dir, status.title)
            self.title = status.title
        if status.paused:
            write_marker(self.stream_dir, HOLD_FILE, "host")  # fresh again every round
            self.hold = "host"
        elif self.hold == "host":
            # Resumed. The origin holds its stream until its writer lists a new segment; this
            # edge holds until that segment is here, or its stale playlist would read offline
            # and end every /stream.mp4 response. Not refreshed: it lapses if none comes.
            write_marker(self.stream_dir, HOLD_FILE, "seek")
            self.hold = "seek"
        if status.starts_at is None:
            if self.countdown is not None:
                (self.stream_dir / COUNTDOWN_FILE).unlink(missing_ok=True)
                self.countdown = None
        else:
            starts_at = time.time() + (status.starts_at - status.now)  # on this machine's clock
            if not math.isfinite(starts_at):
                raise RelayError("/api/status gives a countdown out of range")
            if self.countdown is None or abs(starts_at - self.countdown) >= 1.0:  # not jitter
                write_marker(self.stream_dir, COUNTDOWN_FILE, f"{starts_at:.0f}")
                self.countdown = starts_at

    def _segment_arrived(self) -> None:
        """A new segment of the top playlist is on disk: a hold kept since resume ends."""
        if self.hold == "seek":
            (self.stream_dir / HOLD_FILE).unlink(missing_ok=True)
            self.hold = ""

    # ---------------------------------------------------------------- HTTP and disk

    def _timeouts(self) -> tuple[float, float]:
        return self.settings.connect_timeout, self.settings.read_timeout

    def _get_text(self, url: str, limit: int = MAX_PLAYLIST_BYTES) -> str:
        data = self._get(url, limit)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise RelayError(f"{Path(urlsplit(url).path).name} is not UTF-8 text") from None

    def _get(self, url: str, limit: int) -> bytes:
        with self.session.get(url, timeout=self._timeouts(), stream=True,
                              allow_redirects=False) as response:
            if response.status_code == 404 and urlsplit(url).path.endswith(".m3u8"):
                raise OriginOffline(f"{urlsplit(url).path} answered 404: no stream yet")
            if response.status_code != 200:
                raise RelayError(f"{urlsplit(url).path} answered HTTP {response.status_code}")
            chunks, size = [], 0
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise RelayError(f"{urlsplit(url).path} is larger than {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

    def _write(self, name: str, data: bytes) -> None:
        """Replace one file of the stream folder atomically: readers see old or new."""
        if "/" in name or name.startswith(".") or not name:
            raise RelayError(f"refusing to write {name!r} outside the stream folder")
        write_file(self.stream_dir, name, data)


@dataclass(frozen=True)
class OriginStatus:
    """What the edge takes from the origin's /api/status (app/stream/status.py)."""

    title: str
    paused: bool
    starts_at: float | None  # on the origin's public clock, like `now`
    now: float


def parse_status(text: str) -> OriginStatus:
    try:
        data = json.loads(text)
        starts_at = None if data["starts_at"] is None else float(data["starts_at"])
        now = float(data["now"])
        title = clean_title(data["title"], "") if isinstance(data["title"], str) else ""
        paused = data["paused"] is True
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise RelayError("/api/status is not a livestream server's status "
                         f"({type(exc).__name__})") from None
    if not math.isfinite(now) or (starts_at is not None and not math.isfinite(starts_at)):
        raise RelayError("/api/status gives a time that is not a number")
    if starts_at is not None and abs(starts_at - now) > MAX_COUNTDOWN:
        raise RelayError("/api/status gives a countdown out of range")
    return OriginStatus(title, paused, starts_at, now)


def master_variants(text: str) -> tuple[hls.Variant, ...]:
    """The media playlists a master playlist lists, at most hls.MAX_VARIANTS; plain file
    names only, like every other name in the stream folder."""
    variants = hls.parse_master(text)
    if not variants:
        raise RelayError("the master playlist lists no media playlist")
    return variants


def render_master(variants: tuple[hls.Variant, ...]) -> str:
    """The edge's own master playlist: only the variants it follows, with only the
    attributes it understood (bandwidth, resolution, name)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for variant in variants:
        attributes = f"BANDWIDTH={max(0, variant.bandwidth)}"
        if re.fullmatch(r"[0-9]{1,5}x[0-9]{1,5}", variant.resolution):
            attributes += f",RESOLUTION={variant.resolution}"
        if re.fullmatch(r"[A-Za-z0-9_-]{1,32}", variant.name):
            attributes += f',NAME="{variant.name}"'
        lines += [f"#EXT-X-STREAM-INF:{attributes}", variant.uri]
    return "\n".join(lines) + "\n"


def _reason(exc: Exception) -> str:
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return str(exc) or type(exc).__name__


def start_relay(settings: RelaySettings, stream_dir: Path):
    """Run the puller (the video, and beside it the origin's status) in greenlets beside the
    server; returns its stop."""
    import gevent

    relay = Relay(settings, stream_dir)
    log.info("edge: following %s into %s", relay._shown(), stream_dir)
    relay.prepare()
    greenlets = [gevent.spawn(relay.run), gevent.spawn(relay.follow_status)]

    def stop() -> None:
        relay.stop()
        gevent.killall(greenlets, timeout=5)
        relay.session.close()

    return stop
