"""The stream's and the audience's changes as events: live, offline, restarted, title, the
host's pause and resume (party), viewers arriving and leaving. Worked out only in the
dispatching process, from its own watcher and the shared viewer list, so each is said once."""
from __future__ import annotations

from collections.abc import Callable

import gevent

from app.community.presence import Audience
from app.stream.watcher import StreamState

AUDIENCE_EVERY = 5.0  # seconds between two looks at who is watching
AUDIENCE_LIMIT = 300  # viewers followed, as on the viewer list


def follow_stream(state: StreamState, emit: Callable[..., None]) -> gevent.Greenlet:
    def run() -> None:
        last = None
        while True:
            snap = state.snapshot
            now = (snap.online, snap.generation, snap.title, snap.paused)
            if last is not None:
                was_online, generation, title, paused = last
                if snap.online and not was_online:
                    emit("live", generation=snap.generation, title=snap.title)
                elif was_online and not snap.online:
                    emit("offline", ended=snap.ended)
                elif snap.online and snap.generation != generation:
                    emit("restarted", generation=snap.generation)
                if snap.title != title:
                    emit("title", title=snap.title)
                if snap.paused != paused:
                    emit("party", paused=snap.paused)
            last = now
            state.wait(30)

    return gevent.spawn(run)


def follow_audience(audience: Audience, name_of: Callable[[str], str],
                    emit: Callable[..., None]) -> gevent.Greenlet:
    def run() -> None:
        known: dict[str, str] | None = None
        while True:
            try:
                now = {p.viewer_id: p.tag for p in audience.listing(AUDIENCE_LIMIT)}
            except Exception:  # noqa: BLE001 - the store away: look again later
                now = known
            if known is not None and now is not None:
                for viewer_id in now.keys() - known.keys():
                    emit("viewer_arrived", tag=now[viewer_id], name=name_of(viewer_id))
                for viewer_id in known.keys() - now.keys():
                    emit("viewer_left", tag=known[viewer_id], name=name_of(viewer_id))
            known = now
            gevent.sleep(AUDIENCE_EVERY)

    return gevent.spawn(run)
