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

import logging
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import gevent
import gevent.event
import gevent.pool
from gevent.server import StreamServer

from app.config import Config
from app.runtime import processes
from app.runtime.signals import stop_event
from app.sources import ffmpeg, options
from app.sources.rtmp.amf0 import UNDEFINED, RtmpError, amf_decode
from app.sources.rtmp.chunks import (
    MSG_AUDIO,
    MSG_COMMAND_AMF0,
    MSG_COMMAND_AMF3,
    MSG_DATA_AMF0,
    MSG_DATA_AMF3,
    MSG_PEER_BANDWIDTH,
    MSG_SET_CHUNK_SIZE,
    MSG_VIDEO,
    MSG_WINDOW_ACK,
    OUT_CHUNK_SIZE,
    WINDOW,
    Message,
    RtmpConnection,
)
from app.sources.rtmp.flv import audio_codec, flv_header, flv_tag, metadata_body, video_codec
from app.sources.rtmp.keys import AllowList, key_matches, load_key
from app.stream import folder

log = logging.getLogger(__name__)



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
        self.renditions = config.stream.renditions
        self.live: str | None = None  # address of the current publisher
        self.live_connection: RtmpConnection | None = None
        self.server = StreamServer((self.settings.host, self.settings.port), self.handle,
                                   spawn=gevent.pool.Pool(self.settings.max_pending + 1))
        self.encoding = ffmpeg.Encoding(preset=self.settings.transcode_preset,
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
        argv = ffmpeg.ingest_command(self.stream_dir, self.playlist, copy_video, copy_audio,
                                      codecs["audio"] is not None, self.encoding,
                                      renditions=self.renditions)
        log.info("publisher %s sends %s/%s: %s", peer, codecs["video"], codecs["audio"] or "-",
                 "copying" if copy_video and (copy_audio or not codecs["audio"])
                 else "transcoding")
        folder.prepare_stream_dir(self.stream_dir, self.playlist)
        if len(self.renditions) > 1:
            top_kbps = self.encoding.video_kbps + self.encoding.audio_kbps
            folder.write_master(self.stream_dir,
                                ffmpeg.variants(self.renditions, self.playlist, top_kbps))
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
        if folder.ensure_endlist(self.stream_dir / self.playlist):
            log.info("added ENDLIST to the playlist ffmpeg left open")
        for rendition in self.renditions[1:]:
            folder.ensure_endlist(self.stream_dir / folder.rendition_files(
                rendition.name, False).playlist)


def _status(level: str, code: str, description: str) -> dict:
    return {"level": level, "code": code, "description": description}


def _log_lines(stream) -> None:
    for line in stream:
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            log.warning("ffmpeg: %s", text)


def run(config: Config) -> int:
    """`livestream ingest`: serve publishers until SIGINT/SIGTERM."""
    if shutil.which("ffmpeg") is None:
        print(f"livestream ingest: ffmpeg is not installed. {options.INSTALL_HINT}",
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
    stop_event().wait()
    log.info("stopping the ingest")
    server.stop()
    return 0
