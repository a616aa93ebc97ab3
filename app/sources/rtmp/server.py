"""RTMP ingest: accept one publisher (OBS, VLC, ffmpeg) with the stream key, write HLS.

Why not just `ffmpeg -listen 1 -i rtmp://...`: its listener accepts ANY app and stream name
(a push to rtmp://host/other/WRONG is taken and segments appear), so it cannot check a key.
So this module speaks the small part of RTMP a publisher needs: the handshake, `connect`,
`createStream` and `publish` (AMF0), then the chunked audio/video messages. Only after the
address and the key pass does anything reach ffmpeg: the media messages are re-wrapped as
FLV tags (an RTMP media message body IS an FLV tag body) and piped into
`ffmpeg -f flv -i pipe:0`, which copies H.264/AAC or transcodes anything else into HLS.

Unauthenticated peers are held to small messages and a deadline, and never touch ffmpeg.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import gevent.event
import gevent.pool
from gevent.server import StreamServer

from app.config import Config
from app.runtime import processes
from app.sources import play as sources

log = logging.getLogger(__name__)

KEY_FILE = "ingest.key"

# ---------------------------------------------------------------- the stream key


def key_path(state_dir: Path) -> Path:
    return Path(state_dir) / KEY_FILE


def load_key(state_dir: Path) -> str:
    """The stream key; made on first use, readable by the owner only."""
    path = key_path(state_dir)
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return rotate_key(state_dir)
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; making it owner-only", path)
        os.chmod(path, 0o600)
    if len(key) < 16:
        raise ValueError(f"{path}: stream key too short; make a new one: livestream key --new")
    return key


def rotate_key(state_dir: Path) -> str:
    """Write a fresh random key (atomically, 0600) and return it."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_urlsafe(24)
    temp = state_dir / f".{KEY_FILE}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    os.replace(temp, key_path(state_dir))
    return key


def key_matches(offered: str, expected: str) -> bool:
    """Constant-time comparison; a '?query' some tools append to the name is ignored."""
    offered = offered.split("?", 1)[0]
    return hmac.compare_digest(offered.encode("utf-8", "replace"), expected.encode())


class AllowList:
    """Publisher addresses allowed to connect; empty means every address."""

    def __init__(self, entries: list[str]):
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries]

    def allows(self, address: str) -> bool:
        if not self.networks:
            return True
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)


# ---------------------------------------------------------------- AMF0

class RtmpError(Exception):
    """The peer broke the protocol or a limit; the connection is dropped."""


class _Undefined:
    def __repr__(self):
        return "undefined"


UNDEFINED = _Undefined()
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


# ---------------------------------------------------------------- RTMP chunks

HANDSHAKE_SIZE = 1536
MSG_SET_CHUNK_SIZE, MSG_ABORT, MSG_ACK, MSG_USER_CONTROL = 1, 2, 3, 4
MSG_WINDOW_ACK, MSG_PEER_BANDWIDTH = 5, 6
MSG_AUDIO, MSG_VIDEO = 8, 9
MSG_DATA_AMF3, MSG_COMMAND_AMF3, MSG_DATA_AMF0, MSG_COMMAND_AMF0 = 15, 17, 18, 20
WINDOW = 2_500_000
OUT_CHUNK_SIZE = 4096
PRE_AUTH_MAX_MESSAGE = 64 * 1024  # commands are small; big messages only after the key
MAX_BUFFERED = 32 * 1024 * 1024


@dataclass
class Message:
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
        self.bytes_in = 0
        self.acked = 0
        self.peer_window = WINDOW
        self.out_chunk_size = 128

    def read_exact(self, size: int) -> bytes:
        data = self.reader.read(size)
        if data is None or len(data) < size:
            raise EOFError("publisher closed the connection")
        self.bytes_in += size
        return data

    def handshake(self) -> None:
        """The plain (unsigned) handshake; every publisher we care about accepts it."""
        c0 = self.read_exact(1)
        if c0[0] != 3:
            raise RtmpError(f"not RTMP (version byte {c0[0]})")
        c1 = self.read_exact(HANDSHAKE_SIZE)
        s1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0)
        s1 += secrets.token_bytes(HANDSHAKE_SIZE - 8)
        self.sock.sendall(b"\x03" + s1 + c1)
        self.read_exact(HANDSHAKE_SIZE)  # C2 echoes S1; nothing in it to check

    def read_message(self) -> Message:
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
                if not 1 <= size <= 16 * 1024 * 1024:
                    raise RtmpError(f"chunk size {size} out of range")
                self.in_chunk_size = size
            elif message.type == MSG_ABORT and len(message.payload) >= 4:
                stream = self.streams.get(struct.unpack(">I", message.payload[:4])[0])
                if stream:
                    stream.buffer = bytearray()
            elif message.type == MSG_WINDOW_ACK and len(message.payload) >= 4:
                self.peer_window = max(4096, struct.unpack(">I", message.payload[:4])[0])
            else:
                return message

    def _read_chunk(self) -> Message | None:
        first = self.read_exact(1)[0]
        fmt, csid = first >> 6, first & 0x3F
        if csid == 0:
            csid = 64 + self.read_exact(1)[0]
        elif csid == 1:
            low, high = self.read_exact(2)
            csid = 64 + low + high * 256
        stream = self.streams.get(csid)
        if stream is None:
            if fmt != 0 or len(self.streams) >= 64:
                raise RtmpError(f"chunk stream {csid} starts without a full header")
            stream = self.streams[csid] = _ChunkStream()
        starting = not stream.buffer
        if fmt < 3:
            header = self.read_exact((11, 7, 3)[fmt])
            stream.ts_field = int.from_bytes(header[0:3], "big")
            if fmt < 2:
                stream.length = int.from_bytes(header[3:6], "big")
                stream.type = header[6]
            if fmt == 0:
                stream.stream_id = struct.unpack("<I", header[7:11])[0]
            stream.extended = stream.ts_field == 0xFFFFFF
        if stream.extended:
            extended = struct.unpack(">I", self.read_exact(4))[0]
            if fmt < 3:
                stream.ts_field = extended
        if starting:
            if stream.length > self.max_message:
                raise RtmpError(f"message of {stream.length} bytes is over the limit")
            stream.timestamp = (stream.ts_field if fmt == 0
                                else (stream.timestamp + stream.ts_field) & 0xFFFFFFFF)
        wanted = min(self.in_chunk_size, stream.length - len(stream.buffer))
        stream.buffer += self.read_exact(wanted)
        if sum(len(s.buffer) for s in self.streams.values()) > MAX_BUFFERED:
            raise RtmpError("too much half-sent data")
        if len(stream.buffer) < stream.length:
            return None
        message = Message(stream.type, stream.stream_id, stream.timestamp, bytes(stream.buffer))
        stream.buffer = bytearray()
        return message

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


# ---------------------------------------------------------------- FLV for ffmpeg

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
             if isinstance(v, (int, float, str, bool)) and not isinstance(v, _Undefined)}
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


# ---------------------------------------------------------------- the server

class Refused(Exception):
    """The publisher may not publish; the message goes back to it (and to the log)."""


class IngestServer:
    """Accept publishers; one at a time goes through to ffmpeg; ready again when it leaves."""

    def __init__(self, config: Config):
        self.config = config
        self.settings = config.ingest
        self.allow = AllowList(self.settings.allow)
        self.stream_dir = config.stream_dir
        self.playlist = config.stream.playlist
        self.live: str | None = None  # address of the current publisher
        self.live_connection: RtmpConnection | None = None
        self.server = StreamServer((self.settings.host, self.settings.port), self.handle,
                                   spawn=gevent.pool.Pool(self.settings.max_pending + 1))
        self.encoding = sources.Encoding(preset=self.settings.transcode_preset,
                                         video_kbps=self.settings.transcode_video_kbps,
                                         audio_kbps=self.settings.transcode_audio_kbps)
        load_key(config.state_dir)  # make it now, so `livestream key` shows the one in use

    def start(self) -> None:
        self.server.start()
        log.info("RTMP ingest listening on rtmp://%s:%d/%s (key: livestream key)",
                 self.settings.host, self.server.server_port, self.settings.app)

    def stop(self) -> None:
        """Stop accepting; end the live publisher so its playlist is ended cleanly."""
        self.server.close()
        if self.live_connection is not None:
            try:
                self.live_connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.stop(timeout=10)

    def handle(self, sock: socket.socket, address) -> None:
        peer = address[0]
        if not self.allow.allows(peer):
            log.warning("refused RTMP connection from %s: not in ingest.allow", peer)
            sock.close()
            return
        conn = RtmpConnection(sock)
        try:
            with gevent.Timeout(self.settings.handshake_timeout,
                                RtmpError("handshake/publish took too long")):
                conn.handshake()
                name = self._until_publish(conn)
            self._admit(conn, peer, name)
        except Refused as exc:
            log.warning("refused publisher %s: %s", peer, exc)
            gevent.sleep(0.5)  # a little friction for anyone guessing keys
        except (RtmpError, EOFError, OSError) as exc:
            log.info("RTMP connection from %s dropped: %s", peer, exc)
        else:
            try:
                self.live_connection = conn
                self._publish(conn, peer)
            finally:
                self.live, self.live_connection = None, None
                log.info("publisher %s left; ready for the next one", peer)
        finally:
            conn.close()

    def _until_publish(self, conn: RtmpConnection) -> str:
        """Answer connect/createStream until the publisher names its stream (the key)."""
        while True:
            message = conn.read_message()
            values = self._command(message)
            if not values:
                continue
            name, txn = values[0], values[1] if len(values) > 1 else 0
            if name == "connect":
                info = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
                app = str(info.get("app", "")).strip("/").split("?", 1)[0]
                if app != self.settings.app:
                    conn.command("_error", txn, None, _status(
                        "error", "NetConnection.Connect.Rejected",
                        f"unknown application; publish to /{self.settings.app}"))
                    raise Refused(f"unknown application path {app[:40]!r}")
                conn.send(2, MSG_WINDOW_ACK, struct.pack(">I", WINDOW))
                conn.send(2, MSG_PEER_BANDWIDTH, struct.pack(">IB", WINDOW, 2))
                conn.send(2, MSG_SET_CHUNK_SIZE, struct.pack(">I", OUT_CHUNK_SIZE))
                conn.out_chunk_size = OUT_CHUNK_SIZE
                conn.command("_result", txn, {"fmsVer": "FMS/3,5,7,7009", "capabilities": 31},
                             {**_status("status", "NetConnection.Connect.Success",
                                        "Connection succeeded."), "objectEncoding": 0})
            elif name in ("releaseStream", "FCPublish"):
                conn.command("_result", txn, None, UNDEFINED)
            elif name == "createStream":
                conn.command("_result", txn, None, 1)
            elif name == "publish":
                stream = values[3] if len(values) > 3 and isinstance(values[3], str) else ""
                return stream
            elif name in ("play", "play2"):
                conn.command("onStatus", 0, None, _status(
                    "error", "NetStream.Play.Failed", "this server only takes publishers"),
                    stream_id=1)
                raise Refused("tried to play; only publishing is offered")

    @staticmethod
    def _command(message: Message) -> list:
        if message.type == MSG_COMMAND_AMF0:
            return amf_decode(message.payload)
        if message.type == MSG_COMMAND_AMF3 and message.payload[:1] == b"\x00":
            return amf_decode(message.payload[1:])
        return []

    def _admit(self, conn: RtmpConnection, peer: str, name: str) -> None:
        """The key and the one-publisher rule; never logs the offered name."""
        expected = load_key(self.config.state_dir)
        if not key_matches(name, expected):
            conn.command("onStatus", 0, None, _status(
                "error", "NetStream.Publish.BadName", "wrong stream key"), stream_id=1)
            raise Refused("wrong stream key")
        if self.live is not None:  # no yield between this check and the claim below
            conn.command("onStatus", 0, None, _status(
                "error", "NetStream.Publish.BadName", "another publisher is live"), stream_id=1)
            raise Refused(f"another publisher ({self.live}) is live")
        self.live = peer
        conn.command("onStatus", 0, None, _status(
            "status", "NetStream.Publish.Start", "Publishing."), stream_id=1)
        log.info("publisher %s is live", peer)

    def _publish(self, conn: RtmpConnection, peer: str) -> None:
        conn.max_message = 16 * 1024 * 1024
        conn.sock.settimeout(self.settings.idle_timeout)
        pending: list[tuple[int, int, bytes]] = []
        metadata: bytes | None = None
        codecs = {"video": None, "audio": None}
        ffmpeg = None
        first_at = time.monotonic()
        try:
            while True:
                try:
                    message = conn.read_message()
                except (EOFError, OSError, RtmpError) as exc:
                    log.info("publisher %s: %s", peer, exc)
                    return
                if message.type in (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3):
                    values = self._command(message)
                    if values[:1] and values[0] in ("FCUnpublish", "deleteStream",
                                                    "closeStream"):
                        return
                    continue
                tag = self._tag(message)
                if tag is None:
                    continue
                if tag[0] == MSG_DATA_AMF0:
                    metadata = tag[2]
                    if ffmpeg is None:
                        continue
                kind = {MSG_VIDEO: "video", MSG_AUDIO: "audio"}.get(tag[0])
                if kind and codecs[kind] is None and len(tag[2]) > 1:
                    codecs[kind] = (video_codec if kind == "video" else audio_codec)(tag[2])
                if ffmpeg is None:
                    pending.append(tag)
                    if not self._ready(codecs, metadata, pending, first_at):
                        continue
                    ffmpeg = self._start_ffmpeg(codecs, peer)
                    data = flv_header(True, codecs["audio"] is not None)
                    if metadata:
                        data += flv_tag(MSG_DATA_AMF0, 0, metadata)
                    data += b"".join(flv_tag(*t) for t in pending)
                    pending = []
                else:
                    data = flv_tag(*tag)
                try:
                    ffmpeg.stdin.write(data)
                    ffmpeg.stdin.flush()
                except (BrokenPipeError, OSError, ValueError):
                    log.error("ffmpeg stopped taking the stream from %s (see its messages)",
                              peer)
                    return
        finally:
            if ffmpeg is not None:
                self._finish(ffmpeg)

    @staticmethod
    def _tag(message: Message) -> tuple[int, int, bytes] | None:
        if message.type in (MSG_AUDIO, MSG_VIDEO):
            return message.type, message.timestamp, message.payload
        if message.type in (MSG_DATA_AMF0, MSG_DATA_AMF3):
            payload = message.payload[1:] if message.type == MSG_DATA_AMF3 else message.payload
            body = metadata_body(payload)
            return (MSG_DATA_AMF0, 0, body) if body else None
        return None

    @staticmethod
    def _ready(codecs: dict, metadata: bytes | None, pending: list, first_at: float) -> bool:
        """Start ffmpeg once we know what is coming (audio may never come)."""
        if codecs["video"] is None:
            if len(pending) > 500 or time.monotonic() - first_at > 10:
                raise RtmpError("no video from the publisher; a picture is needed")
            return False
        expects_audio = metadata is None or b"audiocodecid" in metadata
        return (codecs["audio"] is not None or not expects_audio or len(pending) > 300
                or time.monotonic() - first_at > 3)

    def _start_ffmpeg(self, codecs: dict, peer: str) -> subprocess.Popen:
        copy_video = codecs["video"] == "h264"
        copy_audio = codecs["audio"] == "aac"
        argv = sources.ingest_command(self.stream_dir, self.playlist, copy_video, copy_audio,
                                      codecs["audio"] is not None, self.encoding)
        log.info("publisher %s sends %s/%s: %s", peer, codecs["video"], codecs["audio"] or "-",
                 "copying" if copy_video and (copy_audio or not codecs["audio"])
                 else "transcoding")
        sources.prepare_stream_dir(self.stream_dir, self.playlist)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        gevent.spawn(_log_lines, proc.stderr)
        return proc

    def _finish(self, proc: subprocess.Popen) -> None:
        """End of input: ffmpeg flushes the last segment and writes ENDLIST itself."""
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            processes.stop(proc, 5, signal.SIGINT)
        if sources.ensure_endlist(self.stream_dir / self.playlist):
            log.info("added ENDLIST to the playlist ffmpeg left open")


def _status(level: str, code: str, description: str) -> dict:
    return {"level": level, "code": code, "description": description}


def _log_lines(stream) -> None:
    for line in stream:
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            log.warning("ffmpeg: %s", text)


def run(config: Config) -> int:
    """`livestream ingest`: serve publishers until SIGINT/SIGTERM."""
    import signal

    if shutil.which("ffmpeg") is None:
        print(f"livestream ingest: ffmpeg is not installed. {sources.INSTALL_HINT}",
              file=sys.stderr)
        return 127
    try:
        server = IngestServer(config)
        server.start()
    except OSError as exc:
        print(f"livestream ingest: cannot listen on {config.ingest.host}:{config.ingest.port}: "
              f"{exc.strerror}. Is another ingest running? Pick one with --port.",
              file=sys.stderr)
        return 1
    stopping = gevent.event.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, stopping.set)
    stopping.wait()
    log.info("stopping the ingest")
    server.stop()
    return 0
