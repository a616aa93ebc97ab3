"""Edges: `livestream serve --origin URL` pulls another server's stream into its own folder.

Real parts: an origin `livestream serve` fed by ffmpeg's test stream, an edge `livestream
serve --origin` on another port, ffprobe on what an edge viewer receives, a real redis-server
for the chat an edge shares with its origin.
"""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from chat_support import ChatViewer, LiveFrame, chat_server
from redis_support import redis_server  # noqa: F401 (a fixture)
from support import Server, TestStream, free_port, wait_for

from app.sources.relay import Relay, RelaySettings, master_variants


def status(server: Server) -> str:
    return requests.get(server.url + "/api/status", timeout=3).json()["status"]


def generation(server: Server) -> int:
    """The edge's own watcher numbers broadcasts; a restart at the origin is a new one here."""
    return requests.get(server.url + "/api/playlist", timeout=3).json()["generation"]


def grab_mp4(url: str, path: Path, seconds: float = 4.0) -> int:
    """What a plain <video> viewer gets from /stream.mp4 for a few seconds."""
    deadline = time.monotonic() + seconds
    size = 0
    with requests.get(url + "/stream.mp4", stream=True, timeout=10) as response:
        assert response.status_code == 200, response.text
        with path.open("wb") as out:
            for chunk in response.iter_content(16384):
                out.write(chunk)
                size += len(chunk)
                if time.monotonic() > deadline:
                    break
    return size


def probe(path: Path) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of",
                           "json", str(path)], capture_output=True, text=True, check=False,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def relay_pair(tmp_path_factory):
    """An origin with its own stream (the tests end and restart it) and an edge that was
    started before the origin existed."""
    base = tmp_path_factory.mktemp("relay")
    stream = TestStream(base / "origin-stream")
    (base / "origin").mkdir()
    (base / "edge").mkdir()
    origin = Server(base / "origin", stream.directory)
    edge = Server(base / "edge", base / "edge-stream",
                  extra_config="[relay]\nretry_max = 2.0\n")
    edge.start("--origin", origin.url)
    yield stream, origin, edge
    edge.stop()
    origin.stop()
    stream.stop()


def test_edge_waits_for_a_missing_origin_then_follows_it(relay_pair):
    stream, origin, edge = relay_pair
    time.sleep(1.5)
    assert edge.process.poll() is None, edge.log()
    assert status(edge) == "offline"
    assert "cannot connect" in edge.log() and "retrying" in edge.log()
    origin.start()
    stream.start()
    stream.wait_segments(2)
    wait_for(lambda: status(edge) == "live", 30, what="the edge to go live")
    assert "answers again" in edge.log()


def test_edge_viewer_plays_the_origin_stream(relay_pair, tmp_path):
    _, origin, edge = relay_pair
    wait_for(lambda: status(edge) == "live", 30, what="the edge live")
    clip = tmp_path / "edge.mp4"
    assert grab_mp4(edge.url, clip) > 20_000
    info = probe(clip)
    kinds = {s["codec_type"]: s for s in info["streams"]}
    assert kinds["video"]["codec_name"] == "h264"
    assert (kinds["video"]["width"], kinds["video"]["height"]) == (320, 180)
    assert float(info["format"]["duration"]) >= 1.0
    # the edge serves the same segments, byte for byte, as the origin
    playlist = requests.get(edge.url + "/stream/stream.m3u8", timeout=3).text
    newest = [line for line in playlist.splitlines() if line.endswith(".m4s")][-3]
    mine = requests.get(edge.url + "/stream/" + newest, timeout=3)
    theirs = requests.get(origin.url + "/stream/" + newest, timeout=3)
    assert mine.status_code == theirs.status_code == 200
    assert mine.content == theirs.content


def test_end_and_restart_pass_through(relay_pair, tmp_path):
    stream, _, edge = relay_pair
    wait_for(lambda: status(edge) == "live", 30, what="the edge live")
    before = generation(edge)
    stream.stop()  # SIGINT: ffmpeg ends the playlist with ENDLIST
    wait_for(lambda: status(edge) == "ended", 20, what="the edge to show the end")
    assert "#EXT-X-ENDLIST" in requests.get(edge.url + "/stream/stream.m3u8", timeout=3).text
    stream.start()  # a new broadcast: fresh init, numbering from 0 again
    stream.wait_segments(2)
    wait_for(lambda: status(edge) == "live" and generation(edge) > before, 30,
             what="the edge to follow the restart")
    clip = tmp_path / "after.mp4"
    assert grab_mp4(edge.url, clip, 3.0) > 10_000
    assert probe(clip)["streams"][0]["codec_name"] in ("h264", "aac")
    assert "restarted" in edge.log() or "ended" in edge.log()


def test_broken_origin_takes_the_edge_offline_not_down(relay_pair):
    stream, origin, edge = relay_pair
    wait_for(lambda: status(edge) == "live", 30, what="the edge live")
    origin.stop()
    stream.stop()
    wait_for(lambda: status(edge) == "offline", 30, what="the edge to show offline")
    assert edge.process.poll() is None
    assert requests.get(edge.url + "/", timeout=3).status_code == 200
    assert requests.get(edge.url + "/stream.mp4", timeout=3).status_code == 503


# ---------------------------------------------------------------- a master playlist

def test_master_playlist_variants_are_followed(live_stream, tmp_path):
    """An origin with renditions: the edge copies every variant and the master playlist."""
    served = tmp_path / "origin" / "stream"
    served.mkdir(parents=True)
    live_stream.wait_segments(3)
    text = (live_stream.directory / "stream.m3u8").read_text()
    names = [line for line in text.splitlines() if line.endswith(".m4s")][-3:]
    for name in [*names, "init.mp4"]:
        shutil.copy(live_stream.directory / name, served / name)
    media = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n" \
            '#EXT-X-MAP:URI="init.mp4"\n' + "".join(f"#EXTINF:1.0,\n{n}\n" for n in names)
    (served / "low.m3u8").write_text(media)
    (served / "high.m3u8").write_text(media + "#EXT-X-ENDLIST\n")
    master = ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=320x180\nlow.m3u8\n"
              "#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360\nhigh.m3u8\n")
    (served / "master.m3u8").write_text(master)
    assert master_variants(master) == ["low.m3u8", "high.m3u8"]

    handler = functools.partial(Quiet, directory=str(tmp_path / "origin"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    relay = Relay(RelaySettings(f"http://127.0.0.1:{httpd.server_port}/stream/master.m3u8"),
                  edge_dir)
    try:
        relay.poll()
    finally:
        httpd.shutdown()
    assert (edge_dir / "master.m3u8").read_text() == master
    assert (edge_dir / "low.m3u8").read_text() == media
    assert (edge_dir / "high.m3u8").read_text().endswith("#EXT-X-ENDLIST\n")
    for name in [*names, "init.mp4"]:
        assert (edge_dir / name).read_bytes() == (served / name).read_bytes()
    assert not list(edge_dir.glob(".relay.*"))  # no temp file left behind


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_an_edge_on_the_origins_redis_shares_its_chat(live_stream, redis_server, tmp_path):  # noqa: F811
    store = f'[store]\nredis_url = "{redis_server.new_database()}"\n'
    (tmp_path / "origin").mkdir()
    (tmp_path / "edge").mkdir()
    origin = chat_server(tmp_path / "origin", live_stream.directory, store)
    edge = chat_server(tmp_path / "edge", tmp_path / "edge" / "stream", store)
    # the tests read captcha answers from one file, whichever process drew the captcha
    edge.config_path.write_text(edge.config_path.read_text().replace(
        str(edge.answers_file), str(origin.answers_file)))
    edge.answers_file = origin.answers_file
    origin.start()
    edge.start("--origin", origin.url)
    try:
        wait_for(lambda: status(edge) == "live", 30, what="the edge live")
        at_edge, at_origin = ChatViewer(edge), ChatViewer(origin)
        frame = LiveFrame(at_edge)
        try:
            sent = time.monotonic()
            assert at_origin.post("from the origin", name="O").status_code == 303
            late = frame.arrival("from the origin", timeout=5) - sent
        finally:
            frame.close()
        assert late < 1.0, f"the edge's open frame got it {late:.2f} s after the post"
        assert at_edge.post("from the edge", name="E").status_code == 303
        wait_for(lambda: "from the edge" in at_origin.messages(), 5, what="the reply at the origin")
    finally:
        edge.stop()
        origin.stop()
