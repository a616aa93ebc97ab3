"""RTMP media messages re-wrapped as FLV for ffmpeg (an RTMP media message body is an FLV
tag body), and the codecs the first tags name."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from app.sources.rtmp.amf0 import RtmpError, Undefined, amf_decode, amf_encode


def flv_header(has_video: bool, has_audio: bool) -> bytes:
    flags = (1 if has_video else 0) | (4 if has_audio else 0)
    return b"FLV\x01" + bytes((flags,)) + struct.pack(">I", 9) + b"\x00\x00\x00\x00"


def flv_tag(tag_type: int, timestamp: int, body: bytes) -> bytes:
    head = bytes((tag_type,)) + len(body).to_bytes(3, "big")
    head += (timestamp & 0xFFFFFF).to_bytes(3, "big") + bytes(((timestamp >> 24) & 0xFF,))
    head += b"\x00\x00\x00"
    return head + body + struct.pack(">I", len(body) + 11)


def metadata_body(payload: bytes) -> bytes | None:
    """RTMP '@setDataFrame', 'onMetaData', {...} -> FLV script body 'onMetaData', {...}."""
    try:
        values = amf_decode(payload)
    except RtmpError:
        return None
    if values[:1] == ["@setDataFrame"]:
        values = values[1:]
    if values[:1] != ["onMetaData"] or len(values) < 2 or not isinstance(values[1], dict):
        return None
    clean = {k: v for k, v in values[1].items()
             if isinstance(v, (int, float, str, bool)) and not isinstance(v, Undefined)}
    return amf_encode("onMetaData", clean)


def video_codec(body: bytes) -> str:
    if not body:
        return "none"
    if body[0] & 0x80:
        return "enhanced:" + body[1:5].decode("ascii", "replace")  # e.g. hvc1, av01
    return {7: "h264", 2: "flv1", 4: "vp6", 12: "hevc"}.get(body[0] & 0x0F, f"id{body[0] & 15}")


def audio_codec(body: bytes) -> str:
    if not body:
        return "none"
    return {10: "aac", 2: "mp3", 11: "speex", 6: "nellymoser"}.get(body[0] >> 4,
                                                                   f"id{body[0] >> 4}")




def is_keyframe(body: bytes) -> bool:
    """FLV video tag: frame type 1 is a keyframe (also in the enhanced form's low 3 bits)."""
    if not body:
        return False
    frame_type = (body[0] >> 4) & (0x07 if body[0] & 0x80 else 0x0F)
    return frame_type == 1


def is_sequence_header(body: bytes) -> bool:
    """The H.264 tag that carries the AVCDecoderConfigurationRecord (AVCPacketType 0)."""
    return len(body) > 5 and body[0] & 0x80 == 0 and body[0] & 0x0F == 7 and body[1] == 0


@dataclass(frozen=True)
class H264Format:
    """What a browser needs to know before it can decode the picture."""

    profile: int
    chroma_format: int = 1  # 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4
    bit_depth: int = 8

    @property
    def browsers_play(self) -> bool:
        """Baseline, Main and High at 4:2:0 and 8 bits: what every browser's decoder takes."""
        return self.profile in BROWSER_PROFILES and self.chroma_format == 1 and self.bit_depth == 8

    def __str__(self) -> str:
        chroma = {0: "4:0:0", 1: "4:2:0", 2: "4:2:2", 3: "4:4:4"}.get(self.chroma_format, "?")
        name = H264_PROFILES.get(self.profile, f"profile {self.profile}")
        return f"H.264 {name} {chroma} {self.bit_depth}-bit"


BROWSER_PROFILES = (66, 77, 100)
H264_PROFILES = {66: "Baseline", 77: "Main", 88: "Extended", 100: "High", 110: "High 10",
                 122: "High 4:2:2", 244: "High 4:4:4 Predictive", 44: "CAVLC 4:4:4"}
# Profiles whose SPS carries chroma_format_idc and the bit depths (H.264 7.3.2.1.1)
_HIGH_SPS = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def h264_format(body: bytes) -> H264Format | None:
    """Profile, chroma format and bit depth from an FLV AVC sequence header; None if unreadable.

    The record's profile byte alone gives neither the chroma format nor the bit depth, so the
    first SPS is read too."""
    if not is_sequence_header(body):
        return None
    record = body[5:]
    if len(record) < 8 or record[0] != 1:
        return None
    profile = record[1]
    sps_count = record[5] & 0x1F
    sps_length = int.from_bytes(record[6:8], "big")
    sps = record[8:8 + sps_length]
    if not sps_count or len(sps) < 4 or len(sps) != sps_length:
        return H264Format(profile)
    if profile not in _HIGH_SPS:
        return H264Format(profile)
    try:
        bits = _Bits(_unescape(sps[4:]))  # after the NAL header, profile, flags and level
        bits.ue()  # seq_parameter_set_id
        chroma = bits.ue()
        if chroma == 3:
            bits.bit()  # separate_colour_plane_flag
        depth = 8 + bits.ue()
    except IndexError:
        return H264Format(profile)
    return H264Format(profile, chroma, depth)


def _unescape(nal: bytes) -> bytes:
    """Drop the emulation-prevention bytes (00 00 03 -> 00 00)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


class _Bits:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def bit(self) -> int:
        byte = self.data[self.pos >> 3]  # IndexError at the end: the caller gives up
        value = (byte >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise IndexError("exp-Golomb code too long")
        value = 0
        for _ in range(zeros):
            value = value << 1 | self.bit()
        return (1 << zeros) - 1 + value
