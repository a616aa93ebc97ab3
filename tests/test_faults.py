"""Faults with real parts: ffmpeg killed, broken segments and playlists, the stream folder
deleted, the state database locked by another process and its disk full. The server keeps
serving what it can, says what is going on, and loses nothing already stored.

Tor dying is covered in test_onion.py (test_watchdog_restarts_a_killed_tor_with_the_same_address
and test_watchdog_exits_clearly_when_tor_cannot_come_back).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from chat_support import BROADCASTER, ChatViewer, broadcaster_post, chat_server
from support import Server, wait_for

UNAVAILABLE = "Chat is temporarily unavailable"


def status(server: Server) -> dict:
    return requests.get(server.url + "/api/status", timeout=5).json()


def pages_answer(server: Server) -> None:
    """What must keep working whatever happens to the stream or the database."""
    for path in ("/", "/info", "/api/status", "/api/playlist", "/chat/messages?mode=poll",
                 "/chat/users"):
        response = requests.get(server.url + path, timeout=5)
        assert response.status_code == 200, (path, response.status_code)
    assert "Traceback" not in server.log()


def first_bytes(server: Server, path: str = "/stream.mp4", size: int = 1024) -> bytes:
    with requests.get(server.url + path, stream=True, timeout=10) as response:
        assert response.status_code == 200, response.status_code
        return next(response.iter_content(size))


# --- the stream -----------------------------------------------------------------------------

def test_ffmpeg_killed_mid_segment_then_back(own_stream):
    stream, server = own_stream
    stream.start()
    stream.wait_segments(2)
    server.start()
    server.wait_live()
    generation = status(server)["generation"]
    time.sleep(0.5)  # inside a segment: ffmpeg is writing the next one when it dies
    stream.stop(signal.SIGKILL)
    wait_for(lambda: not status(server)["online"], 15, 0.2, "offline after the kill")
    pages_answer(server)
    assert requests.get(server.url + "/stream.mp4", timeout=5).status_code == 503
    assert "offline" in requests.get(server.url + "/", timeout=5).text
    leftovers = [p.name for p in stream.directory.iterdir() if p.suffix == ".tmp"]
    for name in leftovers:  # a half-written segment is never served
        assert requests.get(f"{server.url}/stream/{name}", timeout=5).status_code == 404
    stream.start()
    server.wait_live(30)
    assert status(server)["generation"] > generation
    assert first_bytes(server)[4:8] == b"ftyp"


@pytest.fixture(scope="module")
def parts(live_stream, tmp_path_factory):
    """A real init segment and two real media segments, copied from the shared stream."""
    live_stream.wait_segments(3)
    folder = tmp_path_factory.mktemp("parts")
    names = re.findall(r"^(stream\d+\.m4s)$", (live_stream.directory / "stream.m3u8")
                       .read_text(), re.M)[-3:-1]
    shutil.copy(live_stream.directory / "init.mp4", folder / "init.mp4")
    for index, name in enumerate(names):
        shutil.copy(live_stream.directory / name, folder / f"good{index}.m4s")
    return folder


def write_playlist(folder: Path, entries: list[str], init: str = "init.mp4",
                   sequence: int = 0) -> None:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:1",
             f"#EXT-X-MEDIA-SEQUENCE:{sequence}", f'#EXT-X-MAP:URI="{init}"']
    for name in entries:
        lines += ["#EXTINF:1.000000,", name]
    tmp = folder / "stream.m3u8.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, folder / "stream.m3u8")


def test_truncated_garbage_and_missing_segments(parts, tmp_path):
    folder = tmp_path / "stream"
    folder.mkdir()
    shutil.copy(parts / "init.mp4", folder / "init.mp4")
    good = (parts / "good0.m4s").read_bytes()
    (folder / "good.m4s").write_bytes(good)
    (folder / "truncated.m4s").write_bytes(good[: len(good) // 3])
    (folder / "garbage.m4s").write_bytes(os.urandom(5000))
    (folder / "empty.m4s").write_bytes(b"")
    write_playlist(folder, ["good.m4s", "truncated.m4s", "garbage.m4s", "empty.m4s",
                            "missing.m4s"])
    server = Server(tmp_path, folder).start()
    try:
        server.wait_live()
        pages_answer(server)
        timeline = requests.get(server.url + "/api/playlist", timeout=5).json()
        assert timeline  # the timeline skips what it cannot read
        assert first_bytes(server)[4:8] == b"ftyp"  # /stream.mp4 still starts
        for name, code in [("good.m4s", 200), ("truncated.m4s", 200), ("garbage.m4s", 200),
                           ("missing.m4s", 404), ("nothere.m4s", 404)]:
            assert requests.get(f"{server.url}/stream/{name}", timeout=5).status_code == code
        # a playlist whose init segment is missing: offline, and the page says so
        write_playlist(folder, ["good.m4s"], init="gone.mp4", sequence=1)
        wait_for(lambda: not status(server)["online"], 10, 0.2, "offline without init")
        pages_answer(server)
        assert requests.get(server.url + "/stream.mp4", timeout=5).status_code == 503
        # an unparseable playlist: offline too, nothing crashes
        (folder / "stream.m3u8").write_bytes(b"\xff\xfe not a playlist \x00" * 50)
        time.sleep(1.5)
        pages_answer(server)
        assert not status(server)["online"]
        # a sane playlist again: live again
        write_playlist(folder, ["good.m4s"], sequence=2)
        wait_for(lambda: status(server)["online"], 10, 0.2, "live again")
        assert first_bytes(server)[4:8] == b"ftyp"
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_stream_folder_deleted_and_recreated_while_serving(own_stream):
    stream, server = own_stream
    stream.start()
    stream.wait_segments(2)
    server.start()
    server.wait_live()
    viewer = requests.get(server.url + "/stream.mp4", stream=True, timeout=10)
    first = next(viewer.iter_content(1024))
    assert first[4:8] == b"ftyp"
    stream.stop(signal.SIGKILL)
    shutil.rmtree(stream.directory)
    wait_for(lambda: not status(server)["online"], 15, 0.2, "offline once the folder is gone")
    pages_answer(server)
    assert requests.get(server.url + "/stream/stream.m3u8", timeout=5).status_code == 404
    viewer.close()
    stream.start()  # stream.sh re-creates the folder
    server.wait_live(30)
    assert first_bytes(server)[4:8] == b"ftyp"
    pages_answer(server)


# --- the state database ---------------------------------------------------------------------

LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
db.execute("BEGIN EXCLUSIVE")
db.execute("INSERT INTO secrets (name, value) VALUES ('locker', x'00')")
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
db.execute("ROLLBACK")
"""


class Timed(threading.Thread):
    """GET a page every 50 ms and keep the slowest answer time."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.slowest = 0.0
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            assert requests.get(self.url, timeout=10).status_code == 200
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.count += 1
            time.sleep(0.05)


def stored_state_is_intact(server: Server, keeper: ChatViewer, troll: ChatViewer) -> None:
    assert "kept before the fault" in keeper.messages()
    assert "You are banned" in troll.form()


def ban(server: Server, text: str) -> requests.Response:
    page = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=10).text
    viewer_id = re.search(re.escape(text) + r'.*?name="viewer_id" value="(\w+)"', page,
                          re.S).group(1)
    return broadcaster_post(server, "ban", viewer_id=viewer_id)


def prepare(server: Server) -> tuple[ChatViewer, ChatViewer, ChatViewer]:
    keeper, troll, late = ChatViewer(server), ChatViewer(server), ChatViewer(server)
    assert keeper.post("kept before the fault", name="Keeper").status_code == 303
    assert troll.post("troll before the fault").status_code == 303
    assert ban(server, "troll before the fault").status_code == 303
    assert late.post("verified before the fault").status_code == 303
    time.sleep(0.15)
    return keeper, troll, late


def test_locked_database_says_chat_unavailable_and_loses_nothing(tmp_path, live_stream):
    server = chat_server(tmp_path, live_stream.directory, "[chat]\nmin_interval = 0.1\n").start()
    locker = None
    try:
        keeper, troll, late = prepare(server)
        other = ChatViewer(server)
        locker = subprocess.Popen([sys.executable, "-c", LOCKER,
                                   str(tmp_path / "state" / "livestream.sqlite3")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert locker.stdout.readline().strip() == "locked"
        timer = Timed(server.url + "/info")
        timer.start()
        refused = late.post("written while locked")
        timer.stop.set()
        timer.join(10)
        assert refused.status_code == 503
        assert UNAVAILABLE in refused.text and "written while locked" in refused.text  # draft
        assert timer.count > 5 and timer.slowest < 1.0, \
            f"other viewers waited {timer.slowest:.2f}s while a post waited for the lock"
        assert other.post("first post, needs a save").status_code == 503
        moderated = ban(server, "kept before the fault")
        assert moderated.status_code == 303 and "error=Not%20saved" in moderated.headers[
            "Location"]
        pages_answer(server)
        assert first_bytes(server)[4:8] == b"ftyp"
        stored_state_is_intact(server, keeper, troll)

        locker.stdin.close()
        locker.wait(10)
        assert late.post("written after the lock").status_code == 303
        assert "written after the lock" in keeper.messages()
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(5)
        server.start()
        stored_state_is_intact(server, keeper, troll)
        assert "written after the lock" in keeper.messages()
    finally:
        if locker and locker.poll() is None:
            locker.kill()
            locker.wait(5)
        server.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs for the state folder: a real full disk (needs root, as in CI here)."""
    mountpoint = tmp_path / "state"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                              str(mountpoint)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): "
                    + mounted.stderr.decode(errors="replace").strip())
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(folder: Path) -> Path:
    """Fill the disk to the last byte. Unbuffered: a buffered file still holding the bytes
    the disk refused raised ENOSPC again when it was closed."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def test_full_disk_says_chat_unavailable_and_loses_nothing(tmp_path, live_stream, small_disk):
    server = chat_server(tmp_path, live_stream.directory, "[chat]\nmin_interval = 0.1\n").start()
    try:
        keeper, troll, late = prepare(server)
        filler = fill(small_disk)
        refused = None
        for attempt in range(30):  # the WAL may still have room for a few pages
            refused = late.post(f"written on a full disk {attempt} " + "x" * 400)
            if refused.status_code != 303:
                break
            time.sleep(0.12)
        assert refused.status_code == 503, refused.status_code
        assert UNAVAILABLE in refused.text
        pages_answer(server)
        assert first_bytes(server)[4:8] == b"ftyp"
        stored_state_is_intact(server, keeper, troll)

        filler.unlink()
        time.sleep(0.15)
        assert late.post("written after space came back").status_code == 303
        server.stop()
        server.start()
        stored_state_is_intact(server, keeper, troll)
        assert "written after space came back" in keeper.messages()
    finally:
        server.stop()
