"""Presence: who is here right now, who is watching, and the viewer count.

A viewer is *watching* when they received video (a /stream.mp4 segment or a segment file) in
the last `watching_seconds`, and had already received some `ARRIVING_SECONDS` before: one
request for one segment (or a HEAD, which gets none) lists nobody, only video delivered over
time does. They are *present* while any of their requests or open chat frames showed a sign
of life in the last `present_seconds`. Only receiving video or posting puts a viewer on the
list: page and form loads cost nothing to fake, so they only keep someone already listed
present (`still_here`). Entries are kept in least recently seen order, expire, and are capped
at `max_present`, so memory stays bounded whatever clients do.
"""
from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass

import gevent

from app.community.hub import Hub
from app.config import ViewersConfig

ARRIVING_SECONDS = 1.0  # video over at least this long before a viewer counts as watching


@dataclass
class Presence:
    viewer_id: str
    tag: str
    last_video: float = 0.0
    last_seen: float = 0.0


@dataclass(frozen=True)
class Listed:
    viewer_id: str
    tag: str
    watching: bool


class Audience:
    def __init__(self, settings: ViewersConfig):
        self.settings = settings
        self._entries: OrderedDict[str, Presence] = OrderedDict()
        self._arriving: OrderedDict[str, tuple[float, float]] = OrderedDict()  # first, last

    def _touch(self, viewer_id: str, tag: str, now: float) -> Presence:
        entry = self._entries.get(viewer_id)
        if entry is None:
            entry = self._entries[viewer_id] = Presence(viewer_id, tag)
            while len(self._entries) > self.settings.max_present:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(viewer_id)
        entry.last_seen = now
        return entry

    def saw(self, viewer_id: str, tag: str) -> None:
        """A sign of life that costs the viewer something (a post): lists them."""
        self._touch(viewer_id, tag, time.monotonic())

    def still_here(self, viewer_id: str) -> None:
        """A cheap sign of life (a page, a form, a chat frame keep-alive): keeps a listed
        viewer present, never adds one, so anonymous load cannot fill or flush the list."""
        entry = self._entries.get(viewer_id)
        if entry is not None:
            self._entries.move_to_end(viewer_id)
            entry.last_seen = time.monotonic()

    def saw_video(self, viewer_id: str, tag: str) -> None:
        """Video reached this viewer; it lists them once video has reached them over time."""
        now = time.monotonic()
        first, last = self._arriving.get(viewer_id, (now, now))
        if now - last > self.settings.watching_seconds:
            first = now  # a gap: they arrive again
        self._arriving[viewer_id] = (first, now)
        self._arriving.move_to_end(viewer_id)
        while len(self._arriving) > self.settings.max_present:
            self._arriving.popitem(last=False)
        if now - first >= ARRIVING_SECONDS:
            self._watched(viewer_id, tag)

    def _watched(self, viewer_id: str, tag: str) -> None:
        now = time.monotonic()
        self._touch(viewer_id, tag, now).last_video = now

    def expire(self) -> None:
        cutoff = time.monotonic() - self.settings.present_seconds
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.last_seen >= cutoff:
                break
            self._entries.popitem(last=False)

    def is_watching(self, entry: Presence, now: float) -> bool:
        return now - entry.last_video <= self.settings.watching_seconds

    def count(self) -> int:
        now = time.monotonic()
        return sum(1 for e in self._entries.values() if self.is_watching(e, now))

    def listing(self, limit: int) -> list[Listed]:
        """The `limit` most recently seen present viewers, watching ones first."""
        self.expire()
        now = time.monotonic()
        newest = itertools.islice(reversed(self._entries.values()), limit)
        people = [Listed(e.viewer_id, e.tag, self.is_watching(e, now)) for e in newest]
        return sorted(people, key=lambda p: not p.watching)


def publish_viewer_count(audience: Audience, hub: Hub, every: float = 2.0) -> gevent.Greenlet:
    """Send a `viewers` event whenever the count changes (checked every `every` seconds)."""

    def run():
        last = None
        while True:
            audience.expire()
            count = audience.count()
            if count != last:
                hub.publish("viewers", {"count": count})
                last = count
            gevent.sleep(every)

    return gevent.spawn(run)
