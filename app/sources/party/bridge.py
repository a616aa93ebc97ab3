"""A watch party's controls on a server whose party plays on another machine.

`livestream cloud play` runs the party on the host's own machine and the rented server follows
it as an edge, through an SSH session the host opened (app/cloud/remote_party.py). That
session's standard input and output are the way back: here, on the server, this module
listens on the server's own party socket (so its /broadcaster form and `livestream party`
work as with a local party), writes each command to standard output as one JSON line with a
number, and waits for the host's answer with that number on standard input. The server opens
no listener for it: the host speaks only through the session it opened, and when the session
ends (standard input closes) the controls say so.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import typing

from app.sources.party import control

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20  # one answer: a status with the queue's names
ANSWER_SECONDS = 15.0  # the host's party answers within 10 s (runner.Party.command)


class StdioBridge:
    """Commands out on `out`, answers in on `answers`; `gone` is set when `answers` ends."""

    def __init__(self, state_dir, out: typing.BinaryIO, answers: typing.BinaryIO):
        self.out = out
        self.answers = answers
        self.lock = threading.Lock()  # one command in flight
        self.number = 0
        self.replies: dict[int, dict] = {}
        self.arrived = threading.Condition()
        self.gone = threading.Event()
        self.server = control.ControlServer(state_dir, self.forward)

    def start(self) -> None:
        self.server.start()
        threading.Thread(target=self._read, name="party answers", daemon=True).start()

    def stop(self) -> None:
        self.server.stop()

    def forward(self, command: str, argument: str) -> dict:
        if self.gone.is_set():
            raise control.ControlError("the host's party has ended or its connection is gone")
        with self.lock:
            self.number += 1
            number = self.number
            line = {"id": number, "command": command, "argument": argument}
            try:
                self.out.write(json.dumps(line).encode() + b"\n")
                self.out.flush()
            except OSError as exc:
                raise control.ControlError(f"cannot reach the host's party ({exc})") from exc
            with self.arrived:
                self.arrived.wait_for(lambda: number in self.replies or self.gone.is_set(),
                                      ANSWER_SECONDS)
                reply = self.replies.pop(number, None)
                self.replies.clear()  # late answers to commands given up on
        if reply is None:
            raise control.ControlError("the host's party did not answer")
        if not reply.get("ok"):
            raise control.ControlError(str(reply.get("error") or "refused")[:300])
        return reply

    def _read(self) -> None:
        try:
            while line := self.answers.readline(MAX_LINE):
                try:
                    answer = json.loads(line)
                    number = int(answer.pop("id"))
                except (ValueError, KeyError, TypeError, AttributeError):
                    log.warning("party bridge: an answer that is not ours; ignored")
                    continue
                with self.arrived:
                    self.replies[number] = answer
                    self.arrived.notify_all()
        except OSError as exc:
            log.info("party bridge: the host's side closed (%s)", exc)
        finally:
            self.gone.set()
            with self.arrived:
                self.arrived.notify_all()


def standard_streams() -> tuple[typing.BinaryIO, typing.BinaryIO]:
    """(out, in) as binary files that, under gevent's monkey-patching, wait cooperatively."""
    from gevent import monkey

    out_fd, in_fd = os.dup(1), os.dup(0)
    os.dup2(2, 1)  # a stray print goes to the log, not into the answers' channel
    if monkey.is_module_patched("threading"):
        from gevent.fileobject import FileObjectPosix

        return FileObjectPosix(out_fd, "wb"), FileObjectPosix(in_fd, "rb")
    return os.fdopen(out_fd, "wb"), os.fdopen(in_fd, "rb")
