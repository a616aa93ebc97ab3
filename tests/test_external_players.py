"""VLC and mpv (Debian's) play the addresses the page gives, joining a stream mid-way.

VLC refuses to run as root, so as root it runs as `nobody` in a scratch folder of its own,
in a mount namespace where the project, /root and /home are empty: it reaches the server over
HTTP only, and a test checks it can read neither the server's state nor the project.
"""
from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from chat_support import ChatViewer, chat_server
from support import PROJECT, wait_for

pytestmark = pytest.mark.slow

FPS = 15  # tests/support.py TestStream's frame rate


@pytest.fixture(scope="module")
def server(tmp_path_factory, live_stream):
    srv = chat_server(tmp_path_factory.mktemp("players-server"), live_stream.directory)
    srv.start()
    srv.wait_live()
    # Join mid-stream: well after the first segment (VLC used to play only from that one).
    wait_for(lambda: requests.get(srv.url + "/api/playlist", timeout=5).json()
             ["segments"][-1]["sequence"] >= 4, 30, 0.5, "a few segments")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def scratch():
    """A folder the unprivileged player can write (frames, its own config), outside pytest's
    root-only folders; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="players-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


HIDDEN = [p for p in (PROJECT, Path("/root"), Path("/home")) if p.is_dir()]


def as_player_user(argv: list[str], home: Path) -> list[str]:
    """VLC will not run as root: run it as `nobody` with an empty environment, the project
    and the home folders hidden under empty tmpfs mounts in a mount namespace of its own."""
    env = ["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", "LANG=C.UTF-8"]
    if os.geteuid() != 0:
        return env + argv
    for tool in ("runuser", "unshare"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} (util-linux) is needed to run VLC as an unprivileged user")
    hide = "".join(f"mount -t tmpfs -o size=1m,mode=0755 none '{p}' && " for p in HIDDEN)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            hide + 'exec runuser -u nobody -- "$@"', "sh", *env, *argv]


def addresses(server) -> tuple[ChatViewer, dict[str, str]]:
    """A new viewer and the addresses its page offers under "Watch in VLC or mpv"."""
    page = requests.get(server.url + "/", timeout=5).text
    section = re.search(r'<details class="external-players">(.*?)</details>', page, re.S)
    assert section, "the page has no 'Watch in VLC or mpv' section"
    assert "Watch in VLC or mpv" in section.group(1)
    found = [server.url + html.unescape(v)
             for v in re.findall(r'<a class="address" href="([^"]+)"', section.group(1))]
    token = re.search(r"/chat/form\?token=([\w-]+)", page).group(1)
    by_kind = {a.split("?")[0].rsplit("/", 1)[-1]: a for a in found}
    assert set(by_kind) == {"stream.m3u8", "stream.mp4"}, found
    for address in found:
        assert address.startswith(server.url + "/") and f"token={token}" in address
    return ChatViewer(server, token), by_kind


def state_of(server, viewer: ChatViewer) -> str | None:
    """'watching' / 'not-watching' for `viewer` in the viewer list another viewer sees."""
    tag = re.search(r'<span class="tag">#([\w-]+)</span>', viewer.form()).group(1)
    listing = requests.get(server.url + "/chat/users", timeout=5).text
    found = re.search(rf'<li class="([\w-]+)">(?:(?!</li>).)*#{re.escape(tag)}<', listing, re.S)
    return found.group(1) if found else None


def vlc(url: str, scratch: Path, seconds: int = 5) -> tuple[str, int]:
    """Play `url` in cvlc for `seconds`; its verbose log and the number of frames it decoded
    (written as YUV4MPEG2 by the yuv video output)."""
    if shutil.which("cvlc") is None:
        pytest.fail("cvlc is not installed: run .ci/setup --test (apt-get install vlc-bin "
                    "vlc-plugin-base)")
    frames = scratch / f"vlc-{time.monotonic_ns()}.y4m"
    argv = ["cvlc", "-vv", "--play-and-exit", f"--run-time={seconds}", "--aout=dummy",
            "--vout=yuv", f"--yuv-file={frames}", "--yuv-chroma=I420", "--no-video-title-show",
            url]
    done = subprocess.run(as_player_user(argv, scratch), check=False, capture_output=True,
                          text=True, timeout=seconds + 40, cwd=scratch, errors="replace")
    count = frames.read_bytes().count(b"FRAME") if frames.exists() else 0
    return done.stdout + done.stderr, count


def mpv(url: str, scratch: Path, frames: int = 3 * FPS) -> tuple[int, str, int]:
    """Decode `frames` frames of `url` in mpv, each written out as an image; (exit code, log,
    images written)."""
    if shutil.which("mpv") is None:
        pytest.fail("mpv is not installed: run .ci/setup --test (apt-get install mpv)")
    out = scratch / f"mpv-{time.monotonic_ns()}"
    out.mkdir()
    done = subprocess.run(
        ["mpv", "--no-config", "--really-quiet=no", f"--frames={frames}", "--ao=null",
         "--vo=image", "--vo-image-format=jpg", f"--vo-image-outdir={out}", url],
        check=False, capture_output=True, text=True, timeout=60, errors="replace")
    return done.returncode, done.stdout + done.stderr, len(list(out.iterdir()))


def test_vlc_plays_the_mp4_address_joining_mid_stream(server, scratch):
    viewer, found = addresses(server)
    log, frames = vlc(found["stream.mp4"], scratch)
    assert "Fragment sequence discontinuity" not in log, log[-3000:]
    assert "Received first picture" in log
    # Five seconds asked for: at least three seconds' worth of frames decoded.
    assert frames >= 3 * FPS, f"VLC decoded {frames} frames\n{log[-3000:]}"


def test_vlc_plays_the_playlist_address(server, scratch):
    viewer, found = addresses(server)
    log, frames = vlc(found["stream.m3u8"], scratch)
    assert frames >= 3 * FPS, f"VLC decoded {frames} frames\n{log[-3000:]}"


def test_vlc_user_cannot_read_the_servers_state_or_the_project(server, scratch):
    if os.geteuid() != 0:
        pytest.skip("VLC runs as this (unprivileged) user already")
    state = server.workdir / "state"
    assert state.is_dir()
    for target in (state, PROJECT / "config.toml", PROJECT / "app"):
        assert target.exists()
        peek = subprocess.run(as_player_user(["ls", str(target)], scratch), check=False,
                              capture_output=True, timeout=10)
        assert peek.returncode != 0, f"the player's user can read {target}"
    whoami = subprocess.run(as_player_user(["id", "-un"], scratch), check=False,
                            capture_output=True, text=True, timeout=10)
    assert whoami.stdout.strip() == "nobody"


@pytest.mark.parametrize("kind", ["stream.mp4", "stream.m3u8"])
def test_mpv_plays_and_counts_as_watching(server, scratch, kind):
    viewer, found = addresses(server)
    assert state_of(server, viewer) is None  # a page load alone lists no one (presence rule)
    code, log, images = mpv(found[kind], scratch)
    assert code == 0, log[-3000:]
    assert images == 3 * FPS, f"mpv decoded {images} frames\n{log[-3000:]}"
    assert state_of(server, viewer) == "watching", "the player's requests did not count"
