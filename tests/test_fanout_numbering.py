"""Per-response fragment numbering in /stream.mp4 and the token in the served playlist."""
from __future__ import annotations

import struct

from app.stream.boxes import fragment_sequence_offsets, fragment_starts
from app.stream.fanout import HEAD_BYTES, renumbered
from app.stream.playlist import with_query
from app.stream.watcher import Segment


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def moof(sequence: int) -> bytes:
    mfhd = box(b"mfhd", b"\0\0\0\0" + struct.pack(">I", sequence))
    return box(b"moof", mfhd + box(b"traf", b"\0" * 16))


def numbers(data: bytes) -> list[int]:
    return [struct.unpack_from(">I", data, o)[0] for o in fragment_sequence_offsets(data)]


def test_fragments_are_numbered_from_each_responses_start():
    # Two fragments, the second past the head bytes, as an encoder numbered them (7 and 8).
    data = (box(b"styp", b"msdh\0\0\0\0") + moof(7) + box(b"mdat", b"x" * HEAD_BYTES)
            + moof(8) + box(b"mdat", b"y" * 100))
    segment = Segment("stream6.m4s", 6, 1.0, data, 0.0, fragment_sequence_offsets(data))
    assert numbers(data) == [7, 8]
    sent = b"".join(bytes(p) for p in renumbered(segment.data, segment.fragment_offsets, 0))
    assert numbers(sent) == [0, 1]
    assert len(sent) == len(data)
    # Only the four bytes of each number differ; the shared buffer is untouched.
    differ = [i for i in range(len(data)) if data[i] != sent[i]]
    offsets = fragment_sequence_offsets(data)
    assert all(any(o <= i < o + 4 for o in offsets) for i in differ)
    assert numbers(segment.data) == [7, 8]
    again = renumbered(segment.data, segment.fragment_offsets, 2)
    assert numbers(b"".join(bytes(p) for p in again)) == [2, 3]


def test_a_segment_without_fragments_is_sent_unchanged():
    data = b"not an mp4 at all" * 10
    segment = Segment("x.m4s", 1, 1.0, data, 0.0, fragment_sequence_offsets(data))
    assert b"".join(bytes(p) for p in renumbered(segment.data, segment.fragment_offsets, 0)) == data


def test_fragments_start_at_each_moof_and_data_without_one_has_none():
    """The watcher finds these for every file that lands in the folder: garbage, a cut
    file or a segment without fragments must give none, not stop it."""
    head = box(b"styp", b"msdh\0\0\0\0")
    first = moof(1) + box(b"mdat", b"x" * 50)
    data = head + first + moof(2) + box(b"mdat", b"y" * 20)
    assert fragment_starts(data) == (0, len(head) + len(first))
    assert fragment_starts(data[:len(head) + len(moof(1)) + 10]) == (0,)  # cut in its mdat
    for nothing in (b"", b"not an mp4 at all" * 10, head + box(b"mdat", b"z" * 9),
                    struct.pack(">I4s", 4000, b"moof")):
        assert fragment_starts(nothing) == ()


def test_the_playlist_passes_the_token_to_every_segment():
    text = ("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:1.0,\n"
            "stream3.m4s\n#EXTINF:1.0,\nstream4.m4s\n")
    out = with_query(text, "token=abcdefghijklmnop")
    assert '#EXT-X-MAP:URI="init.mp4?token=abcdefghijklmnop"' in out
    assert "stream3.m4s?token=abcdefghijklmnop\n" in out
    assert "stream4.m4s?token=abcdefghijklmnop\n" in out
    assert out.count("token=") == 3
