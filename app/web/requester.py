"""The one decorator that decides who is asking, for every view that needs to know.

The token comes from the link (`?token=`), the form, or the cookie that may remember it; the
broadcaster is whoever passed HTTP Basic auth or holds a broadcaster session.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flask import g, make_response, request

from app.community.identity import COOKIE
from app.services import services


def token_from_request() -> str | None:
    return (request.args.get("token") or request.form.get("token")
            or request.cookies.get(COOKIE))


def identify(view: Callable) -> Callable:
    """Decide who is asking (viewer, banned viewer, broadcaster) before any view runs.

    The result is `g.requester`; a new viewer gets a fresh token (and, if allowed, a cookie
    that only remembers it).
    """

    @wraps(view)
    def wrapper(*args, **kwargs):
        is_broadcaster = bool(g.get("broadcaster_authenticated"))
        g.requester = services().identities.requester(token_from_request(), is_broadcaster)
        response = make_response(view(*args, **kwargs))
        if (services().config.viewers.set_cookie
                and request.cookies.get(COOKIE) != g.requester.token and not is_broadcaster):
            response.set_cookie(COOKIE, g.requester.token, max_age=30 * 86400, httponly=True,
                                samesite="Strict", path="/")
        return response

    return wrapper
