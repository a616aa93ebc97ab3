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

import ipaddress
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import OrderedDict

import gevent
import gevent.event
import gevent.lock
import gevent.pool
from gevent.server import StreamServer

from app.config import Config
from app.runtime import processes
from app.runtime.signals import stop_event
from app.sources import ffmpeg, options
from app.sources.pipes import SegmenterPipes, segmenters
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
    RtmpConnection,
    RtmpMessage,
)
from app.sources.rtmp.flv import (
    H264Format,
    audio_codec,
    flv_header,
    flv_tag,
    h264_format,
    is_keyframe,
    metadata_body,
    video_codec,
)
from app.sources.rtmp.keys import AllowList, key_matches, load_key
from app.stream import folder, lock

log = logging.getLogger(__name__)

KEYFRAME_WARN_MS = folder.LONG_SEGMENT_SECONDS * 1000
BUSY_CODE = "NetStream.Publish.Rejected"


def listen_host(config: Config) -> str:
    """`ingest.host`, or when it is empty: loopback in onion mode, every interface otherwise."""
    if config.ingest.host:
        return config.ingest.host
    return "127.0.0.1" if config.tor.enabled else "0.0.0.0"


def address_group(peer: str) -> str:
    """Who counts as one address for the pending cap: an IPv4 address or an IPv6 /64."""
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class PublishRefused(Exception):
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
        self.writing = gevent.lock.Semaphore()  # one ffmpeg writes the folder at a time
        self.segmenter_pipes: SegmenterPipes | None = None  # that ffmpeg's (stream.part_ms)
        # connections still before `publish`, oldest first: the ones evicted when over a cap
        self.pending: OrderedDict[RtmpConnection, str] = OrderedDict()
        self.host = listen_host(config)
        # room for every pending connection, the live one, one taking over, and the ones
        # being evicted while they close
        self.server = StreamServer((self.host, self.settings.port), self.handle,
                                   spawn=gevent.pool.Pool(2 * self.settings.max_pending + 4))
        self.encoding = ffmpeg.Encoding(preset=self.settings.transcode_preset,
                                         video_kbps=self.settings.transcode_video_kbps,
                                         audio_kbps=self.settings.transcode_audio_kbps)
        load_key(config.state_dir)  # make it now, so `livestream key` shows the one in use

    def start(self) -> None:
        self.server.start()
        if self.config.tor.enabled and not self.settings.host:
            log.info("onion mode: the RTMP ingest listens on 127.0.0.1 only; for publishers "
                     "on other machines set [ingest] host (e.g. \"0.0.0.0\") or --host")
        log.info("RTMP ingest listening on rtmp://%s:%d/%s (key: livestream key)",
                 self.host, self.server.server_port, self.settings.app)

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
        self._make_room(address_group(peer))
        self.pending[conn] = address_group(peer)
        try:
            with gevent.Timeout(self.settings.handshake_timeout,
                                RtmpError("handshake/publish took too long")):
                conn.handshake()
                name = self._until_publish(conn)
            self.pending.pop(conn, None)
            self._admit(conn, peer, name)
        except PublishRefused as exc:
            log.warning("refused publisher %s: %s", peer, exc)
            gevent.sleep(0.5)  # a little friction for anyone guessing keys
        except (RtmpError, EOFError, OSError) as exc:
            log.info("RTMP connection from %s dropped: %s", peer, exc)
        else:
            try:
                with self.writing:  # a publisher taken over is still finishing its playlist
                    with lock.take(self.stream_dir,
                                   f"livestream ingest (RTMP publisher {peer})") as held:
                        self._publish(conn, peer, held)
            except lock.FolderBusy as exc:  # another source took the folder since _admit
                log.warning("refused publisher %s: %s", peer, exc)
            finally:
                if self.live_connection is conn:
                    self.live, self.live_connection = None, None
                    log.info("publisher %s left; ready for the next one", peer)
                else:
                    log.info("publisher %s was replaced by %s", peer, self.live)
        finally:
            self.pending.pop(conn, None)
            conn.close()

    def _make_room(self, group: str) -> None:
        """Silent connections must not keep a real publisher waiting: over the cap for one
        address, or for all, an old connection still setting up is closed (instead of the
        new one waiting for a free place, as it did)."""
        mine = [c for c, g in self.pending.items() if g == group]
        if len(mine) >= self.settings.max_pending_per_address:
            self._evict(mine[0], f"more than {self.settings.max_pending_per_address} "
                                 f"connections setting up from {group}")
        if len(self.pending) >= self.settings.max_pending:
            # from the address holding the most, so one address cannot push out the others
            counts: dict[str, int] = {}
            for g in self.pending.values():
                counts[g] = counts.get(g, 0) + 1
            busiest = max(counts, key=counts.get)
            oldest = next(c for c, g in self.pending.items() if g == busiest)
            self._evict(oldest, f"more than {self.settings.max_pending} connections setting up")

    def _evict(self, conn: RtmpConnection, why: str) -> None:
        group = self.pending.pop(conn)
        log.info("closing a pending RTMP connection from %s: %s", group, why)
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)  # its greenlet sees EOF and cleans up
        except OSError:
            pass

    def _until_publish(self, conn: RtmpConnection) -> str:
        """Answer connect/createStream until the publisher names its stream (the key)."""
        while True:
            message = conn.read_message()
            values = self._command(message)
            if not values:
                continue
            name = values[0]
            txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0
            if name == "connect":
                info = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
                app = str(info.get("app", "")).strip("/").split("?", 1)[0]
                if app != self.settings.app:
                    conn.command("_error", txn, None, _status(
                        "error", "NetConnection.Connect.Rejected",
                        f"unknown application; publish to /{self.settings.app}"))
                    raise PublishRefused(f"unknown application path {app[:40]!r}")
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
                raise PublishRefused("tried to play; only publishing is offered")

    @staticmethod
    def _command(message: RtmpMessage) -> list:
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
            raise PublishRefused("wrong stream key")
        other = lock.holder(self.stream_dir)
        if other and not other.startswith(f"pid {os.getpid()}:"):
            conn.command("onStatus", 0, None, _status(
                "error", BUSY_CODE, "another source writes the server's stream folder; "
                "stop it first (server busy)"), stream_id=1)
            raise PublishRefused(lock.busy_message(self.stream_dir, other))
        live = self.live_connection
        if live is not None:  # no yield between this check and the claim below
            silent = time.monotonic() - live.last_read
            if silent < self.settings.takeover_after:
                # OBS has no "server busy" message: every refusal reads "double-check your
                # stream key" there. Rejected (not BadName) makes its log show why.
                conn.command("onStatus", 0, None, _status(
                    "error", BUSY_CODE, "another publisher is live (server busy); stop it "
                    "or try again after it goes quiet"), stream_id=1)
                raise PublishRefused(f"another publisher ({self.live}) is live")
            log.warning("publisher %s takes over from %s, silent for %.1f s", peer, self.live,
                        silent)
            try:
                live.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.live, self.live_connection = peer, conn
        conn.command("onStatus", 0, None, _status(
            "status", "NetStream.Publish.Start", "Publishing."), stream_id=1)
        log.info("publisher %s is live", peer)

    def _publish(self, conn: RtmpConnection, peer: str, held: lock.FolderLock) -> None:
        conn.authenticated()
        conn.sock.settimeout(self.settings.idle_timeout)
        pending: list[tuple[int, int, bytes]] = []
        metadata: bytes | None = None
        codecs = {"video": None, "audio": None}
        picture: H264Format | None = None
        keyframes = _KeyframeGaps(peer)
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
                    if metadata is None:  # the cockpit names the publisher's software
                        held.describe(f"livestream ingest (RTMP publisher {peer}"
                                      f"{announced_encoder(tag[2])})")
                    metadata = tag[2]
                    if ffmpeg is None:
                        continue
                kind = {MSG_VIDEO: "video", MSG_AUDIO: "audio"}.get(tag[0])
                if kind and codecs[kind] is None and len(tag[2]) > 1:
                    codecs[kind] = (video_codec if kind == "video" else audio_codec)(tag[2])
                if kind == "video":
                    if ffmpeg is None and picture is None:
                        picture = h264_format(tag[2])
                    keyframes.see(tag[1], tag[2])
                if ffmpeg is None:
                    pending.append(tag)
                    if not self._ready(codecs, metadata, pending, first_at):
                        continue
                    ffmpeg = self._start_ffmpeg(codecs, picture, peer)
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
    def _tag(message: RtmpMessage) -> tuple[int, int, bytes] | None:
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

    def _start_ffmpeg(self, codecs: dict, picture: H264Format | None,
                      peer: str) -> subprocess.Popen:
        # H.264 is copied only when browsers can decode it: High 4:4:4, High 10 or 4:2:2
        # would reach every viewer as a black picture
        copy_video = codecs["video"] == "h264" and (picture is None or picture.browsers_play)
        copy_audio = codecs["audio"] == "aac"
        piped, pipes = None, None
        if self.config.stream.part_ms:  # fragment by fragment, through our segmenters
            piped = SegmenterPipes(segmenters(self.stream_dir, self.playlist,
                                              [r.name for r in self.renditions[1:]],
                                              self.encoding.segment_seconds))
            pipes = ffmpeg.Pipes(tuple(piped.open()), self.config.stream.part_ms)
        argv = ffmpeg.ingest_command(self.stream_dir, self.playlist, copy_video, copy_audio,
                                      codecs["audio"] is not None, self.encoding,
                                      renditions=self.renditions, pipes=pipes)
        if codecs["video"] == "h264" and not copy_video:
            log.warning("publisher %s sends %s, which browsers cannot play: transcoding to "
                        "H.264 High 4:2:0 8-bit (set the encoder to that to save the CPU)",
                        peer, picture)
        log.info("publisher %s sends %s/%s: %s", peer, picture or codecs["video"],
                 codecs["audio"] or "-",
                 "copying" if copy_video and (copy_audio or not codecs["audio"])
                 else "transcoding")
        folder.prepare_stream_dir(self.stream_dir, self.playlist)
        if len(self.renditions) > 1:
            top_kbps = self.encoding.video_kbps + self.encoding.audio_kbps
            folder.write_master(self.stream_dir,
                                ffmpeg.variants(self.renditions, self.playlist, top_kbps))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, preexec_fn=processes.dies_with_us(),
                                    pass_fds=pipes.fds if pipes else ())
        finally:
            if piped is not None:
                piped.spawned()
        self.segmenter_pipes = piped
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
        if self.segmenter_pipes is not None:
            self.segmenter_pipes.close()  # what ffmpeg wrote is in the folder, then ENDLIST
            self.segmenter_pipes = None
        if folder.ensure_endlist(self.stream_dir / self.playlist):
            log.info("added ENDLIST to the playlist ffmpeg left open")
        for rendition in self.renditions[1:]:
            folder.ensure_endlist(self.stream_dir / folder.rendition_files(
                rendition.name, False).playlist)


class _KeyframeGaps:
    """Warns when keyframes come more than 4 s apart: every HLS segment starts at one, so
    OBS's default (keyint 250) makes 8-17 s segments, late starts and a stream that flaps."""

    def __init__(self, peer: str):
        self.peer = peer
        self.last: int | None = None
        self.warned_at: float | None = None

    def see(self, timestamp: int, body: bytes) -> None:
        if not is_keyframe(body):
            return
        if self.last is not None:
            gap = (timestamp - self.last) & 0xFFFFFFFF
            now = time.monotonic()
            if gap > KEYFRAME_WARN_MS and (self.warned_at is None or now - self.warned_at > 60):
                self.warned_at = now
                log.warning("publisher %s sends keyframes %.1f s apart: segments get that long, "
                            "so viewers start late and the stream may look offline between "
                            "them. Set the keyframe interval to 1 s (OBS: Settings > Output > "
                            "Keyframe Interval)", self.peer, gap / 1000)
        self.last = timestamp


def announced_encoder(metadata: bytes) -> str:
    """', obs-output module (libobs version 30.0.2)': what onMetaData says made the stream."""
    try:
        values = amf_decode(metadata)
    except RtmpError:
        return ""
    fields = values[1] if len(values) > 1 and isinstance(values[1], dict) else {}
    encoder = fields.get("encoder")
    return f", {str(encoder)[:80]}" if isinstance(encoder, str) and encoder else ""


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
        print(f"livestream ingest: cannot listen on {listen_host(config)}:{config.ingest.port}: "
              f"{exc.strerror}. Is another ingest running? Pick one with --port.",
              file=sys.stderr)
        return 1
    stop_event().wait()
    log.info("stopping the ingest")
    server.stop()
    return 0
