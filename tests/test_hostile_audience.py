"""Hostile viewers against a real `livestream serve` over real HTTP (issue 12): token fixation,
captcha and nonce floods, fake presence, the broadcaster locked out, scrypt before the flood
check, the host clock, uncapped push connections and readable state files.

Run with -s for the figures recorded in docs/reliability.md.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from chat_support import BROADCASTER, ChatViewer, broadcaster_post, field, login_link
from support import PROJECT, Server, wait_for

FLOOD_LOADS = 10_001


def hostile_server(workdir: Path, stream_dir: Path, extra: str = "", captcha: str = "",
                   chat: str = "min_interval = 0.1\n") -> Server:
    """Like chat_server, with the captcha rate left at its default (10 per second): a flood
    must meet the real pool, not one refilled five times faster."""
    answers = workdir / "captcha-answers.txt"
    config = ('[broadcaster]\npassword = "test-password"\nfailed_logins = 3\n'
              'failed_window = 30.0\n'
              f'[captcha]\ntesting_answers_file = "{answers}"\n{captcha}'
              f"[chat]\n{chat}" + extra)
    server = Server(workdir, stream_dir, config)
    server.answers_file = answers
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory, live_stream):
    srv = hostile_server(tmp_path_factory.mktemp("hostile"), live_stream.directory,
                         "[viewers]\nwatching_seconds = 5.0\nmax_push = 12\n"
                         "max_push_per_viewer = 2\n")
    srv.start()
    srv.wait_live()
    yield srv
    srv.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tags_and_trips(page: str) -> list[tuple[str, str]]:
    """(body, tripcode or "") of every message in a chat page."""
    found = []
    for item in re.findall(r'<div class="msg[^>]*>(.*?)</div>', page, re.S):
        trip = re.search(r'class="trip">!([^<]+)<', item)
        body = re.search(r'class="body">([^<]*)<', item)
        found.append((body.group(1) if body else "", trip.group(1) if trip else ""))
    return found


# --- finding 2: token fixation ---------------------------------------------------------------

def test_a_fixed_token_cannot_sign_with_the_victims_tripcode(server):
    """The attacker chooses the token, lures the victim to /?token=CHOSEN, the victim signs a
    message with their tripcode password; the attacker, holding the same token but not the
    password, must not get the tripcode on their own message."""
    chosen = ChatViewer(server).token  # a real token, handed out to the attacker
    victim = ChatViewer(server, chosen)
    attacker = ChatViewer(server, chosen)
    assert victim.post("hello from the victim", tripcode="victim secret").status_code == 303
    time.sleep(0.15)
    assert attacker.post("i am the victim, trust me").status_code == 303
    messages = dict(tags_and_trips(attacker.messages()))
    assert messages["hello from the victim"], "the victim's message is signed"
    assert messages["i am the victim, trust me"] == "", \
        "a tripcode was put on a message whose sender never gave its password"
    # and the victim still signs whenever they type the password
    time.sleep(0.15)
    victim.post("signed again", tripcode="victim secret")
    again = dict(tags_and_trips(victim.messages()))
    assert again["signed again"] == messages["hello from the victim"]


def test_a_link_token_does_not_replace_the_identity_a_cookie_holds(server):
    browser = requests.Session()  # keeps cookies, like a browser with cookies on
    first = browser.get(server.url + "/", timeout=5)
    own = browser.cookies.get("token")
    assert own and f"/chat/form?token={own}" in first.text
    chosen = ChatViewer(server).token  # the attacker's own, real token
    lured = browser.get(server.url + f"/?token={chosen}", timeout=5,
                        allow_redirects=False)
    assert lured.status_code == 303 and lured.headers["Location"] == "/", \
        "the link's token must not be taken over the cookie's"
    page = browser.get(server.url + f"/?token={chosen}", timeout=5)
    assert chosen not in page.text and f"token={own}" in page.text
    assert browser.cookies.get("token") == own, "the cookie was overwritten by the link"
    form = browser.get(server.url + f"/chat/form?token={chosen}", timeout=5)
    assert field(form.text, "token") == own
    # the address never carries the token for a browser with the cookie: reloads are clean
    reload = browser.get(f"{server.url}/?token={own}&player=plain", timeout=5,
                         allow_redirects=False)
    assert reload.status_code == 303 and reload.headers["Location"] == "/?player=plain"
    # a viewer without cookies keeps the token in the address, and is told not to share it
    own_link = ChatViewer(server).token
    cookieless = requests.get(f"{server.url}/?token={own_link}", timeout=5)
    assert f"token={own_link}" in cookieless.text
    assert "not the one in your address bar" in cookieless.text


# --- findings 3 and 4: tokenless form floods --------------------------------------------------

def flood_forms(port: int, count: int, connections: int = 4) -> tuple[int, float]:
    """`count` tokenless /chat/form loads, pipelined over a few keep-alive connections the way
    a cheap flooder sends them (no cookies, no token): (answers 200, seconds)."""
    request = b"GET /chat/form HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    shares = [count // connections + (1 if i < count % connections else 0)
              for i in range(connections)]
    marker = b"HTTP/1.1 200 "

    def run(n: int) -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sender = threading.Thread(target=sock.sendall, args=(request * n,))
            sender.start()
            seen, tail = 0, b""
            while seen < n:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data = tail + chunk
                seen += data.count(marker)
                tail = data[-(len(marker) - 1):]
            sender.join()
            return seen

    started = time.monotonic()
    with ThreadPoolExecutor(connections) as pool:
        done = sum(pool.map(run, shares))
    return done, time.monotonic() - started


@pytest.mark.slow
def test_a_flood_of_tokenless_form_loads_leaves_forms_captchas_and_the_list_alone(server):
    """10,001 tokenless /chat/form loads must not expire an open form, must not take the
    captchas real newcomers need, and must not list 10,001 fake viewers."""
    server.wait_live()
    before = ChatViewer(server)  # opened the chat before the flood and is typing
    open_form = before.form()
    assert field(open_form, "captcha_id")
    answer = before.answer(field(open_form, "captcha_id"))

    results: dict[str, object] = {}
    flood = threading.Thread(target=lambda: results.update(
        flood=flood_forms(server.port, FLOOD_LOADS)))
    flood.start()
    newcomers = []
    try:
        time.sleep(1.0)  # the flood is under way
        for i in range(5):  # five real new viewers arrive during the flood
            viewer = ChatViewer(server)
            started = time.monotonic()
            form = viewer.form()
            captcha_id = field(form, "captcha_id")
            posted = viewer.post(f"newcomer {i} during the flood", form=form) \
                if captcha_id else None
            newcomers.append((bool(captcha_id), posted.status_code if posted else None,
                              time.monotonic() - started))
            time.sleep(0.3)
    finally:
        flood.join()
    loads, seconds = results["flood"]
    sent = before.post("typed before the flood", form=open_form, captcha=answer)
    users = before.get("/chat/users").text
    listed = len(re.findall(r"<li class=", users))
    ok = sum(1 for got, status, _ in newcomers if got and status == 303)
    print(f"\nflood: {loads} tokenless form loads in {seconds:.1f} s "
          f"({loads / seconds:.0f}/s); newcomers with a captcha: "
          f"{sum(g for g, _, _ in newcomers)}/5, posted: {ok}/5, slowest form+post "
          f"{max(t for _, _, t in newcomers):.2f} s; form opened before the flood: "
          f"{sent.status_code}; viewers listed afterwards: {listed}")
    assert loads == FLOOD_LOADS
    assert all(got for got, _, _ in newcomers), "a real newcomer met an empty captcha pool"
    assert ok == 5, newcomers
    assert sent.status_code == 303, "the flood expired a form opened before it"
    assert listed <= 10, f"{listed} viewers listed: the flood filled the watching list"


def test_a_tokenless_form_takes_no_captcha_but_its_first_post_gets_one(server):
    anonymous = requests.get(server.url + "/chat/form", timeout=5).text
    assert field(anonymous, "captcha_id") is None and "Many people" not in anonymous
    token = field(anonymous, "token")
    viewer = ChatViewer(server, token)
    first = viewer.post("first words", form=anonymous)
    assert first.status_code == 400 and "solve the captcha" in first.text
    assert "first words" in first.text, "the draft is kept"
    assert viewer.post("first words", form=first.text).status_code == 303


def test_nonces_are_signed_for_one_viewer_and_used_once(server):
    alice, bob = ChatViewer(server), ChatViewer(server)
    form = alice.form()
    nonce = field(form, "nonce")
    stolen = bob.post("with alice's nonce", nonce=nonce)
    assert stolen.status_code == 400 and "expired" in stolen.text
    forged = alice.post("forged", form=form, nonce=nonce[:-4] + "AAAA")
    assert forged.status_code == 400 and "expired" in forged.text
    assert alice.post("once", form=form).status_code == 303
    again = alice.post("twice", form=form)  # the same form submitted again
    assert again.status_code == 303 and "twice" not in alice.messages()


# --- finding 7: cheap checks before the scrypt ------------------------------------------------

@pytest.mark.slow
def test_one_token_cannot_run_more_scrypts_than_the_flood_rules_allow(tmp_path):
    """One verified token sends, as fast as four connections can for 5 s, messages a filter
    blocks and messages signed with a banned tripcode, all with a tripcode password. Every
    attempt is counted in the flood window before the scrypt runs, so the server spends at
    most window_messages scrypts on it; and blocked posts leave flood records."""
    cost = 2 ** 16  # about 0.3 s of CPU and 64 MiB per scrypt
    srv = hostile_server(tmp_path, tmp_path / "stream",
                         chat=f"min_interval = 0.2\nwindow_seconds = 30.0\n"
                              f"window_messages = 5\ntripcode_cost = {cost}\n").start()
    try:
        troll = ChatViewer(srv)
        assert troll.post("troll", tripcode="guess").status_code == 303
        page = requests.get(srv.url + "/broadcaster", auth=BROADCASTER, timeout=10).text
        troll_id = re.search(r'name="viewer_id" value="(\w+)"', page).group(1)
        assert broadcaster_post(srv, "ban", viewer_id=troll_id).status_code == 303
        assert broadcaster_post(srv, "filters", pattern="forbidden",
                                action="block").status_code == 303
        viewer = ChatViewer(srv)
        assert viewer.post("verified first").status_code == 303
        started = time.perf_counter()
        hashlib.scrypt(b"x", salt=b"y" * 16, n=cost, r=8, p=1, dklen=12,
                       maxmem=256 * 1024 * 1024)
        one_scrypt = time.perf_counter() - started
        time.sleep(0.3)
        cpu_before = cpu_seconds(srv.process.pid)
        deadline = time.monotonic() + 5.0
        sent: list[int] = []

        def hammer(worker: int) -> None:
            with requests.Session() as session:
                while time.monotonic() < deadline:
                    form = session.get(f"{srv.url}/chat/form?token={viewer.token}",
                                       timeout=30).text
                    text = "forbidden words" if len(sent) % 2 else "signed by a banned trip"
                    response = session.post(
                        f"{srv.url}/chat/form?token={viewer.token}", timeout=30,
                        data={"token": viewer.token, "nonce": field(form, "nonce"),
                              "message": text, "tripcode": "guess"},
                        allow_redirects=False)
                    sent.append(response.status_code)

        workers = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        cpu = cpu_seconds(srv.process.pid) - cpu_before
        print(f"\nscrypt flood: {len(sent)} posts (blocked or with a banned tripcode, all "
              f"with a tripcode password) from one token in 5 s: server CPU {cpu:.2f} s, "
              f"one scrypt {one_scrypt:.3f} s; flood limit 5 per 30 s")
        assert len(sent) >= 20, "the hammer did not get going"
        assert 303 not in sent
        # at most 5 scrypts (one spare), plus a few ms per form load and refused post
        allowed = 6 * one_scrypt + 0.004 * len(sent) + 1.0
        assert cpu < allowed, \
            f"{cpu:.2f} s of CPU (allowed {allowed:.2f}): more scrypts ran than the flood " \
            "rules allow"

        # blocked posts count in the flood window: 1 posted + 4 blocked fill a window of 5
        counted = ChatViewer(srv)
        assert counted.post("verified too").status_code == 303
        for _ in range(4):
            time.sleep(0.25)
            blocked = counted.post("forbidden again")
            assert blocked.status_code == 400 and "not allowed" in blocked.text
        time.sleep(0.25)
        after = counted.post("a clean message now")
        assert after.status_code == 400 and "Too many messages" in after.text
    finally:
        srv.stop()


# --- finding 8: no host clock -----------------------------------------------------------------

def test_the_api_never_shows_the_host_clock(server):
    server.wait_live()
    wall = time.time()
    clock = requests.get(server.url + "/api/clock", timeout=5).json()["now"]
    status = requests.get(server.url + "/api/status", timeout=5).json()
    timeline = requests.get(server.url + "/api/playlist", timeout=5).json()
    for value in (clock, status["now"], timeline["now"], status["started_at"],
                  timeline["origin"]):
        assert abs(value - wall) > 86400 * 365, f"{value} is the host's wall clock"
        assert round(value, 3) == value, "more precise than a millisecond"
    # still one consistent clock: the player's arithmetic works as before
    assert 0 <= clock - status["started_at"] < 3600
    newest = max(s["seen_at"] for s in timeline["segments"] if s["seen_at"] is not None)
    assert -1 <= timeline["now"] - newest < 30
    assert abs(timeline["now"] - clock) < 5
    with requests.get(server.url + "/events?since=0&token=clock-reader-0001", stream=True,
                      timeout=10) as events:
        for line in events.iter_lines(decode_unicode=True):
            if line.startswith("data: ") and "started_at" in line:
                started = float(re.search(r'"started_at":([0-9.]+)', line).group(1))
                assert abs(started - status["started_at"]) < 1
                break


# --- finding 14: capped push connections ------------------------------------------------------

def test_push_connections_are_capped_in_total_and_per_viewer(server):
    """max_push = 12, max_push_per_viewer = 2 (module config)."""
    held: list[requests.Response] = []

    def open_events(token: str | None) -> requests.Response:
        url = server.url + "/events" + (f"?token={token}" if token else "")
        response = requests.get(url, stream=True, timeout=10)
        if response.status_code == 200:
            held.append(response)
        else:
            _ = response.content  # read the short refusal, then let the connection go
            response.close()
        return response

    wake_listeners(server)  # connections other tests closed give their slots back first
    tokens = [ChatViewer(server).token for _ in range(20)]
    try:
        assert open_events(tokens[1]).status_code == 200
        assert open_events(tokens[1]).status_code == 200
        third = open_events(tokens[1])
        assert third.status_code == 429 and "max_push_per_viewer" in third.text
        # the long-polled timeline counts against the same allowance
        timeline = requests.get(server.url + "/api/playlist", timeout=5).json()
        newest = timeline["segments"][-1]["sequence"]
        poll = requests.get(f"{server.url}/api/playlist?gen={timeline['generation']}"
                            f"&after={newest + 1000}&online=1&token={tokens[1]}",
                            timeout=20)
        assert poll.status_code == 429
        # requests without a token share one viewer's allowance
        assert open_events(None).status_code == 200
        assert open_events(None).status_code == 200
        assert open_events(None).status_code == 429
        opened = 4
        for i in range(2, 20):
            if open_events(tokens[i]).status_code == 429:
                break
            opened += 1
        assert opened == 12, f"{opened} push connections were let in (max_push = 12)"
    finally:
        for response in held:
            response.close()
    # closed connections give their slots back, noticed when a write to them fails (the next
    # event or keep-alive): a few events make that happen now
    wake_listeners(server)

    def slot_back() -> bool:
        with requests.get(server.url + f"/events?token={tokens[1]}", stream=True,
                          timeout=5) as response:
            return response.status_code == 200
    wait_for(slot_back, 20, interval=1.0, what="the slots to come back")


def wake_listeners(server: Server) -> None:
    """Publish a few events: a write to a connection the client closed fails, which frees it."""
    for i in range(3):
        broadcaster_post(server, "post", message=f"wake the listeners {i}")
        time.sleep(0.3)


# --- finding 11: private state ----------------------------------------------------------------

def test_state_is_private_to_the_server_user(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)  # an older install: readable by everyone
    old = state / "livestream.sqlite3"
    old.touch()
    os.chmod(old, 0o644)
    srv = hostile_server(tmp_path, tmp_path / "stream").start()
    try:
        ChatViewer(srv).post("a message, so the log is written")
        mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
        assert mode(state) == 0o700
        files = [p for p in state.iterdir() if p.name.startswith("livestream.sqlite3")]
        assert {p.name for p in files} >= {"livestream.sqlite3", "livestream.sqlite3-wal"}
        for path in files:
            assert mode(path) == 0o600, f"{path.name} is {oct(mode(path))}"
    finally:
        srv.stop()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    srv = hostile_server(fresh, fresh / "stream").start()
    try:
        made = subprocess.run([sys.executable, "-m", "app.cli", "--config",
                               str(srv.config_path), "key"], check=False, cwd=PROJECT,
                              capture_output=True, text=True, timeout=30)
        assert made.returncode == 0, made.stderr  # the RTMP stream key, a secret too
        assert stat.S_IMODE((fresh / "state").stat().st_mode) == 0o700
        names = set()
        for path in (fresh / "state").iterdir():
            names.add(path.name)
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path.name
        assert "livestream.sqlite3" in names and len(names) >= 3, names
    finally:
        srv.stop()


# --- finding 5: the broadcaster can always get in ---------------------------------------------

@pytest.mark.slow
def test_the_owner_gets_in_through_a_login_flood_and_stays_in_across_a_restart(tmp_path):
    srv = hostile_server(tmp_path, tmp_path / "stream").start()  # failed_logins = 3
    stop = threading.Event()
    guesses = []

    def guess() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            guesses.append(requests.get(srv.url + "/broadcaster", timeout=30,
                                        auth=("broadcaster", f"guess{i}")).status_code)

    guessers = [threading.Thread(target=guess) for _ in range(3)]
    try:
        for thread in guessers:
            thread.start()
        wait_for(lambda: guesses.count(429) >= 5, 20, what="the login lock")
        assert requests.get(srv.url + "/broadcaster", auth=BROADCASTER,
                            timeout=30).status_code == 429  # the password alone is locked out
        link = login_link(srv)
        owner = requests.Session()
        started = time.monotonic()
        entered = owner.get(link, timeout=10)
        took = time.monotonic() - started
        assert entered.status_code == 200 and "csrf" in entered.text, entered.text[:200]
        assert owner.get(link, timeout=10).status_code == 403, "a login link works once"
        assert broadcaster_post_with(owner, srv, "title", title="The owner is in").status_code \
            == 303
        stop.set()
        for thread in guessers:
            thread.join()
        print(f"\nlogin flood: {len(guesses)} wrong guesses ({guesses.count(429)} locked "
              f"out), the owner's login link opened /broadcaster in {took:.2f} s")
        session = owner.cookies.get("broadcaster_session", path="/broadcaster")
        assert session and session not in srv.log()
        srv.stop()
        srv.start()  # a restart does not log the owner out
        assert owner.get(srv.url + "/broadcaster", timeout=10).status_code == 200
        stored = (tmp_path / "state" / "livestream.sqlite3").read_bytes()
        assert session.encode() not in stored, "the session id itself was stored"
        assert link.split("key=")[1].encode() not in stored
    finally:
        stop.set()
        srv.stop()


def broadcaster_post_with(session: requests.Session, srv: Server, path: str,
                          **data) -> requests.Response:
    page = session.get(srv.url + "/broadcaster", timeout=10)
    data["csrf"] = field(page.text, "csrf")
    return session.post(f"{srv.url}/broadcaster/{path}", data=data, allow_redirects=False,
                        timeout=10)


def test_a_made_up_or_expired_login_link_opens_nothing(server):
    for key in ("", "x" * 43, "a" * 500):
        response = requests.get(f"{server.url}/broadcaster/login?key={key}", timeout=5,
                                allow_redirects=False)
        assert response.status_code == 403 and "login-link" in response.text
        assert "broadcaster_session" not in response.headers.get("Set-Cookie", "")
    assert requests.get(server.url + "/broadcaster", auth=BROADCASTER,
                        timeout=10).status_code == 200
