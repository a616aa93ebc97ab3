"""The other end of the sockets, for `livestream control` and `livestream events`."""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import TextIO

from app.hooks.control_socket import SOCKET_NAME as CONTROL
from app.hooks.event_socket import SOCKET_NAME as EVENTS


class HookClientError(RuntimeError):
    """The server's socket could not be reached; the message says what to check."""


def _connect(path: Path, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise HookClientError(f"no server answers on {path}: is `livestream serve` running "
                              "with this config (and [hooks] on)?") from None
    return sock


def control(state_dir: Path, request: dict, timeout: float = 15.0) -> dict:
    """One command to the control socket; its answer."""
    with _connect(Path(state_dir) / CONTROL, timeout) as sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer = sock.makefile("rb").readline(1 << 20)
    try:
        return json.loads(answer)
    except ValueError:
        raise HookClientError("the server gave no answer") from None


def follow_events(state_dir: Path, out: TextIO = sys.stdout, count: int = 0) -> None:
    """Print every event line as it comes (`count` lines, or until interrupted)."""
    with _connect(Path(state_dir) / EVENTS, None) as sock:
        for number, line in enumerate(sock.makefile("r", encoding="utf-8"), 1):
            out.write(line)
            out.flush()
            if count and number >= count:
                return
