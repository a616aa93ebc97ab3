"""The stream's public status (live light, title, restarts) as push events."""
from __future__ import annotations

from collections.abc import Callable

import gevent

from app.stream.clock import StreamClock
from app.stream.watcher import Snapshot, StreamState


def status_of(snap: Snapshot, clock: StreamClock) -> dict:
    """What anyone may know; moments are on the player's clock, never the host's. `paused`
    and `starts_at` are the watch party's: the host paused, or the queue starts then."""
    countdown = snap.starts_at if not snap.online else None
    return {"status": snap.status, "online": snap.online, "generation": snap.generation,
            "title": snap.title, "started_at": clock.of(snap.started_at),
            "paused": snap.paused, "starts_at": clock.of(countdown)}


def publish_stream_status(state: StreamState, publish: Callable[[str, dict], object],
                          clock: StreamClock) -> gevent.Greenlet:
    """Turn stream state changes into `status` events; `publish` is the push hub's."""

    def run():
        last = None
        while True:
            current = status_of(state.snapshot, clock)
            if current != last:
                publish("status", current)
                last = current
            state.wait(30)

    return gevent.spawn(run)
