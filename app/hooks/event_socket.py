"""`state/events.sock`: every event as one JSON line to each connected script (0600, the
caller's uid checked, like party.sock). A script that stops reading is dropped, never waited
for: each has a small queue of its own."""
from __future__ import annotations

import logging
import socket
from collections import deque
from pathlib import Path

import gevent
import gevent.event

from app.hooks.bus import HookEvent
from app.runtime.private_socket import bind_private, same_user

log = logging.getLogger(__name__)

SOCKET_NAME = "events.sock"
MAX_LISTENERS = 16
QUEUE = 1000  # lines a listener may be behind before it is dropped
SEND_SECONDS = 10.0  # one line not taken within this: the listener is dropped


class _Listener:
    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.lines: deque[bytes] = deque()
        self.ready = gevent.event.Event()
        self.gone = False


class EventSocket:
    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / SOCKET_NAME
        self.listeners: list[_Listener] = []
        self.sock: socket.socket | None = None

    def start(self) -> gevent.Greenlet:
        self.sock = bind_private(self.path)
        return gevent.spawn(self._accept)

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.path.unlink(missing_ok=True)

    def __call__(self, event: HookEvent) -> None:
        line = event.as_json().encode() + b"\n"
        for listener in list(self.listeners):
            if len(listener.lines) >= QUEUE:
                log.info("an event listener fell %d events behind: dropped", QUEUE)
                self._drop(listener)
                continue
            listener.lines.append(line)
            listener.ready.set()

    def _accept(self) -> None:
        while self.sock is not None:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if not same_user(conn) or len(self.listeners) >= MAX_LISTENERS:
                conn.close()
                continue
            listener = _Listener(conn)
            self.listeners.append(listener)
            gevent.spawn(self._send, listener)
            gevent.spawn(self._notice_close, listener)

    def _send(self, listener: _Listener) -> None:
        try:
            while not listener.gone:
                listener.ready.wait()
                listener.ready.clear()
                while listener.lines and not listener.gone:
                    with gevent.Timeout(SEND_SECONDS, OSError("too slow")):
                        listener.conn.sendall(listener.lines.popleft())
        except OSError:
            pass
        finally:
            self._drop(listener)

    def _notice_close(self, listener: _Listener) -> None:
        """Read (and ignore) what the script sends, to notice when it goes."""
        try:
            while not listener.gone and listener.conn.recv(1024):
                pass
        except OSError:
            pass
        self._drop(listener)

    def _drop(self, listener: _Listener) -> None:
        listener.gone = True
        listener.ready.set()
        if listener in self.listeners:
            self.listeners.remove(listener)
        listener.conn.close()
