"""Just enough fragmented-MP4 reading for the JavaScript player's timeline.

The player places every segment by the media time its fragments carry (`tfdt`), so the
server reads that time once per segment and tells every viewer the same numbers. The init
segment gives the time scales and the codec string Media Source Extensions asks for.
Nothing here trusts the input: a box that runs past its parent ends the walk.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex"}


@dataclass(frozen=True)
class TrackInfo:
    track_id: int
    handler: str  # "vide" or "soun"
    timescale: int
    codec: str | None


@dataclass(frozen=True)
class InitInfo:
    tracks: tuple[TrackInfo, ...] = field(default=())

    @property
    def codecs(self) -> str:
        """The RFC 6381 list for `video/mp4; codecs="..."`, video first."""
        ordered = sorted(self.tracks, key=lambda t: t.handler != "vide")
        return ",".join(t.codec for t in ordered if t.codec)

    def timescale(self, track_id: int) -> int | None:
        for track in self.tracks:
            if track.track_id == track_id:
                return track.timescale
        return None

    @property
    def main_track(self) -> TrackInfo | None:
        """Video when there is video: the track whose key frames start every segment."""
        for track in self.tracks:
            if track.handler == "vide":
                return track
        return self.tracks[0] if self.tracks else None


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """Yield (type, payload start, box end) for the boxes between start and end."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            if offset + 16 > end:
                return
            size = struct.unpack_from(">Q", data, offset + 8)[0]
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            return
        yield kind, offset + header, offset + size
        offset += size


def find(data: bytes, path: tuple[bytes, ...], start: int = 0, end: int | None = None,
         ) -> Iterator[tuple[int, int]]:
    """Every box at `path` (e.g. moov/trak), as (payload start, end)."""
    if not path:
        return
    for kind, payload, box_end in boxes(data, start, end):
        if kind != path[0]:
            continue
        if len(path) == 1:
            yield payload, box_end
        elif kind in CONTAINERS:
            yield from find(data, path[1:], payload, box_end)


def first(data: bytes, path: tuple[bytes, ...], start: int = 0, end: int | None = None,
          ) -> tuple[int, int] | None:
    return next(find(data, path, start, end), None)


def parse_init(data: bytes) -> InitInfo:
    """Tracks of an init segment (ftyp + moov); an empty InitInfo when it is not one."""
    tracks = []
    try:
        for trak_start, trak_end in find(data, (b"moov", b"trak")):
            track = _track(data, trak_start, trak_end)
            if track is not None:
                tracks.append(track)
    except struct.error:
        return InitInfo()
    return InitInfo(tuple(tracks))


def _track(data: bytes, start: int, end: int) -> TrackInfo | None:
    tkhd = first(data, (b"tkhd",), start, end)
    mdhd = first(data, (b"mdia", b"mdhd"), start, end)
    hdlr = first(data, (b"mdia", b"hdlr"), start, end)
    if tkhd is None or mdhd is None or hdlr is None:
        return None
    version = data[tkhd[0]]
    track_id = struct.unpack_from(">I", data, tkhd[0] + (20 if version == 1 else 12))[0]
    version = data[mdhd[0]]
    timescale = struct.unpack_from(">I", data, mdhd[0] + (20 if version == 1 else 12))[0]
    handler = data[hdlr[0] + 8:hdlr[0] + 12].decode("latin-1")
    stsd = first(data, (b"mdia", b"minf", b"stbl", b"stsd"), start, end)
    codec = _codec(data, stsd[0] + 8, stsd[1]) if stsd else None
    if timescale == 0:
        return None
    return TrackInfo(track_id, handler, timescale, codec)


def _codec(data: bytes, start: int, end: int) -> str | None:
    """The codec string of the first sample entry: avc1.PPCCLL, hvc1/hev1 or mp4a.40.x."""
    for kind, payload, box_end in boxes(data, start, end):
        name = kind.decode("latin-1")
        if kind in (b"avc1", b"avc3"):
            # Visual sample entry: 78 bytes of fields, then its child boxes (avcC among them).
            avcc = first(data, (b"avcC",), payload + 78, box_end)
            if avcc and avcc[1] - avcc[0] >= 4:
                profile, compat, level = data[avcc[0] + 1:avcc[0] + 4]
                return f"{name}.{profile:02x}{compat:02x}{level:02x}"
            return f"{name}.42e01e"
        if kind in (b"hvc1", b"hev1"):
            return f"{name}.1.6.L93.B0"
        if kind == b"mp4a":
            # Audio sample entry: 28 bytes of fields, then esds with the object type and,
            # for AAC, the audio object type in the first bits of the decoder config.
            return f"mp4a.40.{_aac_object_type(data, payload + 28, box_end) or 2}"
        return name
    return None


def _aac_object_type(data: bytes, start: int, end: int) -> int | None:
    """Audio object type from esds: ES_Descriptor > DecoderConfig > DecoderSpecificInfo."""
    esds = first(data, (b"esds",), start, end)
    if esds is None:
        return None
    body = data[esds[0] + 4:esds[1]]  # after version and flags
    es = _descriptor(body, 0, 0x03)
    if es is None:
        return None
    position = es[0] + 2  # ES_ID
    flags = body[position] if position < len(body) else 0
    position += 1
    if flags & 0x80:
        position += 2  # dependsOn_ES_ID
    if flags & 0x40 and position < len(body):
        position += 1 + body[position]  # URL
    if flags & 0x20:
        position += 2  # OCR_ES_ID
    config = _descriptor(body, position, 0x04)
    if config is None or config[0] >= len(body) or body[config[0]] != 0x40:
        return None  # not MPEG-4 audio
    specific = _descriptor(body, config[0] + 13, 0x05)
    if specific is None or specific[0] >= len(body):
        return None
    kind = body[specific[0]] >> 3
    return kind if 1 <= kind <= 30 else None


def _descriptor(body: bytes, position: int, tag: int) -> tuple[int, int] | None:
    """(payload start, length) of the descriptor with `tag` at `position`, if it is there."""
    if position >= len(body) or body[position] != tag:
        return None
    position += 1
    length = 0
    for _ in range(4):  # expandable size: 7 bits a byte, high bit means "more"
        if position >= len(body):
            return None
        byte = body[position]
        position += 1
        length = (length << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return position, length


def segment_start(data: bytes, init: InitInfo) -> float | None:
    """Media time (seconds) at which a media segment starts, read from its main track."""
    main = init.main_track
    if main is None:
        return None
    try:
        for moof_start, moof_end in find(data, (b"moof",)):
            for traf_start, traf_end in find(data, (b"traf",), moof_start, moof_end):
                tfhd = first(data, (b"tfhd",), traf_start, traf_end)
                tfdt = first(data, (b"tfdt",), traf_start, traf_end)
                if tfhd is None or tfdt is None:
                    continue
                track_id = struct.unpack_from(">I", data, tfhd[0] + 4)[0]
                if track_id != main.track_id:
                    continue
                if data[tfdt[0]] == 1:
                    decode_time = struct.unpack_from(">Q", data, tfdt[0] + 4)[0]
                else:
                    decode_time = struct.unpack_from(">I", data, tfdt[0] + 4)[0]
                return decode_time / main.timescale
    except struct.error:
        return None
    return None


def video_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of an init segment's first H.264/HEVC sample entry (the cockpit)."""
    try:
        for stsd_start, stsd_end in find(data, (b"moov", b"trak", b"mdia", b"minf", b"stbl",
                                                b"stsd")):
            for kind, payload, _ in boxes(data, stsd_start + 8, stsd_end):
                if kind in VISUAL_ENTRIES:
                    return struct.unpack_from(">HH", data, payload + 24)
    except struct.error:
        return None
    return None


def sample_count(data: bytes, track_id: int) -> int:
    """Samples (frames, for video) of one track in a media segment, over all its fragments."""
    count = 0
    try:
        for moof_start, moof_end in find(data, (b"moof",)):
            for traf_start, traf_end in find(data, (b"traf",), moof_start, moof_end):
                tfhd = first(data, (b"tfhd",), traf_start, traf_end)
                if tfhd is None or struct.unpack_from(">I", data, tfhd[0] + 4)[0] != track_id:
                    continue
                for trun_start, _ in find(data, (b"trun",), traf_start, traf_end):
                    count += struct.unpack_from(">I", data, trun_start + 4)[0]
    except struct.error:
        return count
    return count


# ------------------------------------------------------------------ scrubbing the init segment

COMPRESSOR_NAME_AT = 42  # in a visual sample entry's payload: the 32-byte compressor name
COMPRESSOR_NAME_SIZE = 32
VISUAL_ENTRIES = {b"avc1", b"avc3", b"hvc1", b"hev1", b"av01", b"vp09"}


def scrub_init(data: bytes) -> bytes:
    """The init segment without what names the writer's software and version.

    ffmpeg's HLS muxer leaves `encoder: Lavf59.27.100` in moov/udta even with +bitexact (its
    inner mp4 muxer never gets the flag), and the sample entry's compressor name says
    "Lavc libx264"; OBS writes its own. Viewers need neither: udta boxes are dropped and the
    compressor name blanked. Anything that does not parse is returned unchanged.
    """
    try:
        blanked = bytearray(data)
        for start, end in find(data, (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd")):
            for kind, payload, entry_end in boxes(data, start + 8, end):
                name_at = payload + COMPRESSOR_NAME_AT
                if kind in VISUAL_ENTRIES and name_at + COMPRESSOR_NAME_SIZE <= entry_end:
                    blanked[name_at:name_at + COMPRESSOR_NAME_SIZE] = bytes(COMPRESSOR_NAME_SIZE)
        return _drop(bytes(blanked), 0, len(blanked), top=True)
    except struct.error:
        return data


def _drop(data: bytes, start: int, end: int, top: bool = False) -> bytes:
    """The boxes between start and end again, without udta, sizes fixed on the way up."""
    out = bytearray()
    offset = start
    for kind, payload, box_end in boxes(data, start, end):
        header = data[offset:payload]
        offset = box_end
        if kind == b"udta":
            continue
        if kind in (b"moov", b"trak"):
            body = _drop(data, payload, box_end)
            out += struct.pack(">I4s", 8 + len(body), kind) + body
        else:
            out += header + data[payload:box_end]
    if top and offset < end:
        out += data[offset:end]  # whatever did not parse as boxes stays as it was
    return bytes(out)


def fragment_sequence_offsets(data: bytes) -> tuple[int, ...]:
    """Where each top-level moof's mfhd sequence_number sits in a media segment.

    A viewer joining mid-stream gets fragments numbered from wherever the encoder is (say 7);
    VLC's mp4 demuxer takes a first number other than the one it expects for a seek and stops.
    Knowing the offsets (found once per segment), each response can renumber its own
    fragments by patching four bytes.
    """
    offsets = []
    try:
        for kind, payload, box_end in boxes(data):
            if kind != b"moof":
                continue
            mfhd = first(data, (b"mfhd",), payload, box_end)
            if mfhd is not None and mfhd[1] - mfhd[0] >= 8:
                offsets.append(mfhd[0] + 4)  # after version and flags
    except struct.error:
        return ()
    return tuple(offsets)


def fragment_starts(data: bytes) -> tuple[int, ...]:
    """Where each fragment of a media segment starts: at its moof, the first at the
    segment's own start (a styp or sidx goes with it); each runs to the next. The parts a
    segmenter writes are these fragments, so the starts are the same in a segment in
    progress and in the finished one. Data without a moof (garbage, a cut file) has none:
    the watcher reads whatever lands in the folder and must not stop on it."""
    starts, at = [], 0
    for kind, _, box_end in boxes(data):
        if kind == b"moof":
            starts.append(at if starts else 0)
        at = box_end
    return tuple(starts)


# ------------------------------------------------------------------ one fragment, as it comes

@dataclass(frozen=True)
class FragmentInfo:
    """What a segmenter needs of one moof+mdat: where it starts, how long, a keyframe?"""

    start: float  # media seconds (tfdt) of the main track
    duration: float  # seconds of the main track's samples
    keyframe: bool  # its first main-track sample is a sync sample


NON_SYNC = 0x00010000  # sample_is_non_sync_sample, in ISO/IEC 14496-12 sample flags


def track_defaults(init: bytes) -> dict[int, tuple[int, int]]:
    """Each track's trex defaults (sample duration, sample flags) from an init segment."""
    defaults = {}
    try:
        for start, _ in find(init, (b"moov", b"mvex", b"trex")):
            track_id, _, duration, _, flags = struct.unpack_from(">IIIII", init, start + 4)
            defaults[track_id] = (duration, flags)
    except struct.error:
        return {}
    return defaults


def describe_fragment(data: bytes, init: InitInfo,
                      defaults: dict[int, tuple[int, int]]) -> FragmentInfo | None:
    """The main track's start, duration and first-sample sync flag in one fragment (moof,
    then its mdat); None when the fragment has no main-track samples or does not parse."""
    main = init.main_track
    if main is None:
        return None
    try:
        moof = first(data, (b"moof",))
        if moof is None:
            return None
        for traf_start, traf_end in find(data, (b"traf",), *moof):
            tfhd = first(data, (b"tfhd",), traf_start, traf_end)
            tfdt = first(data, (b"tfdt",), traf_start, traf_end)
            if tfhd is None or tfdt is None:
                continue
            tf_flags = struct.unpack_from(">I", data, tfhd[0])[0] & 0xFFFFFF
            if struct.unpack_from(">I", data, tfhd[0] + 4)[0] != main.track_id:
                continue
            duration, flags = defaults.get(main.track_id, (0, 0))
            at = tfhd[0] + 8
            if tf_flags & 0x01:
                at += 8  # base data offset
            if tf_flags & 0x02:
                at += 4  # sample description index
            if tf_flags & 0x08:
                duration = struct.unpack_from(">I", data, at)[0]
                at += 4
            if tf_flags & 0x10:
                at += 4  # default sample size
            if tf_flags & 0x20:
                flags = struct.unpack_from(">I", data, at)[0]
            wide = data[tfdt[0]] == 1
            decode_time = struct.unpack_from(">Q" if wide else ">I", data, tfdt[0] + 4)[0]
            total, first_flags = 0, None
            for trun_start, _ in find(data, (b"trun",), traf_start, traf_end):
                tr_flags = struct.unpack_from(">I", data, trun_start)[0] & 0xFFFFFF
                count = struct.unpack_from(">I", data, trun_start + 4)[0]
                at = trun_start + 8 + (4 if tr_flags & 0x01 else 0)
                trun_first = None
                if tr_flags & 0x04:
                    trun_first = struct.unpack_from(">I", data, at)[0]
                    at += 4
                fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if tr_flags & bit]
                for index in range(count):
                    sample_duration, sample_flags = duration, flags
                    for bit in fields:
                        value = struct.unpack_from(">I", data, at)[0]
                        at += 4
                        if bit == 0x100:
                            sample_duration = value
                        elif bit == 0x400:
                            sample_flags = value
                    if index == 0 and trun_first is not None:
                        sample_flags = trun_first
                    if first_flags is None:
                        first_flags = sample_flags
                    total += sample_duration
            if first_flags is None:
                return None
            return FragmentInfo(decode_time / main.timescale, total / main.timescale,
                                not first_flags & NON_SYNC)
    except struct.error:
        return None
    return None
