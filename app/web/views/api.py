"""Small JSON endpoints for the JavaScript player: the server clock, status, the timeline.

`/api/playlist` long-polls: a player says what it already has and the answer comes as soon
as something changes (a new segment, a restart, going off or on line), so a new segment
reaches every player within a moment of the watcher seeing it, without polling the disk or
the server in a loop. Waiting costs a greenlet per player, nothing more.
"""
from __future__ import annotations

import time

from flask import Blueprint, jsonify, request

from app.services import services
from app.stream.status import status_of
from app.stream.watcher import Snapshot

bp = Blueprint("api", __name__, url_prefix="/api")

LONG_POLL_SECONDS = 15.0
NO_STORE = {"Cache-Control": "no-store"}




@bp.route("/clock")
def clock():
    """The server's wall clock, for players to align with it (NTP style, over a few tries)."""
    return jsonify(now=time.time()), 200, NO_STORE


@bp.route("/status")
def status():
    snap = services().stream.snapshot
    return jsonify(dict(status_of(snap), now=time.time())), 200, NO_STORE


@bp.route("/playlist")
def playlist():
    """The timeline; with gen/after/online it waits until it differs from what the caller has."""
    generation = request.args.get("gen", type=int)
    newest = request.args.get("after", type=int)
    was_online = request.args.get("online", type=int)
    deadline = time.monotonic() + (LONG_POLL_SECONDS if generation is not None else 0)
    quality = request.args.get("quality")
    while True:
        snap = services().stream.snapshot.view(quality)  # a rendition's own segments and init
        remaining = deadline - time.monotonic()
        if remaining <= 0 or is_news(snap, generation, newest, was_online):
            break
        services().stream.wait(remaining)
    return jsonify(services().timeline.get(snap).as_json(time.time())), 200, NO_STORE


def is_news(snap: Snapshot, generation: int | None, newest: int | None,
            was_online: int | None) -> bool:
    if generation is None or snap.generation != generation:
        return True
    if was_online is not None and bool(was_online) != snap.online:
        return True
    latest = snap.segments[-1].sequence if snap.segments else None
    return latest is not None and (newest is None or latest > newest)
