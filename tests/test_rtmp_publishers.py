"""What real publishers do to the ingest: long keyframe intervals, H.264 that browsers cannot
decode, a network drop that leaves a silent live connection, a second publisher, and the
`key` command with options after it. Real ffmpeg publishers, a real `livestream ingest`."""
from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import make_app
from test_ingest import (
    ROOT,
    Running,
    cli,
    ended,
    finish,
    playlist,
    probe_codecs,
    push,
    wait_until,
)

from app.config import StreamConfig
from app.sources.rtmp.amf0 import amf_decode
from app.sources.rtmp.chunks import HANDSHAKE_SIZE, MSG_COMMAND_AMF0, RtmpConnection
from app.stream.watcher import StreamState


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Running(tmp_path_factory.mktemp("publishers"), "ingest")
    yield running
    running.stop()
    assert running.key not in running.log.read_text(), "the stream key is never logged"


def push_fast(url: str, seconds: float, *extra: str) -> subprocess.Popen:
    """An ffmpeg publisher as fast as it can encode (timestamps still say `seconds`)."""
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc2=size=320x180:rate=25", "-t", str(seconds), "-c:v", "libx264",
         "-preset", "ultrafast", *extra, "-f", "flv", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def log_since(running: Running, mark: int) -> str:
    return running.log.read_text()[mark:]


def probe(running: Running, entries: str) -> str:
    names = ["init.mp4"] + [n for n in playlist(running).split() if n.endswith(".m4s")]
    joined = running.folder / "joined.mp4"
    joined.write_bytes(b"".join((running.stream / n).read_bytes() for n in names))
    return subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           f"stream={entries}", "-of", "csv=p=0", str(joined)],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def test_keyframes_more_than_4_s_apart_are_warned_about(server):
    mark = len(server.log.read_text())
    code, err = finish(push_fast(server.url(), 11, "-g", "125", "-keyint_min", "125",
                                 "-sc_threshold", "0"))
    assert code == 0, err
    assert wait_until(lambda: ended(server))
    text = log_since(server, mark)
    assert "keyframes 5.0 s apart" in text, text[-2000:]
    assert "Keyframe Interval" in text
    mark = len(server.log.read_text())
    code, err = finish(push_fast(server.url(), 5, "-g", "50"))
    assert code == 0, err
    assert wait_until(lambda: ended(server))
    assert "apart" not in log_since(server, mark), "2 s keyframes are fine"


@pytest.mark.parametrize("pix_fmt, profile", [("yuv444p", "High 4:4:4 Predictive"),
                                              ("yuv420p10le", "High 10"),
                                              ("yuv422p", "High 4:2:2")])
def test_h264_that_browsers_cannot_decode_is_transcoded(server, pix_fmt, profile):
    mark = len(server.log.read_text())
    code, err = finish(push_fast(server.url(), 3, "-pix_fmt", pix_fmt))
    assert code == 0, err
    assert wait_until(lambda: ended(server))
    text = log_since(server, mark)
    assert f"sends H.264 {profile}" in text and "transcoding" in text, text[-2000:]
    assert probe(server, "codec_name,profile,pix_fmt") == "h264,High,yuv420p"


def test_h264_high_420_8_bit_is_still_copied(server):
    mark = len(server.log.read_text())
    code, err = finish(push_fast(server.url(), 3, "-preset", "veryfast", "-pix_fmt", "yuv420p"))
    assert code == 0, err
    assert wait_until(lambda: ended(server))
    text = log_since(server, mark)
    assert "H.264 High 4:2:0 8-bit" in text and "copying" in text, text[-2000:]


class RawPublisher:
    """A minimal RTMP client: enough to see the exact status the ingest answers."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(b"\x03" + bytes(HANDSHAKE_SIZE))
        got = b""
        while len(got) < 1 + 2 * HANDSHAKE_SIZE:
            part = self.sock.recv(65536)
            assert part, "the ingest closed during the handshake"
            got += part
        self.sock.sendall(got[1:1 + HANDSHAKE_SIZE])
        self.conn = RtmpConnection(self.sock)

    def publish(self, key: str) -> dict:
        """connect, createStream, publish; the onStatus the ingest answers."""
        self.conn.command("connect", 1.0, {"app": "live", "type": "nonprivate",
                                           "tcUrl": "rtmp://127.0.0.1/live"})
        self.conn.command("createStream", 2.0, None)
        self.conn.command("publish", 3.0, None, key, "live", stream_id=1)
        for _ in range(20):
            message = self.conn.read_message()
            if message.type != MSG_COMMAND_AMF0:
                continue
            values = amf_decode(message.payload)
            if values[:1] == ["onStatus"]:
                return values[3]
        raise AssertionError("no onStatus answer")

    def close(self) -> None:
        self.conn.close()


def test_a_second_publisher_is_told_the_server_is_busy(server):
    first = push(server.url(), 8)
    try:
        assert wait_until(lambda: ".m4s" in playlist(server) and not ended(server))
        second = RawPublisher(server.port)
        try:
            status = second.publish(server.key)
        finally:
            second.close()
        assert status["level"] == "error"
        assert status["code"] == "NetStream.Publish.Rejected"
        assert "busy" in status["description"]
        assert "another publisher is live" in status["description"]
        wrong = RawPublisher(server.port)
        try:
            assert wrong.publish("not-the-key")["code"] == "NetStream.Publish.BadName"
        finally:
            wrong.close()
        assert finish(first)[0] == 0, "the live publisher was not disturbed"
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert wait_until(lambda: ended(server))


def test_a_publisher_with_the_key_replaces_a_silent_live_one(server):
    """A network drop: the old connection stays open but sends nothing (SIGSTOP)."""
    dropped = push(server.url(), 60)
    try:
        assert wait_until(lambda: ".m4s" in playlist(server) and not ended(server))
        mark = len(server.log.read_text())
        os.kill(dropped.pid, signal.SIGSTOP)
        time.sleep(3.5)  # takeover_after is 3 s; idle_timeout (15 s) has not passed
        started = time.monotonic()
        code, err = finish(push(server.url(), 3))
        assert code == 0, err
        assert time.monotonic() - started < 10
        text = log_since(server, mark)
        assert "takes over from 127.0.0.1" in text, text[-2000:]
        assert wait_until(lambda: ended(server))
        assert playlist(server).split().count("#EXT-X-ENDLIST") == 1
    finally:
        os.kill(dropped.pid, signal.SIGKILL)
        dropped.wait()


def test_a_live_publisher_sending_is_not_replaced(server):
    first = push(server.url(), 6)
    try:
        assert wait_until(lambda: ".m4s" in playlist(server) and not ended(server))
        code, err = finish(push(server.url(), 2), timeout=20)
        assert code != 0 and "another publisher is live" in err
        assert finish(first)[0] == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_global_options_work_after_the_command(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[server]\nstate_dir = "state"\n[ingest]\nport = 19350\n')
    for argv in (["key", "--config", str(config)],
                 ["key", "--config", str(config), "--log-level", "debug"],
                 ["--config", str(config), "key"]):
        done = subprocess.run([*cli(config, "key")[:3], *argv], cwd=ROOT, capture_output=True,
                              text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "state" / "ingest.key").read_text().strip() in done.stdout
        assert "rtmp://127.0.0.1:19350/live" in done.stdout and "HOST" not in done.stdout


def write_stream(folder: Path, target: int, age: float) -> None:
    """A playlist of `target`-second segments (as OBS's keyint 250 makes), `age` s old."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "init.mp4").write_bytes(b"init")
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:0", '#EXT-X-MAP:URI="init.mp4"']
    for n in range(3):
        (folder / f"stream{n}.m4s").write_bytes(b"segment")
        lines += [f"#EXTINF:{target - 1}.0,", f"stream{n}.m4s"]
    path = folder / "stream.m3u8"
    path.write_text("\n".join(lines) + "\n")
    when = time.time() - age
    os.utime(path, (when, when))


def test_long_segments_do_not_make_the_stream_flap_offline(tmp_path):
    settings = StreamConfig(dir=str(tmp_path / "stream"), offline_after=8.0)
    write_stream(tmp_path / "stream", target=12, age=10)  # 10 s after a 12 s segment began
    state = StreamState(tmp_path / "stream", settings)
    state.refresh()
    assert state.snapshot.online, "between two 12 s segments the stream is still live"
    write_stream(tmp_path / "stream", target=12, age=19)  # past 1.5 x 12 s: really gone
    state.refresh()
    assert not state.snapshot.online
    write_stream(tmp_path / "short", target=2, age=9)  # short segments: offline_after rules
    short = StreamState(tmp_path / "short", settings)
    short.refresh()
    assert not short.snapshot.online


def test_the_broadcaster_page_warns_of_far_apart_keyframes(tmp_path):
    """Whatever the source (here a folder as OBS's keyint 250 writes it), the page says so."""
    login = {"Authorization": "Basic " + base64.b64encode(b"broadcaster:pw").decode()}
    pages = {}
    for target in (12, 2):
        app = make_app(tmp_path / str(target), {"broadcaster": {"password": "pw"}})
        write_stream(tmp_path / str(target) / "stream", target=target, age=0)
        try:
            app.services.stream.refresh()
            page = app.test_client().get("/broadcaster", headers=login)
            assert page.status_code == 200
            pages[target] = page.get_data(as_text=True)
        finally:
            app.services.stop()
    assert "Segments are up to 11 s long" in pages[12] and "Keyframe Interval" in pages[12]
    assert "Segments are up to" not in pages[2]


def gst_publish(url: str, frames: int) -> subprocess.Popen:
    """GStreamer's own RTMP client (rtmp2sink), H.264 + AAC in FLV."""
    return subprocess.Popen(
        ["gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={frames}", "!",
         "video/x-raw,width=320,height=180,framerate=25/1", "!",
         "x264enc", "key-int-max=50", "speed-preset=ultrafast", "!", "h264parse", "!",
         "flvmux", "streamable=true", "name=mux", "!", "rtmp2sink", f"location={url}",
         "audiotestsrc", f"num-buffers={frames * 1764 // 1024}", "!",
         "audio/x-raw,rate=44100,channels=2", "!", "voaacenc", "!", "aacparse", "!", "mux."],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None,
                    reason="GStreamer is not installed (.ci/setup --test installs it)")
def test_gstreamer_rtmp2sink_publishes_and_a_wrong_key_is_refused(server):
    code, out = finish(gst_publish(server.url(), 100))
    assert code == 0, out
    assert wait_until(lambda: ended(server)), playlist(server)
    assert probe_codecs(server) == ["h264", "aac"]
    code, out = finish(gst_publish(server.url("not-the-key"), 50), timeout=30)
    assert code != 0, "a wrong key is refused"
