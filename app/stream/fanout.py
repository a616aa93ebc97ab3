"""/stream.mp4: one long fragmented-MP4 response per viewer, fed from the shared snapshot.

Every response waits on the same stream state and writes the same segment bytes, so the
cost per viewer is a socket write, not a disk read. A viewer that falls behind the segments
still held in memory is dropped instead of queueing more for it.
"""
from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator

import gevent

from app.stream.deliveries import Deliveries
from app.stream.watcher import Segment, StreamState

log = logging.getLogger(__name__)

# Bytes of each new segment every viewer gets before anyone gets the rest: with thousands of
# viewers woken at once, the last one would otherwise wait for all the others' full segments.
HEAD_BYTES = 4 * 1024


def stream_mp4(state: StreamState, idle_timeout: float,
               on_bytes: Callable[[], None] | None = None,
               quality: str | None = None,
               deliveries: Deliveries | None = None) -> Iterator[bytes] | None:
    """Return the byte iterator for a new viewer, or None when nothing is live.

    `quality` picks a rendition by name (the top one when it is unknown or not live): the
    viewer follows that rendition's segments in the same shared snapshot, so a low-quality
    viewer costs what a high-quality one does, only fewer bytes.
    """
    snap = state.snapshot.view(quality)
    if not snap.online or not snap.segments or snap.init is None:
        snap = state.snapshot  # the chosen rendition has nothing yet: the top one
        if not snap.online or not snap.segments or snap.init is None:
            return None
    return _follow(state, snap.generation, snap.init, snap.segments[-1].sequence,
                   idle_timeout, on_bytes or (lambda: None), snap.quality,
                   deliveries or Deliveries())


def renumbered(segment: Segment, first_number: int) -> list[bytes | bytearray | memoryview]:
    """The segment as pieces to send, its fragments numbered from `first_number`.

    The encoder numbers fragments from the start of the stream; a player reading one long
    response (VLC's mp4 demuxer) expects them to follow on from the response's own first one,
    and took a first number of 7 for a discontinuity and stopped. The head bytes (which hold
    the first moof) are a small per-viewer copy with the number patched; the rest is the
    shared buffer, cut only around a later fragment's four bytes when a segment has several.
    """
    data = memoryview(segment.data)
    head = bytearray(data[:HEAD_BYTES])
    pieces: list[bytes | bytearray | memoryview] = [head]
    cut = len(head)
    for number, offset in enumerate(segment.fragment_offsets, first_number):
        value = struct.pack(">I", number & 0xFFFFFFFF)
        if offset + 4 <= len(head):
            head[offset:offset + 4] = value
        elif offset >= cut:
            pieces += [data[cut:offset], value]
            cut = offset + 4
    if cut < len(data):
        pieces.append(data[cut:])
    return pieces


def _follow(state: StreamState, generation: int, init: bytes, next_sequence: int,
            idle_timeout: float, on_bytes: Callable[[], None],
            quality: str, deliveries: Deliveries) -> Iterator[bytes]:
    delivery = deliveries.opened(quality, next_sequence - 1)
    # This response's own fragment numbering (see renumbered). VLC 3 expects the first
    # fragment of a stream it reads to be 0 ("1 != 0" is a discontinuity to it as well).
    fragment = 0
    try:  # one generator, no delegation: every yield here is paid per viewer and piece
        yield init
        while True:
            top = state.snapshot
            snap = top.view(quality) if quality else top
            if snap.generation != generation or not snap.online or snap.init != init:
                return  # restarted or ended: finish cleanly so the page can say so
            if snap.segments and next_sequence < snap.segments[0].sequence:
                log.debug("dropping a viewer that fell behind")
                deliveries.dropped(delivery)
                return
            ready = [s for s in snap.segments if s.sequence >= next_sequence]
            if not ready:
                if not state.wait(idle_timeout) and state.snapshot is top and not top.hold:
                    return  # nothing new for a long time although still "online" (not paused)
                continue
            segment = ready[0]
            next_sequence = segment.sequence + 1
            on_bytes()
            pieces = renumbered(segment, fragment)
            fragment += len(segment.fragment_offsets)
            yield pieces[0]  # this viewer's own copy: no need to freeze it
            gevent.sleep(0)  # let every other woken viewer send its head first
            yield from pieces[1:]
            delivery.sent = segment.sequence  # written whole: the viewer health
            deliveries.bytes_sent += len(segment.data)
    finally:
        deliveries.closed(delivery)
