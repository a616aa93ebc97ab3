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
    quality = chosen_quality(snap)
    return render_template("index.html", snap=snap, refresh=OFFLINE_REFRESH_SECONDS,
                           chat_seconds=OFFLINE_CHAT_SECONDS,
                           reload_after=OFFLINE_REFRESH_SECONDS - OFFLINE_CHAT_SECONDS, who=who,
                           quality=quality, qualities=quality_links(snap, quality),
                           keep=f"&quality={quality}" if quality else "")


def chosen_quality(snap) -> str:
    """?quality=NAME when NAME is a rendition the stream has; "" (the top one) otherwise."""
    wanted = request.args.get("quality", "")
    return wanted if any(v.name == wanted for v in snap.qualities[1:]) else ""


def quality_links(snap, chosen: str) -> list[dict]:
    """The qualities offered as plain links (no JavaScript needed): name, rate, chosen?"""
    if len(snap.qualities) < 2:
        return []
    links = []
    for i, variant in enumerate(snap.qualities):
        label = variant.name
        if variant.resolution:
            label += f" {variant.resolution.rpartition('x')[2]}p"
        if variant.bandwidth:
            label += f", {variant.bandwidth / 1e6:.1f} Mbit/s"
        links.append({"name": "" if i == 0 else variant.name, "label": label,
                      "chosen": (variant.name == chosen) or (i == 0 and not chosen)})
    return links


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
    return render_template(
        "info.html", snap=snap, restarted=restarted, page_generation=page_generation,
        uptime=int(uptime) if uptime is not None else None, refresh=INFO_REFRESH_SECONDS,
        token=viewer_token(),
    )
