"""The broadcaster's side door: the /broadcaster blueprint, its login, sessions and CSRF.

Behind HTTP Basic auth (flask-httpauth) with failed logins rate-limited. A proven login gets a
session cookie (HttpOnly, SameSite=Strict, only sent under /broadcaster); a browser holding it
skips the password check, so guessers who keep the login locked do not lock the broadcaster
out. Every form carries a CSRF token checked in constant time (random per process; with Redis
derived from the shared server secret, so every worker takes the forms of the others), and a
cross-site Origin is refused, so another site cannot make a logged-in broadcaster's browser ban
or post.

The pages behind it each add their routes to `bp`: moderation (broadcaster.py), the watch
party's controls (party.py) and the cockpit (cockpit.py). They import this module; it imports
none of them.
"""
from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, abort, g, redirect, request
from flask_httpauth import HTTPBasicAuth

from app.community.identity import (
    SESSION_COOKIE,
    BroadcasterPassword,
    LoginLocked,
    use_login_link,
)
from app.community.store import StoreUnavailable
from app.services import services
from app.web.views.errors import store_unavailable

bp = Blueprint("broadcaster", __name__, url_prefix="/broadcaster")
auth = HTTPBasicAuth(realm="livestream broadcaster")

# ?notice= keys and what they say; each page behind the door adds its own
NOTICES: dict[str, str] = {}


@auth.verify_password
def verify(username: str, password: str):
    if services().sessions.valid(request.cookies.get(SESSION_COOKIE)):
        g.broadcaster_authenticated = True  # no password check, so no lock can apply
        return services().config.broadcaster.username
    if not username and not password:
        return None  # no credentials yet: the browser is about to ask, not a failed guess
    checker: BroadcasterPassword = services().password
    try:
        proven = checker.check(username, password)
    except LoginLocked as locked:
        g.login_locked = locked.seconds
        return None
    if proven:
        g.broadcaster_authenticated = True
        g.new_broadcaster_session = services().sessions.issue()
        return username
    return None


@bp.route("/login")
def login_link():
    """The owner's way in that no guesser can lock: a one-time link printed by
    `livestream broadcaster login-link` on the server opens a session without the password
    (and so without the failed-login lock)."""
    if not use_login_link(services().store, services().sessions.key,
                          request.args.get("key", "")):
        return Response("This login link does not work: it was already used, it is more than "
                        "10 minutes old, or it was cut short. On the server, run `livestream "
                        "broadcaster login-link` for a new one.\n", 403,
                        mimetype="text/plain", headers={"Cache-Control": "no-store"})
    g.new_broadcaster_session = services().sessions.issue()
    return redirect("/broadcaster", 303)


@bp.after_request
def hand_out_session(response: Response) -> Response:
    """After a proven password, the browser gets a session (a cookie only /broadcaster sees)."""
    session_id = g.pop("new_broadcaster_session", None)
    if session_id is not None:
        response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="Strict",
                            path=bp.url_prefix)
    return response


@auth.error_handler
def refused(status):
    locked = g.get("login_locked")
    if locked:
        return Response("Too many failed logins. Try again in a minute, or, on the server, "
                        "run `livestream broadcaster login-link` for a one-time link that "
                        "works even now.\n", 429,
                        mimetype="text/plain", headers={"Retry-After": str(int(locked) + 1)})
    return Response("The broadcaster page needs the broadcaster's user name (broadcaster) "
                    "and password. Forgot it? On the server, `livestream broadcaster "
                    "login-link` prints a one-time link.\n", status, mimetype="text/plain")


@bp.before_request
def private_way_only():
    """With [broadcaster] allow_clearnet = false (a droplet on the open internet), the page
    and its password are only offered to loopback peers: the onion service and an SSH
    tunnel arrive from 127.0.0.1, a browser on the public address does not, so the password
    and the session cookie never cross the internet in clear."""
    if services().config.broadcaster.allow_clearnet or _is_loopback(request.remote_addr):
        return None
    return Response("The broadcaster page is not offered on this public address. Open it "
                    "through the onion address or an SSH tunnel (`livestream cloud up` "
                    "printed both).\n", 404, mimetype="text/plain")


def _is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


@bp.before_request
def check_csrf():
    """Every POST must carry the CSRF token (services().csrf_token: this process's, or the
    workers' shared one) and must not come from another site."""
    if request.method != "POST":
        return None
    if is_cross_site():
        abort(403, "cross-site request refused")
    sent = request.form.get("csrf", "")
    expected = services().csrf_token
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        return Response("This form is missing its security token or it is stale (the server "
                        "restarted). Go back, reload the broadcaster page and try again.\n",
                        403, mimetype="text/plain")
    return None


@bp.errorhandler(StoreUnavailable)
def not_saved(error: StoreUnavailable):
    """Moderation that could not be saved is reported on the page, not lost silently."""
    if request.method == "POST":
        return failed("Not saved: the state database is unavailable (locked or the disk is "
                      "full). Nothing was changed; try again in a minute.")
    return store_unavailable(error)


def is_cross_site() -> bool:
    """True when the browser says the request comes from another site (or says it garbled)."""
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return False  # no Origin (old browsers, privacy settings): the CSRF token decides
    try:
        return urlsplit(origin).netloc != request.host
    except ValueError:  # not a URL at all: certainly not this site
        return True


def done(notice: str, anchor: str = ""):
    return redirect(f"/broadcaster?notice={notice}{anchor}", 303)


ERROR_LENGTH = 300


def error_signature(text: str) -> str:
    """Keyed with the server secret: only this server can make a link that shows a text."""
    identities = services().identities
    return identities.derive("broadcaster-error", text.encode()).hex()[:32]


def failed(reason: str):
    """Back to the page with the reason in the link, signed so a crafted link shows nothing."""
    reason = reason[:ERROR_LENGTH]
    return redirect(f"/broadcaster?error={quote(reason)}&sig={error_signature(reason)}", 303)


def shown_error() -> str:
    """The error from the link if this server wrote it; anything else is ignored: a link from
    someone else must not show the broadcaster a message that seems to come from here."""
    text = request.args.get("error", "")
    signature = request.args.get("sig", "")
    if not text or len(text) > ERROR_LENGTH:
        return ""
    if not hmac.compare_digest(signature.encode(), error_signature(text).encode()):
        return ""
    return text


@bp.route("/logout", methods=["POST"])
@auth.login_required
def logout():
    """End this browser's session (the browser may still remember the password itself)."""
    services().sessions.end(request.cookies.get(SESSION_COOKIE))
    g.pop("new_broadcaster_session", None)
    response = redirect("/", 303)  # not back here: the saved login would open a new session
    response.delete_cookie(SESSION_COOKIE, path=bp.url_prefix, httponly=True,
                           samesite="Strict")
    return response
