"""The control channel: a Unix socket in the state folder, mode 0600, only for our own user.

The `play` process listens; `livestream party ...` and the server's /broadcaster forms (both
run by the broadcaster's account on the same machine) send one JSON line and read one back.
Nothing is reachable over the network: with `--to rtmp://...` the control stays on the
machine that runs `play`.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from app.runtime.private_socket import bind_private, same_user

log = logging.getLogger(__name__)

SOCKET_NAME = "party.sock"
MAX_REQUEST = 1024  # one short command; anything longer is refused unread
COMMANDS = ("pause", "resume", "seek", "next", "prev", "status")


class ControlError(RuntimeError):
    """The running play could not be reached or refused the command."""


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


class ControlServer:
    """Accepts one command per connection and answers with handle(command, argument)."""

    def __init__(self, state_dir: Path, handle: Callable[[str, str], dict]):
        self.path = socket_path(state_dir)
        self.handle = handle
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.path.exists():
            refuse_second_play(self.path.parent)  # else it was left by a play that died
        self.sock = bind_private(self.path)
        self.thread = threading.Thread(target=self._serve, name="party-control", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        while self.sock is not None:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._one(conn)
                except (OSError, ValueError) as exc:
                    log.debug("control connection failed: %s", exc)

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        if not same_user(conn):
            conn.sendall(b'{"ok": false, "error": "not the broadcaster\'s account"}\n')
            return
        data = b""
        while b"\n" not in data and len(data) <= MAX_REQUEST:
            chunk = conn.recv(MAX_REQUEST + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too long")
        request = json.loads(data.decode("utf-8") or "{}")
        command = str(request.get("command", ""))
        argument = str(request.get("argument", ""))[:64]
        if command not in COMMANDS:
            reply = {"ok": False, "error": f"unknown command {command[:20]!r}; use "
                                           f"{', '.join(COMMANDS)}"}
        else:
            try:
                reply = self.handle(command, argument)
            except ControlError as exc:
                reply = {"ok": False, "error": str(exc)}
        conn.sendall(json.dumps(reply).encode() + b"\n")


def refuse_second_play(state_dir: Path) -> None:
    """ControlError when a watch party's `play` answers on this state folder: a second `play`
    would clean the stream folder under it (playlists, segments) and take it over."""
    try:
        send(state_dir, "status", timeout=1.0)
    except ControlError:
        return
    raise ControlError(f"a watch party is already playing (its controls: "
                       f"{socket_path(state_dir)}); control it with `livestream party "
                       "pause|resume|seek +30|next|prev|status` or on /broadcaster, or stop it "
                       "(Ctrl-C in its terminal) before starting another `livestream play`")


def send(state_dir: Path, command: str, argument: str = "", timeout: float = 15.0) -> dict:
    """Send one command to the running play; its reply (with its status) or ControlError."""
    path = socket_path(state_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps({"command": command, "argument": argument}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n") and len(data) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlError("no `livestream play` with a queue is running on this machine "
                           "(start one with several files, an .m3u, --party, --start-at "
                           "or --in)") from exc
    except OSError as exc:
        raise ControlError(f"the running play did not answer ({exc})") from exc
    finally:
        sock.close()
    try:
        reply = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError("the running play gave a garbled answer") from exc
    if not reply.get("ok"):
        raise ControlError(reply.get("error") or "refused")
    return reply
