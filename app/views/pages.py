"""The viewer page and its small self-refreshing parts, all usable without JavaScript."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, g, render_template, request

from ..identity import identify
from ..stream import StreamState

bp = Blueprint("pages", __name__)

INFO_REFRESH_SECONDS = 20
OFFLINE_REFRESH_SECONDS = 10


def state() -> StreamState:
    return current_app.extensions["stream"]


@bp.route("/")
@identify
def index():
    snap = state().snapshot
    who = g.requester
    current_app.extensions["audience"].saw(who.viewer_id, who.tag)
    return render_template("index.html", snap=snap, refresh=OFFLINE_REFRESH_SECONDS, who=who)


@bp.route("/info")
def info():
    """Title, live light and uptime; also tells a no-JS viewer when to reload the page."""
    snap = state().snapshot
    page_generation = request.args.get("gen", type=int)
    restarted = snap.online and page_generation is not None and page_generation != snap.generation
    uptime = snap.uptime(time.time())
    return render_template(
        "info.html", snap=snap, restarted=restarted, page_generation=page_generation,
        uptime=int(uptime) if uptime is not None else None, refresh=INFO_REFRESH_SECONDS,
    )
