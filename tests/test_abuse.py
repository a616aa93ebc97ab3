"""Abuse over real HTTP: password guessing in parallel, ban evasion with fresh tokens, captcha
drawing as a CPU sink, cross-site moderation and framing by other sites."""
from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from chat_support import BROADCASTER, ChatViewer, broadcaster_csrf, chat_server, field
from support import wait_for

# this module's chat server: the `server` fixture in conftest.py
CHAT_CONFIG = "[chat]\nmin_interval = 0.1\n"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_parallel_password_guesses_are_limited_too(tmp_path):
    srv = chat_server(tmp_path, tmp_path / "stream").start()  # failed_logins = 3
    try:
        def guess(i: int) -> int:
            return requests.get(srv.url + "/broadcaster", auth=("broadcaster", f"guess{i}"),
                                timeout=30).status_code

        with ThreadPoolExecutor(30) as pool:
            statuses = list(pool.map(guess, range(30)))
        assert statuses.count(401) <= 3, f"{statuses.count(401)} guesses were hashed"
        assert statuses.count(429) >= 27
        locked = requests.get(srv.url + "/broadcaster", auth=BROADCASTER, timeout=5)
        assert locked.status_code == 429  # even the right password waits out the lock
        assert "guess" not in srv.log() and "test-password" not in srv.log()
    finally:
        srv.stop()


def test_a_banned_viewer_with_a_fresh_token_meets_the_captcha_and_the_tripcode_ban(server):
    troll = ChatViewer(server)
    assert troll.post("first troll post", tripcode="troll secret").status_code == 303
    page = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=10).text
    viewer_id = re.search(r'first troll post.*?name="viewer_id" value="(\w+)"', page,
                          re.S).group(1)
    requests.post(server.url + "/broadcaster/ban", auth=BROADCASTER, timeout=10,
                  data={"viewer_id": viewer_id, "csrf": broadcaster_csrf(server)})
    assert "You are banned" in troll.form()

    evader = ChatViewer(server)  # a fresh token: a new viewer as far as the server knows
    form = evader.form()
    assert field(form, "captcha_id"), "a fresh token must solve a captcha before posting"
    assert evader.post("unsolved", solve=False).status_code == 400
    assert evader.post("no answer at all", form=form, captcha="").status_code == 400
    assert "unsolved" not in evader.messages() and "no answer at all" not in evader.messages()
    # solving it is possible, but the tripcode the troll is known by is banned as well
    time.sleep(0.15)
    again = evader.post("back again", tripcode="troll secret")
    assert again.status_code == 403 and "banned" in again.text
    assert "back again" not in evader.messages()


def test_captcha_drawing_is_rate_limited_in_process():
    """However fast viewers ask, images are drawn at most at generate_per_second."""
    from app.community.captcha import Captchas
    from app.config import CaptchaConfig

    captchas = Captchas(CaptchaConfig(pool_size=5, generate_per_second=10.0))
    started = time.monotonic()
    issued = 0
    asked = 0
    while time.monotonic() - started < 1.5:
        asked += 1
        if captchas.issue(f"viewer-{asked}") is not None:
            issued += 1
    elapsed = time.monotonic() - started
    assert asked > 500
    assert issued <= 10.0 * elapsed + 2, f"{issued} drawn in {elapsed:.1f}s"


def test_hammering_captchas_costs_little_cpu(server):
    """Fresh viewers asking for the form (and its audio) as fast as 8 clients can."""
    pid = server.process.pid
    stop = threading.Event()
    counts = {"form": 0, "audio": 0, "busy": 0}

    def hammer():
        while not stop.is_set():  # no cookies kept: every request is a brand-new viewer
            form = requests.get(server.url + "/chat/form", timeout=10).text
            counts["form"] += 1
            captcha_id = field(form, "captcha_id")
            if captcha_id is None:
                counts["busy"] += 1
                continue
            token = field(form, "token")
            audio = requests.get(f"{server.url}/captcha/{captcha_id}.wav?token={token}",
                                timeout=10)
            assert audio.status_code in (200, 429)
            counts["audio"] += audio.status_code == 200

    slowest = [0.0]

    def probe():
        while not stop.is_set():
            t0 = time.monotonic()
            assert requests.get(server.url + "/info", timeout=10).status_code == 200
            slowest[0] = max(slowest[0], time.monotonic() - t0)
            time.sleep(0.05)

    def handed_out() -> int:
        path = server.answers_file
        return len(path.read_text().splitlines()) if path.exists() else 0

    lines_before = handed_out()
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(8)]
    threads.append(threading.Thread(target=probe, daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(5)
    stop.set()
    for thread in threads:
        thread.join(15)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    issued = handed_out() - lines_before
    per_request_ms = cpu / max(1, counts["form"] + counts["audio"]) * 1000
    print(f"\ncaptcha hammer: {counts['form']} forms, {issued} captchas handed out, "
          f"{counts['audio']} audio, {counts['busy']} told to wait, server CPU {cpu:.2f}s in "
          f"{elapsed:.1f}s ({cpu / elapsed * 100:.0f}% of one core, {per_request_ms:.1f} ms "
          f"per request); slowest /info meanwhile {slowest[0] * 1000:.0f} ms")
    # chat_server draws at 50/s; the pool holds 40; audio is capped at 20 a minute
    assert issued <= 40 + 50 * elapsed + 5
    assert counts["audio"] <= 20
    assert slowest[0] < 0.5, "drawing captchas held up other viewers"
    assert requests.get(server.url + "/info", timeout=5).status_code == 200


EVIL = "http://evil.example"


@pytest.mark.parametrize("headers", [{"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Origin": "http://["}, {"Referer": EVIL, "Origin": EVIL}])
def test_no_cross_site_request_can_moderate(server, headers):
    victim = ChatViewer(server)
    assert victim.post(f"victim of {headers}").status_code == 303
    page = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=10).text
    viewer_id = re.findall(r'name="viewer_id" value="(\w+)"', page)[-1]
    csrf = broadcaster_csrf(server)
    for action, data in [("ban", {"viewer_id": viewer_id}), ("title", {"title": "pwned"}),
                         ("post", {"message": "pwned"}), ("filters", {"pattern": "a"})]:
        response = requests.post(f"{server.url}/broadcaster/{action}", auth=BROADCASTER,
                                 data={**data, "csrf": csrf}, headers=headers,
                                 allow_redirects=False, timeout=10)
        assert response.status_code == 403, (action, response.status_code)
    assert "You are banned" not in victim.form()
    assert "pwned" not in victim.messages()
    without_token = requests.post(f"{server.url}/broadcaster/ban", auth=BROADCASTER,
                                  data={"viewer_id": viewer_id}, timeout=10)
    assert without_token.status_code == 403
    assert requests.get(f"{server.url}/broadcaster/ban?viewer_id={viewer_id}",
                        auth=BROADCASTER, timeout=10).status_code == 405


def html_answers(server) -> dict[str, requests.Response]:
    viewer = ChatViewer(server)
    answers = {path: viewer.get(path) for path in
               ["/", "/info", "/chat/form", "/chat/messages?mode=poll", "/chat/users",
                "/no-such-page"]}
    answers["broadcaster"] = requests.get(server.url + "/broadcaster", auth=BROADCASTER,
                                          timeout=10)
    answers["401"] = requests.get(server.url + "/broadcaster", timeout=10)
    answers["405"] = requests.post(server.url + "/info", timeout=10)
    answers["413"] = requests.post(server.url + "/chat/form", data={"message": "x" * 70000},
                                   timeout=10)
    answers["503"] = requests.post(server.url + "/chat/form?token=" + viewer.token,
                                   data={"message": "x"}, timeout=10)  # a 400 form page
    with viewer.get("/chat/messages", stream=True) as live:
        answers["live frame"] = live
    return answers


def test_no_page_can_be_framed_by_another_site(server):
    for name, response in html_answers(server).items():
        csp = response.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'self'" in csp, name
        assert response.headers.get("X-Frame-Options") == "SAMEORIGIN", name
        assert "*" not in csp.split("frame-ancestors", 1)[1].split(";")[0], name


def test_login_lock_lifts_after_the_window(tmp_path):
    srv = chat_server(tmp_path, tmp_path / "stream",
                      "").start()
    srv.config_path.write_text(srv.config_path.read_text().replace(
        "failed_window = 30.0", "failed_window = 2.0"))
    srv.stop()
    srv.start()
    try:
        for i in range(3):
            requests.get(srv.url + "/broadcaster", auth=("broadcaster", f"g{i}"), timeout=10)
        assert requests.get(srv.url + "/broadcaster", auth=BROADCASTER,
                            timeout=10).status_code == 429
        wait_for(lambda: requests.get(srv.url + "/broadcaster", auth=BROADCASTER,
                                      timeout=10).status_code == 200, 6, 0.5,
                 "the lock to lift")
    finally:
        srv.stop()


def test_guessers_who_lock_the_login_do_not_lock_out_a_logged_in_broadcaster(tmp_path):
    """The failed-login lock is global (over Tor there is no client address): a browser that
    logged in before the guessing holds a session and goes on working without the password."""
    srv = chat_server(tmp_path, tmp_path / "stream").start()  # failed_logins = 3
    try:
        login = requests.get(srv.url + "/broadcaster", auth=BROADCASTER, timeout=30)
        assert login.status_code == 200
        issued = [c for c in login.cookies if c.name == "broadcaster_session"]
        assert len(issued) == 1, login.headers.get("Set-Cookie")
        cookie = issued[0]
        set_cookie = login.headers["Set-Cookie"]
        assert cookie.path == "/broadcaster" and "HttpOnly" in set_cookie
        assert "SameSite=Strict" in set_cookie and len(cookie.value) >= 32
        session = {"broadcaster_session": cookie.value}

        for i in range(5):  # someone else locks the login
            requests.get(srv.url + "/broadcaster", auth=("broadcaster", f"g{i}"), timeout=30)
        assert requests.get(srv.url + "/broadcaster", auth=BROADCASTER,
                            timeout=10).status_code == 429
        # the broadcaster's browser sends its login and its session: no lock, no password check
        page = requests.get(srv.url + "/broadcaster", auth=BROADCASTER, cookies=session,
                            timeout=10)
        assert page.status_code == 200 and "broadcaster_session" not in page.cookies
        csrf = field(page.text, "csrf")
        posted = requests.post(srv.url + "/broadcaster/post", cookies=session, timeout=10,
                               data={"message": "still here", "csrf": csrf},
                               allow_redirects=False)
        assert posted.status_code == 303
        assert "still here" in ChatViewer(srv).messages()
        # a made-up or altered session is worth nothing
        for forged in ["x" * 43, cookie.value[:-1] + ("A" if cookie.value[-1] != "A" else "B")]:
            refused = requests.get(srv.url + "/broadcaster", timeout=10,
                                   cookies={"broadcaster_session": forged})
            assert refused.status_code == 401
        # logging out ends the session for good
        out = requests.post(srv.url + "/broadcaster/logout", cookies=session, timeout=10,
                            data={"csrf": csrf}, allow_redirects=False)
        assert out.status_code == 303 and "broadcaster_session=;" in out.headers["Set-Cookie"]
        assert requests.get(srv.url + "/broadcaster", cookies=session,
                            timeout=10).status_code == 401
        assert cookie.value not in srv.log() and "test-password" not in srv.log()
    finally:
        srv.stop()


def test_broadcaster_sessions_expire_and_are_capped():
    from app.community.identity import BroadcasterSessions

    sessions = BroadcasterSessions(idle_seconds=0.3, max_seconds=0.8, limit=2)
    first, second, third = sessions.issue(), sessions.issue(), sessions.issue()
    assert not sessions.valid(first), "the oldest session beyond the cap must be dropped"
    assert sessions.valid(second) and sessions.valid(third)
    assert not sessions.valid(None) and not sessions.valid("") and not sessions.valid("x" * 500)
    for _ in range(3):  # used every 0.2 s: kept alive past its idle time...
        time.sleep(0.2)
        assert sessions.valid(second)
    time.sleep(0.3)
    assert not sessions.valid(third)  # ...while the unused one ended
    assert not sessions.valid(second)  # and even a busy session ends at its maximum age
