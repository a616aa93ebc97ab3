"""`livestream serve --origin URL`: an edge that pulls another server's stream into its own
stream folder, so its watcher and fan-out serve viewers exactly as they serve a local source.

The puller follows the origin's HLS playlist over HTTP (through Tor's SOCKS port when the
origin is an onion address), fetches the init segment and every new media segment, writes each
file atomically (temp file + rename, like ffmpeg's temp_file flag) and writes the playlist
last, so nothing is listed before it is on disk. A master playlist (#EXT-X-STREAM-INF) is
followed variant by variant. ENDLIST and restarts (a new init, numbering from the start again)
pass through. A broken origin never stops the edge: the puller says so once, retries with a
growing pause, and the edge's playlist goes stale, which the watcher shows as offline.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from app.stream import playlist as hls
from app.stream.folder import DEFAULT_PLAYLIST, prepare_stream_dir

log = logging.getLogger(__name__)

MAX_PLAYLIST_BYTES = 256 * 1024
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


def playlist_url(origin: str, playlist: str = DEFAULT_PLAYLIST) -> str:
    """A bare origin (http://host:port) means its default playlist under /stream/."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RelayError(f"origin {origin!r} is not an http:// or https:// address "
                         "(e.g. http://203.0.113.5:8080 or http://xyz.onion)")
    if parts.path.endswith(".m3u8"):
        return origin
    return origin.rstrip("/") + "/stream/" + playlist


def is_onion(url: str) -> bool:
    return (urlsplit(url).hostname or "").endswith(".onion")


@dataclass
class _Variant:
    """What the edge holds of one media playlist."""
    held: set[str] = field(default_factory=set)  # segment names on the edge's disk
    previous: frozenset[str] = frozenset()  # names the last written playlist listed
    newest: int | None = None
    last_text: str | None = None


class Relay:
    """Pulls the origin's stream into `stream_dir`; `run()` loops until `stop()`."""

    def __init__(self, settings: RelaySettings, stream_dir: Path):
        self.settings = settings
        self.stream_dir = Path(stream_dir)
        self.url = playlist_url(settings.origin, settings.playlist)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "livestream-edge"
        if is_onion(self.url):
            proxy = f"socks5h://{settings.tor_socks}"  # h: tor resolves the onion name
            self.session.proxies = {"http": proxy, "https": proxy}
        self.variants: dict[str, _Variant] = {}
        self.failing_since: float | None = None
        self.offline = False
        self._stopped = False

    # ---------------------------------------------------------------- the loop

    def run(self) -> None:
        """Follow the origin forever; every failure is logged and retried, never raised."""
        prepare_stream_dir(self.stream_dir, Path(urlsplit(self.url).path).name)
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
                pause = min(self.settings.retry_max, max(1.0, self.settings.poll_interval))
                time.sleep(pause)
                continue
            except (requests.RequestException, RelayError, hls.PlaylistError, OSError) as exc:
                pause = self._failed(exc, pause)
            else:
                if self.failing_since is not None:
                    log.info("origin %s answers again after %.0f s", self._shown(),
                             time.monotonic() - self.failing_since)
                self.failing_since = None
                self.offline = False
                pause = self.settings.poll_interval
            time.sleep(pause)  # gevent-patched in `serve`: a greenlet pause

    def stop(self) -> None:
        self._stopped = True

    def _failed(self, exc: Exception, pause: float) -> float:
        retry = min(self.settings.retry_max, max(1.0, pause * 2))
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
        text = self._get_text(self.url)
        name = Path(urlsplit(self.url).path).name
        if STREAM_INF not in text:
            self._sync_media(name, self.url, text)
            return
        for uri in master_variants(text):
            self._sync_media(uri, urljoin(self.url, uri), self._get_text(urljoin(self.url, uri)))
        self._write(name, text.encode())  # the master last: every variant it names exists

    def _sync_media(self, name: str, url: str, text: str) -> None:
        state = self.variants.setdefault(name, _Variant())
        if text == state.last_text:
            return
        parsed = hls.parse(text)
        newest = parsed.entries[-1].sequence if parsed.entries else None
        listed = {(e.sequence, e.uri) for e in parsed.entries}
        restarted = state.last_text is None or (
            newest is not None and state.newest is not None and newest < state.newest)
        if state.last_text is not None and not restarted and state.held:
            restarted = not any(uri in state.held for _, uri in listed)  # lost the thread
        if restarted:
            state.held = set()
        if parsed.init_uri and (restarted or parsed.init_uri not in state.held):
            self._write(parsed.init_uri, self._get_bytes(urljoin(url, parsed.init_uri)))
            state.held.add(parsed.init_uri)
        for entry in parsed.entries:
            if entry.uri not in state.held:
                self._write(entry.uri, self._get_bytes(urljoin(url, entry.uri)))
                state.held.add(entry.uri)
        self._write(name, text.encode())
        self._forget(state, parsed)
        if restarted and state.last_text is not None:
            log.info("origin restarted the stream (%s); following the new one", name)
        elif parsed.ended and not hls.parse(state.last_text or "#EXTM3U").ended:
            log.info("origin ended the stream (%s)", name)
        state.last_text, state.newest = text, newest

    def _forget(self, state: _Variant, parsed: hls.Playlist) -> None:
        """Delete segments neither this playlist nor the one before it lists (a player may
        still be fetching one the origin just dropped)."""
        keep = parsed.uris | state.previous
        for uri in list(state.held):
            if uri not in keep:
                (self.stream_dir / uri).unlink(missing_ok=True)
                state.held.discard(uri)
        state.previous = parsed.uris

    # ---------------------------------------------------------------- HTTP and disk

    def _timeouts(self) -> tuple[float, float]:
        return self.settings.connect_timeout, self.settings.read_timeout

    def _get_text(self, url: str) -> str:
        data = self._get(url, MAX_PLAYLIST_BYTES)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise RelayError(f"{Path(urlsplit(url).path).name} is not UTF-8 text") from None

    def _get_bytes(self, url: str) -> bytes:
        return self._get(url, self.settings.max_segment_bytes)

    def _get(self, url: str, limit: int) -> bytes:
        with self.session.get(url, timeout=self._timeouts(), stream=True,
                              allow_redirects=False) as response:
            if response.status_code == 404 and url.endswith(".m3u8"):
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
        fd, temp = tempfile.mkstemp(prefix=".relay.", dir=self.stream_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, self.stream_dir / name)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def master_variants(text: str) -> list[str]:
    """The media playlists a master playlist lists (the URI line after each STREAM-INF);
    plain file names only, like every other name in the stream folder."""
    lines = [line.strip() for line in text.splitlines()]
    variants = []
    for index, line in enumerate(lines):
        if line.startswith(STREAM_INF):
            following = next((x for x in lines[index + 1:] if x and not x.startswith("#")), "")
            if not following or "/" in following or following.startswith("."):
                raise RelayError(f"master playlist variant {following!r} is not a plain "
                                 "file name")
            variants.append(following)
    return variants


def _reason(exc: Exception) -> str:
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return str(exc) or type(exc).__name__


def start_relay(settings: RelaySettings, stream_dir: Path):
    """Run the puller in a greenlet beside the server; returns its stop."""
    import gevent

    relay = Relay(settings, stream_dir)
    log.info("edge: following %s into %s", relay._shown(), stream_dir)
    greenlet = gevent.spawn(relay.run)

    def stop() -> None:
        relay.stop()
        greenlet.kill(timeout=5)
        relay.session.close()

    return stop
