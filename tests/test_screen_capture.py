"""stream.sh capturing a real X server (Xvfb) and a real PulseAudio null sink: the whole
screen scaled to VIDEO_SIZE (not its top-left corner), a chosen region, the monitor source
("what you hear") listed and taken by default, and a clear word on Wayland."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import PROJECT, free_port, wait_for

pytestmark = pytest.mark.skipif(
    not all(shutil.which(p) for p in ("Xvfb", "pulseaudio", "pactl", "xrandr", "mpv")),
    reason="needs xvfb, pulseaudio, pulseaudio-utils, x11-xserver-utils and mpv "
           "(.ci/setup --test)")

# the screen: four coloured quarters, so each corner of a capture tells where it came from
QUARTERS = {"top left": (255, 0, 0), "top right": (0, 255, 0), "bottom left": (0, 0, 255),
            "bottom right": (255, 255, 0)}


@pytest.fixture(scope="module")
def desktop(tmp_path_factory):
    """A 1920x1080 X display showing the quarters, and a PulseAudio with a null sink."""
    home = tmp_path_factory.mktemp("desktop")
    runtime = home / "run"
    runtime.mkdir(mode=0o700)
    display = f":{free_port() % 400 + 100}"
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(runtime), DISPLAY=display)
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("XDG_SESSION_TYPE", None)
    picture = home / "quarters.png"
    colours = [f"color=0x{r:02x}{g:02x}{b:02x}:s=960x540" for r, g, b in QUARTERS.values()]
    subprocess.run(["ffmpeg", "-v", "error", *sum((["-f", "lavfi", "-i", c] for c in colours), []),
                    "-filter_complex", "[0][1]hstack[t];[2][3]hstack[b];[t][b]vstack",
                    "-frames:v", "1", str(picture)], check=True, timeout=30)
    started = []
    try:
        started.append(subprocess.Popen(["Xvfb", display, "-screen", "0", "1920x1080x24",
                                         "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(lambda: subprocess.run(["xrandr", "--listmonitors"], env=env, check=False,
                                        capture_output=True).returncode == 0, 15,
                 what="Xvfb")
        started.append(subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n",
             "--load=module-null-sink sink_name=evening",
             "--load=module-native-protocol-unix"], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(lambda: subprocess.run(["pactl", "info"], env=env, check=False,
                                        capture_output=True).returncode == 0, 15,
                 what="pulseaudio")
        started.append(subprocess.Popen(
            ["mpv", "--vo=x11", "--fs", "--geometry=1920x1080+0+0", "--no-audio",
             "--image-display-duration=inf", "--really-quiet", "--no-osc", "--osd-level=0",
             str(picture)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True))
        time.sleep(1.5)  # mpv maps its window
        assert started[-1].poll() is None, started[-1].communicate()[1]
        yield env
    finally:
        for process in reversed(started):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)


def capture(env: dict, folder: Path, **settings: str) -> subprocess.CompletedProcess:
    environ = dict(env, STREAM_DIR=str(folder), VIDEO_SIZE="640x360", RENDITIONS="",
                   DURATION="4", SEGMENT_SECONDS="1", PRESET="ultrafast", **settings)
    return subprocess.run([str(PROJECT / "stream.sh")], env=environ, capture_output=True,
                          text=True, timeout=60, check=False, cwd=PROJECT)


def corners(folder: Path) -> dict[str, tuple[int, int, int]]:
    names = ["init.mp4"] + [n for n in (folder / "stream.m3u8").read_text().split()
                            if n.endswith(".m4s")]
    joined = folder / "joined.mp4"
    joined.write_bytes(b"".join((folder / n).read_bytes() for n in names))
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(joined), "-vf",
                          "select=gte(n\\,10)", "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True, timeout=30).stdout
    assert len(raw) == 640 * 360 * 3, "the capture is scaled to VIDEO_SIZE"

    def at(x: int, y: int) -> tuple[int, int, int]:
        offset = (y * 640 + x) * 3
        return raw[offset], raw[offset + 1], raw[offset + 2]

    return {"top left": at(20, 20), "top right": at(620, 20), "bottom left": at(20, 340),
            "bottom right": at(620, 340)}


def close_to(seen: tuple[int, int, int], wanted: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 60 for a, b in zip(seen, wanted, strict=True))


def test_the_whole_screen_is_captured_scaled_with_what_you_hear(desktop, tmp_path):
    done = capture(desktop, tmp_path / "whole")
    assert done.returncode == 0, done.stderr
    assert "sound from evening.monitor" in done.stderr  # the output's monitor, not a mic
    seen = corners(tmp_path / "whole")
    for corner, colour in QUARTERS.items():
        assert close_to(seen[corner], colour), f"{corner}: {seen[corner]}, not {colour}"


def test_a_chosen_region_is_captured(desktop, tmp_path):
    done = capture(desktop, tmp_path / "region", CAPTURE_REGION="960x540+960+540")
    assert done.returncode == 0, done.stderr
    seen = corners(tmp_path / "region")
    for corner in QUARTERS:
        assert close_to(seen[corner], QUARTERS["bottom right"]), (corner, seen[corner])


def test_list_shows_screens_and_marks_what_you_hear(desktop):
    listed = subprocess.run([str(PROJECT / "stream.sh"), "--list"],
                            env=dict(desktop, DISPLAY_INPUT=desktop["DISPLAY"]),
                            capture_output=True, text=True, timeout=30, check=True).stdout
    assert "CAPTURE_REGION=1920x1080+0+0" in listed
    assert "evening.monitor   <- what you hear" in listed


def test_a_wayland_desktop_gets_the_working_alternative(desktop, tmp_path):
    done = capture(dict(desktop, WAYLAND_DISPLAY="wayland-0"), tmp_path / "wayland")
    assert done.returncode == 2
    assert "Wayland" in done.stderr and "livestream ingest" in done.stderr
    assert not (tmp_path / "wayland" / "stream.m3u8").exists()
