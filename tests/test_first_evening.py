"""A streamer's first evening: sources die with their parent whatever the signal, end their
playlist either way, and one source at a time writes a stream folder."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import PROJECT, Server, TestStream, cli, livestream, wait_for, write_config
from test_party import film

from app.stream import lock

TWO_RENDITIONS = ('[[stream.renditions]]\nname = "source"\n'
                  '[[stream.renditions]]\nname = "low"\nheight = 90\nvideo_kbps = 100\n'
                  'audio_kbps = 32\n')


@pytest.fixture(scope="module")
def movie(tmp_path_factory) -> Path:
    return film(tmp_path_factory.mktemp("evening") / "movie.mkv", 6)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes (zombies aside) that name `text` (a test's folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in argv and state != "Z":
            found.append(f"{entry.name}: {argv}")
    return found


def read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def start_play(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(cli(config, "play", *args), cwd=PROJECT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def segments_written(playlist: Path, count: int = 1) -> None:
    # whole segments: the lines that name one (parts are named inside #EXT-X-PART tags)
    wait_for(lambda: sum(line.endswith(".m4s") and not line.startswith("#")
                         for line in read(playlist).splitlines()) >= count, 30,
             what=f"segments in {playlist}")


def assert_nothing_left(folder: Path, playlist: Path) -> None:
    wait_for(lambda: not processes_mentioning(str(folder)), 25,
             what="every child of the source to stop")
    wait_for(lambda: read(playlist).rstrip().endswith("#EXT-X-ENDLIST"), 25,
             what="the playlist to be ended")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_play_killed_leaves_no_ffmpeg_and_an_ended_playlist(movie, tmp_path, sig):
    config = write_config(tmp_path)
    proc = start_play(config, str(movie), "--loop")
    playlist = tmp_path / "stream" / "stream.m3u8"
    try:
        segments_written(playlist)
        assert "ENDLIST" not in read(playlist)
        proc.send_signal(sig)
        proc.communicate(timeout=20)
        assert_nothing_left(tmp_path, playlist)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL])
def test_a_watch_party_killed_ends_its_stream_too(movie, tmp_path, sig):
    """A party's ffmpeg never writes ENDLIST itself (the party goes on across runs): after
    SIGKILL the guard process ends the playlists and removes the party's markers."""
    config = write_config(tmp_path, extra=TWO_RENDITIONS)
    proc = start_play(config, str(movie), str(movie))
    stream = tmp_path / "stream"
    try:
        segments_written(stream / "stream.m3u8")
        proc.send_signal(sig)
        proc.communicate(timeout=20)
        assert_nothing_left(tmp_path, stream / "stream.m3u8")
        assert read(stream / "low.m3u8").rstrip().endswith("#EXT-X-ENDLIST")
        assert not (stream / "paused").exists()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL])
def test_serve_demo_killed_stops_stream_sh_and_its_ffmpeg(tmp_path, sig):
    stream_dir = tmp_path / "stream"
    server = Server(tmp_path, stream_dir, 'renditions = [{name = "source", height = 0}]\n')
    server.start("--demo")
    try:
        segments_written(stream_dir / "stream.m3u8")
        server.process.send_signal(sig)
        server.process.wait(20)
        assert_nothing_left(stream_dir, stream_dir / "stream.m3u8")
    finally:
        server.stop()
        for line in processes_mentioning(str(stream_dir)):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)


def test_a_second_source_is_refused_and_the_first_goes_on(movie, tmp_path):
    """stream.sh, a second play and an edge on a folder that play writes: each is refused
    with a message naming the first, and the first one's stream does not restart."""
    config = write_config(tmp_path)
    stream_dir = tmp_path / "stream"
    first = start_play(config, str(movie), "--loop")
    try:
        segments_written(stream_dir / "stream.m3u8", 2)
        init_before = (stream_dir / "init.mp4").stat().st_ino
        listed_before = [n for n in read(stream_dir / "stream.m3u8").split() if n.endswith(".m4s")]

        second = livestream(config, "play", str(movie))
        assert second.returncode == 1
        assert "already being written by another source" in second.stderr
        assert f"pid {first.pid}: livestream play {movie}" in second.stderr
        assert f"kill {first.pid}" in second.stderr

        script = subprocess.run([str(PROJECT / "stream.sh"), "--test"], check=False, cwd=PROJECT,
                                env=dict(os.environ, STREAM_DIR=str(stream_dir)),
                                capture_output=True, text=True, timeout=30)
        assert script.returncode == 75
        assert f"pid {first.pid}: livestream play" in script.stderr

        edge = livestream(config, "serve", "--port", "9", "--origin", "http://127.0.0.1:9")
        assert edge.returncode == 1 and f"pid {first.pid}" in edge.stderr

        time.sleep(1.5)  # had anyone cleaned the folder, the first segments would be gone
        assert (stream_dir / "init.mp4").stat().st_ino == init_before
        listed_after = [n for n in read(stream_dir / "stream.m3u8").split() if n.endswith(".m4s")]
        assert set(listed_before) & set(listed_after) or int(
            listed_after[0][6:-4]) > int(listed_before[-1][6:-4]), (listed_before, listed_after)
        assert first.poll() is None, "the first source still runs"
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=20)


def test_a_stale_lock_of_a_dead_source_is_taken_over(movie, tmp_path):
    stream_dir = tmp_path / "stream"
    stream_dir.mkdir()
    (stream_dir / lock.LOCK_NAME).write_text("pid 999999: livestream play gone.mkv\n")
    assert lock.holder(stream_dir) is None
    demo = TestStream(stream_dir, duration=2).start()
    try:
        demo.wait_segments(1)
        assert demo.process.wait(20) == 0
    finally:
        demo.stop()


def test_the_lock_names_its_holder_and_goes_with_it(tmp_path):
    held = lock.take(tmp_path, "livestream play film.mkv")
    assert lock.holder(tmp_path).startswith(f"pid {os.getpid()}: livestream play film.mkv")
    with pytest.raises(lock.FolderBusy, match="livestream play film.mkv"):
        lock.take(tmp_path, "another")
    held.release()
    assert lock.holder(tmp_path) is None
    lock.take(tmp_path, "another").release()


# ------------------------------------------------------------------ the small things


def test_a_wrong_or_locked_login_points_to_the_login_link(client):
    wrong = client.get("/broadcaster", headers={"Authorization": "Basic YnJvYWRjYXN0ZXI6bm8="})
    assert wrong.status_code == 401
    assert b"livestream broadcaster login-link" in wrong.data


def test_the_page_has_an_icon_and_an_empty_chat_says_so(client):
    page = client.get("/").data.decode()
    assert 'rel="icon"' in page and "/static/favicon.svg" in page
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.data.startswith(b"<svg")
    token = re.search(r"token=([\w-]+)", page).group(1)
    chat = client.get(f"/chat/messages?token={token}&mode=poll").data.decode()
    assert "No messages yet" in chat and "UTC" in chat


def test_a_quoted_number_in_the_config_file_is_refused(tmp_path):
    config = write_config(tmp_path, extra='[ingest]\nport = "1935"\n')
    done = livestream(config, "key")
    assert done.returncode == 2
    assert str(config) in done.stderr and "'ingest.port'" in done.stderr
    assert "without quotes" in done.stderr
    from app.config import ConfigError, environment_overrides

    assert environment_overrides({"LIVESTREAM_PORT": "8081"}) == {"server.port": 8081}
    with pytest.raises(ConfigError, match="LIVESTREAM_PORT"):
        environment_overrides({"LIVESTREAM_PORT": "eighty"})


def test_a_config_elsewhere_says_it_starts_a_new_state_folder(tmp_path):
    """`--config /elsewhere/c.toml` resolves state_dir next to that file: say so when the
    project's own state folder holds the stream's password, key and onion address."""
    from app import config as configuration

    usual = configuration.load(None).state_dir
    made = not usual.exists()
    usual.mkdir(parents=True, exist_ok=True)
    try:
        config = write_config(tmp_path / "elsewhere")
        done = livestream(config, "key")
        assert done.returncode == 0, done.stderr
        assert "does not exist yet" in done.stderr and str(usual) in done.stderr
        again = livestream(config, "key")  # the folder exists now: nothing to say
        assert "does not exist yet" not in again.stderr
    finally:
        if made:
            usual.rmdir()


def test_the_stream_key_command_prints_usable_addresses(tmp_path):
    done = livestream(write_config(tmp_path), "key")
    assert done.returncode == 0, done.stderr
    assert "HOST" not in done.stdout
    assert "rtmp://127.0.0.1:1935/live" in done.stdout
    onion = livestream(write_config(tmp_path / "onion", {"tor": {"enabled": True}}), "key")
    assert onion.stdout.count("rtmp://") == 1  # the ingest listens on loopback only


def test_captcha_alphabet_has_no_look_alikes_and_letters_stand_nearly_straight():
    from app.community.captcha import ALPHABET, find_fonts, readable_images

    look_alikes = ["0O", "1IL7", "2Z", "5S", "8B", "6G", "UV", "4YK"]
    for group in look_alikes:  # at most one of each group, so no answer hinges on it
        assert len(set(group) & set(ALPHABET)) <= 1, group
    assert not set("4YK71") & set(ALPHABET)  # the ones friends misread
    maker = readable_images()(width=200, height=70, fonts=find_fonts([]))
    assert max(abs(a) for a in maker.character_rotate) <= 15
    assert maker.generate("ACDEF").getvalue().startswith(b"\x89PNG")


def test_japanese_subtitles_burn_in_as_glyphs_not_boxes(tmp_path):
    """Two different Japanese lines must give two different pictures: with no CJK font,
    libass draws the same empty boxes for both. And the line is really drawn."""
    clip = tmp_path / "black.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=black:size=640x360:r=10",
                    "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)],
                   check=True, timeout=60)
    pictures = []
    for number, line in enumerate(("日本語の字幕です", "漢字と仮名の文")):
        subs = tmp_path / f"ja{number}.srt"
        subs.write_text(f"1\n00:00:00,000 --> 00:00:05,000\n{line}\n", encoding="utf-8")
        out = tmp_path / f"ja{number}"
        result = livestream(write_config(out, {"stream": {"renditions": [{"name": "source"}]}}),
                            "play", str(clip), "--subs", str(subs))
        assert result.returncode == 0, result.stderr
        stream = out / "stream"
        names = ["init.mp4"] + [n for n in (stream / "stream.m3u8").read_text().split()
                                if n.endswith(".m4s")]
        joined = out / "joined.mp4"
        joined.write_bytes(b"".join((stream / n).read_bytes() for n in names))
        raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", "0.5", "-i", str(joined),
                              "-frames:v", "1", "-vf", "crop=640:90:0:270,format=gray",
                              "-f", "rawvideo", "-"], capture_output=True, check=True,
                             timeout=30).stdout
        pictures.append(raw)
    lit = [sum(1 for value in picture if value > 128) for picture in pictures]
    assert min(lit) > 150, f"no subtitle drawn: {lit} bright pixels"
    differing = sum(1 for a, b in zip(*pictures, strict=True) if abs(a - b) > 64)
    assert differing > 150, f"the two lines look the same ({differing} pixels differ): boxes"


def test_two_writers_of_one_folder_give_one_warning_not_a_restart_storm(tmp_path, caplog):
    """OBS recording into the folder cannot take the lock: two such writers are noticed by
    their playlists (numbers and init segments going back and forth)."""
    from app.config import StreamConfig
    from app.stream.watcher import StreamState

    writers = []
    for name, size in (("a", "160x90"), ("b", "192x108")):
        out = tmp_path / name
        out.mkdir()
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:r=10",
                        "-t", "6", "-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p", "-f",
                        "hls", "-hls_time", "1", "-hls_list_size", "0", "-hls_segment_type",
                        "fmp4", "-hls_segment_filename", str(out / "stream%d.m4s"),
                        str(out / "stream.m3u8")], check=True, timeout=60)
        writers.append(out)
    folder = tmp_path / "stream"
    folder.mkdir()
    state = StreamState(folder, StreamConfig(offline_after=3600))

    def write_as(writer: Path, upto: int) -> None:
        lines = writer.joinpath("stream.m3u8").read_text().splitlines()
        keep, seen = [], 0
        for line in lines:
            if line.endswith(".m4s"):
                seen += 1
                if seen > upto:
                    break
            if line != "#EXT-X-ENDLIST":
                keep.append(line)
        for path in writer.iterdir():
            if path.suffix in (".m4s", ".mp4"):
                (folder / path.name).write_bytes(path.read_bytes())
        (folder / "stream.m3u8").write_text("\n".join(keep) + "\n")
        state.refresh()

    with caplog.at_level("WARNING", logger="app.stream.watcher"):
        write_as(writers[0], 2)
        first = state.snapshot.generation
        for upto in range(3, 6):  # a takes turns with b, each restarting the other
            write_as(writers[1], upto - 2)
            write_as(writers[0], upto)
    generations = state.snapshot.generation - first
    assert generations <= 2, f"{generations} restarts told to every viewer"
    warnings = [r for r in caplog.records if "two sources seem to write" in r.message]
    assert len(warnings) == 1
    assert state.two_writers


@pytest.mark.parametrize("viewport", [{"width": 1366, "height": 800},
                                      {"width": 390, "height": 844}], ids=["desktop", "phone"])
def test_the_chat_forms_last_line_is_not_clipped(live_server, browser, viewport):
    """The form frame is tall enough for the form, the captcha and the last line under it."""
    context = browser.new_context(java_script_enabled=False, viewport=viewport)
    try:
        page = context.new_page()
        page.goto(live_server.url + "/", wait_until="domcontentloaded", timeout=15000)
        frame_element = page.wait_for_selector("iframe.chat-form", timeout=10000)
        frame_box = frame_element.bounding_box()
        form = frame_element.content_frame()  # attached once the element is
        form.wait_for_selector("p.small", timeout=10000)
        assert form.locator("img").count() == 1  # the captcha is in the form
        last = form.locator("p.small").bounding_box()
        assert last["y"] + last["height"] <= frame_box["y"] + frame_box["height"], (last,
                                                                                   frame_box)
    finally:
        context.close()
