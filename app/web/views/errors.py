"""Error pages that say what went wrong for the viewer and nothing about the server.

No stack traces, no versions, no paths: a hostile viewer learns only the status code.
"""
from __future__ import annotations

import logging

from flask import Blueprint, abort, render_template, request
from werkzeug.exceptions import HTTPException

from app.community.identity import TOKEN_PATTERN
from app.community.store import StoreUnavailable
from app.web.limits import TOO_LARGE

bp = Blueprint("errors", __name__)
log = logging.getLogger(__name__)

EXPLANATIONS = {
    400: "The request could not be understood.",
    403: "You are not allowed to see this.",
    404: "There is nothing here. The stream is on the front page.",
    405: "This address does not accept that kind of request.",
    413: "What you sent is too large.",
    429: "Too many requests. Wait a little and try again.",
    500: "Something went wrong on the server. Try again in a moment.",
    503: "The chat is temporarily unavailable (the server cannot save anything right now). "
         "The stream still plays; try again in a minute.",
}


def error_page(code: int, name: str):
    text = EXPLANATIONS.get(code, "The request could not be completed.")
    return render_template("error.html", code=code, name=name, text=text,
                           token=token_in_query()), code


def token_in_query() -> str | None:
    """The viewer's token from the address, so "back to the stream" keeps who they are.

    Only the query string: the body of a refused request (too large, say) is never read here.
    """
    token = request.args.get("token")
    return token if token and TOKEN_PATTERN.fullmatch(token) else None


@bp.before_app_request
def refuse_oversized_body():
    """limits.BodyLimit found a chunked body over server.max_body_bytes."""
    if request.environ.get(TOO_LARGE):
        abort(413)


@bp.app_errorhandler(HTTPException)
def http_error(error: HTTPException):
    if error.code is None or error.code < 400:
        return error  # redirects and the like pass through untouched
    response = error.get_response()
    body, code = error_page(error.code, error.name)
    response.set_data(body)
    response.mimetype = "text/html"
    return response, code


@bp.app_errorhandler(StoreUnavailable)
def store_unavailable(error: StoreUnavailable):
    """The state database is locked or the disk is full: say so, not "500"."""
    body, code = error_page(503, "Service Unavailable")
    return body, code, {"Retry-After": "30", "Cache-Control": "no-store"}


@bp.app_errorhandler(Exception)
def unexpected_error(error: Exception):
    log.exception("unhandled error")  # the details go to the log, never to the viewer
    return error_page(500, "Internal Server Error")
