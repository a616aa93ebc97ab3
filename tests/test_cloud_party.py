"""Movie night on a rented server, whole (issue 23), on one machine.

A fake DigitalOcean creates a "droplet": the user-data's receiver takes the upload, then the
droplet serves from its own folders and runs a real sshd (Debian's openssh-server) on loopback
with the host key `cloud up` put in the user-data. `livestream cloud play a.mkv -- b.mkv` plays
the party here and the droplet follows it through one SSH session. A no-JS viewer (one
/stream.mp4 response) and an MSE viewer (Chromium) watch the droplet while the host pauses
for 30 s, resumes, seeks back 30 s and skips, from the CLI here and from the droplet's
/broadcaster: one open response, one init, media time only going forward, no restart.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from fake_droplet import rented
from support import PROJECT, livestream, wait_for
from test_party import Viewer, film, packet_times
from test_party_player import notice
from test_player import open_viewer, state, stream_time_at, wait_playing  # noqa: F401

from app.sources.party import control

pytestmark = pytest.mark.slow

TOKEN = "dop_v1_" + "c" * 64


def field(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]+)"', html).group(1)


class DropletPage:
    """The droplet's /broadcaster, logged in with the password `cloud up` printed."""

    def __init__(self, url: str, password: str):
        self.url, self.auth = url.rstrip("/"), ("broadcaster", password)

    def party(self, action: str, target: str = "") -> float:
        page = requests.get(self.url + "/broadcaster", auth=self.auth, timeout=10)
        assert page.status_code == 200, page.status_code
        pressed = time.monotonic()
        answer = requests.post(self.url + "/broadcaster/party", auth=self.auth, timeout=20,
                               allow_redirects=False,
                               data={"action": action, "target": target,
                                     "csrf": field(page.text, "csrf")})
        assert answer.status_code == 303 and "error" not in answer.headers["Location"], \
            (answer.status_code, answer.headers.get("Location"))
        return pressed


def info(url: str) -> str:
    return requests.get(url + "/info?gen=1", timeout=5).text


def nojs_time(page) -> float:
    return page.eval_on_selector("video", "v => v.currentTime")


@pytest.fixture
def cloud(tmp_path):
    with rented(tmp_path, TOKEN) as rental:
        yield rental


PUSH = """import socket, sys
url = sys.argv[1]
port = int(url.split("/")[2].split(":")[1])
with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
    sock.sendall(url.encode())
    sock.recv(10)
print("pushed to", url)
"""


def test_a_push_command_goes_through_ssh_to_the_loopback_ingest(cloud, tmp_path):
    """push_command (e.g. OBS's own ffmpeg line) reaches the droplet's ingest, which listens
    on loopback only, through `ssh -L`: here a listener stands in for that ingest."""
    ingest = socket.socket()
    ingest.bind(("127.0.0.1", 0))
    ingest.listen(1)
    ingest.settimeout(60)
    ingest_port = ingest.getsockname()[1]
    push = tmp_path / "push.py"
    push.write_text(PUSH)
    config = cloud.config(ingest_port=ingest_port,
                   push_command=f"{sys.executable} {push} {{url}}")
    evening = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "--config", str(config), "cloud", "play",
         str(film(tmp_path / "a.mkv", 1))], cwd=PROJECT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
        env=dict(os.environ, DIGITALOCEAN_TOKEN=TOKEN))
    try:
        conn, peer = ingest.accept()
        with conn:
            received = conn.recv(4096).decode()
            conn.sendall(b"ok")
        out, _ = evening.communicate(timeout=60)
    finally:
        if evening.poll() is None:
            evening.kill()
        ingest.close()
    assert evening.returncode == 0, out
    url = re.search(r"pushed to (\S+)", out).group(1)
    key = re.search(r"stream key (\S+)\)", out).group(1)
    assert received == url and url.endswith(f"/live/{key}")
    # the push went to a forward on this machine, and ssh (sshd) carried it to the ingest
    assert url.startswith("rtmp://127.0.0.1:") and f":{ingest_port}/" not in url
    assert "the stream goes through SSH" in out
    assert cloud.fake.live_ids() == []


def test_the_whole_evening_through_ssh(cloud, tmp_path, browser, open_viewer):  # noqa: F811
    config = cloud.config()
    fake = cloud.fake
    first, second = film(tmp_path / "a.mkv", 90), film(tmp_path / "b.mkv", 25)
    env = dict(os.environ, DIGITALOCEAN_TOKEN=TOKEN)
    out = (tmp_path / "cloud.out").open("w+")
    evening = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "--config", str(config), "cloud", "play", str(first),
         "--preset", "ultrafast", "--bitrate", "300", "--", str(second)],
        cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = cloud.url
    figures: dict[str, float] = {}
    try:
        def printed() -> str:
            return (tmp_path / "cloud.out").read_text()

        wait_for(lambda: "password" in printed() or evening.poll() is not None, 60, 0.2,
                 "the droplet to be up")
        password = re.search(r"password (\S+) \(shown only now", printed()).group(1)
        body = fake.created_bodies[0]
        assert "ingest --host 127.0.0.1" in body["user_data"], "the ingest must not listen publicly"
        assert "-L 127.0.0.1:1935:127.0.0.1:1935" in printed(), printed()
        wait_for(lambda: requests.get(url + "/api/status", timeout=5).json()["online"], 60,
                 0.25, "the party live on the droplet")
        key = re.search(r"stream key (\S+)\)", printed()).group(1)
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):  # in no process's argv
            try:
                assert key.encode() not in cmdline.read_bytes(), cmdline
            except OSError:
                pass
        nojs = Viewer(url + "/stream.mp4", tmp_path / "nojs.mp4")
        nojs.start()
        mse = open_viewer(url + "/")
        wait_playing(mse)
        page = browser.new_context(java_script_enabled=False).new_page()
        page.goto(url + "/", wait_until="domcontentloaded")
        wait_for(lambda: nojs_time(page) > 1, 20, 0.2, "the no-JS video to play")
        droplet = DropletPage(url, password)
        host_state = cloud.host_state
        time.sleep(3)

        pressed = time.monotonic()
        done = livestream(config, "party", "pause")  # on the host's machine
        assert done.returncode == 0, done.stderr
        wait_for(lambda: "Paused by the host" in info(url), 10, 0.1, "the paused notice")
        figures["pause_to_droplet_notice"] = time.monotonic() - pressed
        wait_for(lambda: "Paused by the host" in notice(mse), 10, 0.1, "the MSE notice")
        quiet_from = time.monotonic() + 2.0
        time.sleep(30)
        assert nojs.is_alive() and nojs.error is None, "the no-JS response ended while paused"
        assert nojs.bytes_after(quiet_from) == 0, "video kept coming while paused"

        pressed = droplet.party("resume")  # from the droplet's /broadcaster
        figures["resume_to_droplet_viewer"] = nojs.new_video_after(pressed)
        assert control.send(host_state, "status")["status"]["paused"] is False
        time.sleep(8)

        pressed = time.monotonic()
        done = livestream(config, "party", "seek", "-30")
        assert done.returncode == 0, done.stderr
        figures["seek_cli_to_droplet_viewer"] = nojs.new_video_after(pressed)
        time.sleep(6)
        pressed = droplet.party("seek", "-30")
        figures["seek_web_to_droplet_viewer"] = nojs.new_video_after(pressed)
        time.sleep(6)
        gaps = []
        for _ in range(8):  # where each viewer is, on one instant (test_party_player.apart)
            sample, plain = state(mse), nojs_time(page)
            gaps.append(stream_time_at(sample, time.time()) - plain)
            time.sleep(0.5)
        figures["mse_ahead_of_nojs_after_seek"] = sorted(gaps)[len(gaps) // 2]

        pressed = droplet.party("pause")
        wait_for(lambda: "Paused by the host" in info(url), 10, 0.1, "the paused notice")
        time.sleep(3)
        done = livestream(config, "party", "resume")
        assert done.returncode == 0, done.stderr
        time.sleep(4)
        pressed = droplet.party("next")
        figures["next_web_to_droplet_viewer"] = nojs.new_video_after(pressed)
        wait_for(lambda: "b (2/2)" in info(url), 10, 0.2, "the second title")
        time.sleep(4)
        status = requests.get(url + "/api/status", timeout=5).json()
        assert status["generation"] == 1, "the droplet's stream restarted"
        assert state(mse)["data"].get("mode") == "mse"
        done = livestream(config, "party", "next")  # past the last item: the party ends
        assert done.returncode == 0, done.stderr

        assert evening.wait(90) == 0, printed()
        nojs.join(30)
        assert not nojs.is_alive() and nojs.error is None, nojs.error
        assert fake.live_ids() == [], "the droplet was not destroyed"
    finally:
        if evening.poll() is None:
            evening.terminate()
            evening.wait(30)
        out.close()
    print("\nremote party figures:", json.dumps({k: round(v, 2) for k, v in figures.items()}))
    data = (tmp_path / "nojs.mp4").read_bytes()
    assert data.count(b"ftyp") == 1, "more than one init segment reached the viewer"
    for times in packet_times(tmp_path / "nojs.mp4").values():
        assert all(b >= a for a, b in zip(times, times[1:], strict=False)), "time went back"
