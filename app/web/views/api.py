"""Small JSON endpoints for the JavaScript player: the server clock, status, the timeline.

`/api/playlist` long-polls: a player says what it already has and the answer comes as soon
as something changes (a new segment, a restart, going off or on line), so a new segment
reaches every player within a moment of the watcher seeing it, without polling the disk or
the server in a loop. Waiting costs a greenlet per player, nothing more.
"""
from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request

from app.services import services
from app.stream.status import status_of
from app.stream.watcher import Snapshot
from app.web.limits import StreamSlots
from app.web.requester import client, over_budget, token_from_request

bp = Blueprint("api", __name__, url_prefix="/api")

LONG_POLL_SECONDS = 15.0
NO_STORE = {"Cache-Control": "no-store"}




@bp.route("/clock")
def clock():
    """The server's public clock, for players to align with it (NTP style, over a few tries);
    never the host's wall clock (app/stream/clock.py)."""
    return jsonify(now=services().clock.now()), 200, NO_STORE


@bp.route("/status")
def status():
    snap = services().stream.snapshot
    clock = services().clock
    return jsonify(dict(status_of(snap, clock), now=clock.now())), 200, NO_STORE


def push_holder() -> str:
    """Whom a long push connection counts against: the viewer's id, or one shared bucket for
    every request without a token of ours (the page's own scripts always send the token)."""
    token, identities = token_from_request(), services().identities
    return identities.viewer_id(token) if identities.is_ours(token) else ""


def too_many_push(slots: StreamSlots) -> Response:
    return Response(
        f"Too many live updates are open ({slots.total} in all, {slots.per_viewer} per "
        "viewer: viewers.max_push, viewers.max_push_per_viewer). Close a tab, or wait and "
        "try again.\n", 429, mimetype="text/plain",
        headers={"Cache-Control": "no-store", "Retry-After": "5"})


@bp.route("/playlist")
def playlist():
    """The timeline; with gen/after/online it waits until it differs from what the caller has."""
    generation = request.args.get("gen", type=int)
    newest = request.args.get("after", type=int)
    was_online = request.args.get("online", type=int)
    quality = request.args.get("quality")
    snap = services().stream.snapshot.view(quality)  # a rendition's own segments and init
    if generation is not None and not is_news(snap, generation, newest, was_online):
        slots: StreamSlots = services().push_slots
        holder, source, budgets = push_holder(), client(), services().budgets
        if not budgets.hold(source, "push"):
            return over_budget("push")
        if not slots.acquire(holder):
            budgets.release(source, "push")
            return too_many_push(slots)
        try:
            deadline = time.monotonic() + LONG_POLL_SECONDS
            while True:
                snap = services().stream.snapshot.view(quality)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or is_news(snap, generation, newest, was_online):
                    break
                services().stream.wait(remaining)
        finally:
            slots.release(holder)
            budgets.release(source, "push")
    return jsonify(services().timeline.get(snap).as_json(services().clock)), 200, NO_STORE


def is_news(snap: Snapshot, generation: int | None, newest: int | None,
            was_online: int | None) -> bool:
    if generation is None or snap.generation != generation:
        return True
    if was_online is not None and bool(was_online) != snap.online:
        return True
    latest = snap.segments[-1].sequence if snap.segments else None
    return latest is not None and (newest is None or latest > newest)
