"""Moderators: viewers the broadcaster names by tripcode, who hide messages and ban from the
chat (no JavaScript, no cookie needed).

A moderator signs in on the viewer page with their tripcode password: the server works out
the tripcode as for any message and, when it is on the list, binds a moderator session to
that viewer's token (so it ends with the token, or when signed out or taken off the list).
A moderator can hide, ban for 10 minutes, an hour or for good, and unban; never the
broadcaster or another moderator. Every action is logged for the broadcaster, who can undo
it on /broadcaster. The list, the sessions and the log are small documents among the
store's named values, shared by every worker.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, replace

from app.community.store import Store

MODERATORS = "moderators"
SESSIONS = "moderator-sessions"
LOG = "moderation-log"
MAX_MODERATORS = 50
MAX_SESSIONS = 200
MAX_LOG = 300
ACTIONS = {"hide": "hid a message", "ban10": "banned for 10 minutes",
           "ban60": "banned for an hour", "ban": "banned for good", "unban": "lifted a ban",
           "modes": "set the chat modes"}
BAN_MINUTES = {"ban10": 10, "ban60": 60, "ban": 0}


class ModerationError(ValueError):
    """Not allowed, or not possible; the message says which (shown to the moderator)."""


@dataclass(frozen=True)
class Action:
    id: str
    at: float
    moderator: str  # tripcode
    action: str  # a key of ACTIONS
    message_id: int
    target: str  # how the chat shows the target: name #tag !tripcode
    viewer_id: str  # the target's internal id, to undo a ban (never shown)
    undone: bool = False
    previous: dict | None = None  # modes: what they were, to undo

    def describe(self) -> str:
        return f"!{self.moderator} {ACTIONS[self.action]}: {self.target}"


class Moderation:
    def __init__(self, store: Store, chat):
        self.store = store
        self.chat = chat

    # ------------------------------------------------------------------ the list

    def moderators(self) -> list[dict]:
        return self._read(MODERATORS, [])

    def add(self, tripcode: str, note: str = "") -> None:
        tripcode = tripcode.strip().lstrip("!")
        if not 4 <= len(tripcode) <= 16 or not tripcode.replace(".", "").replace("/", "") \
                .replace("+", "").isalnum():
            raise ModerationError(f"{tripcode!r} is not a tripcode (the ten characters after "
                                  "! beside a name in the chat)")
        listed = [m for m in self.moderators() if m["tripcode"] != tripcode]
        if len(listed) >= MAX_MODERATORS:
            raise ModerationError(f"there are {MAX_MODERATORS} moderators already")
        self._write(MODERATORS, [*listed, {"tripcode": tripcode, "note": note[:60],
                                           "added": time.time()}])

    def remove(self, tripcode: str) -> bool:
        tripcode = tripcode.strip().lstrip("!")
        listed = self.moderators()
        kept = [m for m in listed if m["tripcode"] != tripcode]
        self._write(MODERATORS, kept)
        return len(kept) != len(listed)

    def is_moderator_tripcode(self, tripcode: str) -> bool:
        return bool(tripcode) and any(m["tripcode"] == tripcode for m in self.moderators())

    # ------------------------------------------------------------------ sessions

    def sign_in(self, viewer_id: str, password: str) -> str:
        """The moderator's tripcode, bound to this viewer's token from now on."""
        tripcode = self.chat.tripcode(password[:256]) if password else ""
        if not self.is_moderator_tripcode(tripcode):
            raise ModerationError("that password is not a moderator's tripcode password")
        sessions = self._read(SESSIONS, {})
        sessions.pop(viewer_id, None)
        sessions[viewer_id] = {"tripcode": tripcode, "since": time.time()}
        while len(sessions) > MAX_SESSIONS:
            sessions.pop(next(iter(sessions)))  # the oldest goes
        self._write(SESSIONS, sessions)
        return tripcode

    def sign_out(self, viewer_id: str) -> None:
        sessions = self._read(SESSIONS, {})
        if sessions.pop(viewer_id, None) is not None:
            self._write(SESSIONS, sessions)

    def moderator_of(self, viewer_id: str) -> str | None:
        """This viewer's moderator tripcode while signed in and still on the list."""
        session = self._read(SESSIONS, {}).get(viewer_id)
        if session and self.is_moderator_tripcode(session["tripcode"]):
            return session["tripcode"]
        return None

    # ------------------------------------------------------------------ actions

    def act(self, viewer_id: str, action: str, message_id: int) -> Action:
        moderator = self.moderator_of(viewer_id)
        if moderator is None:
            raise ModerationError("you are not signed in as a moderator")
        if action not in ACTIONS:
            raise ModerationError("unknown action")
        message = self.chat.store.message(message_id)
        if message is None:
            raise ModerationError("that message is no longer kept")
        if message.broadcaster:
            raise ModerationError("moderators do not act on the broadcaster")
        target = self.chat.store.viewer(message.viewer_id)
        if message.viewer_id == viewer_id or self.moderator_of(message.viewer_id) or (
                target and self.is_moderator_tripcode(target.tripcode)) or \
                self.is_moderator_tripcode(message.tripcode):
            raise ModerationError("moderators do not act on moderators")
        note = f"moderator !{moderator}"
        if action == "hide":
            self.chat.hide([message.id])
        elif action == "unban":
            self.chat.unban(message.viewer_id)
        else:
            self.chat.ban(message.viewer_id, note=note, minutes=BAN_MINUTES[action])
        shown = f"{message.name}" + (f" #{message.tag}" if message.tag else "") + (
            f" !{message.tripcode}" if message.tripcode else "")
        done = Action(secrets.token_hex(4), time.time(), moderator, action, message.id,
                      shown, message.viewer_id)
        self._write(LOG, [*self._read(LOG, []), asdict(done)][-MAX_LOG:])
        return done

    def set_modes(self, viewer_id: str, **changes) -> Action:
        """Slow mode, established only, closed: as the broadcaster can (ModeError if out of
        range)."""
        moderator = self.moderator_of(viewer_id)
        if moderator is None:
            raise ModerationError("you are not signed in as a moderator")
        before = asdict(self.chat.modes.current())
        after = self.chat.change_modes(**changes)
        done = Action(secrets.token_hex(4), time.time(), moderator, "modes", 0,
                      after.describe(), "", previous=before)
        self._write(LOG, [*self._read(LOG, []), asdict(done)][-MAX_LOG:])
        return done

    def log(self) -> list[Action]:
        return [Action(**entry) for entry in reversed(self._read(LOG, []))]

    def undo(self, action_id: str) -> Action:
        """The broadcaster takes a moderator's action back."""
        entries = [Action(**entry) for entry in self._read(LOG, [])]
        found = next((a for a in entries if a.id == action_id), None)
        if found is None or found.undone:
            raise ModerationError("no such action to undo")
        if found.action == "hide":
            self.chat.unhide([found.message_id])
        elif found.action == "modes":
            self.chat.change_modes(**(found.previous or {}))
        elif found.action == "unban":
            self.chat.ban(found.viewer_id, note="broadcaster (undid an unban)")
        else:
            self.chat.unban(found.viewer_id)
        undone = replace(found, undone=True)
        self._write(LOG, [asdict(undone if a.id == found.id else a) for a in entries])
        return undone

    # ------------------------------------------------------------------ the store

    def _read(self, name: str, empty):
        raw = self.store.get_secret(name)
        if not raw:
            return empty
        try:
            return json.loads(raw)
        except ValueError:
            return empty

    def _write(self, name: str, value) -> None:
        self.store.set_secret(name, json.dumps(value).encode())
