"""Unix sockets only the broadcaster's own account may use (the party's controls, the event
and control sockets of app/hooks): created 0600 with no window in between, and every peer's
uid checked again on connection."""
from __future__ import annotations

import os
import socket
import struct
from pathlib import Path


def bind_private(path: Path, backlog: int = 8) -> socket.socket:
    """A listening Unix socket at `path`, mode 0600; one left by a dead process is replaced
    (callers that must not replace a live one ask it first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # created 0600: no window where others could connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    return sock


def same_user(conn: socket.socket) -> bool:
    """The peer runs as our user (the socket's mode already says so; this says it twice)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return True  # no SO_PEERCRED here: the 0600 mode is the guard
    _, uid, _ = struct.unpack("3i", creds)
    return uid == os.getuid()


class PrivateServer:
    """A Unix socket server of the broadcaster's own account, in greenlets: `start()` binds
    `path` (0600) and accepts; each connection of our uid goes to `take(conn)` unless
    `full()`; `stop()` closes and removes the socket."""

    def __init__(self, path: Path):
        self.path = path
        self.sock: socket.socket | None = None

    def start(self):
        import gevent

        self.sock = bind_private(self.path)
        return gevent.spawn(self._accept)

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.path.unlink(missing_ok=True)

    def full(self) -> bool:
        return False

    def take(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while self.sock is not None:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if not same_user(conn) or self.full():
                conn.close()
                continue
            self.take(conn)
