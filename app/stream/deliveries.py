"""What the fan-out writes to each /stream.mp4 response: the viewer health the cockpit shows.

The server writes every byte of every /stream.mp4 response itself, so it knows, for each
viewer whatever plays it (a plain <video> without JavaScript, VLC, mpv), which segment it
last finished writing to that viewer's socket. A viewer whose connection cannot carry the
rendition falls behind the live edge (its socket stays full, so the write waits) and, once
it falls out of the segments held in memory, is dropped. The hot path pays an attribute
write and an addition per segment per viewer; the figures are worked out only when the
cockpit or /metrics asks.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

DROPS_KEPT = 10_000  # drops remembered (for "dropped in the last 10 minutes")
DROP_WINDOW = 600.0


class Delivery:
    """One open /stream.mp4 response."""

    __slots__ = ("quality", "sent", "opened")

    def __init__(self, quality: str, sent: int):
        self.quality = quality
        self.sent = sent  # the sequence of the last segment written whole to the socket
        self.opened = time.monotonic()


@dataclass
class RenditionViewers:
    """Figures for one rendition at one moment."""

    quality: str
    watching: int = 0
    keeping_up: int = 0
    behind: list[float] = field(default_factory=list)  # seconds behind live, one per viewer
    dropped: int = 0  # in the last DROP_WINDOW seconds

    @property
    def worst(self) -> float:
        return max(self.behind, default=0.0)


class Deliveries:
    def __init__(self):
        self.open: set[Delivery] = set()
        self.drops: deque[tuple[float, str]] = deque(maxlen=DROPS_KEPT)
        self.drops_total: Counter[str] = Counter()
        self.bytes_sent = 0  # media bytes written to /stream.mp4 responses since start

    def opened(self, quality: str, sent: int) -> Delivery:
        delivery = Delivery(quality, sent)
        self.open.add(delivery)
        return delivery

    def closed(self, delivery: Delivery) -> None:
        self.open.discard(delivery)

    def dropped(self, delivery: Delivery) -> None:
        self.drops.append((time.monotonic(), delivery.quality))
        self.drops_total[delivery.quality] += 1

    def report(self, snapshot) -> dict[str, RenditionViewers]:
        """Per rendition: who keeps up (at most one segment behind the newest), how far
        behind each viewer is, and the drops of the last 10 minutes."""
        figures: dict[str, RenditionViewers] = {}
        for view in snapshot.views:
            figures[view.quality] = RenditionViewers(view.quality)
        durations = {view.quality: [(s.sequence, s.duration) for s in view.segments]
                     for view in snapshot.views}
        for delivery in list(self.open):
            row = figures.setdefault(delivery.quality, RenditionViewers(delivery.quality))
            newer = [d for sequence, d in durations.get(delivery.quality, ())
                     if sequence > delivery.sent]
            behind = sum(newer)
            row.watching += 1
            row.behind.append(behind)
            row.keeping_up += len(newer) <= 1
        cutoff = time.monotonic() - DROP_WINDOW
        for at, quality in self.drops:
            if at >= cutoff:
                figures.setdefault(quality, RenditionViewers(quality)).dropped += 1
        return figures
