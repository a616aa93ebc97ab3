"""`state/control.sock`: the broadcaster's powers for scripts and bots, one JSON object per
line each way (0600, the caller's uid checked, like party.sock). `livestream control` is its
client.

    {"command": "title", "text": "Movie night"}
    {"command": "say", "text": "Back in five"}           posted as the broadcaster
    {"command": "hide", "message": 123}
    {"command": "ban", "message": 123, "hide_all": true} the author of message 123, for
                                                        good or for "minutes": 10
    {"command": "unban", "message": 123}
    {"command": "filter", "pattern": "spam", "action": "block", "regex": false}
    {"command": "unfilter", "id": 4}
    {"command": "party", "action": "pause"}             also resume, seek (with "argument"),
                                                        next, prev, status
    {"command": "modes", "slow_seconds": 30}             also closed, established_minutes
    {"command": "status"}

Each answer is {"ok": true, ...} or {"ok": false, "error": "..."}.
"""
from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import gevent

from app.community.chat import Refused, Submission
from app.community.filters import ACTIONS
from app.community.identity import BROADCASTER_ID
from app.runtime.private_socket import PrivateServer
from app.sources.party import control as party
from app.stream.folder import clean_title

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_LINE = 4096
MAX_CLIENTS = 8


class CommandError(ValueError):
    """A command that cannot be done; the message goes back to the script."""


class ControlSocket(PrivateServer):
    def __init__(self, state_dir: Path, services):
        super().__init__(Path(state_dir) / SOCKET_NAME)
        self.services = services
        self.clients = 0
        self.commands: dict[str, Callable[[dict], dict]] = {
            "title": self._title, "say": self._say, "hide": self._hide, "ban": self._ban,
            "unban": self._unban, "filter": self._filter, "unfilter": self._unfilter,
            "party": self._party, "status": self._status, "modes": self._modes}

    def full(self) -> bool:
        return self.clients >= MAX_CLIENTS

    def take(self, conn: socket.socket) -> None:
        gevent.spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        self.clients += 1
        reader = conn.makefile("rb")
        try:
            while True:
                line = reader.readline(MAX_LINE + 1)
                if not line:
                    return
                if len(line) > MAX_LINE:
                    conn.sendall(b'{"ok": false, "error": "line too long"}\n')
                    return
                conn.sendall(json.dumps(self.answer(line)).encode() + b"\n")
        except OSError:
            pass
        finally:
            self.clients -= 1
            reader.close()
            conn.close()

    def answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "not JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "send one JSON object per line"}
        command = self.commands.get(str(request.get("command", "")))
        if command is None:
            return {"ok": False, "error": f"unknown command; use {', '.join(self.commands)}"}
        try:
            return {"ok": True, **command(request)}
        except (Refused, party.ControlError, ValueError) as exc:  # CommandError, FilterError
            return {"ok": False, "error": str(exc)}

    # ------------------------------------------------------------------ the commands

    def _title(self, request: dict) -> dict:
        text = clean_title(str(request.get("text", "")), "")
        if not text:
            raise CommandError("the title is empty")
        self.services.stream.set_title(text)
        return {}

    def _say(self, request: dict) -> dict:
        who = self.services.identities.requester(None, broadcaster=True)
        message = self.services.chat.post(who, Submission(text=str(request.get("text", ""))))
        return {"message": message.id}

    def _hide(self, request: dict) -> dict:
        self.services.chat.hide([self._message(request).id])
        return {}

    def _ban(self, request: dict) -> dict:
        message = self._message(request)
        if message.broadcaster or message.viewer_id == BROADCASTER_ID:
            raise CommandError("that is the broadcaster's own message")
        try:
            minutes = int(request.get("minutes") or 0)
        except (TypeError, ValueError):
            raise CommandError("minutes must be a whole number (0: for good)") from None
        if not 0 <= minutes <= 366 * 24 * 60:
            raise CommandError("a timed ban lasts at most a year (minutes; 0: for good)")
        self.services.chat.ban(message.viewer_id, hide_all=bool(request.get("hide_all")),
                               note="control socket", minutes=minutes)
        return {}

    def _unban(self, request: dict) -> dict:
        self.services.chat.unban(self._message(request).viewer_id)
        return {}

    def _filter(self, request: dict) -> dict:
        action = str(request.get("action", "censor"))
        if action not in ACTIONS:
            raise CommandError(f"action must be one of {', '.join(ACTIONS)}")
        added = self.services.chat.add_filter(str(request.get("pattern", "")),
                                              bool(request.get("regex")),
                                              bool(request.get("case")), action)
        return {"id": added.id}

    def _unfilter(self, request: dict) -> dict:
        self.services.chat.remove_filter(int(request.get("id", -1)))
        return {}

    def _party(self, request: dict) -> dict:
        action = str(request.get("action", ""))
        if action not in party.COMMANDS:
            raise CommandError(f"party action must be one of {', '.join(party.COMMANDS)}")
        reply = party.send(self.services.config.state_dir, action,
                           str(request.get("argument", ""))[:64])
        reply.pop("ok", None)
        return reply

    def _modes(self, request: dict) -> dict:
        """Change the given ones (closed, slow_seconds, established_minutes); all, as now."""
        changes = {}
        for name, kind in (("closed", bool), ("slow_seconds", int),
                           ("established_minutes", int)):
            if name in request:
                try:
                    changes[name] = kind(request[name])
                except (TypeError, ValueError):
                    raise CommandError(f"{name} must be a {kind.__name__}") from None
        chat = self.services.chat
        return asdict(chat.change_modes(**changes) if changes else chat.modes.current())

    def _status(self, request: dict) -> dict:
        snap = self.services.stream.snapshot
        return {"status": snap.status, "online": snap.online, "title": snap.title,
                "paused": snap.paused, "viewers": self.services.audience.count()}

    def _message(self, request: dict):
        try:
            message_id = int(request.get("message"))
        except (TypeError, ValueError):
            raise CommandError("give the message's id: \"message\": 123") from None
        message = self.services.chat.store.message(message_id)
        if message is None:
            raise CommandError(f"no message {message_id} is kept")
        return message
