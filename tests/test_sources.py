"""`livestream play`: real ffmpeg turning small generated files into HLS segments."""
from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import cli, livestream, write_config

from app.sources import ffmpeg, play, probe
from app.stream import folder

ROOT = Path(__file__).resolve().parents[1]
GREEN = (0, 255, 0)


def ass_box(start: str, end: str) -> str:
    """An ASS subtitle that paints a solid green box over the top-left quarter."""
    return f"""[Script Info]
ScriptType: v4.00+
PlayResX: 320
PlayResY: 180

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, \
Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, \
Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Box,DejaVu Sans,20,&H0000FF00,&H0000FF00,&H0000FF00,&H00000000,0,0,0,0,100,100,0,0,\
1,0,0,7,0,0,0,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,{start},{end},Box,,0,0,0,,{{\\pos(0,0)\\p1}}m 0 0 l 160 0 160 90 0 90{{\\p0}}
"""


def run_ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True,
                   timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    files = {
        "copy": folder / "h264_aac.mp4",
        "subbed": folder / "with_subs.mkv",
        "audio_only": folder / "audio_only.m4a",
        "external": folder / "it's [a], b;c: box.ass",
        "wrong_type": folder / "notes.txt",
    }
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi",
           "-i", "sine=frequency=440", "-t", "3", "-c:v", "libx264", "-g", "25",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(files["copy"]))
    embedded = folder / "embedded.ass"
    embedded.write_text(ass_box("0:00:00.00", "0:00:03.00"))
    run_ffmpeg("-f", "lavfi", "-i", "color=black:size=320x180:rate=25", "-f", "lavfi",
           "-i", "sine=frequency=440", "-i", str(embedded), "-t", "3", "-map", "0", "-map", "1",
           "-map", "2", "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-c:s", "ass", str(files["subbed"]))
    run_ffmpeg("-f", "lavfi", "-i", "sine", "-t", "1", "-c:a", "aac", str(files["audio_only"]))
    # Shown only from 1 s: with --start 1 it must be in the very first frame.
    files["external"].write_text(ass_box("0:00:01.00", "0:00:03.00"))
    files["wrong_type"].write_text("not subtitles")
    return files


def played(folder: Path) -> Path:
    """init + every listed segment, joined into one fragmented MP4 ffmpeg can read."""
    stream = folder / "stream"
    lines = (stream / "stream.m3u8").read_text().split()
    joined = folder / "joined.mp4"
    names = ["init.mp4"] + [line for line in lines if line.endswith(".m4s")]
    joined.write_bytes(b"".join((stream / name).read_bytes() for name in names))
    return joined


def pixel(video: Path, x: int, y: int, at: float = 0.0) -> tuple[int, int, int]:
    raw = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-ss", str(at), "-i", str(video),
         "-frames:v", "1", "-vf", f"crop=2:2:{x}:{y}", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-"], capture_output=True, check=True, timeout=30).stdout
    return raw[0], raw[1], raw[2]


def close_to(color: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 40 for a, b in zip(color, expected, strict=True))


def video_hash(path: Path, strip_sei: bool = False) -> str:
    if strip_sei:  # the same packets without their SEI units, as an MP4 like ours
        stripped = path.with_name(path.stem + "-nosei.mp4")
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(path),
                        "-map", "0:v", "-c", "copy", "-bsf:v", "filter_units=remove_types=6",
                        str(stripped)], check=True, timeout=30)
        path = stripped
    return subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path),
                           "-map", "0:v", "-c", "copy", "-f", "hash", "-hash", "md5", "-"],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def test_h264_aac_input_is_copied_not_reencoded(media, tmp_path):
    config = write_config(tmp_path)
    dry = livestream(config, "play", str(media["copy"]), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "-c:v copy" in dry.stdout and "-c:a copy" in dry.stdout
    top = dry.stdout.split("stream.m3u8")[0]  # the top rendition's output; then the lower ones
    assert "libx264" not in top

    started = time.monotonic()
    done = livestream(config, "play", str(media["copy"]))
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert 2.5 < elapsed < 15, "real time (-re): a 3 s file takes about 3 s"
    assert "(copied)" in done.stderr
    # Same compressed video packets in and out: nothing was decoded or encoded (only the
    # encoder's SEI, its version and options, is taken out).
    assert video_hash(played(tmp_path)) == video_hash(media["copy"], strip_sei=True)
    playlist = (tmp_path / "stream" / "stream.m3u8").read_text()
    assert playlist.rstrip().endswith("#EXT-X-ENDLIST")
    assert '#EXT-X-MAP:URI="init.mp4"' in playlist
    # The progress line: position / duration, a bar, the percentage and the speed.
    progress = re.compile(r"00:00:0\d / 00:00:03 \[[#-]{30}\] +\d+\.\d% +\d\.\d\dx")
    assert any(progress.fullmatch(line) for line in done.stderr.splitlines()), done.stderr


def test_embedded_subtitle_is_burned_into_the_picture(media, tmp_path):
    done = livestream(write_config(tmp_path), "play", str(media["subbed"]), "--subs", "0")
    assert done.returncode == 0, done.stderr
    assert "(encoded)" in done.stderr
    video = played(tmp_path)
    assert close_to(pixel(video, 40, 40), GREEN), "the subtitle's box is in the picture"
    assert close_to(pixel(video, 250, 150), (0, 0, 0)), "outside the box the film is black"
    assert (tmp_path / "stream" / "stream.m3u8").read_text().rstrip().endswith("ENDLIST")


def test_external_subtitle_file_with_awkward_name_and_start_offset(media, tmp_path):
    """The path has ' [ ] , ; : in it; --start 1 must keep the subtitle timing in step."""
    done = livestream(write_config(tmp_path), "play", str(media["subbed"]), "--start",
                      "00:00:01", "--subs", str(media["external"]), "--size", "320x180")
    assert done.returncode == 0, done.stderr
    video = played(tmp_path)
    assert close_to(pixel(video, 40, 40), GREEN), "shown from 1 s, so in the first frame"
    assert close_to(pixel(video, 250, 150), (0, 0, 0))


@pytest.mark.parametrize(("args", "message"), [
    (["--subs", "3"], "has 1 subtitle track(s), numbered from 0: 0 ass"),
    (["--audio", "2"], "has 1 audio track(s)"),
    (["--subs", "missing.srt"], "no such subtitle file"),
    (["--size", "321x180"], "even width and height"),
    (["--start", "1:xx"], "is not a time"),
    (["--start", "00:05:00"], "past the end"),
    (["--hwaccel", "warp9"], "unknown; use one of"),
    (["--to", "rtmp://host-only"], "expected rtmp://HOST[:PORT]/live/KEY"),
])
def test_bad_options_fail_with_a_clear_message(media, tmp_path, args, message):
    done = livestream(write_config(tmp_path), "play", str(media["subbed"]), *args, "--dry-run")
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "stream").exists() or not list((tmp_path / "stream").iterdir())


def test_bad_inputs_fail_with_a_clear_message(media, tmp_path):
    config = write_config(tmp_path)
    missing = livestream(config, "play", str(tmp_path / "nope.mkv"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    audio = livestream(config, "play", str(media["audio_only"]))
    assert audio.returncode == 2 and "has no video track" in audio.stderr
    text = livestream(config, "play", str(media["subbed"]), "--subs", str(media["wrong_type"]))
    assert text.returncode == 2 and "use a subtitle file ending in .srt" in text.stderr
    garbage = livestream(config, "play", str(media["wrong_type"]))
    assert garbage.returncode == 2 and "cannot read it as a media file" in garbage.stderr


def test_ctrl_c_ends_the_playlist(media, tmp_path):
    proc = subprocess.Popen(
        cli(write_config(tmp_path), "play", str(media["copy"]), "--loop"), cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    playlist = tmp_path / "stream" / "stream.m3u8"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and ".m4s" not in _read(playlist):
            time.sleep(0.2)
        assert ".m4s" in _read(playlist), "a segment was written"
        assert "ENDLIST" not in _read(playlist)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert _read(playlist).rstrip().endswith("#EXT-X-ENDLIST")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_ensure_endlist_appends_once_for_a_killed_writer(tmp_path):
    playlist = tmp_path / "stream.m3u8"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nstream0.m4s\n")
    assert folder.ensure_endlist(playlist) is True
    assert folder.ensure_endlist(playlist) is False
    assert playlist.read_text().endswith("stream0.m4s\n#EXT-X-ENDLIST\n")
    assert folder.ensure_endlist(tmp_path / "absent.m3u8") is False


def test_progress_blocks_are_parsed():
    text = ("frame=10\nfps=25.0\nout_time_us=1500000\nspeed=1.01x\nprogress=continue\n"
            "frame=20\nfps=N/A\nout_time_us=N/A\nspeed=N/A\nprogress=end\n")
    first, last = list(play.parse_progress(text.splitlines()))
    assert (first.position, first.speed, first.fps, first.ended) == (1.5, 1.01, 25.0, False)
    assert (last.position, last.speed, last.fps, last.ended) == (0.0, None, None, True)


def test_progress_line_format():
    line = play.format_progress(3725, 7450, 0.98, width=10)
    assert line == "01:02:05 / 02:04:10 [#####-----]  50.0%   0.98x"
    assert play.format_progress(61, None, None) == "00:01:01 (live)    ---x"


def test_slow_encoding_is_flagged_once_per_slow_period():
    now = [0.0]
    watch = play.SpeedWatch(threshold=0.95, window=10, clock=lambda: now[0])
    position = 0.0
    warnings = []
    for step in range(60):  # 30 s at 0.5x, then 30 s at real time
        now[0] += 1
        position += 0.5 if step < 30 else 1.0
        speed = watch.update(position)
        if speed is not None and watch.should_warn():
            warnings.append((now[0], round(speed, 2)))
    assert len(warnings) == 1
    assert warnings[0][0] <= 11 and warnings[0][1] == 0.5
    assert watch.slow_since is None, "back to real time clears the slow period"


def test_filter_values_are_escaped_for_both_parsing_levels():
    assert ffmpeg.escape_filter_value("a:b") == "a\\\\:b"
    assert ffmpeg.escape_filter_value("it's [x],y;z") == "it\\\\\\'s \\[x\\]\\,y\\;z"


def test_hardware_encoder_and_rtmp_output(media, tmp_path):
    info = probe.probe(str(media["copy"]))
    options = ffmpeg.PlayOptions(str(media["copy"]), hwaccel="vaapi",
                                  to="rtmp://example.test/live/SECRETKEY")
    plan = ffmpeg.plan_play(info, options, tmp_path)
    argv = plan.argv
    assert argv[argv.index("-c:v") + 1] == "h264_vaapi"
    assert "-vaapi_device" in argv and argv[argv.index("-vf") + 1].endswith("hwupload")
    assert argv[-3:] == ["-f", "flv", "rtmp://example.test/live/SECRETKEY"]
    assert not plan.copy_video and plan.copy_audio
    assert ffmpeg.redact_url(options.to) == "rtmp://example.test/live/***"
