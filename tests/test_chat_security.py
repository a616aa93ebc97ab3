"""Security review findings, each pinned by a test over real HTTP: slots that leak, tokens
that fall out of links, pages that say something untrue, and timing that tells secrets."""
from __future__ import annotations

import pytest
import requests
from chat_support import ChatViewer, chat_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An offline chat server (no stream) with a small cap on live chat frames."""
    workdir = tmp_path_factory.mktemp("chat-security")
    srv = chat_server(workdir, workdir / "stream", "[chat]\nmax_streams = 4\n").start()
    yield srv
    srv.stop()


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
