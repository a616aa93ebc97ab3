"""The broadcaster's cockpit: complete without JavaScript in Chromium and Firefox ESR, viewer
health measured on the server for every /stream.mp4 response, warnings for a source's
keyframes and pace, /metrics that Prometheus's own parser reads and that agrees with the page,
and nothing of it for a stranger."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests
from chat_support import BROADCASTER, chat_server
from firefox import firefox  # noqa: F401 - the shared browser fixture
from prometheus_client.parser import text_string_to_metric_families
from support import LOW_RENDITION, TestStream, free_port, livestream, wait_for

RENDITIONS = ('[[stream.renditions]]\nname = "source"\n'
              '[[stream.renditions]]\nname = "low"\nheight = 90\nvideo_kbps = 100\n'
              'audio_kbps = 32\n')


@pytest.fixture(scope="module")
def cockpit(tmp_path_factory):
    """A live two-rendition stream, and a server with the ingest on (for the ways in) that
    holds only 4 segments, so a viewer that cannot keep up is dropped soon."""
    work = tmp_path_factory.mktemp("cockpit")
    stream = TestStream(work / "stream", renditions=LOW_RENDITION, video_bitrate="1500k").start()
    stream.wait_segments(3)
    extra = (f"[ingest]\nenabled = true\nport = {free_port()}\nhost = \"127.0.0.1\"\n"
             + RENDITIONS)
    server = chat_server(work, stream.directory, extra, stream="memory_segments = 4\n").start()
    server.wait_live()
    yield server
    server.stop()
    stream.stop()


def metrics(server) -> dict[tuple[str, tuple], float]:
    """/metrics parsed by prometheus_client's own parser: {(name, labels): value}."""
    text = requests.get(server.url + "/metrics", auth=BROADCASTER, timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def cockpit_text(server) -> str:
    return requests.get(server.url + "/broadcaster/cockpit", auth=BROADCASTER, timeout=10).text


def check_cockpit(text: str) -> None:
    assert "LIVE" in text and "broadcast #" in text
    assert "stream.sh --test" in text  # where the stream comes from (the folder's lock)
    assert "Renditions: source, low" in text
    for heading in ("Stream health", "Viewer health", "Last hour", "Last 24 hours", "Ways in"):
        assert heading in text, heading
    assert re.search(r"<td>source</td><td>320x180</td><td>avc1\.[0-9a-f]{6},mp4a", text)
    assert re.search(r"<td>low</td><td>160x90</td>", text)
    assert text.count('<svg class="chart"') == 12
    assert "Show the stream key" in text


def test_the_cockpit_is_complete_without_javascript_in_chromium(cockpit, browser):
    context = browser.new_context(java_script_enabled=False, http_credentials={
        "username": BROADCASTER[0], "password": BROADCASTER[1]})
    try:
        page = context.new_page()
        page.goto(cockpit.url + "/broadcaster", wait_until="load", timeout=15000)
        frame = page.frame(name="cockpit")
        check_cockpit(frame.content())
        preview = page.locator(".preview video")
        assert preview.get_attribute("src") == "/stream.mp4?quality=low"
        assert preview.get_attribute("muted") is not None
        assert preview.get_attribute("autoplay") is None  # plays with a click
        # the word filter's checkboxes sit beside their labels, on their lines
        for name in ("regex", "case"):
            box = page.locator(f".filter-form input[name={name}]").bounding_box()
            label = page.locator(f".filter-form input[name={name}] + span").bounding_box()
            assert box["width"] < 40 and 0 <= label["x"] - (box["x"] + box["width"]) < 20
            assert abs((box["y"] + box["height"] / 2) - (label["y"] + label["height"] / 2)) < 8
    finally:
        context.close()


def test_the_cockpit_is_complete_without_javascript_in_firefox(cockpit, firefox):  # noqa: F811
    client = firefox.client
    with client.using_context("chrome"):
        client.set_pref("network.http.phishy-userpass-length", 255)  # no "log in?" prompt
    address = cockpit.url.replace("http://", f"http://{BROADCASTER[0]}:{BROADCASTER[1]}@")
    with client.using_context("chrome"):
        client.execute_script(
            "gBrowser.selectedBrowser.fixupAndLoadURIString(arguments[0], "
            "{triggeringPrincipal: Services.scriptSecurityManager.getSystemPrincipal()});",
            script_args=[address + "/broadcaster/cockpit"])
    wait_for(lambda: "Ways in" in (firefox.content_script(
        "return document.body ? document.body.innerHTML : '';") or ""), 15,
        what="the cockpit in Firefox")
    check_cockpit(firefox.content_script("return document.documentElement.outerHTML;"))
    assert not firefox.content_script("return document.querySelector('script') !== null;")


def slow_reader(url: str, bytes_per_second: int, seconds: float, out: dict) -> None:
    """A /stream.mp4 viewer whose connection carries only `bytes_per_second`: a small
    receive buffer, reads paced by the clock; records whether the server ended it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = url.split("//")[1].split(":")
    sock.connect((host, int(port)))
    sock.sendall(b"GET /stream.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(5)
    started, received = time.monotonic(), 0
    try:
        while time.monotonic() - started < seconds:
            allowed = bytes_per_second * (time.monotonic() - started) - received
            if allowed < 1024:
                time.sleep(0.05)
                continue
            data = sock.recv(min(int(allowed), 4096))
            if not data:
                out["ended_by_server"] = time.monotonic() - started
                return
            received += len(data)
    except OSError:
        out["ended_by_server"] = time.monotonic() - started
    finally:
        out["received"] = received
        sock.close()


def test_a_viewer_that_cannot_keep_up_shows_as_behind_and_its_drop_is_counted(cockpit):
    bitrate = metrics(cockpit)[("livestream_segment_bitrate_kbps",
                                (("rendition", "source"),))]
    before = metrics(cockpit).get(("livestream_viewers_dropped_total",
                                   (("rendition", "source"),)), 0)
    out: dict = {}
    reader = threading.Thread(target=slow_reader, args=(
        cockpit.url, int(bitrate * 1000 / 8 / 3), 50, out), daemon=True)
    started = time.monotonic()
    reader.start()
    wait_for(lambda: metrics(cockpit)[("livestream_viewer_behind_seconds_max",
                                       (("rendition", "source"),))] > 1.5, 10,
             interval=0.5, what="the slow viewer to show as behind")
    behind_after = time.monotonic() - started
    page = cockpit_text(cockpit)
    row = re.search(r"<tr><td>source</td><td>(\d+)</td><td>(\d+)</td><td>([\d.]+) s</td>", page)
    assert row and int(row.group(1)) >= 1 and float(row.group(3)) >= 1.0, row
    wait_for(lambda: metrics(cockpit).get(("livestream_viewers_dropped_total",
                                           (("rendition", "source"),)), 0) > before, 45,
             interval=0.5, what="the slow viewer to be dropped and counted")
    print(f"\nslow viewer at a third of {bitrate:.0f} kbit/s: behind after {behind_after:.1f} s,"
          f" dropped and counted after {time.monotonic() - started:.1f} s")


def test_metrics_parse_and_agree_with_the_cockpit(cockpit):
    figures = metrics(cockpit)
    page = cockpit_text(cockpit)
    assert figures[("livestream_stream_online", ())] == 1
    generation = int(figures[("livestream_stream_generation", ())])
    assert f"broadcast #{generation}," in page
    for quality in ("source", "low"):
        shown = re.search(rf"<tr><td>{quality}</td><td>[^<]*</td><td>[^<]*</td>\s*"
                          r"<td>(\d+) kbit/s</td>", page)
        measured = figures[("livestream_segment_bitrate_kbps", (("rendition", quality),))]
        assert shown and abs(int(shown.group(1)) - measured) <= max(25, 0.15 * measured)
    assert ("livestream_sent_bytes_total", ()) in figures
    assert figures[("livestream_warnings", ())] == page.count("<li>", page.find(
        "cockpit-warnings"), page.find("</ul>", page.find("cockpit-warnings"))) \
        if "cockpit-warnings" in page else figures[("livestream_warnings", ())] == 0


def test_a_stranger_gets_no_cockpit_and_no_metrics(cockpit):
    for path in ("/broadcaster/cockpit", "/metrics"):
        response = requests.get(cockpit.url + path, timeout=10)
        assert response.status_code == 401
        assert "livestream_" not in response.text and "Stream health" not in response.text
        wrong = requests.get(cockpit.url + path, auth=("broadcaster", "guess"), timeout=10)
        assert wrong.status_code == 401


def test_keyframes_5_s_apart_from_an_ingest_publisher_raise_the_warning(tmp_path):
    port = free_port()
    server = chat_server(tmp_path, tmp_path / "stream",
                         f'[ingest]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'
                         '[[stream.renditions]]\nname = "source"\n').start()
    key = re.search(r"stream key: (\S+)", livestream(server.config_path, "key").stdout).group(1)
    publisher = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25",
         "-t", "40", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "125",
         "-keyint_min", "125", "-sc_threshold", "0", "-f", "flv",
         f"rtmp://127.0.0.1:{port}/live/{key}"], stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "Keyframes are 5 s apart" in cockpit_text(server), 40, interval=1,
                 what="the keyframe warning")
        # where the stream comes from: the ingest, its publisher and the software it announced
        assert "livestream ingest (RTMP publisher 127.0.0.1, Lavf" in cockpit_text(server)
        assert metrics(server)[("livestream_keyframe_interval_seconds",
                                (("rendition", "source"),))] == pytest.approx(5, abs=0.3)
    finally:
        publisher.kill()
        publisher.wait()
        server.stop()


def test_a_source_slower_than_real_time_raises_the_warning(tmp_path):
    """Segments of 1 s that arrive every 2 s: the encoder cannot keep up."""
    made = tmp_path / "made"
    made.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x90:rate=10",
                    "-t", "12", "-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p", "-f",
                    "hls", "-hls_time", "1", "-hls_list_size", "0", "-hls_segment_type", "fmp4",
                    "-hls_segment_filename", str(made / "stream%d.m4s"),
                    str(made / "stream.m3u8")], check=True, timeout=60)
    stream = tmp_path / "stream"
    stream.mkdir()
    shutil.copy(made / "init.mp4", stream / "init.mp4")
    server = chat_server(tmp_path, stream).start()
    lines = [line for line in (made / "stream.m3u8").read_text().splitlines()
             if line != "#EXT-X-ENDLIST"]
    head = [line for line in lines if not line.startswith("#EXTINF") and
            not line.endswith(".m4s")]
    entries = [(lines[i], lines[i + 1]) for i, line in enumerate(lines)
               if line.startswith("#EXTINF")]
    stop = threading.Event()

    def slow_writer() -> None:
        for count in range(1, len(entries) + 1):
            name = entries[count - 1][1]
            shutil.copy(made / name, stream / name)
            body = [x for pair in entries[:count] for x in pair]
            (stream / "stream.m3u8").write_text("\n".join(head + body) + "\n")
            if stop.wait(2.0):
                return

    writer = threading.Thread(target=slow_writer, daemon=True)
    writer.start()
    try:
        wait_for(lambda: "slower than real time" in cockpit_text(server), 30, interval=1,
                 what="the real-time warning")
        ratio = metrics(server)[("livestream_source_real_time_ratio",
                                 (("rendition", "source"),))]
        assert 0.3 < ratio < 0.8, ratio
    finally:
        stop.set()
        writer.join(5)
        server.stop()


