"""RTMP ingest: real ffmpeg publishers pushing to a real `livestream ingest` process."""
from __future__ import annotations

import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from support import cli, free_port, wait_for, write_config

from app.sources.rtmp import amf0
from app.sources.rtmp import keys as stream_keys

ROOT = Path(__file__).resolve().parents[1]


def ingest_config(folder: Path, extra: str = "") -> Path:
    """A config whose last section is [ingest], so `extra` lines land in it."""
    return write_config(folder, {"server": {"port": free_port()},
                                "ingest": {"host": "127.0.0.1", "port": free_port()}}, extra)


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 15) -> None:
    def listening() -> bool:
        assert proc.poll() is None, "the server exited early"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    wait_for(listening, timeout, what=f"something listening on {port}")


class Running:
    """A `livestream` server process, its config, ports and log."""

    def __init__(self, folder: Path, command: str, extra: str = ""):
        import toml

        self.folder = folder
        self.config = ingest_config(folder, extra)
        settings = toml.load(self.config)
        self.port = settings["ingest"]["port"]
        self.web_port = settings["server"]["port"]
        self.log = folder / f"{command}.log"
        self.key = subprocess.run(cli(self.config, "key"), cwd=ROOT, capture_output=True,
                                  text=True, check=True, timeout=30).stdout.split()[-1]
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(cli(self.config, "--log-level", "debug", command),
                                         cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc)

    @property
    def stream(self) -> Path:
        return self.folder / "stream"

    def url(self, key: str | None = None, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}/{key or self.key}"

    def segments(self) -> list[str]:
        # the top rendition's segments (the low rendition writes low-N.m4s beside them, and
        # the recent segments' parts stay as streamN.K.m4s)
        if not self.stream.exists():
            return []
        return sorted(p.name for p in self.stream.glob("stream*.m4s")
                      if re.fullmatch(r"stream\d+\.m4s", p.name))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Running(tmp_path_factory.mktemp("ingest"), "ingest",
                      'allow = ["127.0.0.1", "::1"]\n')
    yield running
    running.stop()
    assert running.key not in running.log.read_text(), "the stream key is never logged"


def push(url: str, seconds: float, video: str = "libx264", audio: str = "aac",
         ) -> subprocess.Popen:
    """An ffmpeg publisher sending a test pattern in real time, keyframe every second."""
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
         "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi", "-i", "sine=frequency=330",
         "-t", str(seconds), "-c:v", video, "-g", "25", "-pix_fmt", "yuv420p", "-c:a", audio,
         "-ar", "44100", "-f", "flv", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def wait_until(check, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def playlist(running: Running) -> str:
    try:
        return (running.stream / "stream.m3u8").read_text()
    except FileNotFoundError:
        return ""


def ended(running: Running) -> bool:
    return playlist(running).rstrip().endswith("#EXT-X-ENDLIST")


def probe_codecs(running: Running) -> list[str]:
    joined = running.folder / "joined.mp4"
    names = ["init.mp4"] + [n for n in playlist(running).split() if n.endswith(".m4s")]
    joined.write_bytes(b"".join((running.stream / n).read_bytes() for n in names))
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                          "-of", "csv=p=0", str(joined)], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return out.split()


def test_wrong_key_is_refused_and_writes_nothing(server):
    code, err = finish(push(server.url("not-the-key"), 3), timeout=20)
    assert code != 0
    assert "wrong stream key" in err
    assert server.segments() == []
    code, err = finish(push(server.url(app="other"), 3), timeout=20)
    assert code != 0 and "unknown application" in err
    assert server.segments() == []


def test_right_key_makes_segments_and_ends_the_playlist(server):
    code, err = finish(push(server.url(), 3))
    assert code == 0, err
    assert wait_until(lambda: ended(server)), playlist(server)
    assert len(server.segments()) >= 1
    assert probe_codecs(server) == ["h264", "aac"]


def test_one_publisher_at_a_time_and_ready_again_after(server):
    first = push(server.url(), 5)
    try:
        assert wait_until(lambda: ".m4s" in playlist(server) and not ended(server)), \
            "first publisher is live"
        code, err = finish(push(server.url(), 3), timeout=20)
        assert code != 0 and "another publisher is live" in err
        assert finish(first)[0] == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert wait_until(lambda: ended(server))
    # The next publisher is taken, and starts a clean folder (no stale segments).
    second = push(server.url(), 2)
    assert finish(second)[0] == 0
    assert wait_until(lambda: ended(server))
    listed = [n for n in playlist(server).split() if n.endswith(".m4s")]
    assert listed[0] == "stream0.m4s" and sorted(listed) == server.segments()


def test_other_codecs_are_transcoded_to_h264_aac(server):
    code, err = finish(push(server.url(), 3, video="flv", audio="libmp3lame"))
    assert code == 0, err
    assert wait_until(lambda: ended(server))
    assert probe_codecs(server) == ["h264", "aac"]


def test_garbage_is_dropped_and_the_server_keeps_working(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert sock.recv(100) == b""  # closed: not RTMP
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\x03" + b"\x00" * 1536)  # a handshake, then a huge message header
        assert len(sock.recv(4096)) > 0
        sock.sendall(b"\x00" * 1536 + b"\x03" + b"\x00\x00\x00" + b"\xff\xff\xff" + b"\x14"
                     + b"\x00" * 4 + b"\x00" * 128)
        sock.settimeout(5)
        assert wait_until(lambda: _closed(sock), timeout=5), "over-long message is refused"
    assert server.proc.poll() is None
    assert "over the limit" in server.log.read_text()


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except OSError:
        return True


def test_address_not_in_allow_list_is_refused(tmp_path):
    running = Running(tmp_path, "ingest", 'allow = ["127.0.0.2/32", "10.0.0.0/8"]\n')
    try:
        code, _ = finish(push(running.url(), 2), timeout=20)
        assert code != 0
        assert running.segments() == []
    finally:
        running.stop()
    assert "not in ingest.allow" in running.log.read_text()


def test_key_is_made_once_kept_private_and_rotated(tmp_path):
    config = ingest_config(tmp_path)
    shown = [subprocess.run(cli(config, "key", *args), cwd=ROOT, capture_output=True,
                            text=True, check=True, timeout=30).stdout
             for args in ((), (), ("--new",))]
    keys = [out.split("stream key:")[1].split()[0] for out in shown]
    assert keys[0] == keys[1] != keys[2]
    assert len(keys[0]) >= 32
    assert f"rtmp://127.0.0.1:{config.read_text().split('port = ')[2].split()[0]}/live" in shown[0]
    path = tmp_path / "state" / "ingest.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stream_keys.load_key(tmp_path / "state") == keys[2]


def test_key_comparison_and_allow_list():
    assert stream_keys.key_matches("abc123", "abc123")
    assert stream_keys.key_matches("abc123?client=obs", "abc123")
    assert not stream_keys.key_matches("abc124", "abc123")
    assert not stream_keys.key_matches("", "abc123")
    allow = stream_keys.AllowList(["192.0.2.0/24", "2001:db8::1"])
    assert allow.allows("192.0.2.77") and allow.allows("::ffff:192.0.2.8")
    assert allow.allows("2001:db8::1")
    assert not allow.allows("198.51.100.1") and not allow.allows("2001:db8::2")
    assert stream_keys.AllowList([]).allows("203.0.113.9")


def test_amf0_round_trip():
    values = ["connect", 1.0, {"app": "live", "flag": True, "none": None}, None]
    assert amf0.amf_decode(amf0.amf_encode(*values)) == values
    with pytest.raises(amf0.RtmpError):
        amf0.amf_decode(b"\x02\x00\x10short")


@pytest.mark.slow
def test_serve_with_ingest_enabled_streams_what_play_pushes(tmp_path):
    """The whole path: `play --to` -> ingest inside `serve` -> stream/ -> HTTP viewers."""
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
                    "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi", "-i", "sine",
                    "-t", "5", "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(clip)], check=True, timeout=60)
    running = Running(tmp_path, "serve", "enabled = true\n")
    player = subprocess.Popen(cli(running.config, "play", str(clip), "--to", running.url()),
                              cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{running.web_port}"
    try:
        def listed() -> list[str]:
            answer = requests.get(f"{base}/stream/stream.m3u8", timeout=5)
            if answer.status_code != 200:
                return []
            return [n for n in answer.text.split() if n.endswith(".m4s")]

        assert wait_until(lambda: listed(), timeout=40), "the server lists segments"
        name = listed()[0]
        segment = requests.get(f"{base}/stream/{name}", timeout=5)
        assert segment.status_code == 200
        assert segment.content == (running.stream / name).read_bytes()
        code, err = finish(player)
        assert code == 0, err
        assert "/live/***" in err and running.key not in err, "the key is not echoed"
    finally:
        if player.poll() is None:
            player.kill()
            player.wait()
        running.stop()


def test_stopping_the_ingest_mid_stream_ends_the_playlist(tmp_path):
    running = Running(tmp_path, "ingest")
    publisher = push(running.url(), 20)
    try:
        assert wait_until(lambda: ".m4s" in playlist(running)), "publisher is live"
        started = time.monotonic()
        running.stop()
        assert running.proc.returncode == 0
        assert time.monotonic() - started < 5, "stopping does not wait for the publisher"
        assert ended(running)
        assert finish(publisher, timeout=10)[0] != 0, "the publisher was disconnected"
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()


def test_key_command_explains_a_damaged_key_file(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n')
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "ingest.key").write_text("short\n")
    result = subprocess.run([sys.executable, "-m", "app.cli", "--config", str(config), "key"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "stream key too short" in result.stderr and "livestream key --new" in result.stderr
    assert "Traceback" not in result.stderr
