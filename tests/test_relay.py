"""Edges: `livestream serve --origin URL` pulls another server's stream into its own folder.

Real parts: an origin `livestream serve` fed by ffmpeg's test stream (or a watch party's
`livestream play`), an edge `livestream serve --origin` on another port, ffprobe on what an
edge viewer receives, a real redis-server for the chat an edge shares with its origin.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from chat_support import ChatViewer, LiveFrame, chat_server
from redis_support import redis_server  # noqa: F401 (a fixture)
from support import PROJECT, Server, TestStream, cli, free_port, pushed_frames, wait_for
from test_party import Viewer, film, info_frame

from app.sources.party import control
from app.sources.relay import Relay, RelayError, RelaySettings, master_variants
from app.stream import folder
from app.stream import playlist as hls


def status(server: Server) -> str:
    return requests.get(server.url + "/api/status", timeout=3).json()["status"]


def generation(server: Server) -> int:
    """The edge's own watcher numbers broadcasts; a restart at the origin is a new one here."""
    return requests.get(server.url + "/api/playlist", timeout=3).json()["generation"]


def grab_mp4(url: str, path: Path, seconds: float = 4.0, query: str = "") -> int:
    """What a plain <video> viewer gets from /stream.mp4 for a few seconds."""
    deadline = time.monotonic() + seconds
    size = 0
    with requests.get(url + "/stream.mp4" + query, stream=True, timeout=10) as response:
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
    # an origin with one rendition has no master playlist, nor has its edge
    assert requests.get(edge.url + "/stream/master.m3u8", timeout=3).status_code == 404


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

def copy_segments(live_stream, served: Path) -> list[str]:
    """The live stream's init and newest three segments, copied where an origin serves them."""
    live_stream.wait_segments(3)
    text = (live_stream.directory / "stream.m3u8").read_text()
    names = [line for line in text.splitlines() if line.endswith(".m4s")][-3:]
    for name in [*names, "init.mp4"]:
        shutil.copy(live_stream.directory / name, served / name)
    return names


def media_playlist(names: list[str], sequence: int = 0) -> str:
    return ("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n"
            f"#EXT-X-MEDIA-SEQUENCE:{sequence}\n" '#EXT-X-MAP:URI="init.mp4"\n'
            + "".join(f"#EXTINF:1.0,\n{n}\n" for n in names))


class Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves a folder laid out like an origin's /stream/; keeps the paths asked for."""

    def log_request(self, *args) -> None:
        self.server.asked.append(self.path)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def file_origin(root: Path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                            functools.partial(Quiet, directory=str(root)))
    httpd.asked = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_master_playlist_variants_are_followed(live_stream, tmp_path):
    """An origin with renditions: the edge copies every variant and the master playlist."""
    served = tmp_path / "origin" / "stream"
    served.mkdir(parents=True)
    names = copy_segments(live_stream, served)
    media = media_playlist(names)
    (served / "low.m3u8").write_text(media)
    (served / "high.m3u8").write_text(media + "#EXT-X-ENDLIST\n")
    master = ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=320x180\nlow.m3u8\n"
              "#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360\nhigh.m3u8\n")
    (served / "master.m3u8").write_text(master)
    assert [v.uri for v in master_variants(master)] == ["low.m3u8", "high.m3u8"]

    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    with file_origin(tmp_path / "origin") as origin:
        relay = Relay(RelaySettings(f"http://127.0.0.1:{origin.server_port}/stream/master.m3u8"),
                      edge_dir)
        relay.poll()
    # the edge writes its own playlists, from what it understood of the origin's
    assert hls.parse_master((edge_dir / "master.m3u8").read_text()) == \
        tuple(replace(v, name=v.uri.removesuffix(".m3u8")) for v in hls.parse_master(master))
    assert hls.parse((edge_dir / "low.m3u8").read_text()) == hls.parse(media)
    assert (edge_dir / "high.m3u8").read_text().endswith("#EXT-X-ENDLIST\n")
    for name in [*names, "init.mp4"]:
        assert (edge_dir / name).read_bytes() == (served / name).read_bytes()
    assert not list(edge_dir.glob(".write.*"))  # no temp file left behind


def test_a_bare_origin_is_asked_for_its_master_again_after_a_restart(live_stream, tmp_path):
    """Without a master (404) the edge follows the top playlist and stops asking, until the
    origin restarts the stream: a new broadcast may bring renditions, and may drop them."""
    served = tmp_path / "origin" / "stream"
    served.mkdir(parents=True)
    names = copy_segments(live_stream, served)
    (served / "stream.m3u8").write_text(media_playlist(names, 10))
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    with file_origin(tmp_path / "origin") as origin:
        relay = Relay(RelaySettings(f"http://127.0.0.1:{origin.server_port}"), edge_dir)
        for _ in range(3):
            relay.poll()
        assert origin.asked.count("/stream/master.m3u8") == 1
        assert (edge_dir / "stream.m3u8").exists() and not (edge_dir / "master.m3u8").exists()

        (served / "low.m3u8").write_text(media_playlist(names))
        (served / "master.m3u8").write_text(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=900000\nstream.m3u8\n"
            "#EXT-X-STREAM-INF:BANDWIDTH=400000\nlow.m3u8\n")
        (served / "stream.m3u8").write_text(media_playlist(names))  # numbered from 0 again
        relay.poll()  # sees the restart
        relay.poll()
        assert (edge_dir / "master.m3u8").exists() and (edge_dir / "low.m3u8").exists()

        (served / "master.m3u8").unlink()  # the next broadcast has one rendition again
        relay.poll()
    assert not (edge_dir / "master.m3u8").exists() and not (edge_dir / "low.m3u8").exists()
    assert hls.parse((edge_dir / "stream.m3u8").read_text()) == hls.parse(media_playlist(names))
    assert {p.name for p in edge_dir.iterdir()} == {"stream.m3u8", "init.mp4", *names}


def test_an_explicit_media_playlist_becomes_the_edges_stream(live_stream, tmp_path):
    """`--origin http://ORIGIN/stream/low.m3u8`: that playlist, no master asked for, written
    under the name this edge's watcher reads."""
    served = tmp_path / "origin" / "stream"
    served.mkdir(parents=True)
    names = copy_segments(live_stream, served)
    (served / "low.m3u8").write_text(media_playlist(names))
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    with file_origin(tmp_path / "origin") as origin:
        relay = Relay(RelaySettings(f"http://127.0.0.1:{origin.server_port}/stream/low.m3u8"),
                      edge_dir)
        relay.poll()
    assert origin.asked[0] == "/stream/low.m3u8" and "/stream/master.m3u8" not in origin.asked
    assert hls.parse((edge_dir / "stream.m3u8").read_text()) == hls.parse(media_playlist(names))
    assert not (edge_dir / "low.m3u8").exists()


def test_the_origins_status_becomes_markers_and_a_broken_one_an_error(tmp_path):
    """The status loop catches RelayError (said once); the countdown moves to this clock."""
    (tmp_path / "origin" / "api").mkdir(parents=True)
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    with file_origin(tmp_path / "origin") as origin:
        relay = Relay(RelaySettings(f"http://127.0.0.1:{origin.server_port}"), edge_dir)
        with pytest.raises(RelayError, match="404"):
            relay.poll_status()  # a plain HLS origin has none
        for body in ("<html>", "[]", '{"title": "T"}', '{"title": "T", "paused": false, '
                     '"starts_at": null, "now": NaN}'):
            (tmp_path / "origin" / "api" / "status").write_text(body)
            with pytest.raises(RelayError):
                relay.poll_status()
        (tmp_path / "origin" / "api" / "status").write_text(json.dumps(
            {"title": "Film\nnight", "paused": True, "starts_at": 1060.0, "now": 1000.0}))
        relay.poll_status()
    assert (edge_dir / folder.TITLE_FILE).read_text() == "Filmnight\n"
    assert folder.read_hold(edge_dir) == "host"
    assert abs(folder.read_countdown(edge_dir) - (time.time() + 60)) < 2


# ---------------------------------------------------------------- a bare origin's renditions

@pytest.fixture(scope="module")
def rendition_edge(two_renditions, tmp_path_factory):
    """An edge given only the address of an origin that writes two renditions."""
    _, origin = two_renditions
    work = tmp_path_factory.mktemp("rendition-edge")
    edge = Server(work, work / "stream").start("--origin", origin.url)
    yield edge
    edge.stop()


def test_a_bare_origin_brings_every_rendition(rendition_edge, tmp_path):
    edge = rendition_edge
    wait_for(lambda: requests.get(edge.url + "/stream/low.m3u8", timeout=3).ok, 30,
             what="the low rendition on the edge")
    master = requests.get(edge.url + "/stream/master.m3u8", timeout=3)
    assert master.ok and "low.m3u8" in master.text and "stream.m3u8" in master.text
    clip = tmp_path / "low.mp4"
    assert grab_mp4(edge.url, clip, 3.0, "?quality=low") > 5_000
    video = next(s for s in probe(clip)["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (160, 90)  # the origin's low rendition
    assert "following /stream/master.m3u8" in edge.log()


def test_the_origins_title_reaches_the_edge(two_renditions, rendition_edge):
    stream, _ = two_renditions
    folder.write_title(stream.directory, "Film night at the origin")  # as /broadcaster does
    try:
        wait_for(lambda: "Film night at the origin" in requests.get(
            rendition_edge.url + "/", timeout=3).text, 15, what="the title on the edge's page")
        assert requests.get(rendition_edge.url + "/api/status",
                            timeout=3).json()["title"] == "Film night at the origin"
    finally:
        (stream.directory / folder.TITLE_FILE).unlink(missing_ok=True)


# ---------------------------------------------------------------- a watch party at the origin

COUNTDOWN = 8  # seconds: `play --in`, long enough for the edge's status poll to see it


@pytest.fixture(scope="module")
def party_edge(tmp_path_factory):
    """An origin fed by a watch party that starts after a countdown, and an edge of it."""
    work = tmp_path_factory.mktemp("party-edge")
    clip = film(work / "film.mkv", 30)
    (work / "origin").mkdir()
    (work / "edge").mkdir()
    origin = Server(work / "origin", work / "origin" / "stream").start()
    edge = Server(work / "edge", work / "edge" / "stream").start("--origin", origin.url)
    log = (work / "play.log").open("wb")
    play = subprocess.Popen(cli(origin.config_path, "play", str(clip), "--in", f"{COUNTDOWN}s",
                                "--preset", "ultrafast", "--bitrate", "300"), cwd=PROJECT,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    yield origin, edge
    play.terminate()  # SIGTERM: the party ends the stream like Ctrl-C
    play.wait(20)
    log.close()
    edge.stop()
    origin.stop()


def test_a_countdown_at_the_origin_shows_on_the_edge(party_edge):
    _, edge = party_edge
    wait_for(lambda: "Starts in" in info_frame(edge), COUNTDOWN, what="the countdown on the edge")
    status = requests.get(edge.url + "/api/status", timeout=3).json()
    assert 0 < status["starts_at"] - status["now"] <= COUNTDOWN + 1  # the edge's own clock


def test_a_host_pause_keeps_the_edge_viewer_open(party_edge, tmp_path):
    origin, edge = party_edge
    wait_for(lambda: status(edge) == "live", 30, what="the party live on the edge")
    viewer = Viewer(edge.url + "/stream.mp4", tmp_path / "edge-viewer.mp4")
    viewer.start()
    wait_for(lambda: viewer.arrivals, 10, what="the edge viewer's first bytes")
    time.sleep(2.5)
    control.send(origin.workdir / "state", "pause")
    wait_for(lambda: "Paused by the host" in info_frame(edge), 10, what="paused on the edge")
    assert requests.get(edge.url + "/api/status", timeout=3).json()["paused"] is True
    time.sleep(7)  # past the edge's offline rule (4 s): only the copied hold keeps it online
    assert viewer.is_alive() and viewer.error is None, "the edge's response ended while paused"
    assert status(edge) == "live"
    pressed = time.monotonic()
    control.send(origin.workdir / "state", "resume")
    assert viewer.new_video_after(pressed) < 15  # the same response goes on
    assert viewer.is_alive() and viewer.error is None, "the edge's response ended at resume"
    wait_for(lambda: "Paused by the host" not in info_frame(edge), 10, what="resumed on the edge")


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


# --- hostile audiences, round two: an origin (or anyone on its plain-HTTP path) ----------------

def hostile_origin(tmp_path: Path, playlist: str, master: str | None = None,
                   segment_bytes: int = 1000, count: int = 0) -> Path:
    """An origin's /stream/ folder with made-up segments seg0.m4s... of `segment_bytes`."""
    served = tmp_path / "origin" / "stream"
    served.mkdir(parents=True)
    (served / "init.mp4").write_bytes(b"\0" * 100)
    for i in range(count):
        (served / f"seg{i}.m4s").write_bytes(b"\0" * segment_bytes)
    (served / "stream.m3u8").write_text(playlist)
    if master is not None:
        (served / "master.m3u8").write_text(master)
    return served


def test_an_origin_listing_thousands_of_segments_gets_the_newest_few_fetched(tmp_path):
    names = [f"seg{i}.m4s" for i in range(3000)]
    hostile_origin(tmp_path, media_playlist(names), count=3000)
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    with file_origin(tmp_path / "origin") as origin:
        relay = Relay(RelaySettings(f"http://127.0.0.1:{origin.server_port}/stream/stream.m3u8"),
                      edge_dir)
        relay.poll()
        asked = [path for path in origin.asked if path.endswith(".m4s")]
    assert len(asked) == 16, f"{len(asked)} segments fetched of a 3,000-segment playlist"
    written = hls.parse((edge_dir / "stream.m3u8").read_text())
    assert [e.uri for e in written.entries] == names[-16:]
    assert written.entries[0].sequence == 3000 - 16


def test_an_origin_with_hundreds_of_variants_gets_eight_followed(tmp_path):
    playlist = media_playlist(["seg0.m4s"])
    master = "#EXTM3U\n" + "".join(f"#EXT-X-STREAM-INF:BANDWIDTH={i}\nv{i}.m3u8\n"
                                   for i in range(300))
    served = hostile_origin(tmp_path, playlist, master, count=1)
    for i in range(300):
        (served / f"v{i}.m3u8").write_text(playlist)
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    with file_origin(tmp_path / "origin") as origin:
        relay = Relay(RelaySettings(f"http://127.0.0.1:{origin.server_port}/stream/master.m3u8"),
                      edge_dir)
        relay.poll()
        asked = [path for path in origin.asked if path.endswith(".m3u8")]
    assert len(asked) == 1 + hls.MAX_VARIANTS, f"{len(asked)} playlists fetched"
    assert len(hls.parse_master((edge_dir / "master.m3u8").read_text())) == hls.MAX_VARIANTS


def test_an_edge_passes_on_only_the_tags_it_understood(tmp_path):
    """An EXT-X-KEY naming a third host was fetched by players through the edge's playlist."""
    playlist = ("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
                '#EXT-X-KEY:METHOD=AES-128,URI="http://203.0.113.9/key"\n'
                '#EXT-X-MAP:URI="init.mp4"\n#EXT-X-SESSION-DATA:DATA-ID="x",URI="http://a/b"\n'
                "#EXTINF:1.0,\nseg0.m4s\n")
    master = ('#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",URI="http://203.0.113.9/a.m3u8"\n'
              '#EXT-X-STREAM-INF:BANDWIDTH=1000,AUDIO="a",NAME="top"\nstream.m3u8\n')
    hostile_origin(tmp_path, playlist, master, count=1)
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    with file_origin(tmp_path / "origin") as origin:
        Relay(RelaySettings(f"http://127.0.0.1:{origin.server_port}/stream/master.m3u8"),
              edge_dir).poll()
    written = (edge_dir / "stream.m3u8").read_text() + (edge_dir / "master.m3u8").read_text()
    assert "203.0.113.9" not in written and "http" not in written
    assert "EXT-X-KEY" not in written and "EXT-X-MEDIA:" not in written


@pytest.mark.parametrize("line", ["#EXTINF:inf,", "#EXTINF:nan,", "#EXTINF:-1,",
                                  "#EXTINF:1e400,"])
def test_numbers_that_are_not_finite_are_refused(line):
    with pytest.raises(hls.PlaylistError):
        hls.parse(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n{line}\nseg0.m4s\n")
    with pytest.raises(hls.PlaylistError):
        hls.parse("#EXTM3U\n#EXT-X-TARGETDURATION:nan\n#EXTINF:1,\nseg0.m4s\n")


def test_a_rendition_holds_at_most_its_byte_budget(tmp_path, monkeypatch):
    from app.sources import relay as relay_module

    monkeypatch.setattr(relay_module, "RENDITION_BYTES", 1_000_000)
    names = [f"seg{i}.m4s" for i in range(13)]
    hostile_origin(tmp_path, media_playlist(names), segment_bytes=300_000, count=13)
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    with file_origin(tmp_path / "origin") as origin:
        relay = Relay(RelaySettings(f"http://127.0.0.1:{origin.server_port}/stream/stream.m3u8"),
                      edge_dir)
        with pytest.raises(RelayError, match="per rendition"):
            relay.poll()
    held = sum(p.stat().st_size for p in edge_dir.glob("*.m4s"))
    assert held <= 1_000_000


@pytest.mark.parametrize("status", [
    '{"title": "x", "paused": false, "starts_at": 1e308, "now": -1e308}',
    '{"title": "x", "paused": false, "starts_at": 9e15, "now": 0}',
    "[" * 5000,
    '"just a string"',
])
def test_a_bad_status_is_refused_and_the_status_follower_goes_on(tmp_path, status):
    from app.sources.relay import parse_status

    with pytest.raises(RelayError):
        parse_status(status)
    served = hostile_origin(tmp_path, media_playlist([]))
    (served.parent / "api").mkdir()
    (served.parent / "api" / "status").write_text(status)
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    with file_origin(tmp_path / "origin") as origin:
        relay = Relay(RelaySettings(f"http://127.0.0.1:{origin.server_port}"), edge_dir)
        follower = threading.Thread(target=relay.follow_status, daemon=True)
        follower.start()
        wait_for(lambda: origin.asked.count("/api/status") >= 1, 10, what="a status poll")
        time.sleep(0.2)
        assert follower.is_alive(), "the status follower died on a bad status"
        relay.stop()
    assert not (edge_dir / folder.COUNTDOWN_FILE).exists()


def test_an_edge_follows_an_origin_writing_parts_part_by_part(tmp_path):
    """Blocking reloads for the next part: the edge lists the origin's segment in progress
    as its own, a moment behind, so its viewers get parts too (issue 22)."""
    stream = TestStream(tmp_path / "origin-stream", low_latency=True).start()
    (tmp_path / "origin").mkdir()
    (tmp_path / "edge").mkdir()
    origin = Server(tmp_path / "origin", stream.directory).start()
    edge = Server(tmp_path / "edge", tmp_path / "edge-stream")
    try:
        origin.wait_live()
        edge.start("--origin", origin.url)
        edge.wait_live()
        wait_for(lambda: "#EXT-X-PART:" in requests.get(
            edge.url + "/stream/stream.m3u8", timeout=5).text, 20, 0.1, "parts on the edge")
        behind = []
        for _ in range(20):
            ends = []  # the edge asked first: the figure errs on the high side
            for server in (edge, origin):
                timeline = requests.get(server.url + "/api/playlist", timeout=5).json()
                last, partial = timeline["segments"][-1], timeline["partial"]
                ends.append(partial["start"] + partial["duration"] if partial
                            else last["start"] + last["duration"])
            behind.append(ends[1] - ends[0])
            time.sleep(0.15)
        print(f"\nedge behind its origin: median {sorted(behind)[10]:.3f} s, "
              f"max {max(behind):.3f} s (media time of the newest part)")
        # following whole segments it was a segment (2 s) behind at times
        assert sorted(behind)[10] < 0.5
        playlist = requests.get(edge.url + "/stream/stream.m3u8", timeout=5).text
        assert "CAN-BLOCK-RELOAD=YES" in playlist and "#EXT-X-PRELOAD-HINT" in playlist
        # a finished segment is its parts joined on the edge: the origin's bytes exactly
        newest = [line for line in playlist.splitlines() if line.endswith(".m4s")
                  and not line.startswith("#")][-1]
        assert requests.get(edge.url + "/stream/" + newest, timeout=5).content == \
            requests.get(origin.url + "/stream/" + newest, timeout=5).content
        asked = requests.get(edge.url + "/api/playlist", timeout=5).json()
        with requests.get(edge.url + "/fragments", timeout=10, stream=True, params={
                "gen": asked["generation"], "seq": asked["segments"][-1]["sequence"],
                "k": 0}) as pushed:
            assert pushed.status_code == 200
            sequence, first, _, data = next(pushed_frames(pushed.raw.read))
        assert (sequence, first) == (asked["segments"][-1]["sequence"], 0) and b"moof" in data
    finally:
        edge.stop()
        origin.stop()
        stream.stop()
