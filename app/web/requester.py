"""The one decorator that decides who is asking, for every view that needs to know.

The token comes from the cookie that may remember it, else the link (`?token=`) or the form;
the broadcaster is whoever passed HTTP Basic auth or holds a broadcaster session.

The cookie wins over a link: a link `/?token=CHOSEN` from someone else must not silently swap
the identity a browser already has for one its author also holds (token fixation). Such a
link then simply opens the viewer's own identity. Viewers without cookies carry the token in
their links only, so for them the link is the identity (and tripcodes still need their
password on every message, so a lured viewer's tripcode cannot be borrowed).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flask import Response, g, make_response, request

from app.community.identity import COOKIE, TOKEN_PATTERN
from app.services import services
from app.web.clients import client_of

OVER_BUDGET = {
    "identities": "Too many new visitors came through your connection just now. Wait a few "
                  "minutes, or go on with the link you already have.",
    "captchas": "Too many captchas went to your connection just now. Wait a few minutes.",
    "posts": "Too many messages came through your connection just now. Wait a few minutes.",
    "video": "Your connection already has as many video streams open as it may. Close one "
             "and try again.",
    "push": "Your connection already has as many live chat frames open as it may. Close a "
            "tab and try again.",
}


def cookie_token() -> str | None:
    """The well-formed token this browser's cookie remembers, if any."""
    token = request.cookies.get(COOKIE)
    return token if token and TOKEN_PATTERN.fullmatch(token) else None


def token_from_request() -> str | None:
    return cookie_token() or request.args.get("token") or request.form.get("token")


def client() -> str | None:
    """This request's client for the budgets: its Tor circuit or its address."""
    return client_of(request.environ)


def over_budget(kind: str) -> Response:
    """The short page a client over one of its budgets gets (no token, no media)."""
    return Response(OVER_BUDGET[kind] + "\n", 429, mimetype="text/plain",
                    headers={"Cache-Control": "no-store", "Retry-After": "60"})


def identify(view: Callable) -> Callable:
    """Decide who is asking (viewer, banned viewer, broadcaster) before any view runs.

    The result is `g.requester`; a new viewer gets a fresh token (and, if allowed, a cookie
    that only remembers it).
    """

    @wraps(view)
    def wrapper(*args, **kwargs):
        is_broadcaster = bool(g.get("broadcaster_authenticated"))
        g.requester = services().identities.requester(token_from_request(), is_broadcaster)
        if (g.requester.fresh and not is_broadcaster
                and not services().budgets.take(client(), "identities")):
            return over_budget("identities")
        response = make_response(view(*args, **kwargs))
        if (services().config.viewers.set_cookie
                and request.cookies.get(COOKIE) != g.requester.token and not is_broadcaster):
            response.set_cookie(COOKIE, g.requester.token, max_age=30 * 86400, httponly=True,
                                samesite="Strict", path="/")
        return response

    return wrapper
