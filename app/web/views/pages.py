"""The viewer page and its small self-refreshing parts, all usable without JavaScript."""
from __future__ import annotations

import secrets
import time
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, g, redirect, render_template, request

from app.community.identity import TOKEN_PATTERN
from app.community.invites import InviteError
from app.services import services
from app.web.access import refused
from app.web.requester import cookie_token, identify

bp = Blueprint("pages", __name__)

INFO_REFRESH_SECONDS = 20
# What the offline page promises ("checks again every N seconds"). A meta refresh counts down
# only once the page has loaded; the chat frame enters the live frame by a meta refresh of its
# own (chat.enter_frame), so the page does finish loading and the countdown is N.
OFFLINE_REFRESH_SECONDS = 10


@bp.route("/favicon.ico")
def favicon():
    """Browsers that ignore the page's icon link ask here; the same picture, not a 404."""
    return current_app.send_static_file("favicon.svg")


@bp.route("/")
def index():
    """The viewer page. A browser whose cookie holds its token gets the page at a clean
    address (`/?token=` is redirected away), so copying the address bar to invite someone
    never hands them the chat identity; only cookie-less viewers keep the token in it."""
    if "token" in request.args and cookie_token():
        rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
        return redirect("/" + (f"?{urlencode(rest)}" if rest else ""), 303)
    return page()


@identify
def page():
    snap = services().stream.snapshot
    who = g.requester
    services().audience.still_here(who.viewer_id)
    quality = chosen_quality(snap)
    keep = f"&quality={quality}" if quality else ""
    planned = None if snap.online else services().chat.schedule.current()
    return render_template("index.html", snap=snap, refresh=OFFLINE_REFRESH_SECONDS, who=who,
                           planned=planned,
                           token_in_address="token" in request.args,
                           quality=quality, qualities=quality_links(snap, quality), keep=keep,
                           players=player_addresses(who.query + keep),
                           load_id=secrets.token_urlsafe(6))


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


def player_addresses(query: str) -> list[tuple[str, str]]:
    """(what, address) pairs for VLC or mpv, carrying `query` (the viewer's token).

    Relative links: the browser's "Copy Link" turns them into full addresses as the viewer
    reached us (the onion address over Tor), and the page names no host of its own. `query`
    is where a chosen quality rides too (e.g. "token=...&quality=low").
    """
    return [("HLS playlist (VLC, mpv, most players)", f"/stream.m3u8?{query}"),
            ("One long MP4 (mpv, VLC, browsers)", f"/stream.mp4?{query}")]


def viewer_token() -> str | None:
    """The viewer's token if the address carries a well-formed one (never a new one)."""
    token = request.args.get("token")
    return token if token and TOKEN_PATTERN.fullmatch(token) else None


@bp.route("/invite/<code>")
@identify
def invite(code: str):
    """Open an invite link: this viewer's identity is invited from now on, then the page."""
    who = g.requester
    try:
        services().invites.redeem(code[:64], who.viewer_id)
    except InviteError as exc:
        return refused(f"{str(exc)[:1].upper()}{str(exc)[1:]}.")
    return redirect(f"/?token={who.token}", 303)


@bp.route("/schedule.ics")
def schedule_ics():
    """The next stream for the viewer's own calendar, which shows it in their time zone."""
    planned = services().chat.schedule.current()
    if planned is None:
        return Response("No stream is scheduled.\n", 404, mimetype="text/plain")
    return Response(planned.ics(services().stream.snapshot.title), mimetype="text/calendar",
                    headers={"Content-Disposition": 'attachment; filename="next-stream.ics"',
                             "Cache-Control": "no-cache"})


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
