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
from app.stream.watcher import Snapshot, StreamState

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
    first, join_after = snap.segments[-1].sequence, None
    if snap.partial is not None:
        # A source writing parts: start at the next keyframe, inside the segment in progress
        # (a part the playlist marks INDEPENDENT) or else the segment after it. A browser's
        # <video> plays a progressive response from its first picture at normal speed, so
        # starting with the last keyframe put it as far behind live as that keyframe was
        # old: 2.58 s (0.91-3.08) against 0.89 s with 2 s between keyframes
        # (docs/benchmarks.md, "Sub-second live (issue 22, third part)"); the next one inside
        # the segment halves the wait for the first picture when keyframes come every second
        # ("fifth part"). While the host holds the stream (paused) no keyframe is coming:
        # the segment in progress shows the picture the party stopped on.
        first = snap.partial.sequence
        if not snap.hold:
            join_after = len(snap.partial.data)
    return _follow(state, snap.generation, snap.init, first, idle_timeout,
                   on_bytes or (lambda: None), snap.quality, deliveries or Deliveries(),
                   join_after)


def renumbered(data: bytes, offsets: tuple[int, ...], first_number: int, start: int = 0,
               end: int | None = None) -> list[bytes | bytearray | memoryview]:
    """data[start:end] as pieces to send, its fragments numbered on from `first_number`
    (the number of the fragment at offsets[0]).

    The encoder numbers fragments from the start of the stream; a player reading one long
    response (VLC's mp4 demuxer) expects them to follow on from the response's own first one,
    and took a first number of 7 for a discontinuity and stopped. The head bytes (which hold
    the first moof) are a small per-viewer copy with the number patched; the rest is the
    shared buffer, cut only around a later fragment's four bytes when there are several.
    """
    end = len(data) if end is None else end
    view = memoryview(data)
    head_end = min(start + HEAD_BYTES, end)
    for offset in offsets:  # a number straddling the head's end: the head takes all of it
        if offset < head_end < offset + 4 <= end:
            head_end = offset + 4
    head = bytearray(view[start:head_end])
    pieces: list[bytes | bytearray | memoryview] = [head]
    cut = head_end
    for number, offset in enumerate(offsets, first_number):
        if offset < start or offset + 4 > end:
            continue
        value = struct.pack(">I", number & 0xFFFFFFFF)
        if offset + 4 <= head_end:
            head[offset - start:offset - start + 4] = value
        elif offset >= cut:
            pieces += [view[cut:offset], value]
            cut = offset + 4
    if cut < end:
        pieces.append(view[cut:end])
    return pieces


def _follow(state: StreamState, generation: int, init: bytes, next_sequence: int,
            idle_timeout: float, on_bytes: Callable[[], None],
            quality: str, deliveries: Deliveries,
            join_after: int | None = None) -> Iterator[bytes]:
    """With `join_after`, the response starts at the first keyframe part of segment
    `next_sequence` that begins at or after that byte, or with the next segment when this one
    ends first."""
    delivery = deliveries.opened(quality, next_sequence - 1)
    # This response's own fragment numbering (see renumbered). VLC 3 expects the first
    # fragment of a stream it reads to be 0 ("1 != 0" is a discontinuity to it as well).
    fragment = 0
    sent = 0  # bytes of segment `next_sequence` already sent from its parts
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
            partial = snap.partial
            if join_after is not None:
                if partial is None or partial.sequence != next_sequence:
                    next_sequence, join_after = next_sequence + 1, None  # it ended first
                    continue
                start = next((at for at in partial.keyframe_starts if at >= join_after), None)
                if start is None:
                    if _given_up(state, top, idle_timeout):
                        return
                    continue
                sent, join_after = start, None
                # numbered as if the fragments skipped had been sent: this one is 0
                fragment = -sum(at < start for at in partial.fragment_offsets)
                on_bytes()
            segment = next((s for s in snap.segments if s.sequence >= next_sequence), None)
            if segment is not None:
                if segment.sequence != next_sequence:
                    sent = 0  # the parts sent were of a segment now gone: start this one
                if not sent:
                    on_bytes()
                pieces = renumbered(segment.data, segment.fragment_offsets, fragment, sent)
                fragment += len(segment.fragment_offsets)
                next_sequence, sent = segment.sequence + 1, 0
                yield pieces[0]  # this viewer's own copy: no need to freeze it
                gevent.sleep(0)  # let every other woken viewer send its head first
                yield from pieces[1:]
                delivery.sent = segment.sequence  # written whole: the viewer health
                deliveries.bytes_sent += len(segment.data)
            elif (partial is not None and partial.sequence == next_sequence
                  and len(partial.data) > sent):
                if not sent:
                    on_bytes()
                pieces = renumbered(partial.data, partial.fragment_offsets, fragment, sent)
                sent = len(partial.data)
                yield from pieces  # a fragment or two: small, at once
            elif _given_up(state, top, idle_timeout):
                return
    finally:
        deliveries.closed(delivery)


def _given_up(state: StreamState, top: Snapshot, idle_timeout: float) -> bool:
    """Wait for the stream to change; True after a silence no hold (pause) explains although
    the stream still says it is online."""
    return not state.wait(idle_timeout) and state.snapshot is top and not top.hold
