"""The RTMP handshake and chunk stream: bytes from a socket in, whole messages out.

Kept apart from the server so the parser can be fuzzed on its own; every size a peer
announces is bounded before the key is checked."""
from __future__ import annotations

import secrets
import socket
import struct
import time
from dataclasses import dataclass, field

from app.sources.rtmp.amf0 import RtmpError, amf_encode

HANDSHAKE_SIZE = 1536
MSG_SET_CHUNK_SIZE, MSG_ABORT, MSG_ACK, MSG_USER_CONTROL = 1, 2, 3, 4
MSG_WINDOW_ACK, MSG_PEER_BANDWIDTH = 5, 6
MSG_AUDIO, MSG_VIDEO = 8, 9
MSG_DATA_AMF3, MSG_COMMAND_AMF3, MSG_DATA_AMF0, MSG_COMMAND_AMF0 = 15, 17, 18, 20
WINDOW = 2_500_000
OUT_CHUNK_SIZE = 4096
# Before the key is checked a peer may make us hold at most this much: its commands are a
# few hundred bytes, so a few KiB per message and in all is plenty. After the key the live
# publisher gets room for big keyframes.
PRE_AUTH_MAX_MESSAGE = 16 * 1024
PRE_AUTH_MAX_BUFFERED = 32 * 1024
PRE_AUTH_MAX_STREAMS = 8
LIVE_MAX_MESSAGE = 16 * 1024 * 1024
LIVE_MAX_BUFFERED = 32 * 1024 * 1024
LIVE_MAX_STREAMS = 64
MAX_CHUNK_SIZE = 0xFFFFFF  # the largest the spec allows (a message length has 24 bits)


@dataclass
class RtmpMessage:
    type: int
    stream_id: int
    timestamp: int
    payload: bytes = field(repr=False)


@dataclass
class _ChunkStream:
    timestamp: int = 0
    ts_field: int = 0
    length: int = 0
    type: int = 0
    stream_id: int = 0
    extended: bool = False
    buffer: bytearray = field(default_factory=bytearray)


class RtmpConnection:
    """Reads RTMP messages from a socket and writes the few a server must send."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.in_chunk_size = 128
        self.streams: dict[int, _ChunkStream] = {}
        self.max_message = PRE_AUTH_MAX_MESSAGE
        self.max_buffered = PRE_AUTH_MAX_BUFFERED
        self.max_streams = PRE_AUTH_MAX_STREAMS
        self.buffered = 0  # bytes of half-received messages held, over all chunk streams
        self.bytes_in = 0
        self.last_read = time.monotonic()  # a silent live publisher may be taken over
        self.acked = 0
        self.peer_window = WINDOW
        self.out_chunk_size = 128

    def authenticated(self) -> None:
        """The key passed: allow the sizes real audio and video need."""
        self.max_message = LIVE_MAX_MESSAGE
        self.max_buffered = LIVE_MAX_BUFFERED
        self.max_streams = LIVE_MAX_STREAMS

    def read_exact(self, size: int) -> bytes:
        if size < 0:  # never "read to the end", whatever a header claimed
            raise RtmpError(f"negative read of {size} bytes")
        if size == 0:
            return b""
        data = self.reader.read(size)
        if data is None or len(data) < size:
            raise EOFError("publisher closed the connection")
        self.bytes_in += size
        self.last_read = time.monotonic()
        return data

    def handshake(self) -> None:
        """The plain (unsigned) handshake; every publisher we care about accepts it."""
        c0 = self.read_exact(1)
        if c0[0] != 3:
            raise RtmpError(f"not RTMP (version byte {c0[0]})")
        c1 = self.read_exact(HANDSHAKE_SIZE)
        # S1's "time" field is ours to fill: zero, so it says nothing about the host's uptime
        s1 = struct.pack(">II", 0, 0) + secrets.token_bytes(HANDSHAKE_SIZE - 8)
        self.sock.sendall(b"\x03" + s1 + c1)
        self.read_exact(HANDSHAKE_SIZE)  # C2 echoes S1; nothing in it to check

    def read_message(self) -> RtmpMessage:
        """Read chunks until one whole message is assembled."""
        while True:
            message = self._read_chunk()
            if self.bytes_in - self.acked >= self.peer_window:
                self.acked = self.bytes_in
                self.send(2, MSG_ACK, struct.pack(">I", self.bytes_in & 0xFFFFFFFF))
            if message is None:
                continue
            if message.type == MSG_SET_CHUNK_SIZE and len(message.payload) >= 4:
                size = struct.unpack(">I", message.payload[:4])[0] & 0x7FFFFFFF
                if not 1 <= size <= MAX_CHUNK_SIZE:
                    raise RtmpError(f"chunk size {size} out of range")
                self.in_chunk_size = size
            elif message.type == MSG_ABORT and len(message.payload) >= 4:
                stream = self.streams.get(struct.unpack(">I", message.payload[:4])[0])
                if stream:
                    self.buffered -= len(stream.buffer)
                    stream.buffer = bytearray()
            elif message.type == MSG_WINDOW_ACK and len(message.payload) >= 4:
                self.peer_window = max(4096, struct.unpack(">I", message.payload[:4])[0])
            else:
                return message

    def _read_chunk(self) -> RtmpMessage | None:
        first = self.read_exact(1)[0]
        fmt, csid = first >> 6, first & 0x3F
        if csid == 0:
            csid = 64 + self.read_exact(1)[0]
        elif csid == 1:
            low, high = self.read_exact(2)
            csid = 64 + low + high * 256
        stream = self.streams.get(csid)
        if stream is None:
            if fmt != 0:
                raise RtmpError(f"chunk stream {csid} starts without a full header")
            if len(self.streams) >= self.max_streams:
                raise RtmpError(f"more than {self.max_streams} chunk streams")
            stream = self.streams[csid] = _ChunkStream()
        starting = not stream.buffer
        if fmt < 3:
            header = self.read_exact((11, 7, 3)[fmt])
            stream.ts_field = int.from_bytes(header[0:3], "big")
            if fmt < 2:
                length, msg_type = int.from_bytes(header[3:6], "big"), header[6]
                if not starting and (length != stream.length or msg_type != stream.type):
                    # the message half read would be cut short or overrun: no good reading
                    raise RtmpError(f"chunk header changes a half-read message on stream "
                                    f"{csid} ({stream.length} -> {length} bytes)")
                stream.length, stream.type = length, msg_type
            if fmt == 0:
                stream.stream_id = struct.unpack("<I", header[7:11])[0]
            stream.extended = stream.ts_field == 0xFFFFFF
        if stream.extended:
            extended = struct.unpack(">I", self.read_exact(4))[0]
            if fmt < 3:
                stream.ts_field = extended
        if stream.length > self.max_message:
            raise RtmpError(f"message of {stream.length} bytes is over the limit "
                            f"of {self.max_message}")
        if starting:
            stream.timestamp = (stream.ts_field if fmt == 0
                                else (stream.timestamp + stream.ts_field) & 0xFFFFFFFF)
        wanted = min(self.in_chunk_size, stream.length - len(stream.buffer))
        if self.buffered + wanted > self.max_buffered:
            raise RtmpError(f"over {self.max_buffered} bytes of half-sent messages")
        data = self.read_exact(wanted)
        if len(stream.buffer) + len(data) < stream.length:
            stream.buffer += data
            self.buffered += len(data)
            return None
        payload = bytes(stream.buffer) + data
        self.buffered -= len(stream.buffer)
        stream.buffer = bytearray()
        return RtmpMessage(stream.type, stream.stream_id, stream.timestamp, payload)

    def send(self, csid: int, msg_type: int, payload: bytes, stream_id: int = 0) -> None:
        """One message, split into chunks of our outgoing chunk size."""
        out = bytearray()
        out.append(csid)  # fmt 0; our csids are all < 64
        out += (0).to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes((msg_type,))
        out += struct.pack("<I", stream_id)
        size = self.out_chunk_size
        for start in range(0, len(payload), size):
            if start:
                out.append(0xC0 | csid)
            out += payload[start:start + size]
        self.sock.sendall(bytes(out))

    def command(self, *values, stream_id: int = 0) -> None:
        self.send(5 if stream_id else 3, MSG_COMMAND_AMF0, amf_encode(*values), stream_id)

    def close(self) -> None:
        for closing in (self.reader.close, self.sock.close):
            try:
                closing()
            except OSError:
                pass


