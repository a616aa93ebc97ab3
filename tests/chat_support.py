"""A viewer of the chat over plain HTTP, without cookies, the way a no-JS browser posts."""
from __future__ import annotations

import html
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from redis_support import WorkersServer
from support import PROJECT, Server, wait_for

BROADCASTER = ("broadcaster", "test-password")


def chat_server(workdir: Path, stream_dir: Path, extra: str = "",
                redis_url: str | None = None, stream: str = "") -> Server:
    """A server with a known broadcaster password and readable captcha answers; with
    `redis_url`, `serve --workers 2` sharing that Redis database. `stream`: more keys of
    its [stream] table (e.g. "memory_segments = 4\n")."""
    answers = workdir / "captcha-answers.txt"
    config = (
        stream
        + '[broadcaster]\npassword = "test-password"\nfailed_logins = 3\nfailed_window = 30.0\n'
        f'[captcha]\ntesting_answers_file = "{answers}"\ngenerate_per_second = 50.0\n'
        "[viewers]\nwatching_seconds = 5.0\n"
        + extra
    )
    server = (WorkersServer(workdir, stream_dir, redis_url, config) if redis_url
              else Server(workdir, stream_dir, config))
    server.answers_file = answers
    return server


def field(page: str, name: str) -> str | None:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    return html.unescape(found.group(1)) if found else None


class ChatViewer:
    """One viewer: a token from the page, forms fetched and posted with requests (no cookies)."""

    def __init__(self, server: Server, token: str | None = None):
        self.server = server
        if token is None:
            page = requests.get(server.url + "/", timeout=5).text
            token = re.search(r"/chat/form\?token=([\w-]+)", page).group(1)
        self.token = token

    def get(self, path: str, **kwargs) -> requests.Response:
        sep = "&" if "?" in path else "?"
        return requests.get(f"{self.server.url}{path}{sep}token={self.token}", timeout=10,
                            **kwargs)

    def form(self) -> str:
        return self.get("/chat/form").text

    def answer(self, captcha_id: str) -> str:
        def lookup():
            if not self.server.answers_file.exists():
                return None
            for line in self.server.answers_file.read_text().splitlines():
                cid, answer = line.split()
                if cid == captcha_id:
                    return answer
            return None
        return wait_for(lookup, 5, what="the captcha answer")

    def post(self, message: str, solve: bool = True, form: str | None = None,
             **fields) -> requests.Response:
        form = form if form is not None else self.form()
        data = {"token": self.token, "nonce": field(form, "nonce") or "", "message": message}
        captcha_id = field(form, "captcha_id")
        if captcha_id:
            data["captcha_id"] = captcha_id
            data["captcha"] = self.answer(captcha_id) if solve else "WRONG"
        data.update(fields)
        return requests.post(f"{self.server.url}/chat/form?token={self.token}", data=data,
                             allow_redirects=False, timeout=10)

    def messages(self) -> str:
        return self.get("/chat/messages", params={"mode": "poll"}).text


class LiveFrame:
    """Reads the streaming chat frame in a thread, recording when each chunk arrived."""

    def __init__(self, viewer: ChatViewer):
        self.chunks: list[tuple[float, bytes]] = []
        self.status = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(viewer,), daemon=True)
        self._thread.start()
        wait_for(lambda: self.chunks, 5, what="the live chat frame to start")

    def _read(self, viewer: ChatViewer) -> None:
        with viewer.get("/chat/messages", stream=True) as response:
            self.status = response.status_code
            self.encoding = response.headers.get("Content-Encoding")
            for chunk in response.iter_content(None):
                self.chunks.append((time.monotonic(), chunk))
                if self._stop.is_set():
                    return

    def text(self) -> str:
        return b"".join(c for _, c in self.chunks).decode()

    def arrival(self, needle: str, timeout: float = 3.0) -> float:
        def seen():
            data = b""
            for at, chunk in self.chunks:
                data += chunk
                if needle.encode() in data:
                    return at
            return None
        return wait_for(seen, timeout, what=f"{needle!r} in the live frame")

    def close(self) -> None:
        self._stop.set()


def broadcaster_csrf(server: Server) -> str:
    page = requests.get(server.url + "/broadcaster", auth=BROADCASTER, timeout=10)
    assert page.status_code == 200
    return field(page.text, "csrf")


def broadcaster_post(server: Server, path: str, **data) -> requests.Response:
    data.setdefault("csrf", broadcaster_csrf(server))
    return requests.post(f"{server.url}/broadcaster/{path}", data=data, auth=BROADCASTER,
                         allow_redirects=False, timeout=10)


def login_link(srv: Server) -> str:
    """The owner's one-time link, from `livestream broadcaster login-link` as they run it."""
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "--config", str(srv.config_path), "broadcaster",
         "login-link"], check=False, cwd=PROJECT, capture_output=True, text=True,
        timeout=30)
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert re.fullmatch(rf"{re.escape(srv.url)}/broadcaster/login\?key=[\w-]{{40,}}", link)
    return link
