"""Security review findings, each pinned by a test over real HTTP: slots that leak, tokens
that fall out of links, pages that say something untrue, and timing that tells secrets."""
from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pytest
import requests
from chat_support import ChatViewer

# this module's chat server: the `server` fixture in conftest.py
CHAT_CONFIG = "[chat]\nmax_streams = 4\n"
CHAT_STREAM = "none"  # an offline server: no stream


def is_live_frame(response: requests.Response) -> bool:
    """The live frame is sent with no-store; the polling fallback with no-cache and an ETag."""
    return response.headers.get("Cache-Control") == "no-store" and "ETag" not in response.headers


def test_head_requests_do_not_use_up_live_chat_frames(server):
    """A HEAD answer never runs the frame's body: its slot must still come back."""
    for _ in range(10):  # fresh viewers (no token, no cookie), more than chat.max_streams
        head = requests.head(server.url + "/chat/messages", timeout=5)
        assert head.status_code == 200
    viewer = ChatViewer(server)
    with viewer.get("/chat/messages", params={"for": "1"}, stream=True) as frame:
        assert frame.status_code == 200
        assert is_live_frame(frame), "live chat frames were used up by HEAD requests"


LINK = re.compile(r"""\b(?:src|href|action)="([^"]*)\"""")


def same_site_links(page: str) -> list[str]:
    """Every link, frame, image and form target on a page, except the static files."""
    return [html.unescape(u) for u in LINK.findall(page)
            if u.startswith("/") and not u.startswith("/static/")]


def test_every_link_frame_and_form_keeps_the_viewers_token(server):
    """With cookies off the token in the address is the viewer's only identity: every
    address on the page and in each of its frames must carry it, reload links included.
    The info frame is the one token-free address, and it links nowhere without a token."""
    page = requests.get(server.url + "/", timeout=5).text
    token = re.search(r"/chat/form\?token=([\w-]+)", page).group(1)
    assert f'<a href="/?token={token}" data-keeps-quality>Reload the page</a>' in page
    seen, queue = set(), same_site_links(page)
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        if url.startswith("/info?"):
            info = requests.get(server.url + url, timeout=5).text
            assert not same_site_links(info), "the info frame links somewhere without a token"
            continue
        assert token in url, f"{url} loses the viewer's token"
        if url.startswith("/chat/"):
            response = requests.get(server.url + url, params={"for": "1"}, timeout=10)
            assert response.status_code == 200, url
            queue.extend(same_site_links(response.text))
    assert any(u.startswith("/info?") for u in seen) and any("/chat/form" in u for u in seen)
    # the info frame's "went offline" notice (once the page had a generation)
    info = requests.get(server.url + "/info", params={"gen": "1"}, timeout=5).text
    assert "went offline" in info and "the link below" in info
    assert not same_site_links(info)
    info = requests.get(server.url + "/info", params={"gen": "1", "token": token}, timeout=5)
    assert f'href="/?token={token}" target="_top"' in info.text


def test_info_frame_ignores_a_malformed_token(server):
    info = requests.get(server.url + "/info", params={"gen": "1", "token": "<b>x</b>"},
                        timeout=5)
    assert info.status_code == 200
    assert not same_site_links(info.text) and "<b>" not in info.text


def test_error_pages_lead_back_with_the_token(server):
    token = "t" * 24  # only well formed: an error page links back with it either way
    missing = requests.get(server.url + "/no-such-page", params={"token": token}, timeout=5)
    assert missing.status_code == 404
    assert f'href="/?token={token}" target="_top"' in missing.text
    hostile = requests.get(server.url + "/no-such-page", params={"token": '"><i>x</i>'},
                           timeout=5)
    assert hostile.status_code == 404
    assert 'href="/" target="_top"' in hostile.text and "<i>" not in hostile.text


def test_broadcaster_login_timing_does_not_tell_a_right_password_with_a_wrong_name(tmp_path):
    """Once the broadcaster has logged in, the right password under a wrong user name must
    cost as much as any wrong guess: a quick refusal would confirm the password."""
    from app.community.identity import BroadcasterPassword
    from app.community.store import SQLiteStore
    from app.config import BroadcasterConfig

    store = SQLiteStore(tmp_path / "state.sqlite3")
    checker = BroadcasterPassword(store, BroadcasterConfig(password="right-password",
                                                           failed_logins=100))

    def seconds(username: str, password: str) -> tuple[bool, float]:
        started = time.perf_counter()
        ok = checker.check(username, password)
        return ok, time.perf_counter() - started

    assert seconds("broadcaster", "right-password")[0]  # logged in: the quick path is armed
    wrong_name = [seconds("somebody", "right-password") for _ in range(3)]
    wrong_password = [seconds("somebody", "wrong-password") for _ in range(3)]
    assert not any(ok for ok, _ in wrong_name + wrong_password)
    slowest_wrong_name = max(t for _, t in wrong_name)
    fastest_wrong_password = min(t for _, t in wrong_password)
    assert slowest_wrong_name > fastest_wrong_password / 3, (
        f"right password, wrong name: {slowest_wrong_name * 1000:.2f} ms; wrong password: "
        f"{fastest_wrong_password * 1000:.2f} ms")
    assert seconds("broadcaster", "right-password")[0]
    store.close()


TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def test_templates_mark_nothing_safe_and_run_nothing_inline():
    """The strict CSP refuses inline scripts, handlers and styles without the nonce; `|safe`
    would let user text through unescaped. Each document also asks for no referrer itself."""
    for path in sorted(TEMPLATES.rglob("*.html")):
        text = path.read_text()
        name = str(path.relative_to(TEMPLATES))
        assert "|safe" not in text.replace(" ", ""), name
        assert not re.search(r"\son[a-z]+\s*=", text), f"inline event handler in {name}"
        assert not re.search(r"\sstyle\s*=", text), f"inline style attribute in {name}"
        for tag in re.findall(r"<style[^>]*>", text):
            assert "nonce=" in tag, f"<style> without the nonce in {name}"
        for tag in re.findall(r"<script[^>]*>", text):
            assert "src=" in tag, f"inline <script> in {name}"
        if "<head>" in text:
            assert '<meta name="referrer" content="no-referrer">' in text, name


def test_chat_frames_and_pages_carry_the_referrer_meta(server):
    viewer = ChatViewer(server)
    for path in ("/", "/chat/form", "/chat/users", "/chat/messages?mode=poll", "/no-such"):
        page = viewer.get(path).text
        assert '<meta name="referrer" content="no-referrer">' in page, path


def test_bans_are_capped_oldest_first_and_the_cap_survives_a_restart(tmp_path):
    """Every token a word filter bans adds a ban: memory and the table stay bounded."""
    from app.community.store import Ban, SQLiteStore

    store = SQLiteStore(tmp_path / "state.sqlite3", max_viewers=50)
    for i in range(120):
        store.add_ban(Ban("viewer", f"v{i}", 1000.0 + i, "word filter"))
    assert len(store.bans()) == 50
    assert ("viewer", "v119") in store.bans() and ("viewer", "v69") not in store.bans()
    store.add_ban(Ban("viewer", "v70", 5000.0, "broadcaster"))  # banned again: now newest
    store.add_ban(Ban("viewer", "v200", 5001.0, "broadcaster"))
    assert ("viewer", "v70") in store.bans() and ("viewer", "v71") not in store.bans()
    store.close()
    reopened = SQLiteStore(tmp_path / "state.sqlite3", max_viewers=50)
    assert set(reopened.bans()) == {("viewer", f"v{i}") for i in [*range(72, 120), 70, 200]}
    reopened.close()


@pytest.mark.parametrize("pattern", [r"\w*\w*\w*\w*x", r"a*a*a*a*a*a*b", r".*a.*b.*c",
                                     r"a*\w*\w*!", r"(a+)+$", r"(a|aa)+b"])
def test_word_filters_that_would_hang_a_backtracking_engine_stay_fast(pattern):
    """With Python's `re`, four `\\w*` in a row spent over a minute on one 500-character
    message, and `a*\\w*\\w*!` (which a pattern checker let through) 8.2 s, with every viewer
    waiting. Filters run on RE2 now: linear in the message whatever the pattern."""
    from app.community.filters import compile_pattern

    compiled = compile_pattern(pattern, True, False, 200)
    for text in ("a" * 500, "ab" * 250, "a" * 499 + "!"):
        started = time.perf_counter()
        compiled.search(text)
        compiled.sub("***", text)
        assert time.perf_counter() - started < 0.05, (pattern, text[:8])


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)b", r"(?<!x)y"])
def test_word_filters_the_linear_engine_cannot_run_are_refused_with_the_reason(pattern):
    from app.community.filters import FilterError, compile_pattern

    with pytest.raises(FilterError, match="no back-references or lookaround"):
        compile_pattern(pattern, True, False, 200)


@pytest.mark.parametrize("pattern", [r".*spam.*", r"f+u+c+k+", r"[a-z]+@[a-z]+\.com", "(ab)+c"])
def test_useful_word_filters_still_pass_and_stay_fast(pattern):
    from app.community.filters import compile_pattern

    compiled = compile_pattern(pattern, True, False, 200)
    for text in ("a" * 500, "fuuu" * 125, "a@" * 250, "ab" * 250):
        started = time.perf_counter()
        compiled.search(text)
        assert time.perf_counter() - started < 0.5, (pattern, text[:8])


def test_broadcaster_page_shows_only_errors_the_server_wrote(server):
    """/broadcaster?error=... once showed any text: a crafted link could put a fake message
    ("Your stream key leaked, call ...") on the broadcaster's own page."""
    from chat_support import BROADCASTER, broadcaster_post

    fake = "Security alert: the server was hacked, log in at evil.example now"
    for params in ({"error": fake}, {"error": fake, "sig": "0" * 32},
                   {"error": fake, "sig": ""}):
        page = requests.get(server.url + "/broadcaster", params=params, auth=BROADCASTER,
                            timeout=10)
        assert page.status_code == 200
        assert "Security alert" not in page.text and "evil.example" not in page.text
    failed = broadcaster_post(server, "title", title="   ")
    assert failed.status_code == 303
    real = requests.get(server.url + failed.headers["Location"], auth=BROADCASTER, timeout=10)
    assert 'role="alert">The title is empty.<' in real.text
    # a real signature does not carry over to another text
    signature = re.search(r"sig=(\w+)", failed.headers["Location"]).group(1)
    moved = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=10,
                         params={"error": fake, "sig": signature})
    assert "Security alert" not in moved.text


def test_viewers_who_never_posted_are_not_looked_up_in_the_database_on_every_request(
        app, client):
    """Every request of a viewer who never posted asked SQLite for their record, and
    /chat/users asked once per listed viewer (up to 300) on every refresh. Run with -s for the
    figures."""
    identities, store = app.services.identities, app.services.store
    tokens = [f"listed-viewer-{i:06d}-xx" for i in range(300)]
    for token in tokens:  # 300 viewers here, none of whom ever posted
        app.services.audience.saw(identities.viewer_id(token), identities.tag(token))
    queries: list[str] = []
    store.db.set_trace_callback(queries.append)

    def lookups() -> int:
        return sum("FROM viewers" in q for q in queries)

    started = time.perf_counter()
    for i in range(1000):  # 50 viewers, 20 refreshes of the user list each
        assert client.get(f"/chat/users?token={tokens[i % 50]}").status_code == 200
    elapsed = time.perf_counter() - started
    print(f"\n1000 /chat/users loads (300 listed): {lookups()} viewer lookups in SQLite, "
          f"{elapsed:.2f} s")
    assert lookups() <= 300, "the same unknown viewers were looked up again and again"

    # a viewer who posts (or is saved otherwise) is seen at once: the cache is invalidated
    from app.community.store import Viewer

    who = identities.viewer_id(tokens[7])
    store.save_viewer(Viewer(who, identities.tag(tokens[7]), name="Newly Named"))
    time.sleep(2.1)  # the list is worked out at most every 2 s, whoever asks
    assert "Newly Named" in client.get(f"/chat/users?token={tokens[0]}").text
    store.db.set_trace_callback(None)
    store.close()


def test_the_unknown_viewer_cache_is_bounded_and_forgets_saved_viewers(tmp_path):
    from app.community.store import SQLiteStore, Viewer

    store = SQLiteStore(tmp_path / "state.sqlite3", cache_size=10)
    queries: list[str] = []
    store.db.set_trace_callback(queries.append)
    for i in range(25):
        assert store.viewer(f"unknown-{i}") is None
    asked = len(queries)
    assert store.viewer("unknown-24") is None and len(queries) == asked  # remembered
    assert store.viewer("unknown-0") is None and len(queries) == asked + 1  # pushed out
    assert len(store._unknown_viewers) <= 10
    store.save_viewer(Viewer("unknown-24", "tag", name="Now Known"))
    assert store.viewer("unknown-24").name == "Now Known"
    store.close()
