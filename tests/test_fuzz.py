"""Hostile input: property-based fuzzing of every route and form.

Breadth comes from a Flask test client of the real app (real SQLite, real captchas, real
templates); a sample is then replayed against a real server process over HTTP. Whatever is
sent: never a 500, never a crash, never injected markup back unescaped, and every HTML answer
forbids framing by other sites.
"""
from __future__ import annotations

import base64
import re
import socket
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import make_app

# Every injected payload carries the marker "zqx": its raw form must never come back in HTML.
PAYLOADS = [
    "<zqx-tag>", "<script>zqx()</script>", '"><svg onload=zqx>', "'><img src=x onerror=zqx>",
    '" zqx-attr="1', "' zqx-attr='1", "</textarea><zqx-tag>", "</style><zqx-tag>",
    "<!--zqx-->", "javascript:zqx()", "{{ 7*191 }}zqx", "{% print(7*191) %}zqx",
    "%00zqx", "\x00zqx\x00", "\u202ezqx\u202d", "zqx\r\nSet-Cookie: zqx=1",
    "../../../etc/passwd", "zqx" * 400,
]
RAW_MARKERS = [b"<zqx-tag", b"<script>zqx", b"<svg onload=zqx", b"<img src=x onerror=zqx",
               b'" zqx-attr="', b"' zqx-attr='", b"<!--zqx",
               b"1337zqx"]  # the last one: a template evaluated what a viewer sent
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

hostile = st.one_of(
    st.text(max_size=200),
    st.sampled_from(PAYLOADS),
    st.builds(lambda a, p, b: a + p + b, st.text(max_size=40), st.sampled_from(PAYLOADS),
              st.text(max_size=40)),
)
tokens = st.one_of(st.none(), hostile, st.text("abcXYZ019_-", min_size=16, max_size=64),
                   st.from_regex(r"[A-Za-z0-9_-]{15,65}", fullmatch=True))
ids = st.one_of(hostile, st.integers(min_value=-2**70, max_value=2**70).map(str),
                st.sampled_from(["", "0", "-1", "1e309", "nan", "inf", "0x10", " 7 "]))
BROADCASTER = ("broadcaster", "fuzz-password")
# the real server process sampled at the end: the `server` fixture in conftest.py
CHAT_CONFIG = "[chat]\nmin_interval = 0.001\nwindow_messages = 1000\n"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """This module's app: fast flood rules, readable captcha answers, a known password."""
    folder = tmp_path_factory.mktemp("fuzz")
    application = make_app(folder, {
        "server": {"max_body_bytes": 65536},
        "chat": {"min_interval": 0.001, "window_messages": 1000, "tripcode_cost": 16},
        "captcha": {"generate_per_second": 1000.0,
                    "testing_answers_file": str(folder / "answers.txt")},
        "broadcaster": {"password": BROADCASTER[1], "failed_logins": 1_000_000},
    })
    application.answers_file = folder / "answers.txt"
    yield application
    application.services.stop()


@pytest.fixture(scope="module")
def client(app):
    return app.test_client(use_cookies=False)


def basic(user: str, password: str) -> dict:
    raw = f"{user}:{password}".encode("utf-8", "surrogatepass")
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


AUTH = basic(*BROADCASTER)


def check(response, *allowed: int) -> bytes:
    """The invariants of every answer; returns the body (streams are cut after one chunk)."""
    status = response.status_code
    assert status != 500 and status < 600, f"{status} for {response.request.path}"
    if allowed:
        assert status in allowed, f"{status} not in {allowed}"
    body = b""
    if response.is_streamed:
        for chunk in response.response:
            body = chunk if isinstance(chunk, bytes) else str(chunk).encode()
            break
        response.close()
    else:
        body = response.get_data()
    if response.mimetype == "text/html":
        lowered = body.lower()
        for marker in RAW_MARKERS:
            assert marker.lower() not in lowered, f"unescaped {marker!r} in {response.request.path}"
        assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    for name, value in response.headers.items():
        assert "\n" not in value and "\r" not in value, f"header splitting in {name}"
    return body


def token_query(token: str | None) -> str:
    return "" if token is None else "token=" + quote(token, safe="")


def csrf(client) -> str:
    page = check(client.get("/broadcaster", headers=AUTH), 200).decode()
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    return found.group(1) if found else ""


def answer_for(app, captcha_id: str) -> str:
    for line in app.answers_file.read_text().splitlines():
        cid, answer = line.split()
        if cid == captcha_id:
            return answer
    return ""


# --- every GET route, with hostile query strings and headers -------------------------------

GET_PATHS = ["/", "/info", "/events", "/api/clock", "/api/status", "/api/playlist",
             "/chat/messages", "/chat/messages.json", "/chat/form", "/chat/users",
             "/stream.mp4", "/stream.m3u8", "/static/style.css", "/broadcaster",
             "/broadcaster/login", "/favicon.ico", "/broadcaster/cockpit", "/metrics",
             "/broadcaster/chat-export", "/fragments", "/schedule.ics", "/chat/moderate"]
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200)


@FUZZ
@given(path=st.sampled_from(GET_PATHS), token=tokens,
       params=st.dictionaries(st.sampled_from(["gen", "after", "online", "since", "mode", "for",
                                               "sent", "notice", "error", "token", "key", "x",
                                               "format", "_HLS_msn", "_HLS_part", "seq",
                                               "k", "quality"]),
                              st.one_of(hostile, ids), max_size=4),
       headers=st.dictionaries(st.sampled_from(["If-None-Match", "Last-Event-ID", "Cookie",
                                                "Accept-Encoding", "Origin", "Referer", "Range",
                                                "Accept-Language", "X-Forwarded-For"]),
                               header_values, max_size=4))
def test_every_get_route_survives_hostile_queries_and_headers(client, monkeypatch, path, token,
                                                              params, headers):
    monkeypatch.setattr("app.web.views.api.LONG_POLL_SECONDS", 0.01)
    monkeypatch.setattr("app.web.views.chat.KEEPALIVE_SECONDS", 0.01)
    query = "&".join([token_query(token)] + [f"{quote(k)}={quote(v, safe='')}"
                                              for k, v in params.items()])
    check(client.get(f"{path}?{query}", headers=headers))


@FUZZ
@given(name=st.one_of(hostile, st.sampled_from(["..", ".", "%2e%2e", "stream.m3u8",
                                                "..%2fconfig.toml", "a" * 300])),
       kind=st.sampled_from(["/stream/", "/captcha/", "/static/"]),
       suffix=st.sampled_from(["", ".png", ".wav", ".m4s", ".mp4"]), token=tokens)
def test_file_and_captcha_names_are_never_a_way_in(client, name, kind, suffix, token):
    response = client.get(kind + quote(name, safe="") + suffix + "?" + token_query(token))
    check(response, 200, 301, 302, 308, 404, 405)
    if kind != "/static/":
        assert response.status_code == 404  # offline stream, never-issued captcha


# --- the chat form ---------------------------------------------------------------------------

@FUZZ
@given(message=hostile, name=st.one_of(st.none(), hostile), trip=hostile,
       answer=st.one_of(hostile, st.just("RIGHT")), token=tokens, clear=st.booleans(),
       nonce=st.one_of(st.just("FROM-FORM"), hostile))
def test_chat_form_survives_and_escapes_everything(app, client, message, name, trip, answer,
                                                   token, clear, nonce):
    form = check(client.get("/chat/form?" + token_query(token)), 200).decode()
    token = field(form, "token") or token
    data = {"message": message, "tripcode": trip, "token": token or "",
            "nonce": field(form, "nonce") if nonce == "FROM-FORM" else nonce,
            "captcha_id": field(form, "captcha_id")}
    data["captcha"] = (answer_for(app, data["captcha_id"]) if answer == "RIGHT" else answer)
    if name is not None:
        data["name"] = name
    if clear:
        data["clear_tripcode"] = "1"
    posted = client.post("/chat/form?" + token_query(token), data=data)
    check(posted, 200, 303, 400, 403, 429, 503)
    for page in ("/chat/messages?mode=poll", "/chat/users", "/chat/form", "/"):
        check(client.get(page + "&" + token_query(token) if "?" in page
                         else page + "?" + token_query(token)))
    check(client.get("/broadcaster", headers=AUTH), 200)
    assert client.get("/chat/messages.json").is_json


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["message", "name", "tripcode", "nonce",
                                               "captcha_id", "captcha", "token",
                                               "clear_tripcode", "other"]),
                              hostile, max_size=9),
       content_type=st.sampled_from(["application/x-www-form-urlencoded",
                                     "multipart/form-data", "text/plain", "application/json",
                                     "multipart/form-data; boundary=", ""]),
       raw=st.booleans())
def test_chat_post_with_arbitrary_fields_and_bodies(client, fields, content_type, raw):
    if raw:
        body = "&".join(f"{k}={v}" for k, v in fields.items()).encode("utf-8", "replace")
        response = client.post("/chat/form", data=body, content_type=content_type)
    else:
        response = client.post("/chat/form", data=fields)
    check(response, 200, 303, 400, 403, 413, 415, 429, 503)


# --- moderation ------------------------------------------------------------------------------

MODERATION = {
    "post": ["message"], "hide": ["message_id"], "ban": ["viewer_id", "hide_all"],
    "unban": ["kind", "value"], "filters": ["pattern", "regex", "case", "action"],
    "filters/remove": ["filter_id"], "title": ["title"], "logout": [],
    "party": ["action", "target", "by"],
    "modes": ["closed", "slow_seconds", "established_minutes"],
    "schedule": ["at", "note", "chat_open", "clear"], "invites": ["uses", "hours", "note"],
    "invites/revoke": ["invite_id"], "moderators": ["tripcode", "note", "remove"],
    "moderation/undo": ["action_id"],
}
# the moderators' forms on the viewer side (their own check value, not the broadcaster's)
MODERATOR_FORMS = {
    "/chat/moderate": ["action", "message_id", "check"],
    "/chat/moderate/modes": ["closed", "slow_seconds", "established_minutes", "check"],
    "/chat/moderate/sign-in": ["password", "check"], "/chat/moderate/sign-out": ["check"],
}


@FUZZ
@given(action=st.sampled_from(sorted(MODERATION)), values=st.lists(ids, min_size=4, max_size=4),
       origin=st.one_of(st.none(), header_values, st.sampled_from(
           ["null", "http://[", "http://evil.example", "http://localhost", "://", "http://"])))
@example(action="hide", values=[str(2**70)] * 4, origin=None)
@example(action="filters/remove", values=[str(-2**64)] * 4, origin=None)
@example(action="filters", values=["(a+)+$", "1", "1", "ban"], origin=None)
@example(action="ban", values=["broadcaster", "1", "", ""], origin=None)
def test_moderation_forms_survive_hostile_values(client, action, values, origin):
    data = dict(zip(MODERATION[action], values, strict=False))
    data["csrf"] = csrf(client)
    headers = dict(AUTH)
    if origin is not None:
        headers["Origin"] = origin
    response = client.post(f"/broadcaster/{action}", data=data, headers=headers)
    check(response, 303, 400, 403, 503)
    if origin and origin not in ("null", "http://localhost"):
        assert response.status_code == 403  # another site (or garbage) never moderates
    check(client.get("/broadcaster?error=" + quote(values[0], safe=""), headers=AUTH), 200)
    check(client.get("/chat/messages?mode=poll"), 200)


@FUZZ
@given(user=hostile, password=hostile,
       raw=st.one_of(st.none(), st.binary(max_size=80).map(
           lambda b: "Basic " + base64.b64encode(b).decode()),
           st.sampled_from(["Basic", "Basic !!!", "Bearer x", "Basic " + "A" * 5000, "Digest"])))
def test_login_with_hostile_credentials(client, user, password, raw):
    headers = {"Authorization": raw} if raw is not None else basic(user, password)
    response = client.get("/broadcaster", headers=headers)
    check(response, 401, 429)
    assert response.status_code == 401 or "Retry-After" in response.headers


@FUZZ
@given(path=st.sampled_from(sorted(MODERATOR_FORMS)), token=tokens,
       values=st.lists(ids, min_size=4, max_size=4), code=hostile)
def test_moderator_forms_and_invite_links_survive_hostile_values(client, path, token, values,
                                                                 code):
    data = dict(zip(MODERATOR_FORMS[path], values, strict=False))
    check(client.post(f"{path}?{token_query(token)}", data=data), 303, 403, 429)
    check(client.get("/invite/" + quote(code, safe="")), 403, 404)  # no invite was made


def test_fuzzing_covers_every_route(app):
    """A new route must be added to the fuzzing above before this passes."""
    covered = set(GET_PATHS) | {"/stream/<name>", "/captcha/<challenge_id>.png",
                                "/captcha/<challenge_id>.wav", "/static/<path:filename>",
                                "/chat/form", "/invite/<code>"} | set(MODERATOR_FORMS) | {
        f"/broadcaster/{a}" for a in MODERATION}
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert routes <= covered, f"routes nobody fuzzes: {sorted(routes - covered)}"


# --- body size limits ------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/chat/form", "/broadcaster/post"])
def test_huge_bodies_are_refused_with_413(client, path):
    response = client.post(path, data={"message": "x" * 70_000, "csrf": "x"}, headers=AUTH)
    assert b"too large" in check(response, 413)


# --- a sample against the real server process ------------------------------------------------



REAL = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@REAL
@given(message=hostile, name=hostile, path=st.sampled_from(
    ["/", "/info", "/chat/form", "/chat/users", "/chat/messages?mode=poll"]))
def test_real_server_escapes_posted_markup(server, message, name, path):
    from chat_support import ChatViewer

    viewer = ChatViewer(server)
    response = viewer.post(message, name=name)
    assert response.status_code in (303, 400, 403, 429), response.status_code
    page = viewer.get(path)
    assert page.status_code == 200
    lowered = page.content.lower()
    for marker in RAW_MARKERS:
        assert marker.lower() not in lowered
    assert page.headers["X-Frame-Options"] == "SAMEORIGIN"


@REAL
@given(raw=st.one_of(
    st.binary(max_size=300),
    st.builds(lambda p, h: b"GET " + p + b" HTTP/1.1\r\nHost: x\r\n" + h + b"\r\n\r\n",
              st.binary(min_size=1, max_size=100).filter(lambda b: b" " not in b),
              st.binary(max_size=200))))
def test_real_server_survives_raw_garbage_on_the_socket(server, raw):
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw + b"\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    assert not answer.startswith(b"HTTP/1.1 500"), answer[:200]
    assert b"Traceback" not in answer
    assert requests.get(server.url + "/info", timeout=5).status_code == 200


@pytest.mark.parametrize("how", ["length", "chunked"])
def test_real_server_refuses_huge_bodies(server, how):
    body = b"message=" + b"x" * 200_000
    url = server.url + "/chat/form"
    if how == "length":
        response = requests.post(url, data=body, timeout=10,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    else:
        response = requests.post(url, data=iter([body[i:i + 8192]
                                                 for i in range(0, len(body), 8192)]),
                                 timeout=10,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert requests.get(server.url + "/info", timeout=5).status_code == 200


def test_real_server_bounds_request_line_and_headers(server):
    long_line = requests.get(server.url + "/?q=" + "a" * 20_000, timeout=10)
    assert long_line.status_code in (400, 414)
    many = {f"X-H{i}": "v" for i in range(300)}
    assert requests.get(server.url + "/info", headers=many, timeout=10).status_code in (
        200, 400, 431)
    huge = {"X-Huge": "v" * 100_000}
    assert requests.get(server.url + "/info", headers=huge, timeout=10).status_code in (
        400, 431)
    assert requests.get(server.url + "/info", timeout=5).status_code == 200
    assert "Traceback" not in server.log()
