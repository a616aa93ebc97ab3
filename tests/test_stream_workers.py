"""The stream stories of test_stream_http.py again, against `serve --workers 2` sharing one
Redis: every request may land on either worker (SO_REUSEPORT) and each worker runs its own
watcher, so each story holds only if both workers tell the same stream (the same bytes,
headers, restarts, ends and offline spells)."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
from redis_support import (  # noqa: F401 (redis_server is a fixture)
    Pinned,
    WorkersServer,
    one_per_worker,
    redis_server,
    wait_workers,
)
from support import TestStream, pushed_frames, wait_for
from test_stream_http import (  # noqa: F401 (collected here again, against these servers)
    test_end_of_stream_ends_the_response_cleanly,
    test_killed_writer_goes_offline,
    test_new_segment_reaches_a_connected_viewer_promptly,
    test_offline_server_says_so,
    test_page_headers_forbid_external_resources_and_referrers,
    test_playlist_and_segments_have_types_and_cache_headers,
    test_restart_ends_the_response_and_info_says_reload,
    test_stream_mp4_is_fragmented_mp4_that_grows_while_live,
    test_unlisted_files_and_traversal_are_404,
)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, live_stream, redis_server):  # noqa: F811
    """Two workers on the shared live stream, one Redis database of their own."""
    server = WorkersServer(tmp_path_factory.mktemp("stream_workers"), live_stream.directory,
                           redis_server.new_database()).start()
    server.wait_live()
    yield server
    server.stop()


@pytest.fixture
def own_stream(tmp_path, redis_server):  # noqa: F811
    """A private stream and two workers, for the stories that end, kill or restart it."""
    stream = TestStream(tmp_path / "stream")
    server = WorkersServer(tmp_path, stream.directory, redis_server.new_database())
    yield stream, server
    stream.stop()
    server.stop()


def generations(server: WorkersServer) -> dict[int, int]:
    """The stream generation each worker names, asked over a connection to each."""
    pinned = one_per_worker(server.pids, lambda: Pinned(server.port))
    try:
        return {pid: json.loads(c.get("/api/status").body)["generation"]
                for pid, c in pinned.items()}
    finally:
        for connection in pinned.values():
            connection.close()


def go_live(stream, server) -> dict[int, int]:
    """The stream on air and both workers serving it; the generation each names."""
    stream.start()
    stream.wait_segments(2)
    server.start()
    server.wait_live()
    return generations(server)


def test_a_worker_restarted_after_a_stream_restart_names_the_same_generation(own_stream):
    """Each worker counts restarts with its own watcher; one started later (the supervisor
    replacing a dead one) must not count the broadcast on air from 1 again, or a player whose
    requests reach both would start over at every other request."""
    stream, server = own_stream
    before = go_live(stream, server)
    stream.stop(signal.SIGKILL)
    stream.start()  # a new broadcast: both workers see the restart
    wait_for(lambda: (now := generations(server)) and len(set(now.values())) == 1
             and set(now.values()) != set(before.values()) and now, 30, 0.5,
             "both workers to see the restart")
    restarted = generations(server)
    dead = server.pids[0]
    os.kill(dead, signal.SIGKILL)
    server.pids = wait_for(lambda: (p := wait_workers(server, 2)) and dead not in p and p, 30,
                           what="the killed worker to be replaced")
    (number,) = set(restarted.values())
    assert generations(server) == dict.fromkeys(server.pids, number)


def test_a_worker_that_missed_an_offline_spell_takes_the_others_generation(own_stream):
    """A worker frozen while the stream went offline and came back never saw it go; the
    other counted a new generation, and the frozen one takes it once it settled."""
    stream, server = own_stream
    before = go_live(stream, server)
    frozen = server.pids[0]
    os.kill(frozen, signal.SIGSTOP)
    try:
        os.killpg(stream.process.pid, signal.SIGSTOP)  # the writer stalls past offline_after
        time.sleep(7)  # past the server's offline_after (4 s) and the next staleness check
        os.killpg(stream.process.pid, signal.SIGCONT)
        playlist = stream.directory / "stream.m3u8"
        wait_for(lambda: time.time() - playlist.stat().st_mtime < 1, 20, 0.1, "the writer back")
        time.sleep(2)  # the awake worker sees it back (and counts a generation)
    finally:
        os.killpg(stream.process.pid, signal.SIGCONT)
        os.kill(frozen, signal.SIGCONT)
    counted = max(before.values()) + 1
    wait_for(lambda: generations(server) == dict.fromkeys(server.pids, counted), 40, 0.5,
             "the frozen worker to take the other's generation")


def test_every_worker_follows_the_parts_fragment_by_fragment(tmp_path, redis_server):  # noqa: F811
    """A source writing parts (issue 22): each worker's watcher reads the parts itself, and
    each pushes the player's /fragments with the same bytes and goes on from there."""
    stream = TestStream(tmp_path / "stream", low_latency=True).start()
    server = WorkersServer(tmp_path, stream.directory, redis_server.new_database())
    try:
        server.start()
        server.wait_live()
        pinned = one_per_worker(server.pids, lambda: Pinned(server.port))
        try:
            timeline = json.loads(next(iter(pinned.values())).get("/api/playlist").body)
            newest = timeline["segments"][-1]["sequence"]
            asked = f"/fragments?gen={timeline['generation']}&seq={newest}&k=0"
            firsts, laters = set(), set()
            for connection in pinned.values():
                connection.conn.request("GET", asked)
                response = connection.conn.getresponse()
                assert response.status == 200
                frames = pushed_frames(response.read)
                firsts.add(next(frames))
                # then each goes on to the next segment's parts
                laters.add(next(f[:2] for f in frames if f[0] == newest + 1))
            assert len(firsts) == 1, "the same fragments and bytes from each worker"
            assert next(iter(firsts))[:2] == (newest, 0)
            assert laters == {(newest + 1, 0)}
        finally:
            for connection in pinned.values():
                connection.close()
    finally:
        server.stop()
        stream.stop()
