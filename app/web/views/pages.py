"""The viewer page and its small self-refreshing parts, all usable without JavaScript."""
from __future__ import annotations

import time

from flask import Blueprint, g, render_template, request

from app.community.identity import TOKEN_PATTERN
from app.services import services
from app.web.requester import identify

bp = Blueprint("pages", __name__)

INFO_REFRESH_SECONDS = 20
OFFLINE_REFRESH_SECONDS = 10  # what the offline page promises: "checks again every N seconds"
# A browser starts a meta refresh's countdown only once the page has finished loading, and the
# live chat frame keeps it loading. Offline, the frame closes after this many seconds and the
# page's own meta refresh waits the rest, so the page really reloads every N seconds.
OFFLINE_CHAT_SECONDS = OFFLINE_REFRESH_SECONDS // 2



@bp.route("/")
@identify
def index():
    snap = services().stream.snapshot
    who = g.requester
    services().audience.saw(who.viewer_id, who.tag)
    return render_template("index.html", snap=snap, refresh=OFFLINE_REFRESH_SECONDS,
                           chat_seconds=OFFLINE_CHAT_SECONDS,
                           reload_after=OFFLINE_REFRESH_SECONDS - OFFLINE_CHAT_SECONDS, who=who)


def viewer_token() -> str | None:
    """The viewer's token if the address carries a well-formed one (never a new one)."""
    token = request.args.get("token")
    return token if token and TOKEN_PATTERN.fullmatch(token) else None


@bp.route("/info")
def info():
    """Title, live light and uptime; also tells a no-JS viewer when to reload the page.

    The viewer page frames it without a token and keeps its own reload link (with the token)
    next to it; given `?token=`, the frame's notices link back with that token themselves.
    Either way a reload never costs a viewer with cookies off their identity.
    """
    snap = services().stream.snapshot
    page_generation = request.args.get("gen", type=int)
    restarted = snap.online and page_generation is not None and page_generation != snap.generation
    uptime = snap.uptime(time.time())
    refresh = INFO_REFRESH_SECONDS
    countdown = None
    if not snap.online and snap.starts_at is not None and snap.starts_at > time.time():
        countdown = int(snap.starts_at - time.time()) + 1  # the watch party's --start-at/--in
        refresh = max(1, min(refresh, countdown))  # be back on time for the start
    return render_template(
        "info.html", snap=snap, restarted=restarted, page_generation=page_generation,
        uptime=int(uptime) if uptime is not None else None, refresh=refresh,
        token=viewer_token(), countdown=countdown,
    )
