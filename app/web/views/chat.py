"""The viewer's chat, every part its own small document that works without JavaScript.

/chat/messages   a live frame: one long HTML response that appends each message as it comes
                 (or, with ?mode=poll, a page that reloads itself and answers 304 when unchanged;
                 with ?mode=enter, a short complete page that moves itself to the live frame,
                 so the viewer page finishes loading although the live frame never does)
/chat/form       the posting form: Post/Redirect/Get with a one-use nonce, captcha when needed
/chat/users      who is here, watching or not
/captcha/...     the captcha image and its audio alternative
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
)
from markupsafe import Markup

from app.community.chat import Refused, Submission, public
from app.community.hub import RESYNC, Event, Hub
from app.community.identity import Requester
from app.community.store import Message, StoreUnavailable
from app.services import services
from app.web.limits import Guarded, StreamSlots
from app.web.requester import OVER_BUDGET, client, identify
from app.web.security import style_nonce

bp = Blueprint("chat", __name__)

KEEPALIVE_SECONDS = 15.0
CHAT_UNAVAILABLE = ("Chat is temporarily unavailable: the server cannot save messages right "
                    "now. Your message was not sent; try again in a minute.")
RENDER_CACHE = 512





class MessageHTML:
    """Each message rendered once (escaped by the template), then the same bytes go to every
    open frame. Kept as Markup, so pages include it without a `|safe` anywhere."""

    def __init__(self, app):
        self.template = app.jinja_env.get_template("chat/message.html")
        self._cache: dict[int, Markup] = {}
        self._events: dict[int, tuple[str, str]] = {}

    def __call__(self, message: Message | dict) -> Markup:
        data = message if isinstance(message, dict) else public(message)
        html = self._cache.get(data["id"])
        if html is None:
            html = Markup(self.template.render(m=data))
            self._cache[data["id"]] = html
            if len(self._cache) > RENDER_CACHE:
                self._cache.pop(next(iter(self._cache)))
        return html

    def for_event(self, event: Event) -> tuple[str, str]:
        """(CSS rules, HTML) to append to an open frame for a `chat` or `hide` event.

        A new message gets `order: -id` so the column-reverse list shows it below the
        others; a hidden message gets `display: none`. Worked out once per event.
        """
        done = self._events.get(event.id)
        if done is None:
            data = json.loads(event.data)
            if event.kind == "chat":
                done = (f"#m{int(data['id'])}{{order:-{int(data['id'])}}}", self(data))
            else:
                done = ("".join(f"#m{int(i)}{{display:none}}" for i in data["ids"]), "")
            self._events[event.id] = done
            if len(self._events) > RENDER_CACHE:
                self._events.pop(next(iter(self._events)))
        return done



# --- messages --------------------------------------------------------------------------------

@bp.route("/chat/messages")
@identify
def messages():
    who: Requester = g.requester
    services().audience.still_here(who.viewer_id)
    mode = request.args.get("mode")
    if mode == "enter":
        return enter_frame(who)
    slots: StreamSlots = services().chat_slots
    source, budgets = client(), services().budgets
    # over either limit, the viewer still reads the chat, from a frame that reloads itself
    if mode != "poll" and budgets.hold(source, "push"):
        if slots.acquire(who.viewer_id):
            def release() -> None:
                slots.release(who.viewer_id)
                budgets.release(source, "push")
            try:
                return live_frame(who, release)
            except BaseException:
                release()  # no frame was handed out: give the slots back
                raise
        budgets.release(source, "push")
    return poll_frame(who)


def enter_frame(who: Requester):
    """The chat frame's first document: short, complete, then a meta refresh to the live frame.

    A page finishes loading only when every frame has; the live frame never ends, so framing
    it directly kept the whole page loading (tab busy, readyState `interactive`) in a browser
    without JavaScript. A frame that navigates after the page has loaded does not make it
    load again, so this page waits `chat.enter_seconds` (the rest of the page loads
    meanwhile) before moving on. Should the page still be loading then, the first live frame
    (`first=1`) closes after `chat.first_stream_seconds`, the page completes, and the frame
    reopens at once, now after the page's load.
    """
    live = f"/chat/messages?{who.query}&first=1"
    wanted = request.args.get("for", type=float)
    if wanted is not None and math.isfinite(wanted):
        live += f"&for={max(1, min(int(wanted), 3600))}"
    settings = services().config.chat
    response = current_app.make_response(render_template(
        "chat/enter.html", live=live, delay=max(0, round(settings.enter_seconds))))
    response.headers["Cache-Control"] = "no-store"
    return response


def poll_frame(who: Requester):
    etag = f'"{services().store.last_message_id()}-{services().chat.hide_version}"'
    if request.if_none_match.contains_weak(etag.strip('"')):
        response = Response(status=304)
    else:
        response = current_app.make_response(render_template(
            "chat/messages.html", who=who, html=current_app.message_html,
            messages=list(reversed(services().store.recent_messages())), live=False,
            refresh=services().config.chat.poll_seconds))
    response.set_etag(etag.strip('"'))
    response.headers["Cache-Control"] = "no-cache"
    return response


def live_frame(who: Requester, release: Callable[[], None]):
    hub: Hub = services().hub
    html: MessageHTML = current_app.message_html
    after = hub.last_id
    settings = services().config.chat
    lifetime = settings.stream_seconds
    refresh, refresh_url = 2, None  # when the frame ends, it reloads itself
    if request.args.get("first") == "1":  # see enter_frame: short, then the lasting frame
        lifetime = min(lifetime, settings.first_stream_seconds)
        refresh, refresh_url = 0, f"/chat/messages?{who.query}"
    head = render_template("chat/messages.html", who=who, html=html, live=True,
                           messages=list(reversed(services().store.recent_messages())),
                           refresh=refresh, refresh_url=refresh_url)
    head = head[:head.rindex("</div>")]  # leave the list open: messages are appended to it
    nonce = style_nonce()
    wanted = request.args.get("for", type=float)
    if wanted is not None:  # the offline page closes the frame early so it can refresh
        lifetime = min(lifetime, max(1.0, wanted))
    people = services().audience

    def body() -> Iterator[bytes]:
        yield head.encode()
        deadline = time.monotonic() + lifetime
        wake = min(KEEPALIVE_SECONDS, lifetime)
        for event in hub.listen(after, frozenset({"chat", "hide"}), wake):
            people.still_here(who.viewer_id)
            if event is None:
                yield b"\n"
            elif event.kind == RESYNC:
                break  # missed events: end, the page reloads itself with all of them
            else:
                rules, markup = html.for_event(event)
                yield f'<style nonce="{nonce}">{rules}</style>{markup}'.encode()
            if time.monotonic() > deadline:
                break
        yield b"</div></body></html>"

    # Guarded, not try/finally in the generator: a body that never starts (a HEAD request,
    # a client gone before the first byte) runs no finally, and its slot would never return.
    return Response(Guarded(body(), release), mimetype="text/html",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@bp.route("/chat/messages.json")
def messages_json():
    data = [public(m) for m in services().store.recent_messages()]
    return jsonify({"messages": data, "last_event": services().hub.last_id})


# --- posting ---------------------------------------------------------------------------------

def form_page(who: Requester, error: str = "", draft: str = "", status: int = 200,
              sent: bool = False):
    c = services().chat
    viewer = c.viewer(who)
    challenge = None
    captcha_busy = False
    # A request without a token (made up on the spot for it) never takes a captcha from the
    # pool: one client could load the form in a loop and leave none for real viewers. The
    # page's frame carries the token, and a first post from a token-less form gets one then.
    # A new captcha costs the client one of its budget (app/web/budgets.py).
    if not who.banned and not who.fresh and c.needs_captcha(who):
        source, budgets = client(), services().budgets
        refused = False

        def may_draw() -> bool:
            nonlocal refused
            refused = not budgets.take(source, "captchas")
            return not refused

        challenge = c.captchas.issue(who.viewer_id, may_draw)
        captcha_busy = challenge is None
        if refused and not error:
            error, status = OVER_BUDGET["captchas"], 429
    body = render_template(
        "chat/form.html", who=who, viewer=viewer, error=error, draft=draft, sent=sent,
        moderators=bool(services().moderation.moderators()),
        moderator=services().moderation.moderator_of(who.viewer_id),
        nonce=c.nonces.issue(who.viewer_id), challenge=challenge, captcha_busy=captcha_busy,
        limits=c.settings)
    response = current_app.make_response((body, status))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/chat/form", methods=["GET"])
@identify
def form():
    who: Requester = g.requester
    services().audience.still_here(who.viewer_id)
    services().chat.start_clock(who)
    return form_page(who, sent=request.args.get("sent") == "1")


@bp.route("/chat/form", methods=["POST"])
@identify
def post():
    who: Requester = g.requester
    services().audience.still_here(who.viewer_id)
    f = request.form
    if not services().budgets.take(client(), "posts"):
        return form_page(who, OVER_BUDGET["posts"], f.get("message", ""), status=429)
    submission = Submission(
        text=f.get("message", ""), name=f.get("name"),
        trip_password=f.get("tripcode", ""), clear_tripcode=f.get("clear_tripcode") == "1",
        nonce=f.get("nonce", ""), captcha_id=f.get("captcha_id", ""),
        captcha_answer=f.get("captcha", ""))
    try:
        services().chat.post(who, submission)
    except StoreUnavailable:
        return form_page(who, CHAT_UNAVAILABLE, submission.text, status=503)
    except Refused as refused:
        if not str(refused):  # a repeated submit of a form already posted
            return redirect(f"/chat/form?{who.query}&sent=1", 303)
        return form_page(who, str(refused), submission.text if refused.keep_draft else "",
                         status=refused.status)
    services().audience.saw(who.viewer_id, who.tag)  # a post lists the viewer
    return redirect(f"/chat/form?{who.query}&sent=1", 303)


# --- captcha ---------------------------------------------------------------------------------

@bp.route("/captcha/<challenge_id>.png")
@identify
def captcha_image(challenge_id: str):
    captchas = services().chat.captchas
    data = captchas.image(challenge_id, g.requester.viewer_id) if captchas else None
    if data is None:
        abort(404)
    return Response(data, mimetype="image/png", headers={"Cache-Control": "private, no-store"})


@bp.route("/captcha/<challenge_id>.wav")
@identify
def captcha_audio(challenge_id: str):
    captchas = services().chat.captchas
    data = captchas.audio(challenge_id, g.requester.viewer_id) if captchas else None
    if data is None:
        abort(404)
    if data is False:
        return Response("Too many audio captchas were requested just now. Please try again "
                        "in a minute.\n", 429, mimetype="text/plain",
                        headers={"Retry-After": "60"})
    return Response(data, mimetype="audio/wav", headers={"Cache-Control": "private, no-store"})


# --- who is here -----------------------------------------------------------------------------

USER_LIST_SECONDS = 2.0  # the list is worked out at most this often, whoever asks
USER_LIST_LIMIT = 300


def user_list() -> list[dict]:
    """Who is here, worked out at most every USER_LIST_SECONDS per process: its cost (a store
    look-up per person) does not grow with how often, or by how many, it is asked for."""
    made, people = current_app.extensions.get("livestream.user_list", (-math.inf, []))
    now = time.monotonic()
    if now - made >= USER_LIST_SECONDS:
        people = work_out_user_list(include_banned=False)
        current_app.extensions["livestream.user_list"] = (now, people)
    return people


def work_out_user_list(include_banned: bool) -> list[dict]:
    c = services().chat
    people = []
    for person in services().audience.listing(USER_LIST_LIMIT):
        viewer = c.store.viewer(person.viewer_id)
        banned = c.identities.is_banned(person.viewer_id, viewer)
        if banned and not include_banned:
            continue
        people.append({"viewer_id": person.viewer_id, "tag": person.tag,
                       "name": (viewer.name if viewer else "") or "Anonymous",
                       "tripcode": viewer.tripcode if viewer else "",
                       "colour": c.identities.colour(person.viewer_id),
                       "watching": person.watching, "banned": banned})
    return people


@bp.route("/chat/users")
@identify
def users():
    who: Requester = g.requester
    services().audience.still_here(who.viewer_id)
    people = user_list()
    count = services().audience.count()
    digest = hashlib.sha256(repr((count, people)).encode()).hexdigest()[:20]
    if request.if_none_match.contains_weak(digest):
        response = Response(status=304)
    else:
        response = current_app.make_response(render_template(
            "chat/users.html", who=who, people=people, count=count, refresh=10))
    response.set_etag(digest)
    response.headers["Cache-Control"] = "no-cache"
    return response

