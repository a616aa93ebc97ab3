"""Invite-only streams (issue 24, item 3): a stranger gets a short page and no media bytes from
any address (page, video, playlists, segments, fragments, chat); an invited viewer plays and
chats, keeps access across a restart, and loses it when the invite is revoked."""
from __future__ import annotations

import re

import pytest
import requests
from chat_support import BROADCASTER, ChatViewer, broadcaster_post, chat_server
from support import TestStream, livestream, wait_for


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    work = tmp_path_factory.mktemp("invites")
    stream = TestStream(work / "stream").start()
    stream.wait_segments(2)
    server = chat_server(work, stream.directory, "[access]\ninvite_only = true\n").start()
    wait_for(lambda: b"<video" in requests.get(server.url + "/", timeout=5, params={
        "token": own_token(server)}).content, 20, 0.2, "the stream live, for an invited one")
    yield server, stream
    server.stop()
    stream.stop()


def own_token(server, note: str = "fixture") -> str:
    """An invited viewer's token: a new invite link opened."""
    link = livestream(server.config_path, "invite", "new", "--note", note).stdout.strip()
    opened = requests.get(server.url + link[link.index("/invite/"):], timeout=5,
                          allow_redirects=False)
    return re.search(r"token=([\w-]+)", opened.headers["Location"])[1]


def media_addresses(server, token: str = "") -> list[str]:
    """Every way to the picture and the chat, for one token (or none)."""
    query = f"?token={token}" if token else ""
    playlist = requests.get(server.url + "/api/playlist", timeout=5, params={
        "token": token} if token else None)
    addresses = [f"/{query}", f"/stream.mp4{query}", f"/stream.m3u8{query}",
                 f"/stream/stream.m3u8{query}", f"/stream/init.mp4{query}",
                 f"/chat/form{query}", f"/chat/messages{query}", f"/events{query}",
                 f"/info{query}", f"/api/playlist{query}"]
    if playlist.status_code == 200:
        newest = playlist.json()["segments"][-1]
        addresses.append(newest["uri"] + query)
    return addresses


def test_a_stranger_gets_no_media_bytes_from_any_address(private):
    server, stream = private
    segment = sorted(p.name for p in stream.directory.glob("stream*.m4s"))[-1]
    for path in media_addresses(server) + [f"/stream/{segment}", "/fragments?gen=1&seq=1&k=0"]:
        answer = requests.get(server.url + path, timeout=5, stream=True)
        head = answer.raw.read(4096)
        assert answer.status_code == 403, path
        assert b"This stream is by invitation" in head and b"ftyp" not in head, path
        answer.close()
    assert requests.get(server.url + "/invite/not-a-code", timeout=5).status_code == 403


def test_an_invited_viewer_plays_and_chats_until_revoked(private):
    server, _ = private
    made = livestream(server.config_path, "invite", "new", "--note", "Ada")
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/invite/[\w-]{20,}", link)
    opened = requests.get(server.url + link[link.index("/invite/"):], timeout=5,
                          allow_redirects=False)
    assert opened.status_code == 303
    token = re.search(r"token=([\w-]+)", opened.headers["Location"])[1]
    for path in media_addresses(server, token):  # some never end: read their start only
        with requests.get(server.url + path, timeout=5, stream=True) as answer:
            assert answer.status_code == 200, path
            if path.startswith(("/events", "/chat/messages")):
                continue  # pushed: it may say nothing for a while
            head = answer.raw.read(64)
            assert b"invitation" not in head, path
            assert b"ftyp" in head or not path.startswith("/stream.mp4"), path
    viewer = ChatViewer(server, token)
    assert viewer.post("thanks for the invite").status_code == 303

    # one use: a second person with the same link is refused
    again = requests.get(server.url + link[link.index("/invite/"):], timeout=5)
    assert again.status_code == 403 and "used already" in again.text

    # kept across a restart
    server.stop()
    server.start()
    assert requests.get(server.url + f"/?token={token}", timeout=5).status_code == 200

    listed = livestream(server.config_path, "invite", "list").stdout
    invite_id = re.search(r"^(\w+)  Ada  0 use\(s\) left, no expiry, opened by 1$", listed,
                          re.M)[1]
    page = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=5).text
    assert f"<code>{invite_id}</code>" in page
    assert broadcaster_post(server, "invites/revoke", invite_id=invite_id).status_code == 303
    assert requests.get(server.url + f"/?token={token}", timeout=5).status_code == 403


def test_the_broadcaster_makes_an_invite_for_many_on_the_page(private):
    server, _ = private
    made = broadcaster_post(server, "invites", uses="many", hours="2", note="club")
    assert made.status_code == 303
    page = requests.get(server.url + made.headers["Location"], auth=BROADCASTER,
                        timeout=5).text
    link = re.search(r'class="invite-link" value="([^"]+)"', page)[1]
    path = link[link.index("/invite/"):]
    for _ in range(3):  # anyone with the link
        assert requests.get(server.url + path, timeout=5).status_code == 200
    crafted = requests.get(server.url + "/broadcaster?invite=http://evil/invite/x&isig=0",
                           auth=BROADCASTER, timeout=5).text
    assert "evil" not in crafted
