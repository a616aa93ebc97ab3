"""Fragment by fragment: what the JavaScript player reads while following the live edge.

A source that writes parts (app/sources/segmenter.py) makes a fragment about every 200 ms.
The player asks once, from "fragment k of segment n" on, and one long response (`pushed`)
carries every fragment the moment it exists, from the bytes the watcher already holds, each
framed with the numbers the player keeps: the player is a one-way trip behind the encoder,
not a segment. A request per part (tried first) fell behind over a Tor circuit (0.5-1 s round
trips against 200 ms parts) and cost the server eight times as much per viewer. A segment's
fragments are the same bytes while it is in progress and once it is finished
(boxes.fragment_starts), so it does not matter which of the two answers. A source that writes
whole segments has one fragment per segment: the same push works, at segment pace.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from app.stream.watcher import Partial, Segment, Snapshot, StreamState

MAX_INDEX = 10_000  # fragments in one segment: far more than any source writes


@dataclass(frozen=True)
class Found:
    sequence: int
    first: int  # the fragments first..last of segment `sequence`
    last: int
    data: bytes | memoryview  # a view of the held segment: nothing copied per viewer


WAIT = "wait"  # not written yet: ask again when the stream changes
GONE = "gone"  # no longer held, another generation, or offline: back to the timeline


def find_fragment(snap: Snapshot, generation: int, sequence: int,
                  index: int) -> Found | str:
    """Fragment `index` of segment `sequence` and the ones written after it in that segment;
    when that segment ended with fewer, from the first fragment of the next one (the answer
    says which they are)."""
    if not snap.online or snap.generation != generation or not 0 <= index <= MAX_INDEX:
        return GONE
    held = {segment.sequence: segment for segment in snap.segments}
    partial = snap.partial
    while sequence in held:
        found = _from(held[sequence], index)
        if found is not None:
            return found
        sequence, index = sequence + 1, 0
    if partial is not None and partial.sequence == sequence:
        return _from(partial, index) or WAIT
    newest = max([*held, partial.sequence if partial else -1], default=-1)
    return WAIT if newest < sequence <= newest + 1 else GONE


# Before each answer in a pushed response: its byte length, segment, first and last fragment,
# as four big-endian 32-bit numbers (static/player/follow.js reads them).
FRAME_HEADER = struct.Struct(">IIII")


def pushed(state: StreamState, quality: str, generation: int, sequence: int, index: int,
           idle_timeout: float, on_bytes: Callable[[], None]) -> Iterator[bytes]:
    """Every fragment from fragment `index` of segment `sequence` on, framed, as each is
    written. Ends when they are gone (another generation, offline, or fallen behind what is
    held: the player goes back to its timeline) or after a silence no hold explains.
    `on_bytes` hears of each segment once, when it begins, as from /stream.mp4 (presence)."""
    told = -1
    while True:
        top = state.snapshot
        found = find_fragment(top.view(quality), generation, sequence, index)
        if found == GONE:
            return
        if isinstance(found, Found):
            if found.sequence != told:
                told = found.sequence
                on_bytes()
            yield FRAME_HEADER.pack(len(found.data), found.sequence, found.first, found.last)
            yield found.data
            sequence, index = found.sequence, found.last + 1
        elif not state.wait(idle_timeout) and state.snapshot is top and not top.hold:
            return


def _from(held: Segment | Partial, index: int) -> Found | None:
    starts = held.fragment_starts
    if index >= len(starts):
        return None
    return Found(held.sequence, index, len(starts) - 1,
                 memoryview(held.data)[starts[index]:])
