"""Renditions: every source writes a source-quality and a low rendition with aligned segments,
the server follows both and serves the chosen one, and nothing in the media names the
streamer's machine (encoder versions, x264 options, time zone)."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from browser import PLAYER, STALLS_JS, VIDEO
from support import LOW_RENDITION, PROJECT, TestStream, wait_for

from app.config import ConfigError, Rendition, from_dict
from app.sources import ffmpeg as builders
from app.stream import boxes
from app.stream import playlist as hls

LOW_CONFIG = ('[[stream.renditions]]\nname = "source"\n[[stream.renditions]]\nname = "low"\n'
              'height = 90\nvideo_kbps = 100\naudio_kbps = 32\n')
FINGERPRINTS = (b"x264 - core", b"Lavf", b"Lavc", b"libx264", b"options: ")


def probe_video(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height,codec_name", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return json.loads(out)["streams"][0]


def starts(folder: Path, playlist: str) -> list[tuple[float, float]]:
    """(media start, duration) of every listed segment, read from the fragments themselves."""
    parsed = hls.parse((folder / playlist).read_text())
    init = boxes.parse_init((folder / parsed.init_uri).read_bytes())
    return [(round(boxes.segment_start((folder / e.uri).read_bytes(), init), 2), e.duration)
            for e in parsed.entries]


def assert_aligned(folder: Path, top: str = "stream.m3u8", low: str = "low.m3u8") -> None:
    ours, theirs = starts(folder, top), starts(folder, low)
    assert len(ours) >= 2 and len(ours) == len(theirs)
    assert [s for s, _ in ours] == [s for s, _ in theirs], "the same media time for segment N"
    for (_, a), (_, b) in zip(ours[:-1], theirs[:-1], strict=True):  # the last ends with input
        assert abs(a - b) < 0.05


def assert_clean(data: bytes, what: str) -> None:
    for mark in FINGERPRINTS:
        assert mark not in data, f"{what} carries {mark!r}"


# ------------------------------------------------------------------------- the sources

@pytest.fixture(scope="module")
def sh_stream(tmp_path_factory):
    """stream.sh --test with a low rendition, 4 s long, into a fresh folder."""
    folder = tmp_path_factory.mktemp("sh") / "stream"
    env = dict(os.environ, STREAM_DIR=str(folder), VIDEO_SIZE="320x180", FRAMERATE="15",
               SEGMENT_SECONDS="1", VIDEO_BITRATE="300k", PRESET="ultrafast", LOGLEVEL="error",
               DURATION="4", RENDITIONS=LOW_RENDITION, TZ="Asia/Tokyo")
    done = subprocess.run([str(PROJECT / "stream.sh"), "--test"], env=env, timeout=60, check=False,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return folder


def test_stream_sh_writes_a_master_and_aligned_renditions(sh_stream):
    variants = hls.parse_master((sh_stream / "master.m3u8").read_text())
    assert [(v.name, v.uri) for v in variants] == [("source", "stream.m3u8"), ("low", "low.m3u8")]
    assert variants[1].bandwidth == 132_000 and variants[1].resolution == "160x90"
    assert_aligned(sh_stream)
    joined = sh_stream / "low-joined.mp4"
    low = hls.parse((sh_stream / "low.m3u8").read_text())
    joined.write_bytes((sh_stream / "low-init.mp4").read_bytes()
                       + b"".join((sh_stream / e.uri).read_bytes() for e in low.entries))
    assert probe_video(joined)["height"] == 90
    assert (sh_stream / "low.m3u8").read_text().rstrip().endswith("#EXT-X-ENDLIST")


def test_stream_sh_writes_no_encoder_sei(sh_stream):
    for path in sh_stream.glob("*.m4s"):
        assert b"x264 - core" not in path.read_bytes(), path.name


def test_stream_sh_single_rendition_and_playlist_name(tmp_path):
    """RENDITIONS empty: one playlist, named by PLAYLIST (as `serve --demo` passes it)."""
    env = dict(os.environ, STREAM_DIR=str(tmp_path), VIDEO_SIZE="160x90", FRAMERATE="10",
               SEGMENT_SECONDS="1", PRESET="ultrafast", LOGLEVEL="error", DURATION="2",
               RENDITIONS="", PLAYLIST="party.m3u8")
    done = subprocess.run([str(PROJECT / "stream.sh"), "--test"], env=env, timeout=60, check=False,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "party.m3u8").exists()
    assert not (tmp_path / "stream.m3u8").exists() and not (tmp_path / "master.m3u8").exists()
    bad = subprocess.run([str(PROJECT / "stream.sh"), "--test"], timeout=30, check=False,
                         capture_output=True,
                         text=True, env=dict(env, PLAYLIST="../x.m3u8"))
    assert bad.returncode == 2 and "plain file name" in bad.stderr


def test_demo_passes_the_configured_playlist_and_renditions(tmp_path):
    config = from_dict({"stream": {"playlist": "party.m3u8", "renditions": [
        {"name": "source"}, {"name": "tiny", "height": 144, "video_kbps": 150,
                             "audio_kbps": 48}]}}, tmp_path / "config.toml")
    env = builders.stream_sh_environment(config)
    assert env["PLAYLIST"] == "party.m3u8" and env["RENDITIONS"] == "tiny:144:150:48"
    assert env["LOW_LATENCY"] == "1" and env["PART_MS"] == "200"  # stream.part_ms's default


def fake_ffmpeg(tmp_path: Path) -> dict:
    """A PATH whose ffmpeg records its arguments: what stream.sh would draw, without running."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ffmpeg"
    script.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_FILE"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", STREAM_DIR=str(tmp_path / "s"),
                ARGS_FILE=str(tmp_path / "args"), TZ="Asia/Tokyo")


def test_stream_sh_draws_no_local_clock(tmp_path):
    """Issue 12 finding 6: the default picture has no clock; CLOCK=1 draws UTC, never local."""
    env = fake_ffmpeg(tmp_path)
    subprocess.run([str(PROJECT / "stream.sh"), "--test"], env=env, check=True, timeout=30)
    assert "drawtext" not in (tmp_path / "args").read_text()
    subprocess.run([str(PROJECT / "stream.sh"), "--test"], env=dict(env, CLOCK="1"), check=True,
                   timeout=30)
    graph = (tmp_path / "args").read_text()
    assert "gmtime" in graph and "UTC" in graph and "localtime" not in graph
    usage = subprocess.run([str(PROJECT / "stream.sh"), "--help"], capture_output=True, text=True,
                           check=True, timeout=30).stdout
    assert "time zone" in usage and "CLOCK=0" in usage


def test_stream_sh_clock_shows_utc_in_the_picture(tmp_path):
    """The real picture: with TZ=Asia/Tokyo (UTC+9) the drawn hour is UTC's. Told apart by
    drawing both candidate hours ourselves, the same way, and comparing the pixels."""
    env = dict(os.environ, STREAM_DIR=str(tmp_path / "s"), VIDEO_SIZE="640x360", FRAMERATE="5",
               SEGMENT_SECONDS="1", PRESET="ultrafast", LOGLEVEL="error", DURATION="1",
               RENDITIONS="", CLOCK="1", TZ="Asia/Tokyo")
    subprocess.run([str(PROJECT / "stream.sh"), "--test"], env=env, check=True, timeout=60,
                   stdin=subprocess.DEVNULL)
    folder = tmp_path / "s"
    (tmp_path / "shot.mp4").write_bytes((folder / "init.mp4").read_bytes()
                                        + (folder / "stream0.m4s").read_bytes())
    utc_hour = time.gmtime().tm_hour
    crop = "crop=24:24:16:22,format=gray"  # the first two digits of HH:MM:SS

    def gray(source: list[str], draw: str = "") -> bytes:
        chain = (draw + "," if draw else "") + crop
        return subprocess.run(["ffmpeg", "-v", "error", *source, "-frames:v", "1", "-vf", chain,
                               "-f", "rawvideo", "-"],
                              capture_output=True, check=True, timeout=30).stdout

    drawn = gray(["-i", str(tmp_path / "shot.mp4")])

    def rendered(hour: int) -> bytes:
        return gray(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=5"],
                    f"drawtext=text='{hour:02d}':x=16:y=h/14:fontsize=h/20:fontcolor=white"
                    ":box=1:boxcolor=black@0.6:boxborderw=8")

    def distance(a: bytes, b: bytes) -> int:
        return sum(abs(x - y) for x, y in zip(a, b, strict=True))

    assert distance(drawn, rendered(utc_hour)) < distance(drawn, rendered((utc_hour + 9) % 24))


@pytest.fixture(scope="module")
def h264_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "movie.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15",
                    "-f", "lavfi", "-i", "sine=frequency=300", "-t", "4", "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "15", "-keyint_min", "15", "-c:a", "aac",
                    "-shortest", str(path)], check=True, timeout=60)
    assert b"x264 - core" in path.read_bytes(), "the input has x264's SEI to strip"
    return path


def test_play_copies_the_top_and_encodes_only_the_low(h264_file, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[stream]\ndir = "{tmp_path / "stream"}"\n' + LOW_CONFIG)
    done = subprocess.run([sys.executable, "-m", "app.cli", "--config", str(config), "play",
                           str(h264_file)], cwd=PROJECT, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stderr
    assert re.search(r"video: .*h264.*\(copied\)", done.stderr), done.stderr
    folder = tmp_path / "stream"
    assert_aligned(folder)
    assert [v.name for v in hls.parse_master((folder / "master.m3u8").read_text())] == [
        "source", "low"]
    for path in folder.glob("*.m4s"):
        assert b"x264 - core" not in path.read_bytes(), path.name
    for path in (folder / "init.mp4", folder / "low-init.mp4"):
        assert_clean(boxes.scrub_init(path.read_bytes()), path.name)
    assert (folder / "low.m3u8").read_text().rstrip().endswith("#EXT-X-ENDLIST")


def test_play_argv_copies_top_and_splits_an_encoded_picture(h264_file, tmp_path):
    from app.sources.probe import probe

    renditions = [Rendition("source"), Rendition("low", 90, 100, 32)]
    info = probe(str(h264_file))
    copied = builders.plan_play(info, builders.PlayOptions(str(h264_file)), tmp_path,
                                renditions=renditions)
    top, _, lower = builders.shell_line(copied.argv).partition("stream.m3u8")
    assert "-c:v copy" in top and "libx264" not in top
    assert "libx264" in lower and "-force_key_frames source" in lower
    sized = builders.plan_play(info, builders.PlayOptions(str(h264_file), size=(256, 144)),
                               tmp_path, renditions=renditions)
    graph = sized.argv[sized.argv.index("-filter_complex") + 1]
    assert "split=2" in graph and "scale=-2:90" in graph
    pushed = builders.plan_play(info, builders.PlayOptions(str(h264_file),
                                                           to="rtmp://h/live/key"),
                                tmp_path, renditions=renditions)
    assert "low.m3u8" not in " ".join(pushed.argv), "a push sends one rendition"
    same = builders.plan_play(info, builders.PlayOptions(str(h264_file)), tmp_path,
                              renditions=[Rendition("source"), Rendition("big", 180, 900, 64)])
    assert "big.m3u8" not in " ".join(same.argv) and "not encoding big" in " ".join(same.notes)


def flv_file(tmp_path: Path, codec: list[str]) -> Path:
    path = tmp_path / "input.flv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=15", "-f", "lavfi", "-i", "sine", "-t", "4",
                    *codec, "-c:a", "aac", "-shortest", "-f", "flv", str(path)],
                   check=True, timeout=60)
    return path


@pytest.mark.parametrize("codec,copied", [
    (["-c:v", "libx264", "-preset", "ultrafast", "-g", "15"], True),
    (["-c:v", "flv1", "-g", "15"], False),
])
def test_ingest_command_writes_renditions(tmp_path, codec, copied):
    """The ingest's own ffmpeg command, fed an FLV as a publisher would: copied or
    transcoded, both renditions aligned and free of x264's SEI."""
    folder = tmp_path / "stream"
    folder.mkdir()
    encoding = builders.Encoding(preset="ultrafast", video_kbps=300, audio_kbps=64)
    argv = builders.ingest_command(folder, "stream.m3u8", copied, True, True, encoding,
                                   renditions=[Rendition("source"), Rendition("low", 90, 100, 32)])
    with flv_file(tmp_path, codec).open("rb") as source:
        subprocess.run(argv, stdin=source, check=True, timeout=60, capture_output=True)
    assert_aligned(folder)
    for path in folder.glob("*.m4s"):
        assert b"x264 - core" not in path.read_bytes(), path.name
    assert_clean(boxes.scrub_init((folder / "low-init.mp4").read_bytes()), "low-init.mp4")


def test_scrubbed_init_still_plays(sh_stream, tmp_path):
    raw = (sh_stream / "init.mp4").read_bytes()
    assert b"Lavf" in raw, "ffmpeg's HLS muxer leaves its version in the init segment"
    clean = boxes.scrub_init(raw)
    assert_clean(clean, "the scrubbed init")
    assert boxes.parse_init(clean).codecs == boxes.parse_init(raw).codecs
    joined = tmp_path / "joined.mp4"
    joined.write_bytes(clean + (sh_stream / "stream0.m4s").read_bytes())
    assert probe_video(joined)["width"] == 320
    assert boxes.scrub_init(b"not boxes at all") == b"not boxes at all"


# ------------------------------------------------------------------------- the server

def read_video(url: str, limit: int, timeout: float = 20) -> bytes:
    data = b""
    with requests.get(url, stream=True, timeout=timeout) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(16384):
            data += chunk
            if len(data) >= limit:
                break
    return data


def test_stream_mp4_serves_the_chosen_quality(two_renditions, tmp_path):
    _, server = two_renditions
    for quality, height in (("low", 90), ("", 180), ("nonsense", 180)):
        data = read_video(f"{server.url}/stream.mp4?quality={quality}", 60_000)
        path = tmp_path / f"{quality or 'top'}.mp4"
        path.write_bytes(data)
        assert probe_video(path)["height"] == height, quality
        assert_clean(data[:4096], f"/stream.mp4?quality={quality}'s init")
        tags = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                               "format_tags:stream_tags", "-of", "json", str(path)],
                              capture_output=True, text=True, check=True, timeout=30).stdout
        assert "encoder" not in tags and "Lav" not in tags, tags


def test_master_playlist_and_rendition_files_are_served(two_renditions):
    _, server = two_renditions
    token = "t" * 22  # well formed: only a checked token is put back into addresses
    alias = requests.get(server.url + f"/stream.m3u8?token={token}", allow_redirects=False,
                         timeout=5)
    assert (alias.status_code == 302
            and alias.headers["Location"] == f"/stream/master.m3u8?token={token}")
    master = requests.get(server.url + "/stream/master.m3u8", timeout=5)
    assert master.ok and "low.m3u8" in master.text and "stream.m3u8" in master.text
    low = requests.get(server.url + "/stream/low.m3u8", timeout=5)
    assert low.ok and 'URI="low-init.mp4"' in low.text
    init = requests.get(server.url + "/stream/low-init.mp4", timeout=5)
    assert init.ok and b"moov" in init.content
    assert_clean(init.content, "/stream/low-init.mp4")
    segment = re.findall(r"^(low-\d+\.m4s)$", low.text, re.M)[-1]
    assert requests.get(server.url + "/stream/" + segment, timeout=5).ok
    assert requests.get(server.url + "/stream/low-999999.m4s", timeout=5).status_code == 404


def test_players_get_the_token_on_every_rendition_and_the_chosen_quality(two_renditions):
    """VLC and mpv: the token reaches every URI the master and a rendition's playlist name,
    and the page's external-player links keep a chosen quality."""
    _, server = two_renditions
    token = "v" * 22
    master = requests.get(server.url + f"/stream/master.m3u8?token={token}", timeout=5).text
    uris = [line for line in master.splitlines() if line and not line.startswith("#")]
    assert sorted(uris) == [f"low.m3u8?token={token}", f"stream.m3u8?token={token}"]
    low = requests.get(server.url + f"/stream/low.m3u8?token={token}", timeout=5).text
    assert f'URI="low-init.mp4?token={token}"' in low
    segments = re.findall(r"^(low-\d+\.m4s)(.*)$", low, re.M)
    assert segments and all(rest == f"?token={token}" for _, rest in segments)
    chosen = requests.get(server.url + f"/stream.m3u8?token={token}&quality=low",
                          allow_redirects=False, timeout=5)
    assert chosen.headers["Location"] == f"/stream/low.m3u8?token={token}"
    page = requests.get(server.url + "/?quality=low", timeout=5).text
    links = re.findall(r'class="address" href="([^"]+)"', page)
    assert len(links) == 2 and all("&amp;quality=low" in link for link in links), links
    video = re.search(r'<video class="player" src="([^"]+)"', page).group(1)
    assert "&amp;quality=low&amp;load=" in video, video


def test_api_playlist_per_quality_lines_up(two_renditions):
    _, server = two_renditions
    top = requests.get(server.url + "/api/playlist", timeout=5).json()
    low = requests.get(server.url + "/api/playlist?quality=low", timeout=5).json()
    assert [q["name"] for q in top["qualities"]] == ["source", "low"]
    assert top["quality"] == "source" and low["quality"] == "low"
    assert low["init"] == "/stream/low-init.mp4" and low["codecs"].startswith("avc1.")
    common = {s["sequence"]: s["start"] for s in top["segments"]}
    shared = [s for s in low["segments"] if s["sequence"] in common and s["seen_at"]]
    assert shared
    for seg in shared:
        assert abs(seg["start"] - common[seg["sequence"]]) < 0.01


def test_page_offers_quality_links_carried_like_the_token(two_renditions):
    _, server = two_renditions
    page = requests.get(server.url + "/?quality=low", timeout=5).text
    token = re.search(r'data-token="([^"]+)"', page)[1]
    assert f'src="/stream.mp4?token={token}&amp;quality=low&amp;load=' in page
    assert f'href="/?token={token}&amp;quality=low" aria-current="true"' in page
    assert f'href="/?token={token}" data-quality=""' in page
    assert re.search(rf'href="/\?token={token}&amp;quality=low" data-keeps-quality>Reload the page',
                     page)
    plain = requests.get(server.url + "/?quality=<script>", timeout=5).text
    assert "<script>" not in plain.split("<body", 1)[1].split("player.js")[0]
    assert 'src="/stream.mp4?token=' in plain and "quality=&lt;" not in plain


def test_single_rendition_folder_has_no_quality_links(live_server):
    page = requests.get(live_server.url + "/", timeout=5).text
    assert 'class="qualities"' not in page
    alias = requests.get(live_server.url + "/stream.m3u8", allow_redirects=False, timeout=5)
    assert alias.headers["Location"] == "/stream/stream.m3u8"
    assert requests.get(live_server.url + "/stream/master.m3u8", timeout=5).status_code == 404


def test_watcher_reads_each_low_segment_once(tmp_path):
    """The low rendition is read like the top: one disk read per segment whatever the viewers."""
    from app.config import StreamConfig
    from app.stream.watcher import StreamState

    folder = tmp_path / "stream"
    stream = TestStream(folder, renditions=LOW_RENDITION, duration=4).start()
    stream.process.wait(30)
    state = StreamState(folder, StreamConfig(offline_after=3600))
    reads: list[str] = []
    original = Path.read_bytes

    def counting(self):
        reads.append(self.name)
        return original(self)

    Path.read_bytes = counting
    try:
        for _ in range(5):
            state.refresh()
            (folder / "low.m3u8").touch()  # a changed playlist, the same segments
    finally:
        Path.read_bytes = original
    snap = state.snapshot
    assert snap.view("low").quality == "low" and snap.view("low").segments
    segment_reads = [name for name in reads if name.endswith(".m4s")]
    assert len(segment_reads) == len(set(segment_reads)), segment_reads


# ------------------------------------------------------------------------- the config

def test_config_renditions_are_checked():
    default = from_dict({})
    assert [r.name for r in default.stream.renditions] == ["source", "low"]
    assert default.stream.renditions[1] == Rendition("low", 360, 400, 64)
    for bad, message in (
        ([], "at least one"),
        ([{"name": "source", "height": 720}], "first entry is the source"),
        ([{"name": "source"}, {"name": "Low!", "height": 360, "video_kbps": 400,
                               "audio_kbps": 64}], "lowercase letters"),
        ([{"name": "source"}, {"name": "low", "height": 361, "video_kbps": 400,
                               "audio_kbps": 64}], "even height"),
        ([{"name": "source"}, {"name": "master", "height": 360, "video_kbps": 400,
                               "audio_kbps": 64}], "taken by the playlist"),
        ([{"name": "source"}, {"name": "a", "height": 240, "video_kbps": 300, "audio_kbps": 64},
          {"name": "b", "height": 360, "video_kbps": 400, "audio_kbps": 64}], "high to low"),
        ([{"name": "source"}, {"name": "low", "hieght": 360}], "unknown key"),
    ):
        with pytest.raises(ConfigError, match=message):
            from_dict({"stream": {"renditions": bad}})


def test_play_loop_keeps_both_renditions_going_past_the_first_pass(tmp_path):
    """ffmpeg 5.1 ends output bitstream filters when a loop wraps: nothing may depend on one."""
    movie = tmp_path / "short.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15",
                    "-f", "lavfi", "-i", "sine", "-t", "2", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "15", "-c:a", "aac", "-shortest", str(movie)],
                   check=True, timeout=60)
    config = tmp_path / "config.toml"
    config.write_text(f'[stream]\ndir = "{tmp_path / "stream"}"\n' + LOW_CONFIG)
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "--config", str(config), "play",
                             str(movie), "--loop"], cwd=PROJECT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    folder = tmp_path / "stream"
    try:
        def past_two_passes() -> bool:
            try:
                return all(starts(folder, name)[-1][0] >= 4 for name in ("stream.m3u8",
                                                                          "low.m3u8"))
            except (FileNotFoundError, TypeError, IndexError, hls.PlaylistError):
                return False
        wait_for(past_two_passes, 25, 0.5, "segments from the third pass in both renditions")
    finally:
        os.killpg(proc.pid, 2)
        proc.wait(15)




@pytest.mark.slow
def test_js_player_switches_quality_by_hand_without_a_gap(two_renditions, browser):
    _, server = two_renditions
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        wait_for(lambda: page.evaluate(f"{PLAYER}.state") == "live"
                 and page.evaluate(f"{VIDEO}.currentTime") > 1, 30, 0.2, "the MSE player")
        assert page.evaluate(f"{PLAYER}.quality") == "source", "a fast link stays on top"
        assert page.evaluate(f"{VIDEO}.videoHeight") == 180
        page.evaluate(STALLS_JS)
        options = page.eval_on_selector_all("select.quality option", "os => os.map(o => o.value)")
        assert options == ["", "source", "low"]
        page.select_option("select.quality", "low")
        wait_for(lambda: page.evaluate(f"{PLAYER}.quality") == "low", 10, 0.2, "the switch")
        wait_for(lambda: page.evaluate(f"{VIDEO}.videoHeight") == 90, 15, 0.2, "low pictures")
        before = page.evaluate(f"{VIDEO}.currentTime")
        time.sleep(4)
        assert page.evaluate(f"{VIDEO}.currentTime") > before + 3, "it plays on"
        assert all(stall < 1.0 for stall in page.evaluate("window.__stalls"))
        assert page.evaluate(f"{PLAYER}.auto") == "0", "a choice by hand turns Auto off"
        assert "quality=low" in page.evaluate("location.search"), "the address keeps the choice"
        reload_link = "document.querySelector('.reload-row a').href"
        assert "quality=low" in page.evaluate(reload_link)
        page.select_option("select.quality", "")
        wait_for(lambda: page.evaluate(f"{PLAYER}.auto") == "1", 5, 0.2, "Auto again")
        assert "quality=" not in page.evaluate("location.search") + page.evaluate(reload_link)
        # Auto on a fast link: three segments with room to spare take it back up to the top
        wait_for(lambda: page.evaluate(f"{PLAYER}.quality") == "source", 20, 0.2,
                 "Auto to step up by measured throughput")
        wait_for(lambda: page.evaluate(f"{VIDEO}.videoHeight") == 180, 15, 0.2, "top pictures")
    finally:
        context.close()


@pytest.mark.slow
def test_a_choice_in_the_menu_outlives_the_quality_in_the_address(two_renditions, browser):
    """Opened with ?quality=low, the viewer picks the source quality: a reload plays that."""
    _, server = two_renditions
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url + "/?quality=low")
        wait_for(lambda: page.evaluate(f"{PLAYER}.quality") == "low"
                 and page.evaluate(f"{PLAYER}.state") == "live", 30, 0.2, "low from the address")
        page.select_option("select.quality", "source")
        wait_for(lambda: page.evaluate(f"{PLAYER}.quality") == "source", 10, 0.2, "the switch")
        page.reload()
        wait_for(lambda: page.evaluate(f"{PLAYER}.state") == "live", 30, 0.2, "after the reload")
        assert page.evaluate(f"{PLAYER}.quality") == "source"
    finally:
        context.close()
