"""Chat rules: names, tripcodes, one-use form nonces, flood control, filters, bans, posting.

Views hand a `Submission` to `Chat.post`; it either stores and publishes the message or raises
`Refused` with a sentence meant for the sender. Every per-viewer memory (nonces, posting times)
lives in a capped, least-recently-used map.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import gevent

from app.community.captcha import Captchas
from app.community.filters import WordFilters, compile_pattern
from app.community.hub import Hub
from app.community.identity import BROADCASTER_ID, Identities, Requester
from app.community.modes import ChatModes, Modes
from app.community.schedule import ScheduleBook
from app.community.store import Ban, Filter, Message, Store, Viewer
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


NONCE_RANDOM = 10  # 10 + 5 + 12 = 27 bytes: 36 base64 characters, no padding
NONCE_TIME = 5
NONCE_SIGNATURE = 12


class Nonces:
    """One-use form nonces, so a double submit posts once and a stale form is told so.

    A nonce carries its own proof: random bytes, the moment it was issued (hidden under a pad
    derived from the random bytes, so the form does not show the host's clock) and an HMAC of
    both with the viewer's id. Checking needs no memory of having issued it, so no number of
    form loads can push an open form's nonce out. Memory is spent only on nonces that were
    used, each until it would have expired anyway, capped at `max_used` (beyond that the
    oldest used one is forgotten: at worst one double submit posts twice, and the flood rules
    still count it).
    """

    def __init__(self, identities: Identities, lifetime: float, max_used: int,
                 used: UsedNonces | None = None):
        self.identities = identities
        self.lifetime = lifetime
        self.used = used if used is not None else MemoryUsedNonces(max_used)

    def _pad(self, random: bytes) -> bytes:
        return self.identities.derive("form-nonce-time", random)[:NONCE_TIME]

    def _sign(self, viewer_id: str, random: bytes, issued: bytes) -> bytes:
        return self.identities.derive("form-nonce", viewer_id.encode() + b"\0" + random
                                      + issued)[:NONCE_SIGNATURE]

    def issue(self, viewer_id: str) -> str:
        random = secrets.token_bytes(NONCE_RANDOM)
        issued = int(time.time()).to_bytes(NONCE_TIME, "big")
        hidden = bytes(a ^ b for a, b in zip(issued, self._pad(random), strict=True))
        raw = random + hidden + self._sign(viewer_id, random, issued)
        return base64.urlsafe_b64encode(raw).decode()

    def use(self, viewer_id: str, nonce: str) -> str:
        """"ok" the first time, "used" for a repeat, "unknown" for a stale or made-up nonce."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode()) if 0 < len(nonce) <= 64 else b""
        except (ValueError, UnicodeError):
            raw = b""
        if len(raw) != NONCE_RANDOM + NONCE_TIME + NONCE_SIGNATURE:
            return "unknown"
        random, hidden = raw[:NONCE_RANDOM], raw[NONCE_RANDOM:NONCE_RANDOM + NONCE_TIME]
        signature = raw[NONCE_RANDOM + NONCE_TIME:]
        issued = bytes(a ^ b for a, b in zip(hidden, self._pad(random), strict=True))
        if not hmac.compare_digest(signature, self._sign(viewer_id, random, issued)):
            return "unknown"
        now = time.time()
        expires = int.from_bytes(issued, "big") + self.lifetime
        if not now <= expires:
            return "unknown"
        return "ok" if self.used.first_use(signature, expires, now) else "used"


class UsedNonces(Protocol):
    """Where used nonces are remembered: this process's memory, or Redis for several."""

    def first_use(self, signature: bytes, expires: float, now: float) -> bool: ...


class MemoryUsedNonces:
    """Used nonces in this process, each until it expires, at most `max_used`."""

    def __init__(self, max_used: int):
        self.max_used = max_used
        self._used: OrderedDict[bytes, float] = OrderedDict()  # signature -> expiry (wall)

    def first_use(self, signature: bytes, expires: float, now: float) -> bool:
        """True the first time a signature is seen (until it expires)."""
        self._forget_expired(now)
        if signature in self._used:
            return False
        self._used[signature] = expires
        while len(self._used) > self.max_used:
            self._used.popitem(last=False)
        return True

    def _forget_expired(self, now: float) -> None:
        # Insertion order is use order, not expiry order; an entry used long after issue may
        # expire earlier than its neighbours: it is then forgotten a little late, never early.
        while self._used:
            signature, expires = next(iter(self._used.items()))
            if expires >= now:
                break
            del self._used[signature]


class FloodWindows(Protocol):
    """Each viewer's latest posting times (oldest first), in this process or in Redis."""

    def now(self) -> float: ...
    def times(self, viewer_id: str) -> Sequence[float]: ...
    def add(self, viewer_id: str, now: float) -> None: ...


class MemoryFloodWindows:
    """Posting times in this process: an LRU of short deques, monotonic clock."""

    def __init__(self, max_tracked: int, window_messages: int):
        self._posted: LRU = LRU(max_tracked)
        self.window_messages = window_messages

    def now(self) -> float:
        return time.monotonic()

    def times(self, viewer_id: str) -> Sequence[float]:
        return self._posted.get_or_add(viewer_id, lambda: deque(maxlen=self.window_messages))

    def add(self, viewer_id: str, now: float) -> None:
        self.times(viewer_id).append(now)


class HideVersion(Protocol):
    """A number that changes whenever messages are hidden (poll frames' ETags)."""

    def value(self) -> int: ...
    def bump(self) -> None: ...


class MemoryHideVersion:
    def __init__(self) -> None:
        self._value = 0

    def value(self) -> int:
        return self._value

    def bump(self) -> None:
        self._value += 1


class Chat:
    def __init__(self, store: Store, identities: Identities, hub: Hub,
                 settings: ChatConfig, broadcaster: BroadcasterConfig,
                 captchas: Captchas | None, used_nonces: UsedNonces | None = None,
                 flood: FloodWindows | None = None, hides: HideVersion | None = None):
        self.store = store
        self.identities = identities
        self.hub = hub
        self.settings = settings
        self.broadcaster = broadcaster
        self.captchas = captchas
        self.nonces = Nonces(identities, settings.nonce_seconds, settings.max_used_nonces,
                             used_nonces)
        self.flood = flood if flood is not None else MemoryFloodWindows(
            settings.max_tracked_posters, settings.window_messages)
        self.hides = hides if hides is not None else MemoryHideVersion()
        self.modes = ChatModes(store, Modes(settings.closed, settings.slow_seconds,
                                            settings.established_minutes))
        self.schedule = ScheduleBook(store)
        self.stream_online: Callable[[], bool] = lambda: True  # the watcher's, once built
        self._trip_salt = store.secret("tripcode-salt", 16)
        self._filter_source = store.filters()
        self._filters = WordFilters(self._filter_source, settings.filter_max_length)
        self.posted = 0  # messages this process took, and refused: the cockpit's counters
        self.refused = 0
        # what happened, for the streamer's bots (app/hooks/bus.py: HookBus.emit)
        self.emit: Callable[..., None] = lambda kind, **data: None

    @property
    def hide_version(self) -> int:
        """Changes whenever messages are hidden, for poll ETags."""
        return self.hides.value()

    def _current_filters(self) -> WordFilters:
        """The compiled filters, compiled again when the store's list changed (another
        worker added or removed one)."""
        source = self.store.filters()
        if source is not self._filter_source:
            self._filter_source = source
            self._filters = WordFilters(source, self.settings.filter_max_length)
        return self._filters

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
        try:
            message = self._post(who, form)
        except Refused:
            self.refused += 1
            raise
        self.posted += 1
        return message

    def _post(self, who: Requester, form: Submission) -> Message:
        """Cheap refusals first, the tripcode's scrypt last: the attempt is counted in the
        flood window before any slow work, so one token cannot buy more scrypts than the flood
        rules allow messages (even with messages a filter blocks)."""
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
        modes = self.modes.current()
        if not who.broadcaster:
            viewer = self._check_modes(modes, viewer)
        if self.needs_captcha(who):
            if not form.captcha_id:
                raise Refused("Please solve the captcha below to send your message.")
            if not self.captchas.check(form.captcha_id, who.viewer_id, form.captcha_answer):
                raise Refused("The captcha was not solved correctly. Please try the new one.")
            viewer = replace(viewer, verified=True)
            self.store.save_viewer(viewer)
        text = clean_text(form.text)
        self._check_limits(text)
        if not who.broadcaster:
            self._check_flood(who, viewer, modes)  # counts this attempt, whatever comes next
        name = viewer.name if form.name is None else clean_name(form.name,
                                                                 self.settings.name_max)
        filters = self._current_filters()
        verdict = filters.apply(text)
        name_verdict = filters.apply(name)
        if "ban" in (verdict.action, name_verdict.action) and not who.broadcaster:
            self.ban(who.viewer_id, note="word filter")
            raise Refused("That message broke a rule of this chat and you have been banned.",
                          draft=False, status=403)
        if "block" in (verdict.action, name_verdict.action) and not who.broadcaster:
            raise Refused("Your message contains a word that is not allowed here.")
        viewer = self._update_identity(replace(viewer, name=name), form)
        if self.identities.is_banned(who.viewer_id, viewer):
            raise Refused(BANNED, draft=False, status=403)
        viewer = replace(viewer, last_seen=time.time())
        if not who.broadcaster:
            self.store.save_viewer(viewer)
        signed = "" if who.broadcaster or not form.trip_password else viewer.tripcode
        message = Message(
            0, BROADCASTER_ID if who.broadcaster else who.viewer_id,
            self.broadcaster.name if who.broadcaster else (name_verdict.text or ANONYMOUS),
            "" if who.broadcaster else who.tag, signed,
            who.colour, verdict.text, time.time(), broadcaster=who.broadcaster)
        stored = self.store.add_message(message)
        self.hub.publish("chat", public(stored))
        self.emit("message", **{key: value for key, value in public(stored).items()
                                if key != "time"})  # the event's own time is exact
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
        """A tripcode signs only a message whose sender typed its password this time.

        The viewer record keeps the last proven tripcode for moderation (a ban follows it)
        and for the user list, never as a right: whoever else holds the same token (a link
        someone was lured into, a shared address) cannot sign with it.
        """
        if form.trip_password:
            return replace(viewer, tripcode=self.tripcode(form.trip_password[:256]))
        if form.clear_tripcode:
            return replace(viewer, tripcode="")
        return viewer

    def start_clock(self, who: Requester) -> None:
        """With "established viewers only" on, an identity's age counts from the first time
        its chat form was shown (one record per identity, within the identities budget)."""
        if who.broadcaster or who.fresh or not self.modes.current().established_minutes:
            return
        if self.store.viewer(who.viewer_id) is None:
            self.store.save_viewer(self.viewer(who))

    def _check_modes(self, modes: Modes, viewer: Viewer) -> Viewer:
        """Closed, or too new for "established viewers only": refused before any captcha."""
        if modes.closed:
            raise Refused("The chat is closed for now: only the broadcaster writes.")
        planned = None if self.stream_online() else self.schedule.current()
        if planned is not None and not planned.chat_open:
            raise Refused(f"The chat opens with the next stream, {planned.when()}.")
        if modes.established_minutes:
            if self.store.viewer(viewer.id) is None:
                self.store.save_viewer(viewer)  # this identity's clock starts now
            waited = time.time() - viewer.first_seen
            wait = modes.established_minutes * 60 - waited
            if wait > 0:
                raise Refused(f"Only viewers who have been here {modes.established_minutes} "
                              f"minutes may write now; you may in {math.ceil(wait / 60)} min.")
        return viewer

    def _check_flood(self, who: Requester, viewer: Viewer, modes: Modes) -> None:
        s = self.settings
        now = self.flood.now()
        times = self.flood.times(who.viewer_id)
        if modes.slow_seconds > s.min_interval and times and \
                now - times[-1] < modes.slow_seconds:
            wait = math.ceil(modes.slow_seconds - (now - times[-1]))
            raise Refused(f"Slow mode is on: one message every {modes.slow_seconds} seconds. "
                          f"You may write again in {wait} s.")
        if times and now - times[-1] < s.min_interval:
            # a person who pressed Send twice: say so and keep the draft, no new captcha
            raise Refused(f"You are sending messages too fast: wait {s.min_interval:g} "
                          "seconds between messages.")
        if len(times) >= s.window_messages and now - times[-s.window_messages] < s.window_seconds:
            tripped = (f"Too many messages: at most {s.window_messages} in "
                       f"{s.window_seconds:g} seconds. Wait a little before the next one.")
            if self.captchas is not None:  # a sustained flood: prove again to be a person
                self.store.save_viewer(replace(viewer, verified=False))
                tripped += " You will be asked for a captcha again."
            raise Refused(tripped)
        self.flood.add(who.viewer_id, now)

    # --- moderation --------------------------------------------------------------------

    def hide(self, ids: list[int]) -> None:
        hidden = self.store.hide_messages(ids)
        self._announce_hidden(hidden)

    def unhide(self, ids: list[int]) -> None:
        """Show hidden messages again: to new pages and refreshing chats at once, to an
        open live chat after its next reload."""
        shown = self.store.hide_messages(ids, hidden=False)
        if shown:
            self.hides.bump()
            self.emit("unhide", ids=shown)

    def ban(self, viewer_id: str, hide_all: bool = False, note: str = "",
            minutes: int = 0) -> None:
        """Ban a viewer's token and, if they use one, their tripcode: for `minutes`, or for
        good (0)."""
        now = time.time()
        expires = now + minutes * 60 if minutes else 0.0
        self.store.add_ban(Ban("viewer", viewer_id, now, note, expires))
        viewer = self.store.viewer(viewer_id)
        if viewer and viewer.tripcode:
            self.store.add_ban(Ban("tripcode", viewer.tripcode, now, note, expires))
        if hide_all:
            self._announce_hidden(self.store.hide_messages_of(viewer_id))
        self.emit("ban", **self._who(viewer_id, viewer), by=note, minutes=minutes)

    def unban(self, value: str, kind: str = "viewer") -> None:
        """Lift a ban; a viewer's ban goes together with the ban on their tripcode."""
        self.store.remove_ban(kind, value)
        viewer = self.store.viewer(value) if kind == "viewer" else None
        if viewer and viewer.tripcode:
            self.store.remove_ban("tripcode", viewer.tripcode)
        if kind == "viewer":
            self.emit("unban", **self._who(value, viewer))
        else:
            self.emit("unban", tripcode=value)

    def _who(self, viewer_id: str, viewer: Viewer | None) -> dict:
        """A viewer as events name them: what the chat shows, never the internal id."""
        return {"tag": viewer.tag if viewer else "", "name": (viewer.name if viewer else "")
                or "Anonymous", "tripcode": viewer.tripcode if viewer else ""}

    def change_modes(self, **changes) -> Modes:
        """closed, slow_seconds, established_minutes (ModeError when out of range)."""
        modes = self.modes.change(**changes)
        self.emit("modes", **asdict(modes))
        return modes

    def _announce_hidden(self, ids: list[int]) -> None:
        if ids:
            self.hides.bump()
            self.hub.publish("hide", {"ids": ids})
            self.emit("hide", ids=ids)

    def add_filter(self, pattern: str, is_regex: bool, case_sensitive: bool,
                   action: str) -> Filter:
        """Validate (raises wordfilter.FilterError with the reason), then keep it."""
        if len(self.store.filters()) >= self.settings.max_filters:
            raise ValueError(f"there are already {self.settings.max_filters} filters "
                             "(chat.max_filters); remove one first")
        compile_pattern(pattern, is_regex, case_sensitive, self.settings.filter_max_length)
        added = self.store.add_filter(pattern, is_regex, case_sensitive, action)
        self._current_filters()
        return added

    def remove_filter(self, filter_id: int) -> None:
        self.store.remove_filter(filter_id)
        self._current_filters()


def public(message: Message) -> dict:
    """What anyone may know about a message (no viewer id, no token)."""
    return {"id": message.id, "name": message.name, "tag": message.tag,
            "tripcode": message.tripcode, "colour": message.colour, "body": message.body,
            "time": time.strftime("%H:%M", time.gmtime(message.created)),
            "broadcaster": message.broadcaster}
