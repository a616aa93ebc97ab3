"""The player's shared timeline: fMP4 reading on real ffmpeg output, and the /api endpoints."""
from __future__ import annotations

import time

import requests

from app.stream import boxes as fmp4
from app.stream.playlist import Entry
from app.stream.timeline import TimedSegment, live_origin, place


def newest_files(directory, count=3):
    segments = sorted(directory.glob("stream*.m4s"), key=lambda p: int(p.stem[6:]))
    return segments[-count - 1:-1]  # the very newest may still be written


def test_init_segment_gives_codecs_and_time_scales(live_stream):
    info = fmp4.parse_init((live_stream.directory / "init.mp4").read_bytes())
    assert [t.handler for t in info.tracks] == ["vide", "soun"]
    video, audio = info.codecs.split(",")
    assert video.startswith("avc1.") and len(video) == len("avc1.42c00c")
    assert audio == "mp4a.40.2"
    assert info.main_track.timescale > 0


def test_segments_start_one_duration_apart(live_stream):
    info = fmp4.parse_init((live_stream.directory / "init.mp4").read_bytes())
    files = newest_files(live_stream.directory)
    starts = [fmp4.segment_start(path.read_bytes(), info) for path in files]
    assert None not in starts
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert all(abs(gap - 1.0) < 0.01 for gap in gaps), starts


def test_garbage_is_not_a_segment():
    info = fmp4.parse_init(b"\x00\x00\x00\x10ftypisom\x00\x00\x00\x00")
    assert info.tracks == () and info.codecs == ""
    assert fmp4.segment_start(b"\xff" * 64, info) is None
    assert fmp4.parse_init(b"\x00\x00\x10\x00moov\x00\x00") == fmp4.InitInfo()


def test_unheld_listed_segments_are_placed_from_their_neighbours():
    entries = [Entry(f"s{n}.m4s", n, 2.0) for n in range(5, 9)]
    held = {7: type("Held", (), {"seen_at": 1000.0})(), 8: type("Held", (), {"seen_at": 1002.1})()}
    placed = place(entries, {7: 14.0, 8: 16.0}, held)
    assert [s.start for s in placed] == [10.0, 12.0, 14.0, 16.0]
    assert [s.seen_at for s in placed] == [None, None, 1000.0, 1002.1]


def test_origin_is_the_tightest_bound():
    segments = (TimedSegment(1, "/a", 10.0, 1.0, 1011.3), TimedSegment(2, "/b", 11.0, 1.0, 1012.05),
                TimedSegment(3, "/c", 12.0, 1.0, None))
    assert live_origin(segments) == 1000.05
    assert live_origin(segments[2:]) is None


def test_clock_runs_at_real_speed_but_is_not_the_hosts_clock(live_server):
    """Players sync against /api/clock; it must tick like a clock, yet say nothing of the
    host's time (issue 12, finding 8: it used to be time.time() to the microsecond)."""
    first = requests.get(live_server.url + "/api/clock", timeout=5).json()["now"]
    time.sleep(1.0)
    second = requests.get(live_server.url + "/api/clock", timeout=5).json()["now"]
    assert 0.9 <= second - first <= 1.5
    assert abs(second - time.time()) > 86400  # not Unix time, not even the same day
    assert round(second, 3) == second  # milliseconds, no finer


def test_playlist_describes_the_live_stream(live_server):
    timeline = requests.get(live_server.url + "/api/playlist", timeout=5).json()
    assert timeline["online"] and timeline["status"] == "live"
    assert timeline["codecs"].startswith("avc1.")
    segments = timeline["segments"]
    assert len(segments) >= 2
    for earlier, later in zip(segments, segments[1:], strict=False):
        assert later["sequence"] == earlier["sequence"] + 1
        assert abs(later["start"] - (earlier["start"] + earlier["duration"])) < 0.01
    edge = timeline["now"] - timeline["origin"]
    newest = segments[-1]
    assert newest["start"] + newest["duration"] - 0.05 <= edge < newest["start"] + 3.0
    assert requests.get(live_server.url + newest["uri"], timeout=5).ok
    assert requests.get(live_server.url + timeline["init"], timeout=5).ok


def test_playlist_long_poll_answers_when_a_segment_arrives(live_server):
    timeline = requests.get(live_server.url + "/api/playlist", timeout=5).json()
    newest = timeline["segments"][-1]["sequence"]
    started = time.monotonic()
    following = requests.get(live_server.url + "/api/playlist", timeout=20, params={
        "gen": timeline["generation"], "after": newest, "online": 1}).json()
    assert time.monotonic() - started < 2.5, "the long poll did not answer on a new segment"
    assert following["segments"][-1]["sequence"] > newest


def test_playlist_answers_at_once_for_another_generation(live_server):
    timeline = requests.get(live_server.url + "/api/playlist", timeout=5).json()
    started = time.monotonic()
    requests.get(live_server.url + "/api/playlist", timeout=20, params={
        "gen": timeline["generation"] + 1, "after": 10**9, "online": 1})
    assert time.monotonic() - started < 0.5


def test_status_carries_generation_and_title(live_server):
    status = requests.get(live_server.url + "/api/status", timeout=5).json()
    assert status["online"] is True and status["generation"] >= 1
    assert status["title"] == "Live stream"


def test_workers_sharing_a_secret_show_viewers_one_clock():
    """A player syncs against /api/clock on one worker and may read the timeline from
    another: with a shared store, every worker's clock must agree (and still not be the
    host's)."""
    from app.stream.clock import StreamClock

    secret = bytes(range(32))
    one, two = StreamClock(secret), StreamClock(secret)
    assert abs(one.now() - two.now()) < 0.01
    assert abs(one.now() - StreamClock(b"another secret..").now()) > 1
    assert abs(one.now() - time.time()) > 86400
    assert abs(StreamClock().now() - StreamClock().now()) > 0.001  # alone: a random shift
