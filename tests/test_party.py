"""The watch party (issue 15): a queue played as one stream the host pauses, seeks and skips.

Real ffmpeg writes the stream, a real server fans it out, and a no-JS viewer's /stream.mp4
response is read from before the first control to after the queue ends: it must stay open
through a pause longer than the offline rule, come back after resume, seek and next, and
hold one timeline (ffprobe: no timestamp goes backwards, one init segment).
"""
from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from chat_support import BROADCASTER, broadcaster_post, chat_server
from support import PROJECT, cli, livestream, wait_for

from app.sources.options import SourceError
from app.sources.party import control, queue, timeline
from app.stream import folder
from app.stream import playlist as hls

SEGMENT = 2.0  # the HLS segment length every source writes (app/stream/folder.py)


def make_clip(path: Path, seconds: int, video: str, audio: str, codecs: list[str]) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", video, "-f", "lavfi",
                    "-i", audio, "-t", str(seconds), *codecs, str(path)], check=True)
    return path


def film(path: Path, seconds: int, sample_rate: int = 44100) -> Path:
    """The usual test film: 320x180 H.264 and AAC, as a viewer's movie file would be."""
    return make_clip(path, seconds, "testsrc=size=320x180:rate=25",
                     f"sine=f=440:r={sample_rate}", ["-c:v", "libx264", "-preset", "ultrafast",
                                                     "-pix_fmt", "yuv420p", "-c:a", "aac"])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    first = film(folder / "first.mkv", 14)
    # a different size, rate and codecs: the party must still write the same init segment
    second = make_clip(folder / "second.mkv", 6, "testsrc2=size=160x120:rate=30",
                       "sine=f=300:r=22050", ["-c:v", "mpeg4", "-c:a", "libmp3lame"])
    return first, second


class Viewer(threading.Thread):
    """A no-JS viewer: one /stream.mp4 response read to its end, arrival times kept."""

    def __init__(self, url: str, path: Path):
        super().__init__(daemon=True)
        self.url, self.path = url, path
        self.arrivals: list[tuple[float, int]] = []  # (monotonic time, bytes so far)
        self.error: Exception | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        total = 0
        try:
            with requests.get(self.url, stream=True, timeout=(5, 60)) as response, \
                    self.path.open("wb") as out:
                response.raise_for_status()
                for chunk in response.iter_content(65536):
                    out.write(chunk)
                    total += len(chunk)
                    self.arrivals.append((time.monotonic(), total))
        except Exception as exc:  # reported by the test
            self.error = exc
        self.ended_at = time.monotonic()

    def bytes_after(self, moment: float) -> int:
        return sum(1 for t, _ in self.arrivals if t > moment)

    def new_video_after(self, pressed: float, timeout: float = 20) -> float:
        """Seconds from pressing a control to the new position's first bytes at the viewer.

        Called once the control has answered, when the stopped run's last (partial) segment
        is written; 0.3 s later it has reached the viewer, and the new run cannot have a
        segment yet (ffmpeg starts, then writes SEGMENT seconds in real time)."""
        time.sleep(0.3)
        moment = time.monotonic()
        wait_for(lambda: self.bytes_after(moment), timeout, what="video bytes after a control")
        return next(t for t, _ in self.arrivals if t > moment) - pressed


def packet_times(path: Path) -> dict[int, list[float]]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                           "packet=stream_index,dts_time", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True)
    times: dict[int, list[float]] = {}
    for line in done.stdout.splitlines():
        index, _, dts = line.partition(",")
        if dts and dts != "N/A":
            times.setdefault(int(index), []).append(float(dts))
    return times


def info_frame(server) -> str:
    return requests.get(server.url + "/info?gen=1", timeout=5).text


@pytest.mark.slow
def test_pause_seek_and_queue_keep_one_open_stream(clips, tmp_path):
    """Countdown, pause (longer than the offline rule), resume, seek back, next: one viewer's
    response stays open throughout and its timestamps only go forward. The stream's own title
    comes back when the party ends."""
    first, second = clips
    stream_dir = tmp_path / "stream"
    stream_dir.mkdir()
    folder.write_title(stream_dir, "Friday movie night")
    server = chat_server(tmp_path, stream_dir).start()
    log = (tmp_path / "play.log").open("wb")
    play = subprocess.Popen(cli(server.config_path, "play", str(first), "--preset",
                                "ultrafast", "--bitrate", "300", "--in", "3s", "--",
                                str(second)), cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    figures = {}
    try:
        started = time.monotonic()
        wait_for(lambda: "Starts in" in info_frame(server), 10, what="the countdown")
        assert "STARTING SOON" in info_frame(server) and "OFFLINE" not in info_frame(server)
        status = requests.get(server.url + "/api/status", timeout=5).json()
        assert 0 < status["starts_at"] - status["now"] <= 3.5, "the JS bar counts down to it"
        sock = control.socket_path(tmp_path / "state")
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        server.wait_live(30)
        assert time.monotonic() - started >= 2.5, "started before the countdown ran out"
        viewer = Viewer(server.url + "/stream.mp4", tmp_path / "viewer.mp4")
        viewer.start()
        wait_for(lambda: viewer.arrivals, 10, what="the first bytes")
        time.sleep(2.5)

        forged = requests.post(server.url + "/broadcaster/party", auth=BROADCASTER,
                               data={"action": "pause", "csrf": "guess"}, timeout=10,
                               allow_redirects=False)
        assert forged.status_code == 403  # the broadcaster forms' CSRF check applies
        anonymous = requests.post(server.url + "/broadcaster/party", data={"action": "pause"},
                                  timeout=10, allow_redirects=False)
        assert anonymous.status_code in (401, 403)
        assert control.send(tmp_path / "state", "status")["status"]["paused"] is False
        pressed = time.monotonic()
        answer = broadcaster_post(server, "party", action="pause")
        assert answer.status_code == 303 and "error" not in answer.headers["Location"]
        figures["pause_form_seconds"] = time.monotonic() - pressed
        wait_for(lambda: "Paused by the host" in info_frame(server), 5, what="paused notice")
        figures["pause_to_info_frame_seconds"] = time.monotonic() - pressed
        quiet_from = time.monotonic() + 1.0  # ffmpeg's last partial segment may still come
        time.sleep(7)  # past offline_after (4 s) and 1.5 segments: only the hold keeps it live
        assert viewer.is_alive() and viewer.error is None, "the response ended while paused"
        assert viewer.bytes_after(quiet_from) == 0, "video kept coming while paused"
        assert b"<video" in requests.get(server.url + "/", timeout=5).content
        status = json.loads(requests.get(server.url + "/api/status", timeout=5).text)
        assert status["online"] and status["generation"] == 1

        pressed = time.monotonic()
        done = livestream(server.config_path, "party", "resume")
        assert done.returncode == 0, done.stderr
        figures["resume_to_viewer_seconds"] = viewer.new_video_after(pressed)
        time.sleep(3)

        before = control.send(tmp_path / "state", "status")["status"]["position"]
        pressed = asked = time.monotonic()
        control.send(tmp_path / "state", "seek", "-3")  # what the CLI and the forms send
        figures["seek_to_viewer_seconds"] = viewer.new_video_after(pressed)
        after = control.send(tmp_path / "state", "status")["status"]["position"]
        moved = after - before - (time.monotonic() - asked)  # minus the time that played
        assert -4.5 < moved < -1.5, f"seek -3 from {before}: now {after}"
        assert figures["seek_to_viewer_seconds"] < SEGMENT + 2.5, figures  # one segment
        time.sleep(2)

        pressed = time.monotonic()
        answer = broadcaster_post(server, "party", action="next")
        assert answer.status_code == 303 and "error" not in answer.headers["Location"]
        figures["next_to_viewer_seconds"] = viewer.new_video_after(pressed)
        wait_for(lambda: "second (2/2)" in info_frame(server), 5, what="the second title")
        page = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=10).text
        assert "first" in page and "second" in page and 'aria-current="true"' in page

        assert play.wait(30) == 0
        assert (stream_dir / folder.TITLE_FILE).read_text().strip() == "Friday movie night"
        viewer.join(20)
        assert not viewer.is_alive() and viewer.error is None, viewer.error
        assert viewer.ended_at is not None
    finally:
        if play.poll() is None:
            play.terminate()
            play.wait(10)
        log.close()
        server.stop()
    print("\nwatch party figures:", json.dumps({k: round(v, 2) for k, v in figures.items()}))

    data = (tmp_path / "viewer.mp4").read_bytes()
    assert data.count(b"ftyp") == 1, "more than one init segment reached the viewer"
    times = packet_times(tmp_path / "viewer.mp4")
    assert len(times) == 2, times.keys()  # video and audio
    for index, stamps in times.items():
        backwards = [(a, b) for a, b in zip(stamps, stamps[1:], strict=False) if b < a]
        assert not backwards, f"stream {index} goes back: {backwards[:3]}"
    video = times[0]
    played = video[-1] - video[0]
    # about 2.5 + 3 + 2 s of the first item, the seek's replay and 6 s of the second
    assert played > 10, played
    decode = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "viewer.mp4"),
                             "-f", "null", "-"], check=False, capture_output=True, text=True)
    assert decode.returncode == 0, decode.stderr


def test_control_needs_a_running_play(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[server]\nstate_dir = "state"\n[stream]\ndir = "stream"\n')
    done = livestream(config, "party", "pause")
    assert done.returncode == 1
    assert "no `livestream play` with a queue is running" in done.stderr
    assert livestream(config, "party", "seek").returncode == 2


def test_a_second_play_leaves_the_running_party_alone(clips, tmp_path):
    """A second `play`, a queue or one file, is refused before it touches the stream folder:
    the running party's init and segments stay as they are and it plays on."""
    first, second = clips
    config = tmp_path / "config.toml"
    config.write_text('[server]\nstate_dir = "state"\n[stream]\ndir = "stream"\n')
    playlist = tmp_path / "stream" / "stream.m3u8"
    log = (tmp_path / "play.log").open("wb")
    party = subprocess.Popen(cli(config, "play", str(first), "--party", "--preset", "ultrafast",
                                 "--bitrate", "300"), cwd=PROJECT, stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def newest() -> int:
        entries = hls.parse(playlist.read_text()).entries if playlist.exists() else ()
        return entries[-1].sequence if entries else -1

    try:
        wait_for(lambda: newest() >= 1, 30, what="the party's first segments")
        written = {path.name: path.read_bytes()
                   for path in playlist.parent.iterdir() if path.suffix in (".m4s", ".mp4")}
        assert "init.mp4" in written
        before = newest()
        for sources in ([str(second)], [str(second), str(first)]):  # one file, then a queue
            done = livestream(config, "play", *sources, "--preset", "ultrafast")
            assert done.returncode == 1, done.stderr
            assert "a watch party is already playing" in done.stderr, done.stderr
            assert "livestream party pause" in done.stderr, done.stderr
        for name, data in written.items():
            assert (playlist.parent / name).read_bytes() == data, f"{name} was touched"
        wait_for(lambda: newest() > before, 15, what="the party to play on")
        assert hls.parse(playlist.read_text()).entries[0].sequence == 0  # the same broadcast
        assert control.send(tmp_path / "state", "status")["status"]["state"] == "playing"
    finally:
        party.terminate()
        party.wait(20)
        log.close()


def test_control_socket_is_private_and_bounded(tmp_path):
    calls = []
    server = control.ControlServer(tmp_path, lambda c, a: calls.append((c, a)) or {"ok": True})
    server.start()
    try:
        assert stat.S_IMODE(control.socket_path(tmp_path).stat().st_mode) == 0o600
        assert control.send(tmp_path, "seek", "+30") == {"ok": True}
        with pytest.raises(control.ControlError, match="unknown command"):
            control.send(tmp_path, "rm -rf", "")
        import socket
        with socket.socket(socket.AF_UNIX) as raw:  # an endless line is refused, unread
            raw.connect(str(control.socket_path(tmp_path)))
            raw.settimeout(5)
            try:
                raw.sendall(b"x" * 5000)
                answer = raw.recv(100)
            except ConnectionResetError:  # closed with our bytes unread: refused, not served
                answer = b""
            assert answer == b""
        with pytest.raises(control.ControlError, match="a watch party is already playing"):
            control.ControlServer(tmp_path, lambda c, a: {"ok": True}).start()
    finally:
        server.stop()
    assert calls == [("seek", "+30"), ("status", "")]  # the second server asked first


def test_queue_from_the_command_line_and_an_m3u(tmp_path):
    head, groups = queue.split_play_argv(["--config", "c.toml", "play", "a.mkv", "--subs", "0",
                                          "--", "b.mkv", "--audio", "1", "--", "c.mkv"])
    assert head == ["--config", "c.toml", "play", "a.mkv", "--subs", "0"]
    assert groups == [["b.mkv", "--audio", "1"], ["c.mkv"]]
    assert queue.split_play_argv(["serve", "--", "x"]) == (["serve", "--", "x"], [])
    assert queue.parse_group(groups[0]) == [queue.Item("b.mkv", audio=1)]
    with pytest.raises(SourceError, match="only --subs, --audio and --start"):
        queue.parse_group(["b.mkv", "--size", "640x360"])

    (tmp_path / "films").mkdir()
    playlist = tmp_path / "films" / "night.m3u"
    playlist.write_text("#EXTM3U\n#EXTINF:100,The First\n#EXTLIVESTREAM:subs=0,audio=1\n"
                        "one.mkv\n\n/abs/two.mkv\n#EXTLIVESTREAM:start=1:00\nthree.mkv\n")
    items = queue.expand([str(playlist)], None, None)
    assert items == [
        queue.Item(str(tmp_path / "films" / "one.mkv"), subs="0", audio=1, label="The First"),
        queue.Item("/abs/two.mkv"),
        queue.Item(str(tmp_path / "films" / "three.mkv"), start=60.0)]
    assert [i.name for i in items] == ["The First", "two", "three"]
    playlist.write_text("#EXTLIVESTREAM:loud=1\none.mkv\n")
    with pytest.raises(SourceError, match="unknown item option 'loud'"):
        queue.expand([str(playlist)], None, None)


def test_times_the_host_types():
    assert timeline.seek_target("+30", 100, 3600) == 130
    assert timeline.seek_target("-10", 5, 3600) == 0
    assert timeline.seek_target("1:02:03", 0, 7200) == 3723
    assert timeline.seek_target("+9:00:00", 0, 600) == 599  # not past the end
    with pytest.raises(SourceError):
        timeline.seek_target("soon", 0, None)
    assert timeline.parse_duration("5m") == 300
    assert timeline.parse_duration("1h30m") == 5400
    assert timeline.start_time(None, "90s", now=1000.0) == 1090.0
    moment = timeline.start_time("20:30", None, now=time.time())
    assert 0 < moment - time.time() <= 24 * 3600
    assert time.localtime(moment)[3:5] == (20, 30)
    with pytest.raises(SourceError):
        timeline.start_time("25:00", None)
    with pytest.raises(SourceError):
        timeline.start_time("20:30", "5m")


def test_each_item_keeps_its_own_choices(clips, tmp_path):
    """Dry run: item options go to their own ffmpeg, the output format is the same for all."""
    first, second = clips
    subtitled = tmp_path / "subbed.mkv"
    (tmp_path / "s.srt").write_text("1\n00:00:00,000 --> 00:00:05,000\nhello\n")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(first), "-i",
                    str(tmp_path / "s.srt"), "-map", "0", "-map", "1", "-c", "copy",
                    str(subtitled)], check=True)
    config = tmp_path / "config.toml"
    config.write_text('[server]\nstate_dir = "state"\n[stream]\ndir = "stream"\n')
    done = livestream(config, "play", str(subtitled), "--subs", "0", "--dry-run", "--",
                      str(second))
    assert done.returncode == 0, done.stderr
    one, two = [line for line in done.stdout.splitlines() if line.startswith("ffmpeg")]
    assert "subtitles=filename=" in one and "subtitles=" not in two
    for line in (one, two):
        assert "scale=320:180" in line and "-r 25" in line and "-c:a aac" in line
        assert "omit_endlist" in line and "frag_discont" in line
    assert "1. subbed" in done.stderr and "[subs 0]" in done.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s"]))


def test_controls_move_through_the_queue(clips, tmp_path):
    """The controller's bookkeeping for each control, on real probed files (no ffmpeg run)."""
    from app.sources.ffmpeg import PlayOptions
    from app.sources.party.runner import Party

    first, second = clips
    items = [queue.Item(str(first)), queue.Item(str(second), start=2.0)]
    party = Party(items, PlayOptions(source=str(first)), tmp_path / "stream", tmp_path / "state")
    (tmp_path / "stream").mkdir()
    party.check()
    assert party.size == (320, 180) and party.fps == 25
    party.state.position = 5.0
    party._apply([("pause", ""), ("seek", "-10")])
    assert (party.state.index, party.state.position, party.state.paused) == (0, 0.0, True)
    assert (tmp_path / "stream" / "paused").read_text().strip() == "host"
    party._apply([("seek", "0:08"), ("resume", "")])
    assert (party.state.position, party.state.paused) == (8.0, False)
    assert (tmp_path / "stream" / "paused").read_text().strip() == "seek"  # until it writes
    party._apply([("next", "")])
    assert (party.state.index, party.state.position) == (1, 2.0)  # the item's own --start
    party._apply([("next", "")])
    assert party.state.index == 1  # the last item: to its last second
    assert party.state.position == pytest.approx(5.0, abs=0.2)
    party._apply([("prev", "")])
    assert (party.state.index, party.state.position) == (0, 0.0)
    status = party.status()
    assert [i["name"] for i in status["items"]] == ["first", "second"]
    assert status["state"] == "playing" and status["items"][1]["duration"] == pytest.approx(6, 0.1)


def test_a_stale_hold_marker_is_ignored(tmp_path):
    """A `play` that died while paused must not keep the stream 'online' for ever."""
    import os

    folder.write_marker(tmp_path, folder.HOLD_FILE, "host")
    assert folder.read_hold(tmp_path) == "host"
    old = time.time() - folder.HOLD_FRESH_SECONDS - 1
    os.utime(tmp_path / folder.HOLD_FILE, (old, old))
    assert folder.read_hold(tmp_path) == ""
    folder.write_marker(tmp_path, folder.HOLD_FILE, "anything")
    assert folder.read_hold(tmp_path) == ""
    folder.write_marker(tmp_path, folder.COUNTDOWN_FILE, "1900000000")
    assert folder.read_countdown(tmp_path) == 1900000000.0
