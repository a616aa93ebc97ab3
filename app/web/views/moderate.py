"""/chat/moderate: the moderators' side of the chat, plain forms in the chat's own frame.

A moderator signs in with their tripcode password (bound to their token: no cookie needed),
then sees the recent messages with Hide, Ban 10 min, Ban 1 h, Ban and Unban beside each.
Every form carries a check value derived from the server's local key and the viewer, so a
page elsewhere cannot make a moderator's browser act (cross-site forms)."""
from __future__ import annotations

import hmac

from flask import Blueprint, g, redirect, render_template, request

from app.community.identity import Requester
from app.community.moderators import ACTIONS, ModerationError
from app.services import services
from app.web.requester import client, identify, over_budget

bp = Blueprint("moderate", __name__)

SHOWN = 60  # recent messages on the page
NOTICES = {"signed-in": "Signed in as a moderator.", "signed-out": "Signed out.",
           "done": "Done."}


def form_check(who: Requester) -> str:
    return services().identities.derive("moderator-form", who.viewer_id.encode()).hex()[:32]


def checked(who: Requester) -> bool:
    return hmac.compare_digest(request.form.get("check", "").encode(), form_check(who).encode())


@bp.route("/chat/moderate", methods=["GET"])
@identify
def page():
    who: Requester = g.requester
    moderation = services().moderation
    tripcode = moderation.moderator_of(who.viewer_id)
    messages = list(reversed(services().store.recent_messages(include_hidden=True)))[:SHOWN]
    banned = {m.id: services().identities.is_banned(m.viewer_id) for m in messages
              if tripcode and not m.broadcaster}
    return render_template("chat/moderate.html", who=who, tripcode=tripcode,
                           messages=messages if tripcode else [], banned=banned,
                           modes=services().chat.modes.current(),
                           actions=ACTIONS, check=form_check(who),
                           error=request.args.get("error", "")[:200] if tripcode else "",
                           notice=NOTICES.get(request.args.get("notice", ""), "")), 200, {
        "Cache-Control": "no-store"}


@bp.route("/chat/moderate/sign-in", methods=["POST"])
@identify
def sign_in():
    who: Requester = g.requester
    if not checked(who):
        return back(who, error="This form is out of date; try again.")
    if not services().budgets.take(client(), "posts"):  # each try costs a tripcode hash
        return over_budget("posts")
    try:
        services().moderation.sign_in(who.viewer_id, request.form.get("password", ""))
    except ModerationError as exc:
        return render_template("chat/moderate.html", who=who, tripcode=None, messages=[],
                               banned={}, actions=ACTIONS, check=form_check(who), modes=None,
                               error=f"{exc}.", notice=""), 403
    return back(who, notice="signed-in")


@bp.route("/chat/moderate/sign-out", methods=["POST"])
@identify
def sign_out():
    who: Requester = g.requester
    if checked(who):
        services().moderation.sign_out(who.viewer_id)
    return back(who, notice="signed-out")


@bp.route("/chat/moderate", methods=["POST"])
@identify
def act():
    who: Requester = g.requester
    if not checked(who):
        return back(who, error="This form is out of date; try again.")
    try:
        services().moderation.act(who.viewer_id, request.form.get("action", ""),
                                  request.form.get("message_id", type=int) or 0)
    except ModerationError as exc:
        return back(who, error=f"{str(exc)[:1].upper()}{str(exc)[1:]}.")
    return back(who, notice="done")


@bp.route("/chat/moderate/modes", methods=["POST"])
@identify
def modes():
    who: Requester = g.requester
    if not checked(who):
        return back(who, error="This form is out of date; try again.")
    f = request.form
    try:
        services().moderation.set_modes(
            who.viewer_id, closed=f.get("closed") == "1",
            slow_seconds=int(f.get("slow_seconds") or 0),
            established_minutes=int(f.get("established_minutes") or 0))
    except (ModerationError, ValueError) as exc:
        return back(who, error=f"Modes not changed: {exc}.")
    return back(who, notice="done")


def back(who: Requester, notice: str = "", error: str = ""):
    """To the moderator's page; an error text is only shown to a signed-in moderator."""
    query = f"?token={who.token}" + (f"&notice={notice}" if notice else "")
    if error:
        from urllib.parse import quote

        query += f"&error={quote(error)}"
    return redirect(f"/chat/moderate{query}", 303)
