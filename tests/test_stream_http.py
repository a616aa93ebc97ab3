"""The stream as a viewer's client sees it over real HTTP."""
from __future__ import annotations

import signal
import subprocess
import threading
import time

import requests
from support import wait_for


def read_for(url: str, seconds: float) -> bytes:
    chunks = []
    deadline = time.monotonic() + seconds
    with requests.get(url, stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "video/mp4"
        for chunk in response.iter_content(65536):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                break
    return b"".join(chunks)


def video_frames(path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
         "-show_entries", "stream=nb_read_packets,codec_name", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    codec, packets = out.split(",")
    assert codec == "h264"
    return int(packets)


def test_stream_mp4_is_fragmented_mp4_that_grows_while_live(live_server, tmp_path):
    short = tmp_path / "short.mp4"
    long = tmp_path / "long.mp4"
    short.write_bytes(read_for(live_server.url + "/stream.mp4", 1.5))
    long.write_bytes(read_for(live_server.url + "/stream.mp4", 4.5))
    assert short.read_bytes()[4:8] == b"ftyp"
    assert b"moof" in long.read_bytes()
    assert video_frames(long) > video_frames(short) > 0


def test_new_segment_reaches_a_connected_viewer_promptly(live_server, live_stream):
    playlist = live_stream.directory / "stream.m3u8"
    viewer = Viewer(live_server.url, keep_arrivals=True)
    viewer.start()
    wait_for(lambda: viewer.received > 0, 10, what="video bytes")
    time.sleep(0.3)  # the init and newest segment have arrived; wait for the next one
    before = playlist.stat().st_mtime_ns
    wait_for(lambda: playlist.stat().st_mtime_ns != before, 5, 0.002, "a new segment")
    listed_at = time.monotonic()
    wait_for(lambda: any(t >= listed_at - 0.05 for t in viewer.arrivals), 5, 0.002, "its bytes")
    delay = min(t for t in viewer.arrivals if t >= listed_at - 0.05) - listed_at
    viewer.stop = True
    viewer.join(5)
    assert viewer.error is None
    assert delay < 1.0, f"segment took {delay:.3f}s to arrive"


def test_playlist_and_segments_have_types_and_cache_headers(live_server):
    playlist = requests.get(live_server.url + "/stream/stream.m3u8", timeout=5)
    assert playlist.status_code == 200
    assert playlist.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert playlist.headers["Cache-Control"] == "no-cache"
    names = [line for line in playlist.text.splitlines() if line and not line.startswith("#")]
    segment = requests.get(f"{live_server.url}/stream/{names[-1]}", timeout=5)
    assert segment.status_code == 200
    assert segment.headers["Content-Type"] == "video/iso.segment"
    assert "immutable" in segment.headers["Cache-Control"]
    init = requests.get(live_server.url + "/stream/init.mp4", timeout=5)
    assert init.status_code == 200 and init.content[4:8] == b"ftyp"
    alias = requests.get(live_server.url + "/stream.m3u8", timeout=5, allow_redirects=False)
    assert alias.status_code == 302 and alias.headers["Location"] == "/stream/stream.m3u8"


def test_unlisted_files_and_traversal_are_404(live_server, live_stream):
    (live_stream.directory / "secret.txt").write_text("not for viewers")
    for path in ["/stream/secret.txt", "/stream/stream999999.m4s", "/stream/",
                 "/stream/..%2Fconfig.toml", "/stream/%2e%2e%2fstate", "/stream/../config.toml",
                 "/stream/.", "/stream/title.txt"]:
        response = requests.get(live_server.url + path, timeout=5)
        assert response.status_code == 404, path
        assert b"not for viewers" not in response.content


def test_page_headers_forbid_external_resources_and_referrers(live_server):
    response = requests.get(live_server.url + "/", timeout=5)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'self'" in csp
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "Server" not in response.headers
    assert "http://" not in response.text and "https://" not in response.text
    assert '<video class="player" src="/stream.mp4?token=' in response.text


def test_offline_server_says_so(own_stream):
    _, server = own_stream  # the stream never starts: its folder stays empty
    server.start()
    page = requests.get(server.url + "/", timeout=5)
    assert "The stream is offline." in page.text
    assert '<meta http-equiv="refresh"' in page.text
    video = requests.get(server.url + "/stream.mp4", timeout=5)
    assert video.status_code == 503
    assert requests.get(server.url + "/stream/stream.m3u8", timeout=5).status_code == 404


class Viewer(threading.Thread):
    """Reads /stream.mp4 until the server ends the response."""

    def __init__(self, url: str, keep_arrivals: bool = False):
        super().__init__(daemon=True)
        self.url = url
        self.received = 0
        self.arrivals: list[float] = []
        self.keep_arrivals = keep_arrivals
        self.stop = False
        self.error: Exception | None = None

    def run(self):
        try:
            with requests.get(self.url + "/stream.mp4", stream=True, timeout=30) as response:
                for chunk in response.iter_content(4096):
                    self.received += len(chunk)
                    if self.keep_arrivals:
                        self.arrivals.append(time.monotonic())
                    if self.stop:
                        return
        except requests.RequestException as exc:
            self.error = exc


def watch_own_stream(own_stream):
    """Start the private stream and its server, and one viewer already receiving video."""
    stream, server = own_stream
    stream.start()
    stream.wait_segments(2)
    server.start()
    server.wait_live()
    viewer = Viewer(server.url)
    viewer.start()
    wait_for(lambda: viewer.received > 0, 10, what="video bytes")
    return stream, server, viewer


def test_end_of_stream_ends_the_response_cleanly(own_stream):
    stream, server, viewer = watch_own_stream(own_stream)
    stream.stop()  # SIGINT: ffmpeg writes ENDLIST
    viewer.join(15)
    assert not viewer.is_alive(), "the response did not end with the stream"
    assert "#EXT-X-ENDLIST" in (stream.directory / "stream.m3u8").read_text()
    page = requests.get(server.url + "/", timeout=5).text
    assert "The stream has ended." in page
    info = requests.get(server.url + "/info?gen=1", timeout=5).text
    assert "has ended" in info


def test_restart_ends_the_response_and_info_says_reload(own_stream):
    stream, server, viewer = watch_own_stream(own_stream)
    generation = int(requests.get(server.url + "/", timeout=5).text
                     .split("/info?gen=")[1].split('"')[0])
    stream.stop(signal.SIGKILL)
    stream.start()  # a new broadcast: new init segment, numbering from 0
    viewer.join(20)
    assert not viewer.is_alive(), "the response did not end on restart"
    wait_for(lambda: "restarted" in requests.get(
        f"{server.url}/info?gen={generation}", timeout=5).text, 20, 0.2, "restart notice")
    fresh = requests.get(server.url + "/", timeout=5).text
    assert f"/info?gen={generation + 1}" in fresh


def test_killed_writer_goes_offline(own_stream):
    stream, server, viewer = watch_own_stream(own_stream)
    stream.stop(signal.SIGKILL)  # no ENDLIST: only staleness tells
    viewer.join(15)
    assert not viewer.is_alive()
    wait_for(lambda: "offline" in requests.get(server.url + "/", timeout=5).text, 10, 0.2,
             "offline page")
    assert "Traceback" not in server.log()
