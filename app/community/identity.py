"""Who is asking: viewer tokens, public tags, the broadcaster's password and sessions.

A viewer is a random token carried as `?token=` in every link, form and iframe URL (a cookie
may remember it, but is never needed). Tokens are secrets: the store only keeps an id derived
from the token, other people only see a short tag derived with a different purpose string, and
neither can be turned back into the token.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import gevent

from app.community.store import Store, StoreUnavailable, Viewer
from app.config import BroadcasterConfig

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
log = logging.getLogger(__name__)

COOKIE = "token"
COLOURS = 24  # readable name colours, classes .c0 .. .c23 in style.css
BROADCASTER_ID = "broadcaster"


TOKEN_RANDOM_BYTES = 15
TOKEN_TAG_BYTES = 9  # 24 bytes in all: 32 characters of base64url, no padding


@dataclass(frozen=True)
class Requester:
    """The person behind one request, decided once by `identify`."""

    token: str
    viewer_id: str
    tag: str
    colour: int
    broadcaster: bool = False
    banned: bool = False
    fresh: bool = False  # the token was made for this request

    @property
    def query(self) -> str:
        return f"token={self.token}"


class Identities:
    """Derives ids, tags and colours from tokens with the persisted server secret."""

    def __init__(self, store: Store):
        self.store = store
        self._secret = store.secret("server")

    def derive(self, purpose: str, data: bytes) -> bytes:
        """Domain-separated keyed hash: one purpose never yields another purpose's value."""
        return hmac.new(self._secret, purpose.encode() + b"\0" + data, hashlib.sha256).digest()

    def new_token(self) -> str:
        """A token this server signed: an invented one is simply not a token here, so one
        client's cost is the tokens it was given, which are counted (app/web/budgets.py)."""
        random = secrets.token_bytes(TOKEN_RANDOM_BYTES)
        return base64.urlsafe_b64encode(random + self._token_tag(random)).decode()

    def _token_tag(self, random: bytes) -> bytes:
        return self.derive("token", random)[:TOKEN_TAG_BYTES]

    def is_ours(self, token: str | None) -> bool:
        """Well formed and signed with our secret (constant-time compare)."""
        if not token or len(token) != 32 or not TOKEN_PATTERN.fullmatch(token):
            return False
        raw = base64.urlsafe_b64decode(token)
        random, tag = raw[:TOKEN_RANDOM_BYTES], raw[TOKEN_RANDOM_BYTES:]
        return hmac.compare_digest(tag, self._token_tag(random))

    def viewer_id(self, token: str) -> str:
        return self.derive("viewer-id", token.encode()).hex()[:32]

    def tag(self, token: str) -> str:
        raw = self.derive("public-tag", token.encode())
        return base64.b32encode(raw[:5]).decode().lower()[:6]

    def colour(self, viewer_id: str) -> int:
        return self.derive("colour", viewer_id.encode())[0] % COLOURS

    def is_banned(self, viewer_id: str, viewer: Viewer | None = None) -> bool:
        bans, now = self.store.bans(), time.time()
        ban = bans.get(("viewer", viewer_id))
        if ban is not None and ban.active(now):
            return True
        viewer = viewer or self.store.viewer(viewer_id)
        ban = bans.get(("tripcode", viewer.tripcode)) if viewer and viewer.tripcode else None
        return ban is not None and ban.active(now)

    def requester(self, token: str | None, broadcaster: bool = False,
                  check_ban: bool = True) -> Requester:
        """check_ban=False for video: it never waits on the store (Redis may hang)."""
        fresh = not self.is_ours(token)
        if fresh:
            token = self.new_token()
        viewer_id = self.viewer_id(token)
        return Requester(token, viewer_id, self.tag(token), self.colour(viewer_id),
                         broadcaster=broadcaster,
                         banned=(check_ban and not broadcaster and not fresh
                                 and self.is_banned(viewer_id)),
                         fresh=fresh)



# --- the broadcaster's password --------------------------------------------------------------

def _digest(text: str) -> bytes:
    """Fixed-length form for comparing: compare_digest may leak the length of its inputs."""
    return hashlib.sha256(text.encode()).digest()


PASSWORD_ITERATIONS = 100_000


def hash_password(password: str, salt: bytes) -> bytes:
    """Slow on purpose; run off the event loop so other viewers are not held up."""
    return gevent.get_hub().threadpool.apply(
        hashlib.pbkdf2_hmac, ("sha256", password.encode(), salt, PASSWORD_ITERATIONS))


class LoginLocked(Exception):
    """Too many failed logins lately: `seconds` until the next attempt is allowed."""

    def __init__(self, seconds: float):
        super().__init__(f"failed logins locked for {seconds:.0f} s")
        self.seconds = seconds


class FailedLogins:
    """The failed-login window of one process: the last `failed_logins` failure times; while
    they all lie within `failed_window` seconds, no attempt is allowed. Several workers share
    RedisFailedLogins (app/community/shared.py) instead, or a guesser would get this many
    tries per window from each worker."""

    def __init__(self, settings: BroadcasterConfig):
        self.window = settings.failed_window
        self._failures: deque[float] = deque(maxlen=max(1, settings.failed_logins))

    def locked_for(self) -> float:
        """Seconds until another attempt is allowed (0 when allowed)."""
        if len(self._failures) < self._failures.maxlen:
            return 0.0
        return max(0.0, self._failures[0] + self.window - time.monotonic())

    def attempt(self) -> float:
        """Count an attempt as failed before it is checked, since checking yields to other
        greenlets and guesses sent in parallel must not all pass the lock first. Raises
        LoginLocked instead when no attempt is allowed."""
        locked = self.locked_for()
        if locked > 0:
            raise LoginLocked(locked)
        attempt = time.monotonic()
        self._failures.append(attempt)
        return attempt

    def forget(self, attempt: float) -> None:
        """The attempt proved right: it does not count."""
        try:
            self._failures.remove(attempt)
        except ValueError:
            pass  # already pushed out of the window by newer failures


class BroadcasterPassword:
    """Checks the broadcaster's password against a stored hash, limiting failed attempts.

    Every attempt is rate-limited before any hashing, so guessing costs the server little and
    gains the guesser at most `failed_logins` tries per `failed_window` seconds.
    """

    def __init__(self, store: Store, settings: BroadcasterConfig,
                 failures: FailedLogins | None = None):
        self.settings = settings
        self._salt = store.secret("broadcaster-salt", 16)
        self.generated: str | None = None
        if settings.password:
            self._hash = hash_password(settings.password, self._salt)
        else:
            stored = store.get_secret("broadcaster-password-hash")
            if stored is None:
                self.generated = secrets.token_urlsafe(12)
                stored = hash_password(self.generated, self._salt)
                store.set_secret("broadcaster-password-hash", stored)
            self._hash = stored
        self.failures = failures or FailedLogins(settings)
        self._session_key = secrets.token_bytes(32)
        self._accepted: bytes | None = None  # fast path for the password already proven

    def check(self, username: str, password: str) -> bool:
        """True for the right user name and password. Takes as long as a hash for every
        wrong pair, so timing tells nothing (not even that the password alone was right).
        Raises LoginLocked while failed logins are locked, before any hashing."""
        locked = self.failures.locked_for()
        if locked > 0:
            raise LoginLocked(locked)
        ok_user = hmac.compare_digest(_digest(username), _digest(self.settings.username))
        quick = hmac.new(self._session_key, password.encode(), hashlib.sha256).digest()
        proven = self._accepted is not None and hmac.compare_digest(quick, self._accepted)
        if ok_user and proven:
            return True  # the fast path only ever opens for the full, already proven pair
        attempt = self.failures.attempt()
        ok_password = hmac.compare_digest(hash_password(password, self._salt), self._hash)
        if ok_user and ok_password:
            self.failures.forget(attempt)
            self._accepted = quick
            return True
        return False


# --- the broadcaster's session ---------------------------------------------------------------

SESSION_COOKIE = "broadcaster_session"
SESSION_IDLE_SECONDS = 12 * 3600  # unused this long, a session ends
SESSION_MAX_SECONDS = 3 * 86400  # however busy, a session ends after this
MAX_SESSIONS = 16  # browsers logged in at once; the oldest is dropped beyond this
SESSION_WRITE_SECONDS = 300.0  # a busy session's idle deadline is saved at most this often
LOGIN_LINK_SECONDS = 600.0  # a one-time login link works this long, once


@dataclass
class _Session:
    digest: bytes
    idle_until: float
    ends: float
    saved_idle: float = 0.0


LOCAL_KEY_FILE = "local.key"


def local_key(state_dir: Path) -> bytes:
    """A secret that never leaves this machine's state folder (0600), never in the shared
    store: sessions, login links and the CSRF token are derived with it, so whoever can read
    or write Redis (an edge's account, someone on its path) can neither read nor mint them.
    Workers of one server share it through the folder."""
    path = state_dir / LOCAL_KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker made it first: use theirs
        return local_key(state_dir)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def session_digest(key: bytes, secret: str) -> bytes:
    """Only this is stored, so a copy of the store holds no session or link; keyed with the
    local key, so nobody who can only write the store can add one that works."""
    return hmac.new(key, b"broadcaster-session\0" + secret.encode(), hashlib.sha256).digest()


class BroadcasterSessions:
    """Browsers that proved themselves once (password or login link), so they never meet the
    password check again.

    Failed logins are limited for everybody at once (over Tor there is no client address), so
    anyone can keep the password check locked; a browser holding a session is not affected.
    Sessions are kept in the state database as digests of their random ids (wall-clock
    deadlines), so a restart does not log the broadcaster out into a locked password check.
    """

    def __init__(self, store: Store | None = None, idle_seconds: float = SESSION_IDLE_SECONDS,
                 max_seconds: float = SESSION_MAX_SECONDS, limit: int = MAX_SESSIONS,
                 shared: bool = False, key: bytes | None = None):
        self.store = store
        self.key = key or secrets.token_bytes(32)  # local_key() of the state folder
        # shared (Redis, several workers): the store is the only truth, so a session ended
        # through one worker is ended for all; nothing is trusted from this process's copy
        self.shared = shared and store is not None
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.limit = limit
        now = time.time()
        loaded = store.sessions() if store is not None else []
        self._sessions: list[_Session] = [
            _Session(d, idle, ends, idle) for d, idle, ends in sorted(loaded, key=lambda r: r[2])
            if self._alive(_Session(d, idle, ends), now)][-limit:]

    def issue(self) -> str:
        """A new session id for the browser's cookie (call only after a proven login)."""
        now = time.time()
        session_id = secrets.token_urlsafe(32)
        session = _Session(session_digest(self.key, session_id), now + self.idle_seconds,
                           now + self.max_seconds)
        session.saved_idle = session.idle_until
        kept = [s for s in self._sessions if self._alive(s, now)] + [session]
        dropped, self._sessions = kept[:-self.limit], kept[-self.limit:]
        self._write(self.store and (lambda: self.store.save_session(
            session.digest, session.idle_until, session.ends)))
        for old in dropped:
            self._write(self.store and (lambda d=old.digest: self.store.remove_session(d)))
        return session_id

    @staticmethod
    def _write(step) -> None:
        """Saving a session is best effort: with the database locked or full the broadcaster
        still gets in (the session then lasts until the next restart only)."""
        if step is None:
            return
        try:
            step()
        except StoreUnavailable:
            log.warning("could not save the broadcaster session; it lasts until a restart")

    def valid(self, session_id: str | None) -> bool:
        """True for a live session id; using it keeps it alive (within its maximum age)."""
        session = self._find(session_id)
        if session is None:
            return False
        session.idle_until = time.time() + self.idle_seconds
        stale = session.idle_until - session.saved_idle > SESSION_WRITE_SECONDS
        if self.store is not None and stale:
            session.saved_idle = session.idle_until
            self._write(lambda: self.store.save_session(session.digest, session.idle_until,
                                                        session.ends))
        return True

    def end(self, session_id: str | None) -> None:
        session = self._find(session_id)
        if session is not None:
            self._sessions.remove(session)
            self._write(self.store and (lambda: self.store.remove_session(session.digest)))

    def _find(self, session_id: str | None) -> _Session | None:
        if not session_id or len(session_id) > 128:
            return None
        wanted = session_digest(self.key, session_id)
        now = time.time()
        found = None
        if self.shared:
            self._sessions = []
        for session in self._sessions:  # every one compared: the time says nothing
            if hmac.compare_digest(session.digest, wanted) and self._alive(session, now):
                found = session
        if found is None and self.store is not None:
            # issued by another process sharing the state (a worker, `serve` after a link)
            try:
                stored = self.store.session(wanted)
            except StoreUnavailable:
                stored = None
            if stored is not None and self._alive(_Session(wanted, *stored), now):
                found = _Session(wanted, stored[0], stored[1], stored[0])
                self._sessions = [*self._sessions, found][-self.limit:]
        return found

    @staticmethod
    def _alive(session: _Session, now: float) -> bool:
        return now < session.idle_until and now < session.ends


# --- the owner's way in: one-time login links --------------------------------------------------

def new_login_link(store: Store, key: bytes, seconds: float = LOGIN_LINK_SECONDS) -> str:
    """A random secret for `livestream broadcaster login-link`; only its digest is stored.

    Whoever can run commands as the server's user owns the machine, so this way in needs no
    password and is not subject to the failed-login lock that guessers can keep closed.
    """
    secret = secrets.token_urlsafe(32)
    store.add_login_link(session_digest(key, "login-link\0" + secret), time.time() + seconds)
    return secret


def use_login_link(store: Store, key: bytes, secret: str) -> bool:
    """True once for a live link (then it is gone), False for anything else."""
    if not secret or len(secret) > 128:
        return False
    return store.use_login_link(session_digest(key, "login-link\0" + secret), time.time())
