"""Chat rules: names, tripcodes, one-use form nonces, flood control, filters, bans, posting.

Views hand a `Submission` to `Chat.post`; it either stores and publishes the message or raises
`Refused` with a sentence meant for the sender. Every per-viewer memory (nonces, posting times)
lives in a capped, least-recently-used map.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import time
import unicodedata
from collections import OrderedDict, deque
from dataclasses import dataclass, replace

import gevent

from app.community.captcha import Captchas
from app.community.filters import WordFilters, compile_pattern
from app.community.hub import Hub
from app.community.identity import BROADCASTER_ID, Identities, Requester
from app.community.store import Ban, Message, SQLiteStore, Viewer
from app.config import BroadcasterConfig, ChatConfig

ANONYMOUS = "Anonymous"
BANNED = "You are banned from this chat. You can still watch the stream."


class Refused(Exception):
    """A message was not posted; `str(self)` tells the sender why and what to do."""

    def __init__(self, reason: str, draft: bool = True, status: int = 400):
        super().__init__(reason)
        self.keep_draft = draft
        self.status = status


@dataclass(frozen=True)
class Submission:
    text: str
    name: str | None = None  # None: keep the name the viewer had
    trip_password: str = ""
    clear_tripcode: bool = False
    nonce: str = ""
    captcha_id: str = ""
    captcha_answer: str = ""


def clean_name(name: str, limit: int) -> str:
    """Printable characters only (no control, format or line characters), trimmed."""
    kept = "".join(ch for ch in name if unicodedata.category(ch)[0] not in "CZ" or ch == " ")
    return " ".join(kept.split())[:limit]


def clean_text(text: str) -> str:
    """Keep newlines, drop every other control or format character; trim trailing blanks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = "".join(ch for ch in text
                   if ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co"))
    lines = [line.rstrip() for line in kept.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines)


class LRU(OrderedDict):
    """An OrderedDict that forgets its oldest entry beyond `cap`."""

    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap

    def get_or_add(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        while len(self) > self.cap:
            self.popitem(last=False)
        return value


class Nonces:
    """One-use form nonces, so a double submit posts once and a stale form is told so."""

    def __init__(self, per_viewer: int, lifetime: float, viewers: int):
        self.per_viewer = per_viewer
        self.lifetime = lifetime
        self._fresh: LRU = LRU(viewers)
        self._used: LRU = LRU(viewers)

    def issue(self, viewer_id: str) -> str:
        nonce = secrets.token_urlsafe(12)
        held = self._fresh.get_or_add(viewer_id, OrderedDict)
        held[nonce] = time.monotonic() + self.lifetime
        while len(held) > self.per_viewer:
            held.popitem(last=False)
        return nonce

    def use(self, viewer_id: str, nonce: str) -> str:
        """"ok" the first time, "used" for a repeat, "unknown" for a stale or made-up nonce."""
        held = self._fresh.get(viewer_id, {})
        expires = held.pop(nonce, None) if nonce else None
        used = self._used.get_or_add(viewer_id, lambda: deque(maxlen=self.per_viewer))
        if expires is not None and expires > time.monotonic():
            used.append(nonce)
            return "ok"
        if nonce and nonce in used:
            return "used"
        return "unknown"


class Chat:
    def __init__(self, store: SQLiteStore, identities: Identities, hub: Hub,
                 settings: ChatConfig, broadcaster: BroadcasterConfig,
                 captchas: Captchas | None):
        self.store = store
        self.identities = identities
        self.hub = hub
        self.settings = settings
        self.broadcaster = broadcaster
        self.captchas = captchas
        self.nonces = Nonces(settings.nonces_per_viewer, settings.nonce_seconds,
                             settings.max_tracked_posters)
        self._posted: LRU = LRU(settings.max_tracked_posters)
        self._trip_salt = store.secret("tripcode-salt", 16)
        self._filters = WordFilters(store.filters(), settings.filter_max_length)
        self.hide_version = 0  # changes whenever messages are hidden, for poll ETags

    # --- viewers -----------------------------------------------------------------------

    def viewer(self, who: Requester) -> Viewer:
        known = self.store.viewer(who.viewer_id)
        return known or Viewer(who.viewer_id, who.tag, first_seen=time.time())

    def needs_captcha(self, who: Requester) -> bool:
        if who.broadcaster or self.captchas is None:
            return False
        return not self.viewer(who).verified

    def tripcode(self, password: str) -> str:
        """A stable short code for a password: slow, salted and keyed with the server secret."""
        key = self.identities.derive("tripcode", password.encode())
        raw = gevent.get_hub().threadpool.apply(
            hashlib.scrypt, (key,),
            {"salt": self._trip_salt, "n": self.settings.tripcode_cost, "r": 8, "p": 1,
             "dklen": 12, "maxmem": 256 * 1024 * 1024})
        return base64.b64encode(raw, b"./").decode()[:10]

    # --- posting -----------------------------------------------------------------------

    def post(self, who: Requester, form: Submission) -> Message:
        if who.banned:
            raise Refused(BANNED, draft=False, status=403)
        if not who.broadcaster:
            state = self.nonces.use(who.viewer_id, form.nonce)
            if state == "used":
                raise Refused("", draft=False)  # a double submit: the first one counted
            if state == "unknown":
                raise Refused("This form had expired, so your message was not sent. "
                              "Please send it again.")
        viewer = self.viewer(who)
        if self.needs_captcha(who):
            if not self.captchas.check(form.captcha_id, who.viewer_id, form.captcha_answer):
                raise Refused("The captcha was not solved correctly. Please try the new one.")
            viewer = replace(viewer, verified=True)
            self.store.save_viewer(viewer)
        text = clean_text(form.text)
        self._check_limits(text)
        viewer = self._update_identity(viewer, form)
        if self.identities.is_banned(who.viewer_id, viewer):
            raise Refused(BANNED, draft=False, status=403)
        verdict = self._filters.apply(text)
        name_verdict = self._filters.apply(viewer.name)
        if "ban" in (verdict.action, name_verdict.action) and not who.broadcaster:
            self.ban(who.viewer_id, note="word filter")
            raise Refused("That message broke a rule of this chat and you have been banned.",
                          draft=False, status=403)
        if "block" in (verdict.action, name_verdict.action) and not who.broadcaster:
            raise Refused("Your message contains a word that is not allowed here.")
        if not who.broadcaster:
            self._check_flood(who, viewer)
        viewer = replace(viewer, last_seen=time.time())
        if not who.broadcaster:
            self.store.save_viewer(viewer)
        message = Message(
            0, BROADCASTER_ID if who.broadcaster else who.viewer_id,
            self.broadcaster.name if who.broadcaster else (name_verdict.text or ANONYMOUS),
            "" if who.broadcaster else who.tag, "" if who.broadcaster else viewer.tripcode,
            who.colour, verdict.text, time.time(), broadcaster=who.broadcaster)
        stored = self.store.add_message(message)
        self.hub.publish("chat", public(stored))
        return stored

    def _check_limits(self, text: str) -> None:
        s = self.settings
        if not text.strip():
            raise Refused("Write a message first.")
        if len(text) > s.max_length:
            raise Refused(f"Your message is {len(text)} characters long; the limit is "
                          f"{s.max_length}. Please shorten it.")
        if text.count("\n") + 1 > s.max_lines:
            raise Refused(f"Your message has {text.count(chr(10)) + 1} lines; the limit is "
                          f"{s.max_lines}.")

    def _update_identity(self, viewer: Viewer, form: Submission) -> Viewer:
        name = viewer.name if form.name is None else clean_name(form.name,
                                                                 self.settings.name_max)
        tripcode = viewer.tripcode
        if form.clear_tripcode:
            tripcode = ""
        elif form.trip_password:
            tripcode = self.tripcode(form.trip_password[:256])
        return replace(viewer, name=name, tripcode=tripcode)

    def _check_flood(self, who: Requester, viewer: Viewer) -> None:
        s = self.settings
        now = time.monotonic()
        times = self._posted.get_or_add(who.viewer_id, lambda: deque(maxlen=s.window_messages))
        tripped = None
        if times and now - times[-1] < s.min_interval:
            tripped = (f"You are sending messages too fast: wait {s.min_interval:g} seconds "
                       "between messages.")
        elif len(times) == times.maxlen and now - times[0] < s.window_seconds:
            tripped = (f"Too many messages: at most {s.window_messages} in "
                       f"{s.window_seconds:g} seconds. Wait a little before the next one.")
        if tripped:
            if self.captchas is not None:
                self.store.save_viewer(replace(viewer, verified=False))
                tripped += " You will be asked for a captcha again."
            raise Refused(tripped)
        times.append(now)

    # --- moderation --------------------------------------------------------------------

    def hide(self, ids: list[int]) -> None:
        hidden = self.store.hide_messages(ids)
        self._announce_hidden(hidden)

    def ban(self, viewer_id: str, hide_all: bool = False, note: str = "") -> None:
        """Ban a viewer's token and, if they use one, their tripcode."""
        now = time.time()
        self.store.add_ban(Ban("viewer", viewer_id, now, note))
        viewer = self.store.viewer(viewer_id)
        if viewer and viewer.tripcode:
            self.store.add_ban(Ban("tripcode", viewer.tripcode, now, note))
        if hide_all:
            self._announce_hidden(self.store.hide_messages_of(viewer_id))

    def unban(self, value: str, kind: str = "viewer") -> None:
        """Lift a ban; a viewer's ban goes together with the ban on their tripcode."""
        self.store.remove_ban(kind, value)
        viewer = self.store.viewer(value) if kind == "viewer" else None
        if viewer and viewer.tripcode:
            self.store.remove_ban("tripcode", viewer.tripcode)

    def _announce_hidden(self, ids: list[int]) -> None:
        if ids:
            self.hide_version += 1
            self.hub.publish("hide", {"ids": ids})

    def add_filter(self, pattern: str, is_regex: bool, case_sensitive: bool,
                   action: str) -> None:
        """Validate (raises wordfilter.FilterError with the reason), then keep it."""
        if len(self.store.filters()) >= self.settings.max_filters:
            raise ValueError(f"there are already {self.settings.max_filters} filters "
                             "(chat.max_filters); remove one first")
        compile_pattern(pattern, is_regex, case_sensitive, self.settings.filter_max_length)
        self.store.add_filter(pattern, is_regex, case_sensitive, action)
        self._filters = WordFilters(self.store.filters(), self.settings.filter_max_length)

    def remove_filter(self, filter_id: int) -> None:
        self.store.remove_filter(filter_id)
        self._filters = WordFilters(self.store.filters(), self.settings.filter_max_length)


def public(message: Message) -> dict:
    """What anyone may know about a message (no viewer id, no token)."""
    return {"id": message.id, "name": message.name, "tag": message.tag,
            "tripcode": message.tripcode, "colour": message.colour, "body": message.body,
            "time": time.strftime("%H:%M", time.gmtime(message.created)),
            "broadcaster": message.broadcaster}
