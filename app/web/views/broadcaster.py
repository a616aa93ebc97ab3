"""/broadcaster: moderation, word filters, title and the broadcaster's own messages.

Login, sessions and the CSRF check are the side door's (backstage.py)."""
from __future__ import annotations

import hmac
import time
from urllib.parse import quote

from flask import Response, current_app, g, redirect, render_template, request

from app.community.chat import Refused, Submission
from app.community.export import FORMATS, SinceError, export, parse_since
from app.community.filters import ACTIONS, FilterError
from app.community.identity import BROADCASTER_ID
from app.community.invites import InviteError
from app.community.moderators import ModerationError
from app.community.schedule import ScheduleError, parse_when
from app.services import services
from app.stream import folder
from app.stream.folder import clean_title
from app.web.requester import identify
from app.web.views.backstage import (
    NOTICES,
    auth,
    bp,
    done,
    error_signature,
    failed,
    shown_error,
)
from app.web.views.chat import work_out_user_list

NOTICES.update({
    "posted": "Message sent.", "hidden": "Message hidden.", "banned": "Viewer banned.",
    "banned-hidden": "Viewer banned and their messages hidden.", "unbanned": "Ban lifted.",
    "filter-added": "Filter added.", "filter-removed": "Filter removed.",
    "title": "Title changed.", "modes": "Chat modes changed.",
    "scheduled": "Next stream set.", "unscheduled": "Next stream cleared.",
    "invited": "Invite made: copy the link above; it is shown only now.",
    "revoked": "Invite revoked: the viewers who opened it have no access now.",
    "moderator-added": "Moderator added.", "moderator-removed": "Moderator removed.",
    "undone": "The moderator's action was undone.",
})
BANS_SHOWN = 300
MAX_BAN_MINUTES = 366 * 24 * 60


@bp.route("", methods=["GET"])
@auth.login_required
@identify
def page():
    c = services().chat
    store = c.store
    messages = list(reversed(store.recent_messages(include_hidden=True)))
    now = time.time()
    every_ban = sorted((b for b in store.bans().values() if b.active(now)),
                       key=lambda b: -b.created)
    bans = every_ban[:BANS_SHOWN]  # one page, however many tokens a word filter has banned
    names = {}
    for ban in bans:
        if ban.kind == "viewer":
            viewer = store.viewer(ban.value)
            names[ban.value] = viewer.name if viewer and viewer.name else "Anonymous"
    error = shown_error()
    body = render_template(
        "broadcaster.html", who=g.requester, messages=messages,
        people=work_out_user_list(True),
        bans=bans, more_bans=len(every_ban) - len(bans), names=names,
        filters=store.filters(), actions=ACTIONS,
        csrf=services().csrf_token,
        notice=NOTICES.get(request.args.get("notice", ""), ""), error=error,
        title=services().stream.snapshot.title,
        stream_warning=long_segment_warning(services().stream.snapshot),
        preview_quality=lowest_quality(services().stream.snapshot),
        count=services().audience.count(), limits=c.settings, modes=c.modes.current(),
        planned=c.schedule.current(), invites=services().invites.invites(),
        invite_only=services().config.access.invite_only, new_invite=shown_invite(),
        invite_end=invite_end, moderators=services().moderation.moderators(),
        moderation_log=services().moderation.log()[:50], utc_time=utc_time,
        broadcaster_id=BROADCASTER_ID, until=ban_end)
    response = current_app.make_response(body)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/chat-export", methods=["GET"])
@auth.login_required
def chat_export():
    """Every kept message as a file (hidden ones marked): ?format=txt|csv|json&since=2h."""
    fmt = request.args.get("format", "txt")
    if fmt not in FORMATS:
        return Response(f"format must be one of {', '.join(FORMATS)}\n", 400,
                        mimetype="text/plain")
    try:
        since = parse_since(request.args.get("since", "")[:64])
    except SinceError as exc:
        return Response(f"since: {exc}\n", 400, mimetype="text/plain")
    return Response(export(services().store.history(since), fmt),
                    mimetype=FORMATS[fmt] + "; charset=utf-8",
                    headers={"Cache-Control": "no-store",
                             "Content-Disposition": f'attachment; filename="chat.{fmt}"'})


def ban_end(ban) -> str:
    """When a timed ban ends, in UTC (the page never guesses the reader's time zone)."""
    if not ban.expires:
        return "for good"
    return "until " + time.strftime("%H:%M UTC", time.gmtime(ban.expires))


def lowest_quality(snap) -> str:
    """The preview plays the lowest rendition: cheap for the broadcaster's own link."""
    return snap.qualities[-1].name if len(snap.qualities) > 1 else ""


def long_segment_warning(snap) -> str:
    """The streamer's keyframe interval, judged from what arrives: any source, OBS included."""
    longest = max((seg.duration for seg in snap.segments[-5:]), default=0.0)
    if longest <= folder.LONG_SEGMENT_SECONDS:
        return ""
    return (f"Segments are up to {longest:.0f} s long: the source's keyframes are more than "
            f"{folder.LONG_SEGMENT_SECONDS:.0f} s apart, so viewers start late and the stream "
            "may look offline between segments. Set the keyframe interval to 1 s (OBS: "
            "Settings > Output > Keyframe Interval).")


@bp.route("/post", methods=["POST"])
@auth.login_required
@identify
def post():
    try:
        services().chat.post(g.requester, Submission(text=request.form.get("message", "")))
    except Refused as refused_:
        return failed(str(refused_))
    return done("posted")


@bp.route("/hide", methods=["POST"])
@auth.login_required
def hide():
    message_id = request.form.get("message_id", type=int)
    if message_id is None:
        return failed("No message was chosen to hide.")
    services().chat.hide([message_id])
    return done("hidden")


@bp.route("/ban", methods=["POST"])
@auth.login_required
def ban():
    viewer_id = request.form.get("viewer_id", "")
    if not viewer_id or viewer_id == BROADCASTER_ID:
        return failed("No viewer was chosen to ban.")
    hide_all = request.form.get("hide_all") == "1"
    minutes = request.form.get("minutes", type=int) or 0
    if not 0 <= minutes <= MAX_BAN_MINUTES:
        return failed("A timed ban lasts at most a year; leave it empty for good.")
    services().chat.ban(viewer_id, hide_all=hide_all, note="broadcaster", minutes=minutes)
    return done("banned-hidden" if hide_all else "banned")


@bp.route("/unban", methods=["POST"])
@auth.login_required
def unban():
    kind = request.form.get("kind", "viewer")
    value = request.form.get("value", "")
    services().chat.unban(value, kind)
    return done("unbanned")


@bp.route("/filters", methods=["POST"])
@auth.login_required
def add_filter():
    f = request.form
    action = f.get("action", "censor")
    if action not in ACTIONS:
        return failed(f"Unknown filter action {action!r}; choose censor, block or ban.")
    try:
        services().chat.add_filter(f.get("pattern", ""), f.get("regex") == "1",
                                   f.get("case") == "1", action)
    except (FilterError, ValueError) as exc:
        return failed(f"Filter not added: {exc}.")
    return done("filter-added")


@bp.route("/filters/remove", methods=["POST"])
@auth.login_required
def remove_filter():
    filter_id = request.form.get("filter_id", type=int)
    if filter_id is not None:
        services().chat.remove_filter(filter_id)
    return done("filter-removed")


@bp.route("/modes", methods=["POST"])
@auth.login_required
def modes():
    f = request.form
    try:
        services().chat.change_modes(
            closed=f.get("closed") == "1", slow_seconds=int(f.get("slow_seconds") or 0),
            established_minutes=int(f.get("established_minutes") or 0))
    except ValueError as exc:
        return failed(f"Modes not changed: {exc}.")
    return done("modes")


@bp.route("/moderators", methods=["POST"])
@auth.login_required
def moderators():
    moderation = services().moderation
    if request.form.get("remove"):
        moderation.remove(request.form["remove"])
        return done("moderator-removed")
    try:
        moderation.add(request.form.get("tripcode", ""), request.form.get("note", ""))
    except ModerationError as exc:
        return failed(f"Moderator not added: {exc}.")
    return done("moderator-added")


@bp.route("/moderation/undo", methods=["POST"])
@auth.login_required
def undo():
    try:
        services().moderation.undo(request.form.get("action_id", ""))
    except ModerationError as exc:
        return failed(f"Not undone: {exc}.")
    return done("undone")


def utc_time(moment: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(moment))


@bp.route("/invites", methods=["POST"])
@auth.login_required
def new_invite():
    f = request.form
    try:
        hours = float(f.get("hours") or 0)
        if not 0 <= hours <= 366 * 24:
            raise InviteError("an invite expires within a year, or never (0)")
        _, code = services().invites.new(-1 if f.get("uses") == "many" else 1, hours,
                                         f.get("note", ""))
    except (InviteError, ValueError) as exc:
        return failed(f"No invite made: {exc}.")
    link = f"{request.host_url}invite/{code}"
    return redirect(f"/broadcaster?notice=invited&invite={quote(link)}"
                    f"&isig={error_signature(link)}", 303)


@bp.route("/invites/revoke", methods=["POST"])
@auth.login_required
def revoke_invite():
    services().invites.revoke(request.form.get("invite_id", ""))
    return done("revoked")


def shown_invite() -> str:
    """The link just made, from this page's own redirect (signed: a crafted link shows
    nothing)."""
    link, signature = request.args.get("invite", ""), request.args.get("isig", "")
    if link and hmac.compare_digest(signature.encode(), error_signature(link).encode()):
        return link
    return ""


def invite_end(invite) -> str:
    return ("never expires" if not invite.expires
            else "until " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(invite.expires)))


@bp.route("/schedule", methods=["POST"])
@auth.login_required
def schedule():
    f = request.form
    book = services().chat.schedule
    if f.get("clear") == "1":
        book.clear()
        return done("unscheduled")
    try:
        book.set(parse_when(f.get("at", "")), f.get("note", ""), f.get("chat_open") == "1")
    except ScheduleError as exc:
        return failed(f"Next stream not set: {exc}.")
    return done("scheduled")


@bp.route("/title", methods=["POST"])
@auth.login_required
def title():
    text = clean_title(request.form.get("title", ""), "")
    if not text:
        return failed("The title is empty.")
    services().stream.set_title(text)
    return done("title")
