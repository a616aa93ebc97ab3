"""Chat modes against waves of spam: closed, slow mode, established viewers only.

Set in config (`[chat] closed`, `slow_seconds`, `established_minutes`) and changed while
live from /broadcaster or the control socket; a change is kept in the store (beside its
named secrets, shared by every worker and kept across restarts) and overrides the config
until changed again. The broadcaster is never held by a mode.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from app.community.store import Store

STORE_NAME = "chat-modes"
MAX_SLOW_SECONDS = 3600
MAX_ESTABLISHED_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class Modes:
    closed: bool = False
    slow_seconds: int = 0  # one message per this many seconds per viewer (0: off)
    established_minutes: int = 0  # an identity this old before it may post (0: off)

    def describe(self) -> str:
        if self.closed:
            return "closed"
        parts = [f"slow mode: one message per {self.slow_seconds} s"] if self.slow_seconds \
            else []
        if self.established_minutes:
            parts.append(f"viewers here {self.established_minutes} min or more")
        return ", ".join(parts) or "open"


class ModeError(ValueError):
    """A mode value out of range; the message says the range."""


def checked(modes: Modes) -> Modes:
    if not 0 <= modes.slow_seconds <= MAX_SLOW_SECONDS:
        raise ModeError(f"slow mode takes 0 to {MAX_SLOW_SECONDS} seconds")
    if not 0 <= modes.established_minutes <= MAX_ESTABLISHED_MINUTES:
        raise ModeError(f"established takes 0 to {MAX_ESTABLISHED_MINUTES} minutes")
    return modes


class ChatModes:
    def __init__(self, store: Store, configured: Modes):
        self.store = store
        self.configured = checked(configured)

    def current(self) -> Modes:
        raw = self.store.get_secret(STORE_NAME)
        if raw is None:
            return self.configured
        try:
            return checked(Modes(**json.loads(raw)))
        except (ValueError, TypeError):
            return self.configured  # written by another version: the config's

    def change(self, **changes) -> Modes:
        modes = checked(replace(self.current(), **changes))
        self.store.set_secret(STORE_NAME, json.dumps(asdict(modes)).encode())
        return modes
