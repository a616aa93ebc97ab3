"""Real parts for tests: an ffmpeg test-pattern stream and a `livestream serve` process."""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests
import toml

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def pushed_frames(read) -> Iterator[tuple[int, int, int, bytes]]:
    """(segment, first fragment, last fragment, bytes) of each frame of a /fragments
    response, from `read(n)` (http.client's, or a streamed requests response's raw.read)."""
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            more = read(count - len(data))
            if not more:
                return b""
            data += more
        return data

    while header := exactly(16):
        length, sequence, first, last = struct.unpack(">IIII", header)
        yield sequence, first, last, exactly(length)


def write_config(folder: Path, sections: dict | None = None, extra: str = "") -> Path:
    """folder/config.toml with the state and stream folders inside `folder` (relative
    paths, resolved against the file) plus `sections` ({"chat": {...}}) and raw `extra`."""
    data: dict = {"server": {"state_dir": "state"}, "stream": {"dir": "stream"}}
    for name, values in (sections or {}).items():
        data.setdefault(name, {}).update(values)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(toml.dumps(data) + extra)
    return path


def livestream(config: Path, *args: str, timeout: float = 60,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, with this config file."""
    return subprocess.run([sys.executable, "-m", "app.cli", "--config", str(config), *args],
                          check=False, cwd=PROJECT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def cli(config: Path, *args: str) -> list[str]:
    """The argv of the CLI with this config file, for Popen."""
    return [sys.executable, "-m", "app.cli", "--config", str(config), *args]


def make_app(folder: Path, sections: dict | None = None):
    """An app in this process (create_app) on folders inside `folder`; nothing started."""
    from app import create_app
    from app.config import from_dict

    data: dict = {"server": {"state_dir": str(folder / "state")},
                  "stream": {"dir": str(folder / "stream")}}
    for name, values in (sections or {}).items():
        data.setdefault(name, {}).update(values)
    return create_app(from_dict(data))


# stream.sh's RENDITIONS for a low rendition of the small test pictures (320x180 -> 160x90).
LOW_RENDITION = "low:90:100:32"


class TestStream:
    """./stream.sh --test writing a small live stream (1 s segments) into a folder."""

    __test__ = False  # a helper, not a test class

    def __init__(self, directory: Path, size: str = "320x180", segment_seconds: int = 1,
                 duration: float | None = None, framerate: int = 15, renditions: str = "",
                 video_bitrate: str = "300k", low_latency: bool = False):
        self.directory = Path(directory)
        # renditions: stream.sh's RENDITIONS (e.g. "low:90:100:32"); none by default, so the
        # many tests that need only a picture do not pay for a second encoder.
        self.env = dict(os.environ, STREAM_DIR=str(self.directory), VIDEO_SIZE=size,
                        FRAMERATE=str(framerate), SEGMENT_SECONDS=str(segment_seconds),
                        VIDEO_BITRATE=video_bitrate, AUDIO_BITRATE="64k", PRESET="ultrafast",
                        LOGLEVEL="error", PLAYLIST_SIZE="10", RENDITIONS=renditions,
                        LOW_LATENCY="1" if low_latency else "0")
        if duration:
            self.env["DURATION"] = str(duration)
        self.process: subprocess.Popen | None = None

    def start(self) -> TestStream:
        self.process = subprocess.Popen([str(PROJECT / "stream.sh"), "--test"], env=self.env,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_segments(self, count: int = 2, timeout: float = 20.0) -> None:
        playlist = self.directory / "stream.m3u8"
        wait_for(lambda: playlist.exists() and playlist.read_text().count("#EXTINF") >= count,
                 timeout, what=f"{count} segments in {playlist}")

    def stop(self, sig=signal.SIGINT) -> None:
        """SIGINT lets ffmpeg finish the playlist with ENDLIST; SIGKILL simulates a crash."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


class Server:
    """`python -m app.cli serve` on a free loopback port with its own config file."""

    def __init__(self, workdir: Path, stream_dir: Path, extra_config: str = ""):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.workdir / "config.toml"
        self.config_path.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\n'
            f'state_dir = "{self.workdir / "state"}"\nlog_level = "info"\n'
            f'[stream]\ndir = "{stream_dir}"\noffline_after = 4.0\n' + extra_config
        )
        self.log_path = self.workdir / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self, *args: str) -> Server:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "--config", str(self.config_path), "serve", *args],
            cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        wait_for(self._answers, 20, what=f"server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{self.log()}")
        try:
            # 403: an invite-only server answers strangers so
            return requests.get(self.url + "/", timeout=1).status_code in (200, 403)
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_live(self, timeout: float = 20.0) -> None:
        wait_for(lambda: requests.head(self.url + "/stream/stream.m3u8", timeout=2).ok
                 and b"<video" in requests.get(self.url + "/", timeout=2).content,
                 timeout, what="the server to see the stream live")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
