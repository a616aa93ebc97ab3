"""/broadcaster/party: the watch party's host controls as plain forms (no JavaScript).

They reach the `livestream play` queue running on this machine through its control socket
(app/sources/party/control.py). The broadcaster blueprint's login and CSRF check guard them,
so only a logged-in broadcaster's own forms can pause or seek for everyone.
"""
from __future__ import annotations

import re

from app.services import services
from app.sources.party import control
from app.web.views.backstage import NOTICES, auth, bp, done, failed

ACTIONS = ("pause", "resume", "seek", "next", "prev")
SEEK_PATTERN = re.compile(r"[+-]?\d{1,6}(?::\d{1,2}){0,2}(?:\.\d{1,3})?")
CONTROL_TIMEOUT = 15.0  # a pause waits for ffmpeg to finish its segment

NOTICES.update({
    "party-pause": "Paused for everyone.", "party-resume": "Playing again for everyone.",
    "party-seek": "Moved for everyone.", "party-next": "Next item.",
    "party-prev": "Previous item.",
})


@bp.app_template_global()
def party_status() -> dict | None:
    """The running queue's status for the broadcaster page, or None when none runs."""
    try:
        return control.send(services().config.state_dir, "status", timeout=2.0)["status"]
    except control.ControlError:
        return None


@bp.route("/party", methods=["POST"])
@auth.login_required
def party():
    action = _form_value("action")
    argument = _form_value("target") or _form_value("by")
    if action not in ACTIONS:
        return failed("Unknown watch party control; use the buttons on this page.")
    if action == "seek" and not SEEK_PATTERN.fullmatch(argument):
        return failed("Seek needs a time such as +30, -10 or 1:02:03.")
    try:
        control.send(services().config.state_dir, action, argument if action == "seek" else "",
                     timeout=CONTROL_TIMEOUT)
    except control.ControlError as exc:
        return failed(f"Not done: {exc}.")
    return done(f"party-{action}", "#party")


def _form_value(name: str) -> str:
    from flask import request

    return request.form.get(name, "").strip()[:32]
