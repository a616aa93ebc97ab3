"""`livestream segment`: fragmented MP4 on standard input -> the stream folder, fragment by
fragment, so the server can push each fragment the moment it is encoded.

ffmpeg's HLS muxer writes a segment as one piece when the segment ends (about 2 s late), and
its option for several fragments per segment breaks the first segment (ffmpeg 5.1 and 7.0).
ffmpeg writing plain fragmented MP4 (`-f mp4 -movflags
+frag_keyframe+empty_moov+default_base_moof -frag_duration 200000 pipe:1`) emits a fragment
every 200 ms instead; this reads them and keeps the folder contract (app/stream/folder.py):

- the init segment (ftyp + moov) as the rendition's init file;
- each fragment (moof + mdat) at once as a part file, `stream{N}.{K}.m4s`, listed in the
  playlist as `#EXT-X-PART` with a `#EXT-X-PRELOAD-HINT` for the next one (low-latency HLS);
- a new segment at the first keyframe after `segment_seconds`: its parts joined, byte for
  byte, as `stream{N}.m4s` and listed as usual, so every HLS player (and the watcher, for
  anything older than the segment in progress) sees an ordinary fMP4 playlist;
- the input's media timestamps unchanged; ENDLIST when the input ends.

Every file is written whole and renamed into place, the playlist last.
"""
from __future__ import annotations

import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path

from app.stream import boxes
from app.stream.folder import RenditionFiles, write_file

log = logging.getLogger(__name__)

MAX_BOX = 64 * 1024 * 1024  # one box of the input; a fragment is far smaller
KEEP_PART_SEGMENTS = 3  # segments whose parts stay listed (and on disk) behind the newest


class InputError(Exception):
    """The input is not fragmented MP4 as expected; the message says how."""


@dataclass
class Fragment:
    data: bytes
    info: boxes.FragmentInfo


@dataclass
class Building:
    """The segment in progress: its parts so far."""

    sequence: int
    parts: list[Fragment] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return sum(part.info.duration for part in self.parts)


@dataclass
class Done:
    """A finished segment, with the parts it was made of (listed while recent)."""

    sequence: int
    duration: float
    parts: list[float]  # part durations
    independent: list[bool]


def read_boxes(stream: typing.BinaryIO) -> typing.Iterator[tuple[bytes, bytes]]:
    """(type, whole box) for each top-level box of `stream`, as soon as it is complete."""
    while True:
        header = _read_exactly(stream, 8)
        if not header:
            return
        size, kind = int.from_bytes(header[:4], "big"), header[4:]
        if size == 1:
            large = _read_exactly(stream, 8)
            size, header = int.from_bytes(large, "big"), header + large
        if size < len(header) or size > MAX_BOX:
            raise InputError(f"a {kind!r} box of {size} bytes: not fragmented MP4 (write "
                             "-f mp4 -movflags +frag_keyframe+empty_moov+default_base_moof)")
        body = _read_exactly(stream, size - len(header))
        if len(body) != size - len(header):
            raise InputError(f"the input ended inside a {kind!r} box")
        yield kind, header + body


def _read_exactly(stream: typing.BinaryIO, count: int) -> bytes:
    chunks, left = [], count
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Segmenter:
    """Writes one rendition into `folder` from its fragments (see the module's docstring)."""

    def __init__(self, folder: Path, files: RenditionFiles, segment_seconds: float = 2.0,
                 list_size: int = 15):
        self.folder = Path(folder)
        self.files = files
        self.segment_seconds = segment_seconds
        self.list_size = list_size
        self.init: boxes.InitInfo | None = None
        self.defaults: dict[int, tuple[int, int]] = {}
        self.building: Building | None = None
        self.done: list[Done] = []
        self.next_sequence = 0
        self.part_target = 0.0
        self.init_bytes = b""

    # ------------------------------------------------------------------ the input

    def run(self, stream: typing.BinaryIO, last: bool = True) -> None:
        """Read the whole input; however it ends, the segment in progress is finished and,
        when it is the `last` input, the playlist ends with ENDLIST. A watch party feeds one
        input per ffmpeg run (last=False): numbering and media time go on across them."""
        pending_moof = None
        head: bytes | None = b""  # the input's init segment until its moov is complete
        try:
            for kind, box in read_boxes(stream):
                if head is not None:
                    head += box
                    if kind == b"moov":
                        self._init(head)
                        head = None
                    elif kind not in (b"ftyp", b"free", b"skip"):
                        raise InputError(f"a {kind!r} box before the moov: not fragmented MP4")
                elif kind == b"moof":
                    pending_moof = box
                elif kind == b"mdat" and pending_moof is not None:
                    self.fragment(pending_moof + box)
                    pending_moof = None
        finally:
            if self.init is not None and last:
                self.end()
            elif self.init is not None:
                self.pause()

    def _init(self, data: bytes) -> None:
        """The input's init segment; written only when it differs from the one in place (a
        party's runs write the same one, and a new one is a restart to the watcher)."""
        init = boxes.parse_init(data)
        if init.main_track is None:
            raise InputError("the input's moov has no track")
        self.init, self.defaults = init, boxes.track_defaults(data)
        if data != self.init_bytes:
            self.init_bytes = data
            self._write(self.files.init, data)

    # ------------------------------------------------------------------ the folder

    def part_name(self, sequence: int, index: int) -> str:
        return self.segment_name(sequence).removesuffix(".m4s") + f".{index}.m4s"

    def segment_name(self, sequence: int) -> str:
        return self.files.segment_pattern % sequence

    def fragment(self, data: bytes) -> None:
        info = boxes.describe_fragment(data, self.init, self.defaults)
        if info is None:
            return  # no sample of the main track: nothing to place
        building = self.building
        if building is not None and info.keyframe and \
                building.duration >= self.segment_seconds - 0.05:
            self._finish(building)
            building = None
        if building is None:
            building = self.building = Building(self.next_sequence)
            self.next_sequence += 1
        self._write(self.part_name(building.sequence, len(building.parts)), data)
        building.parts.append(Fragment(data, info))
        self.part_target = max(self.part_target, info.duration)
        self._write_playlist()

    def _finish(self, building: Building) -> None:
        self._write(self.segment_name(building.sequence),
                    b"".join(part.data for part in building.parts))
        self.done.append(Done(building.sequence, building.duration,
                              [p.info.duration for p in building.parts],
                              [p.info.keyframe for p in building.parts]))
        self.building = None
        for old in self.done[:-KEEP_PART_SEGMENTS]:
            for index in range(len(old.parts)):
                (self.folder / self.part_name(old.sequence, index)).unlink(missing_ok=True)
            old.parts, old.independent = [], []
        for old in self.done[:-2 * self.list_size]:
            (self.folder / self.segment_name(old.sequence)).unlink(missing_ok=True)
        self.done = self.done[-2 * self.list_size:]

    def pause(self) -> None:
        """An input ended but the stream goes on: its last segment is finished."""
        if self.building is not None and self.building.parts:
            self._finish(self.building)
        self.building = None
        self._write_playlist()

    def end(self) -> None:
        if self.building is not None and self.building.parts:
            self._finish(self.building)
        self.building = None
        self._write_playlist(ended=True)

    def playlist(self, ended: bool = False) -> str:
        """Low-latency HLS: the last segments with their parts, the one in progress as parts
        only, and a hint of the next part."""
        listed = self.done[-self.list_size:]
        first = listed[0].sequence if listed else self.next_sequence - 1
        longest = max([d.duration for d in listed] + [self.segment_seconds])
        target_duration = max(1, int(longest + 0.5))  # EXTINF rounded may not exceed it
        target = f"{self.part_target:.3f}" if self.part_target else "0.200"
        hold_back = 3 * (self.part_target or 0.2)
        lines = ["#EXTM3U", "#EXT-X-VERSION:9", f"#EXT-X-TARGETDURATION:{target_duration}",
                 # the server answers _HLS_msn/_HLS_part when they are there (stream_files.py)
                 f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={hold_back:.3f}",
                 f"#EXT-X-PART-INF:PART-TARGET={target}",
                 f"#EXT-X-MEDIA-SEQUENCE:{max(first, 0)}",
                 f'#EXT-X-MAP:URI="{self.files.init}"']
        for done in listed:
            lines += self._part_lines(done.sequence, done.parts, done.independent)
            lines += [f"#EXTINF:{done.duration:.6f},", self.segment_name(done.sequence)]
        building = self.building
        if building is not None and not ended:
            lines += self._part_lines(building.sequence,
                                      [p.info.duration for p in building.parts],
                                      [p.info.keyframe for p in building.parts])
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="'
                         f'{self.part_name(building.sequence, len(building.parts))}"')
        if ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def _part_lines(self, sequence: int, durations: list[float],
                    independent: list[bool]) -> list[str]:
        return [f'#EXT-X-PART:DURATION={duration:.6f},URI="{self.part_name(sequence, index)}"'
                + (",INDEPENDENT=YES" if key else "")
                for index, (duration, key) in enumerate(zip(durations, independent,
                                                            strict=True))]

    def _write_playlist(self, ended: bool = False) -> None:
        self._write(self.files.playlist, self.playlist(ended).encode())

    def _write(self, name: str, data: bytes) -> None:
        write_file(self.folder, name, data)
