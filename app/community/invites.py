"""Invite-only streams (`[access] invite_only`): only viewers who opened an invite link get
the page, the video, the playlists and the chat; everyone else a short page and no media.

An invite is a link with a random code (only its SHA-256 is kept), for one use or many, with
an expiry or none. Opening it marks the viewer's identity (the token's viewer id) as invited
by it; the mark is kept in the store, so the viewer keeps access across restarts, until the
invite is revoked, which takes its viewers' access with it. Kept as one small document among
the store's named values (shared by every worker), read again at most once a second.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, field, replace

from app.community.store import Store

STORE_NAME = "invites"
MAX_INVITES = 200
MAX_VIEWERS_PER_INVITE = 500
CACHE_SECONDS = 1.0


class InviteError(ValueError):
    """An invite that cannot be used or made; the message says why."""


@dataclass(frozen=True)
class Invite:
    id: str
    digest: str  # sha256 of the code, hex
    uses: int  # uses left; -1: any number
    expires: float  # 0: never
    created: float
    note: str = ""
    viewers: tuple[str, ...] = field(default=())  # viewer ids that opened it

    def usable(self, now: float) -> bool:
        return self.uses != 0 and (not self.expires or self.expires > now)


class InviteBook:
    def __init__(self, store: Store):
        self.store = store
        self._raw: bytes | None = None
        self._invites: list[Invite] = []
        self._invited: frozenset[str] = frozenset()
        self._read_at = -CACHE_SECONDS

    def invites(self) -> list[Invite]:
        now = time.monotonic()
        if now - self._read_at >= CACHE_SECONDS:
            raw = self.store.get_secret(STORE_NAME) or b"[]"
            if raw != self._raw:
                self._raw = raw
                self._invites = [Invite(**{**item, "viewers": tuple(item["viewers"])})
                                 for item in json.loads(raw)]
                self._invited = frozenset(v for i in self._invites for v in i.viewers)
            self._read_at = now
        return self._invites

    def is_invited(self, viewer_id: str) -> bool:
        self.invites()
        return viewer_id in self._invited

    def new(self, uses: int = 1, hours: float = 0.0, note: str = "") -> tuple[Invite, str]:
        """A new invite and its code (shown once: only its digest is kept)."""
        invites = self._fresh()
        if len(invites) >= MAX_INVITES:
            raise InviteError(f"there are {MAX_INVITES} invites already; revoke some first")
        if uses == 0 or uses < -1:
            raise InviteError("an invite is for one use or more, or any number (-1)")
        code = secrets.token_urlsafe(16)
        now = time.time()
        invite = Invite(secrets.token_hex(4), _digest(code), uses,
                        now + hours * 3600 if hours else 0.0, now, " ".join(note.split())[:100])
        self._save([*invites, invite])
        return invite, code

    def redeem(self, code: str, viewer_id: str) -> Invite:
        """Mark `viewer_id` invited by the invite with this code (a use, unless it was
        already); InviteError when there is none or it is used up or expired."""
        invites = self._fresh()
        digest = _digest(code)
        found = next((i for i in invites if hmac.compare_digest(i.digest, digest)), None)
        if found is None:
            raise InviteError("this invite link is not valid (mistyped, or revoked)")
        if viewer_id in found.viewers:
            return found
        if not found.usable(time.time()):
            raise InviteError("this invite link was used already, or has expired")
        if len(found.viewers) >= MAX_VIEWERS_PER_INVITE:
            raise InviteError("this invite link has been opened by too many people")
        used = replace(found, uses=found.uses - 1 if found.uses > 0 else found.uses,
                       viewers=(*found.viewers, viewer_id))
        self._save([used if i.id == found.id else i for i in invites])
        return used

    def revoke(self, invite_id: str) -> bool:
        invites = self._fresh()
        kept = [i for i in invites if i.id != invite_id]
        self._save(kept)
        return len(kept) != len(invites)

    def _fresh(self) -> list[Invite]:
        self._read_at = -CACHE_SECONDS  # a change starts from what the store holds now
        return self.invites()

    def _save(self, invites: list[Invite]) -> None:
        raw = json.dumps([asdict(i) for i in invites]).encode()
        self.store.set_secret(STORE_NAME, raw)
        self._read_at = -CACHE_SECONDS


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()
