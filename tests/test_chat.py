"""The chat over real HTTP on loopback: posting, delivery, captcha, flood rules, bans, filters,
the broadcaster page, and state that survives a restart and a kill -9."""
from __future__ import annotations

import json
import re
import signal
import time

import pytest
import requests
from chat_support import (
    BROADCASTER,
    ChatViewer,
    LiveFrame,
    broadcaster_csrf,
    broadcaster_post,
    chat_server,
    field,
)
from support import wait_for

# this module's chat server: the `server` fixture in conftest.py
CHAT_CONFIG = "[chat]\nmin_interval = 0.3\nwindow_seconds = 30.0\nwindow_messages = 4\n"


def test_a_message_posted_through_the_form_reaches_another_viewer(server):
    alice, bob = ChatViewer(server), ChatViewer(server)
    frame = LiveFrame(bob)
    try:
        sent_at = time.monotonic()
        response = alice.post("hello from alice", name="Alice")
        assert response.status_code == 303
        assert response.headers["Location"].startswith(f"/chat/form?token={alice.token}")
        arrived = frame.arrival("hello from alice")
        assert arrived - sent_at < 1.0, f"live frame took {arrived - sent_at:.2f}s"
        assert frame.status == 200 and frame.encoding is None  # never compressed: no buffering
    finally:
        frame.close()
    page = bob.messages()
    assert "hello from alice" in page and "Alice" in page
    assert alice.token not in page  # the author's token never reaches others
    assert "Sent." in alice.get("/chat/form", params={"sent": "1"}).text


def test_a_double_submit_posts_once(server):
    viewer = ChatViewer(server)
    form = viewer.form()
    first = viewer.post("only once please", form=form)
    again = viewer.post("only once please", form=form)
    assert first.status_code == again.status_code == 303
    assert viewer.messages().count("only once please") == 1


def test_names_messages_and_tripcodes(server):
    viewer = ChatViewer(server)
    assert viewer.post("<script>alert(1)</script>", name="<b>Mal\x07lory\u202e</b>",
                       tripcode="secret one").status_code == 303
    page = viewer.messages()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;Mallory&lt;/b&gt;" in page  # escaped, control/format characters removed
    code = re.findall(r'class="trip">!([^<]+)<', page)[-1]
    other = ChatViewer(server)
    time.sleep(0.35)
    other.post("same password, same code", tripcode="secret one")
    other_page = other.messages()
    assert re.findall(r'class="trip">!([^<]+)<', other_page)[-1] == code
    tags = re.findall(r'class="tag">#(\w+)<', other_page)
    assert len(set(tags[-2:])) == 2  # two viewers, two public tags


def test_limits_are_enforced_and_mirrored_in_the_form(server):
    viewer = ChatViewer(server)
    form = viewer.form()
    assert 'maxlength="500"' in form
    too_long = viewer.post("x" * 501)
    assert too_long.status_code == 400 and "the limit is 500" in too_long.text
    assert "x" * 501 in too_long.text  # the draft is kept for editing
    many_lines = viewer.post("\n".join("line" for _ in range(9)))
    assert many_lines.status_code == 400 and "lines; the limit is 8" in many_lines.text


def test_flood_rules_trip_with_a_clear_message_and_ask_for_a_captcha_again(server):
    """Sending twice within the interval only says to wait (a person who pressed Send
    twice); a sustained flood asks for a captcha again."""
    viewer = ChatViewer(server)
    assert viewer.post("first").status_code == 303
    fast = viewer.post("second, too fast")
    assert fast.status_code == 400
    assert "too fast: wait 0.3 seconds" in fast.text
    assert "captcha again" not in fast.text and 'name="captcha_id"' not in fast.text
    assert "second, too fast" in fast.text  # the draft is kept
    for i in range(3):
        time.sleep(0.35)
        assert viewer.post(f"steady {i}").status_code == 303
    time.sleep(0.35)
    burst = viewer.post("one too many")
    assert burst.status_code == 400 and "at most 4 in 30 seconds" in burst.text
    assert "captcha again" in burst.text and 'name="captcha_id"' in burst.text


def test_captcha_answers_are_single_use_vague_and_bound_to_the_viewer(server):
    alice, mallory = ChatViewer(server), ChatViewer(server)
    form = alice.form()
    captcha_id = field(form, "captcha_id")
    assert captcha_id, "a first message needs a captcha"
    image = alice.get(f"/captcha/{captcha_id}.png")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    audio = alice.get(f"/captcha/{captcha_id}.wav")
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert requests.get(f"{server.url}/captcha/{captcha_id}.png?token={mallory.token}",
                        timeout=5).status_code == 404  # someone else's challenge
    answer = alice.answer(captcha_id)
    # a wrong answer burns the challenge and says nothing about which letters were wrong
    wrong = alice.post("guess", form=form, captcha=answer[:-1] + "Q")
    assert wrong.status_code == 400
    assert "The captcha was not solved correctly. Please try the new one." in wrong.text
    assert field(wrong.text, "captcha_id") != captcha_id
    # the right answer to the used-up challenge (a replay) is refused the same way
    replay = alice.post("replay", form=wrong.text, captcha_id=captcha_id, captcha=answer)
    assert replay.status_code == 400 and "not solved correctly" in replay.text
    # the same answer replayed by another viewer is refused too
    stolen = mallory.post("stolen", captcha_id=captcha_id, captcha=answer)
    assert stolen.status_code == 400 and "not solved correctly" in stolen.text
    assert alice.post("solved", form=replay.text).status_code == 303
    time.sleep(0.35)
    assert 'name="captcha_id"' not in alice.form(), "no captcha once solved (liberal)"


def test_banned_viewer_cannot_post_but_can_still_watch(server):
    server.wait_live()
    viewer = ChatViewer(server)
    viewer.post("i will be banned", tripcode="bad trip")
    message_id = int(re.findall(r'id="m(\d+)"[^\n]*class="trip">![^<]+</span> '
                                r'<span class="body">i will be banned', viewer.messages())[0])
    page = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=5).text
    viewer_id = re.search(rf'id="bm{message_id}".*?name="viewer_id" value="(\w+)"', page,
                          re.S).group(1)
    assert broadcaster_post(server, "ban", viewer_id=viewer_id, hide_all="1").status_code == 303
    form = viewer.form()
    assert "You are banned" in form and "<textarea" not in form
    refused = viewer.post("let me in", form=form)
    assert refused.status_code == 403 and "banned" in refused.text
    assert "i will be banned" not in viewer.messages()  # ban and hide all
    # the ban follows the tripcode to a fresh token
    alias = ChatViewer(server)
    assert alias.post("new token, same trip", tripcode="bad trip").status_code == 403
    with viewer.get("/stream.mp4", stream=True) as video:
        assert video.status_code == 200
        assert len(next(video.iter_content(4096))) > 0
    users = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=5).text
    assert "tripcode !" in users and "Unban" in users
    assert broadcaster_post(server, "unban", kind="viewer", value=viewer_id).status_code == 303
    time.sleep(0.35)
    assert viewer.post("back again").status_code == 303


def test_word_filters_censor_block_and_ban(server):
    assert broadcaster_post(server, "filters", pattern="darn", action="censor").status_code == 303
    assert broadcaster_post(server, "filters", pattern=r"sp[a4]m+", regex="1",
                            action="block").status_code == 303
    assert broadcaster_post(server, "filters", pattern="Forbidden", case="1",
                            action="ban").status_code == 303
    unusable = broadcaster_post(server, "filters", pattern=r"(a)\1", regex="1", action="block")
    assert "no back-references" in requests.get(
        server.url + unusable.headers["Location"], auth=BROADCASTER, timeout=5).text
    viewer = ChatViewer(server)
    assert viewer.post("well DARN it, darnation").status_code == 303
    assert "well *** it, darnation" in viewer.messages()
    time.sleep(0.35)
    blocked = viewer.post("buy SP4MMM now")
    assert blocked.status_code == 400 and "not allowed here" in blocked.text
    time.sleep(0.35)
    assert viewer.post("forbidden in lower case is fine").status_code == 303
    time.sleep(0.35)
    banned = viewer.post("this is Forbidden")
    assert banned.status_code == 403 and "you have been banned" in banned.text
    assert "You are banned" in viewer.form()


def test_broadcaster_page_needs_auth_and_csrf_and_marks_its_messages(server):
    assert requests.get(server.url + "/broadcaster", timeout=5).status_code == 401
    assert requests.get(server.url + "/broadcaster", auth=("broadcaster", "nope"),
                        timeout=5).status_code == 401
    no_csrf = requests.post(server.url + "/broadcaster/post", data={"message": "x"},
                            auth=BROADCASTER, timeout=5)
    assert no_csrf.status_code == 403
    csrf = broadcaster_csrf(server)
    cross_site = requests.post(server.url + "/broadcaster/post",
                               data={"message": "x", "csrf": csrf}, auth=BROADCASTER,
                               headers={"Origin": "http://evil.example"}, timeout=5)
    assert cross_site.status_code == 403
    assert broadcaster_post(server, "post", message="welcome, everyone").status_code == 303
    page = ChatViewer(server).messages()
    assert re.search(r'class="msg by-broadcaster"[^>]*>.*?broadcaster</span>.*?welcome, '
                     r'everyone', page)


def test_hidden_messages_leave_every_view(server):
    viewer, watcher = ChatViewer(server), ChatViewer(server)
    viewer.post("please hide me")
    message_id = re.findall(r'id="m(\d+)"[^\n]*please hide me', viewer.messages())[-1]
    frame = LiveFrame(watcher)
    try:
        assert broadcaster_post(server, "hide", message_id=message_id).status_code == 303
        frame.arrival(f"#m{message_id}{{display:none}}")
    finally:
        frame.close()
    assert "please hide me" not in watcher.messages()


def test_polling_frame_answers_304_when_nothing_changed(server):
    viewer = ChatViewer(server)
    first = viewer.get("/chat/messages", params={"mode": "poll"})
    assert '<meta http-equiv="refresh"' in first.text
    etag = first.headers["ETag"]
    same = viewer.get("/chat/messages", params={"mode": "poll"},
                      headers={"If-None-Match": etag})
    assert same.status_code == 304
    time.sleep(0.35)
    broadcaster_post(server, "post", message="something new")
    changed = viewer.get("/chat/messages", params={"mode": "poll"},
                         headers={"If-None-Match": etag})
    assert changed.status_code == 200 and "something new" in changed.text


def test_viewer_count_and_list_follow_who_receives_video(server):
    server.wait_live()
    viewer = ChatViewer(server)
    viewer.post("counting", name="Watcher")
    with viewer.get("/stream.mp4", stream=True) as video:
        chunks = video.iter_content(65536)
        next(chunks)
        next(chunks)  # a media segment, not only the init segment

        def listed_watching():
            users = viewer.get("/chat/users").text
            return re.search(r'<li class="watching"><span[^>]*>Watcher</span>', users)
        wait_for(listed_watching, 5, what="the viewer listed as watching")
        count = int(re.search(r'viewer-count">(\d+)<', viewer.get("/chat/users").text)[1])
        assert count >= 1


def test_js_viewers_get_chat_events_over_sse(server):
    with requests.get(server.url + "/events", stream=True, timeout=10) as events:
        lines = events.iter_lines(decode_unicode=True)
        broadcaster_post(server, "post", message="pushed <live>")
        deadline = time.monotonic() + 5
        kind = None
        for line in lines:
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "chat":
                data = json.loads(line[6:])
                if data["body"] == "pushed <live>":
                    assert data["broadcaster"] is True and "viewer_id" not in data
                    break
            assert time.monotonic() < deadline, "no chat event within 5 s"


def test_compression_only_for_pages_and_json(server):
    viewer = ChatViewer(server)
    gzip = {"Accept-Encoding": "gzip"}
    assert viewer.get("/chat/messages", params={"mode": "poll"},
                      headers=gzip).headers.get("Content-Encoding") == "gzip"
    assert viewer.get("/chat/messages.json", headers=gzip).headers.get(
        "Content-Encoding") == "gzip"
    server.wait_live()
    with viewer.get("/stream.mp4", stream=True, headers=gzip) as video:
        assert "Content-Encoding" not in video.headers


@pytest.fixture
def own_server(tmp_path):
    """A server of the test's own, to restart or lock at will (test_chat_workers.py gives
    two workers on one Redis instead)."""
    return lambda extra="": chat_server(tmp_path, tmp_path / "stream", extra)


def test_failed_logins_are_rate_limited(own_server):
    srv = own_server().start()
    try:
        statuses = [requests.get(srv.url + "/broadcaster", auth=("broadcaster", f"guess{i}"),
                                 timeout=5).status_code for i in range(4)]
        assert statuses == [401, 401, 401, 429]
        locked = requests.get(srv.url + "/broadcaster", auth=BROADCASTER, timeout=5)
        assert locked.status_code == 429 and "Retry-After" in locked.headers
        assert "test-password" not in srv.log() and "guess" not in srv.log()
    finally:
        srv.stop()


def test_history_names_bans_filters_and_title_survive_restart_and_kill_9(own_server):
    srv = own_server("[chat]\nmin_interval = 0.1\n").start()
    try:
        keeper, troll = ChatViewer(srv), ChatViewer(srv)
        keeper.post("remember me", name="Keeper", tripcode="pw")
        troll.post("troll message")
        broadcaster_post(srv, "filters", pattern="heck", action="censor")
        page = requests.get(srv.url + "/broadcaster", auth=BROADCASTER, timeout=5).text
        troll_id = re.search(r'troll message.*?name="viewer_id" value="(\w+)"', page,
                             re.S).group(1)
        broadcaster_post(srv, "ban", viewer_id=troll_id)
        broadcaster_post(srv, "title", title="<script>alert('t')</script> Show")
        info = requests.get(srv.url + "/info", timeout=5).text
        assert "&lt;script&gt;alert(&#39;t&#39;)&lt;/script&gt; Show" in info
        assert "<script>alert" not in info
        before = keeper.messages()
        trip = re.findall(r'class="trip">!([^<]+)<', before)[-1]

        srv.process.send_signal(signal.SIGKILL)
        srv.process.wait(5)
        srv.start()
        after = keeper.messages()
        assert "remember me" in after and "Keeper" in after and f"!{trip}" in after
        assert "You are banned" in troll.form()
        assert 'name="captcha_id"' not in keeper.form()  # still verified
        time.sleep(0.15)
        keeper.post("what the heck")
        assert "what the ***" in keeper.messages()
        assert "alert(&#39;t&#39;)" in requests.get(srv.url + "/info", timeout=5).text

        srv.stop()  # a clean restart too
        srv.start()
        assert "what the ***" in keeper.messages()
        assert "Keeper" in keeper.form()
    finally:
        srv.stop()
