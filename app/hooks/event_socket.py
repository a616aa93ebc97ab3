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
from app.runtime.private_socket import PrivateServer

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


class EventSocket(PrivateServer):
    def __init__(self, state_dir: Path):
        super().__init__(Path(state_dir) / SOCKET_NAME)
        self.listeners: list[_Listener] = []

    def __call__(self, event: HookEvent) -> None:
        line = event.as_json().encode() + b"\n"
        for listener in list(self.listeners):
            if len(listener.lines) >= QUEUE:
                log.info("an event listener fell %d events behind: dropped", QUEUE)
                self._drop(listener)
                continue
            listener.lines.append(line)
            listener.ready.set()

    def full(self) -> bool:
        return len(self.listeners) >= MAX_LISTENERS

    def take(self, conn: socket.socket) -> None:
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
