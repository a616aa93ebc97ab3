"""RTMP media messages re-wrapped as FLV for ffmpeg (an RTMP media message body is an FLV
tag body), and the codecs the first tags name."""
from __future__ import annotations

import struct

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


