"""AMF0, the value encoding of RTMP commands, bounded in depth and item count: a hostile
peer's nesting cannot recurse without limit before the key is checked."""
from __future__ import annotations

import struct


class RtmpError(Exception):
    """The peer broke the protocol or a limit; the connection is dropped."""


class Undefined:
    def __repr__(self):
        return "undefined"


UNDEFINED = Undefined()
AMF_DEPTH = 8
AMF_ITEMS = 256


def amf_decode(data: bytes) -> list:
    values, offset = [], 0
    while offset < len(data) and len(values) < AMF_ITEMS:
        value, offset = _amf_value(data, offset, 0)
        values.append(value)
    return values


def _amf_take(data: bytes, offset: int, size: int) -> tuple[bytes, int]:
    end = offset + size
    if end > len(data):
        raise RtmpError("truncated AMF0 value")
    return data[offset:end], end


def _amf_string(data: bytes, offset: int, long: bool = False) -> tuple[str, int]:
    raw, offset = _amf_take(data, offset, 4 if long else 2)
    size = struct.unpack(">I" if long else ">H", raw)[0]
    raw, offset = _amf_take(data, offset, size)
    return raw.decode("utf-8", "replace"), offset


def _amf_value(data: bytes, offset: int, depth: int):
    if depth > AMF_DEPTH:
        raise RtmpError("AMF0 nesting too deep")
    marker, offset = _amf_take(data, offset, 1)
    kind = marker[0]
    if kind == 0:  # number
        raw, offset = _amf_take(data, offset, 8)
        return struct.unpack(">d", raw)[0], offset
    if kind == 1:  # boolean
        raw, offset = _amf_take(data, offset, 1)
        return raw[0] != 0, offset
    if kind == 2:
        return _amf_string(data, offset)
    if kind == 12:
        return _amf_string(data, offset, long=True)
    if kind in (5, 6):  # null, undefined
        return (None if kind == 5 else UNDEFINED), offset
    if kind in (3, 8):  # object, ECMA array
        if kind == 8:
            _, offset = _amf_take(data, offset, 4)
        result = {}
        while len(result) <= AMF_ITEMS:
            name, offset = _amf_string(data, offset)
            if not name and data[offset:offset + 1] == b"\x09":
                return result, offset + 1
            result[name], offset = _amf_value(data, offset, depth + 1)
        raise RtmpError("AMF0 object too large")
    if kind == 10:  # strict array
        raw, offset = _amf_take(data, offset, 4)
        count = struct.unpack(">I", raw)[0]
        if count > AMF_ITEMS:
            raise RtmpError("AMF0 array too large")
        items = []
        for _ in range(count):
            item, offset = _amf_value(data, offset, depth + 1)
            items.append(item)
        return items, offset
    if kind == 11:  # date
        raw, offset = _amf_take(data, offset, 10)
        return struct.unpack(">d", raw[:8])[0], offset
    raise RtmpError(f"unsupported AMF0 marker {kind}")


def amf_encode(*values) -> bytes:
    out = bytearray()
    for value in values:
        _amf_put(out, value)
    return bytes(out)


def _amf_put(out: bytearray, value) -> None:
    if value is None:
        out.append(5)
    elif value is UNDEFINED:
        out.append(6)
    elif isinstance(value, bool):
        out += bytes((1, int(value)))
    elif isinstance(value, (int, float)):
        out.append(0)
        out += struct.pack(">d", float(value))
    elif isinstance(value, str):
        raw = value.encode()
        out.append(2)
        out += struct.pack(">H", len(raw)) + raw
    elif isinstance(value, dict):
        out.append(3)
        for key, item in value.items():
            raw = key.encode()
            out += struct.pack(">H", len(raw)) + raw
            _amf_put(out, item)
        out += b"\x00\x00\x09"
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


