"""`[access] invite_only`: every request for the page, the video, the playlists, the
segments or the chat needs the token of an invited viewer (app/community/invites.py);
anything else gets a short page and no media bytes. Open to all: invite links themselves,
the style sheet and the broadcaster's pages (behind their own login)."""
from __future__ import annotations

from flask import Flask, render_template, request

from app.community.identity import SESSION_COOKIE
from app.services import services
from app.web.requester import token_from_request

OPEN_PREFIXES = ("/invite/", "/static/", "/broadcaster", "/metrics", "/favicon.ico")
NOT_INVITED = "This browser has not opened an invite link, or its invite was revoked."


def init_app(app: Flask) -> None:
    if app.services.config.access.invite_only:
        app.before_request(only_invited)


def only_invited():
    if request.path.startswith(OPEN_PREFIXES):
        return None
    token, identities = token_from_request(), services().identities
    if identities.is_ours(token) and services().invites.is_invited(identities.viewer_id(token)):
        return None
    if services().sessions.valid(request.cookies.get(SESSION_COOKIE)):
        return None  # the broadcaster, logged in, watching their own stream
    return refused(NOT_INVITED)


def refused(reason: str):
    return (render_template("invitation.html", reason=reason), 403,
            {"Cache-Control": "no-store"})
