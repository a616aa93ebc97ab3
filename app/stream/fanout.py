"""/stream.mp4: one long fragmented-MP4 response per viewer, fed from the shared snapshot.

Every response waits on the same stream state and writes the same segment bytes, so the
cost per viewer is a socket write, not a disk read. A viewer that falls behind the segments
still held in memory is dropped instead of queueing more for it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import gevent

from app.stream.watcher import StreamState

log = logging.getLogger(__name__)

# Bytes of each new segment every viewer gets before anyone gets the rest: with thousands of
# viewers woken at once, the last one would otherwise wait for all the others' full segments.
HEAD_BYTES = 4 * 1024


def stream_mp4(state: StreamState, idle_timeout: float,
               on_bytes: Callable[[], None] | None = None) -> Iterator[bytes] | None:
    """Return the byte iterator for a new viewer, or None when nothing is live."""
    snap = state.snapshot
    if not snap.online or not snap.segments or snap.init is None:
        return None
    return _follow(state, snap.generation, snap.init, snap.segments[-1].sequence,
                   idle_timeout, on_bytes or (lambda: None))


def _follow(state: StreamState, generation: int, init: bytes, next_sequence: int,
            idle_timeout: float, on_bytes: Callable[[], None]) -> Iterator[bytes]:
    yield init
    while True:
        snap = state.snapshot
        if snap.generation != generation or not snap.online:
            return  # restarted or ended: finish cleanly so the page can say so
        if snap.segments and next_sequence < snap.segments[0].sequence:
            log.debug("dropping a viewer that fell behind")
            return
        ready = [s for s in snap.segments if s.sequence >= next_sequence]
        if not ready:
            if not state.wait(idle_timeout) and state.snapshot is snap and not snap.hold:
                return  # nothing new for a long time although still "online" (not paused)
            continue
        segment = ready[0]
        next_sequence = segment.sequence + 1
        on_bytes()
        data = memoryview(segment.data)
        yield data[:HEAD_BYTES]
        gevent.sleep(0)  # let every other woken viewer send its head first
        if len(data) > HEAD_BYTES:
            yield data[HEAD_BYTES:]
