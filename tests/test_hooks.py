"""Hooks for bots and scripts (issue 24, item 5): the event socket, webhooks signed with an
HMAC, the control socket and `livestream control`, one event per event with workers.

Real parts: `livestream serve` (one process, and two workers on a real redis-server), a
webhook receiver on loopback (http.server), the Unix sockets as a script would use them.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import http.server
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
import requests
from chat_support import BROADCASTER, ChatViewer, broadcaster_post, chat_server
from redis_support import redis_server  # noqa: F401 (a fixture)
from support import PROJECT, TestStream, cli, free_port, livestream, wait_for

from app.config import ConfigError, from_dict

CHAT_STREAM = "none"
SECRET = "a-webhook-secret-for-tests"


class Receiver:
    """A webhook receiver on loopback: every POST with its headers and arrival time."""

    def __init__(self):
        self.posts: list[tuple[float, dict, bytes]] = []
        received = self.posts

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((time.monotonic(), dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook/some-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, kind: str) -> list[dict]:
        return [json.loads(body) for _, headers, body in self.posts
                if headers["X-Livestream-Event"] == kind]

    def close(self) -> None:
        self.server.shutdown()


def hooks_config(receiver: Receiver) -> str:
    return f'[webhooks]\nurls = ["{receiver.url}"]\nsecret = "{SECRET}"\n'


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    receiver = Receiver()
    work = tmp_path_factory.mktemp("hooks")
    server = chat_server(work, work / "stream", hooks_config(receiver)).start()
    yield server, receiver, work / "state"
    server.stop()
    receiver.close()


def listen(state_dir) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(state_dir / "events.sock"))
    return sock


def control(state_dir, **request) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(state_dir / "control.sock"))
        sock.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(sock.makefile("rb").readline())


def test_a_posted_message_reaches_the_webhook_signed_and_the_event_socket(hooked):
    server, receiver, state_dir = hooked
    listener = listen(state_dir)
    lines = listener.makefile("rb")
    viewer = ChatViewer(server)
    posted = time.monotonic()
    assert viewer.post("hello bots", name="Ada").status_code == 303
    wait_for(lambda: receiver.events("message"), 5, 0.02, "the webhook")
    arrived, headers, body = next(p for p in receiver.posts
                                  if p[1]["X-Livestream-Event"] == "message")
    print(f"\nwebhook {1000 * (arrived - posted):.0f} ms after the post")
    assert arrived - posted < 1.0
    expected = hmac.new(SECRET.encode(), headers["X-Livestream-Timestamp"].encode() + b"."
                        + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Livestream-Signature"], "sha256=" + expected)
    assert abs(int(headers["X-Livestream-Timestamp"]) - time.time()) < 30
    event = json.loads(body)
    assert event["event"] == "message" and event["body"] == "hello bots"
    assert event["name"] == "Ada" and "viewer_id" not in event and "token" not in body.decode()
    line = json.loads(lines.readline())
    assert line == event, "the event socket says the same"
    listener.close()


def test_the_control_socket_bans_hides_says_and_titles(hooked):
    server, receiver, state_dir = hooked
    viewer = ChatViewer(server)
    assert viewer.post("buy my stuff").status_code == 303
    message_id = wait_for(lambda: next((e["id"] for e in receiver.events("message")
                                        if e["body"] == "buy my stuff"), None), 5, 0.05,
                          "the message's event")
    assert control(state_dir, command="ban", message=message_id, hide_all=True) == {"ok": True}
    refused = viewer.post("again")
    assert refused.status_code != 303 or "again" not in viewer.messages()
    wait_for(lambda: receiver.events("ban") and receiver.events("hide"), 5, 0.05, "ban, hide")
    assert receiver.events("ban")[-1]["by"] == "control socket"
    assert control(state_dir, command="unban", message=message_id) == {"ok": True}
    time.sleep(1.1)  # the flood rule's one second between two posts
    again = viewer.post("sorry")
    assert again.status_code == 303, again.text
    said = control(state_dir, command="say", text="Welcome, everyone")
    assert said["ok"] and "Welcome, everyone" in viewer.messages()
    assert control(state_dir, command="title", text="Movie night") == {"ok": True}
    wait_for(lambda: any(e["title"] == "Movie night" for e in receiver.events("title")), 5,
             0.1, "the title event")
    assert control(state_dir, command="status")["title"] == "Movie night"
    assert control(state_dir, command="party", action="pause")["error"].startswith("no ")
    assert control(state_dir, command="nuke")["ok"] is False
    assert control(state_dir, command="ban", message="x")["error"].startswith("give")


def test_livestream_control_and_events_from_the_command_line(hooked):
    server, receiver, state_dir = hooked
    done = livestream(server.config_path, "control", "title", "From", "the", "shell")
    assert done.returncode == 0, done.stderr
    assert livestream(server.config_path, "control", "status").stdout.count("From the shell")
    modes = livestream(server.config_path, "control", "modes", "slow=5", "closed=no")
    assert json.loads(modes.stdout)["slow_seconds"] == 5, modes.stderr
    livestream(server.config_path, "control", "modes", "slow=0")
    bad = livestream(server.config_path, "control", "hide", "999999")
    assert bad.returncode == 1 and "no message 999999" in bad.stderr
    reader = subprocess.Popen(cli(server.config_path, "events"), stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
    deadline = threading.Timer(30, reader.kill)  # the loop below ends, whatever comes
    deadline.start()
    try:
        time.sleep(1.5)  # `events` connected by then
        livestream(server.config_path, "control", "say", "to the events")
        bodies = []
        for line in reader.stdout:  # other events (viewers coming and going) may come first
            bodies.append(json.loads(line).get("body"))
            if bodies[-1] == "to the events":
                break
        assert "to the events" in bodies
    finally:
        deadline.cancel()
        reader.kill()
        reader.wait(10)


def test_the_sockets_are_the_broadcasters_own(hooked):
    _, _, state_dir = hooked
    for name in ("events.sock", "control.sock"):
        mode = os.stat(state_dir / name).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, name


def test_webhooks_need_a_secret_and_with_tor_stay_off_the_clear_internet(tmp_path):
    with pytest.raises(ConfigError, match="webhooks.secret"):
        from_dict({"webhooks": {"urls": ["http://127.0.0.1:9/x"]}})
    tor = {"tor": {"enabled": True}}
    hooks = {"urls": ["https://hooks.example.net/x"], "secret": SECRET}
    with pytest.raises(ConfigError, match="would reveal this server"):
        from_dict({**tor, "webhooks": hooks})
    from_dict({**tor, "webhooks": {**hooks, "allow_clearnet": True}})
    from_dict({**tor, "webhooks": {**hooks, "urls": ["http://127.0.0.1:8/x",
                                                     "http://" + "a" * 56 + ".onion/x"]}})


def test_with_workers_each_event_is_said_once(tmp_path, redis_server):  # noqa: F811
    receiver = Receiver()
    server = chat_server(tmp_path, tmp_path / "stream", hooks_config(receiver),
                         redis_url=redis_server.new_database()).start()
    try:
        for number in range(6):  # new connections: the kernel spreads them over the workers
            assert ChatViewer(server).post(f"worker message {number}").status_code == 303
        wait_for(lambda: len(receiver.events("message")) >= 6, 10, 0.1, "six webhooks")
        time.sleep(1.0)  # a duplicate would have come by now
        bodies = [e["body"] for e in receiver.events("message")]
        assert sorted(bodies) == [f"worker message {n}" for n in range(6)]
    finally:
        server.stop()
        receiver.close()


def test_the_irc_bridge_of_the_docs_carries_the_chat(hooked, tmp_path):
    """docs/examples/chat_to_irc.py against a small IRC server on loopback."""
    server, _, state_dir = hooked
    irc = socket.create_server(("127.0.0.1", 0))
    irc.settimeout(20)
    bridge = subprocess.Popen(
        [sys.executable, str(PROJECT / "docs" / "examples" / "chat_to_irc.py"), "--state",
         str(state_dir), "--irc", f"127.0.0.1:{irc.getsockname()[1]}", "--channel", "#night"],
        stdin=subprocess.DEVNULL)
    try:
        conn, _ = irc.accept()
        lines = conn.makefile("r", encoding="utf-8")
        assert lines.readline().startswith("NICK ")
        conn.sendall(b"PING :check\r\n")
        time.sleep(1.0)  # the bridge is on the event socket by now
        ChatViewer(server).post("hello\nIRC", name="Grace")
        seen = [lines.readline().strip() for _ in range(4)]
        assert "PONG :check" in seen
        assert "PRIVMSG #night :Grace: hello IRC" in seen, seen
    finally:
        bridge.kill()
        bridge.wait(10)
        irc.close()


def test_chat_modes_refuse_with_a_clear_message_and_lift(hooked):
    """Slow mode, established viewers only and a closed chat (issue 24, item 2), set from
    /broadcaster and from the control socket."""
    server, receiver, state_dir = hooked
    viewer = ChatViewer(server)
    assert viewer.post("first").status_code == 303

    answer = control(state_dir, command="modes", slow_seconds=30)
    assert answer == {"ok": True, "closed": False, "slow_seconds": 30, "established_minutes": 0}
    time.sleep(1.1)
    slow = viewer.post("second")
    assert slow.status_code == 400 and "Slow mode is on: one message every 30 seconds" in \
        html.unescape(slow.text)
    wait_for(lambda: receiver.events("modes"), 5, 0.05, "the modes event")

    assert broadcaster_post(server, "modes", slow_seconds="0", established_minutes="10") \
        .status_code == 303
    newcomer = ChatViewer(server)
    refused = newcomer.post("hi all")
    assert refused.status_code == 400
    assert "Only viewers who have been here 10 minutes may write now; you may in 10 min" in \
        html.unescape(refused.text)
    page = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=5).text
    assert "viewers here 10 min or more" in page

    assert broadcaster_post(server, "modes", closed="1").status_code == 303
    closed = viewer.post("anyone?")
    assert "The chat is closed for now" in html.unescape(closed.text)
    assert control(state_dir, command="say", text="only me")["ok"]  # the broadcaster writes

    assert control(state_dir, command="modes", closed=False, established_minutes=0)["ok"]
    time.sleep(1.1)
    assert viewer.post("open again").status_code == 303
    assert control(state_dir, command="modes", slow_seconds=99999)["error"].startswith("slow")


def test_a_timed_ban_ends_by_itself(hooked):
    """A ban for minutes (issue 24, item 2): refused while it lasts, shown with its end in UTC
    on /broadcaster, gone afterwards without anyone lifting it."""
    server, receiver, state_dir = hooked
    viewer = ChatViewer(server)
    assert viewer.post("rude words").status_code == 303
    message_id = wait_for(lambda: next((e["id"] for e in receiver.events("message")
                                        if e["body"] == "rude words"), None), 5, 0.05, "event")
    assert control(state_dir, command="ban", message=message_id, minutes=10)["ok"]
    assert viewer.post("let me in").status_code == 403
    page = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=5).text
    assert re.search(r"until \d\d:\d\d UTC", page)
    wait_for(lambda: any(e["minutes"] == 10 for e in receiver.events("ban")), 5, 0.05,
             "the ban event, with its minutes")
    assert control(state_dir, command="ban", message=message_id, minutes=-5)["ok"] is False


def test_timed_bans_expire(tmp_path):
    from app.community.identity import Identities
    from app.community.store import Ban, SQLiteStore

    store = SQLiteStore(tmp_path / "state.sqlite3")
    identities = Identities(store)
    now = time.time()
    store.add_ban(Ban("viewer", "v1", now - 700, "test", now - 100))
    store.add_ban(Ban("viewer", "v2", now, "test", now + 600))
    store.add_ban(Ban("viewer", "v3", now, "test"))
    assert [identities.is_banned(v) for v in ("v1", "v2", "v3")] == [False, True, True]
    store.close()
    again = SQLiteStore(tmp_path / "state.sqlite3")  # kept across a restart
    assert again.bans()[("viewer", "v2")].expires == pytest.approx(now + 600)
    again.close()


def test_with_workers_modes_invites_and_moderators_hold_on_every_worker(tmp_path,
                                                                        redis_server):  # noqa: F811
    """Issue 24, item 7: what the control socket, the CLI and one worker set holds on the other
    worker too (every new connection may reach either: SO_REUSEPORT)."""
    server = chat_server(tmp_path, tmp_path / "stream", "[access]\ninvite_only = true\n",
                         redis_url=redis_server.new_database()).start()
    try:
        link = livestream(server.config_path, "invite", "new", "--many").stdout.strip()
        tokens = []
        for _ in range(4):  # redeemed on whichever worker took the connection
            opened = requests.get(server.url + link[link.index("/invite/"):], timeout=5,
                                  allow_redirects=False)
            tokens.append(re.search(r"token=([\w-]+)", opened.headers["Location"])[1])
        for token in tokens:  # and valid on every worker
            for _ in range(3):
                assert requests.get(server.url + f"/?token={token}", timeout=5,
                                    headers={"Connection": "close"}).status_code == 200
        assert requests.get(server.url + "/", timeout=5).status_code == 403

        state_dir = tmp_path / "state"
        assert control(state_dir, command="modes", slow_seconds=60)["ok"]
        viewer = ChatViewer(server, tokens[0])
        assert viewer.post("first").status_code == 303
        time.sleep(1.1)
        for _ in range(3):  # refused by whichever worker answers
            assert "Slow mode is on" in html.unescape(viewer.post("again").text)
    finally:
        server.stop()


def test_the_stream_and_the_audience_are_events_too(tmp_path):
    """live, viewer_arrived and offline (ended), from a short real stream."""
    receiver = Receiver()
    stream = TestStream(tmp_path / "stream", duration=12)
    server = chat_server(tmp_path, stream.directory, hooks_config(receiver)).start()
    try:
        stream.start()
        wait_for(lambda: receiver.events("live"), 30, 0.1, "the live event")
        viewer = ChatViewer(server)
        with requests.get(server.url + f"/stream.mp4?token={viewer.token}", stream=True,
                          timeout=10) as video:
            deadline = time.monotonic() + 4  # video over time lists the viewer as watching
            for _ in video.iter_content(4096):
                if time.monotonic() > deadline:
                    break
        arrived = wait_for(lambda: receiver.events("viewer_arrived"), 15, 0.2,
                           "the viewer_arrived event")
        tag = re.search(r'class="tag">#([^<]+)<', viewer.form())[1]
        assert arrived[0]["tag"] == tag and arrived[0]["name"] == "Anonymous"
        ended = wait_for(lambda: receiver.events("offline"), 40, 0.2, "the offline event")
        assert ended[0] == {"event": "offline", "time": ended[0]["time"], "ended": True}
    finally:
        server.stop()
        stream.stop()
        receiver.close()
