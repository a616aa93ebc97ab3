"""Redis as the shared state of several workers (or machines): `[store] redis_url`.

Everything a viewer must see the same whichever process answers them lives here: the store
(messages, viewers, bans, filters, secrets, broadcaster sessions and login links), the push of
new messages to every worker's local hub (a Redis stream), presence and the viewer count, used
form nonces, flood windows, the failed-login window, pending captchas, the hide version of poll
ETags and the numbering of the stream's generations. Each piece has the interface of its
in-memory twin, so `build_services` picks one or the other by config and the rest of the app
does not know which it got.

redis-py is pure Python over the `socket` module, which the server monkey-patches: every call
yields to other greenlets while it waits. When Redis is down, what needs it answers
`StoreUnavailable` (503, "chat unavailable"); what serves video never waits on it (presence is
best effort, bans fall back to the last copy read, the watcher numbers a restart on its own),
and the relay reconnects.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from urllib.parse import urlsplit, urlunsplit

import gevent
import redis

from app.community.breaker import Breaker, GuardedPool, guarded_connection_class
from app.community.captcha import Captchas, Challenge
from app.community.hub import Hub
from app.community.identity import FailedLogins, LoginLocked
from app.community.presence import Audience, Listed
from app.community.store import Ban, Filter, Message, StoreUnavailable, Viewer, is_row_id
from app.config import BroadcasterConfig, CaptchaConfig, ChatConfig, ViewersConfig
from app.stream.watcher import Generations

log = logging.getLogger(__name__)

PREFIX = "livestream:"
CHANNEL = PREFIX + "events"  # a Redis stream
LAYOUT_KEY = PREFIX + "layout"
LAYOUT_VERSION = 1  # the first kept; grows when a key's shape changes (see schema.py)
SHARED_KINDS = frozenset({"chat", "hide"})  # events every worker's listeners must get
TIMEOUT = 1.0  # longest wait for one Redis reply; then the breaker opens (breaker.py)
POOL_SIZE = 32  # Redis connections per worker
RELAY_BLOCK_MS = 1000  # one XREAD waits this long for new events
RELAY_READ_TIMEOUT = 30.0


def safe_url(url: str) -> str:
    """The URL for messages: a password in it is never printed or logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class RedisConfigError(RuntimeError):
    """Redis is unreachable or the URL is wrong; the text says which and what to do."""


def connect(url: str) -> redis.Redis:
    """A client for `url`, checked with a PING so start-up fails clearly, not the first post."""
    where = f"Redis at {safe_url(url)} ([store] redis_url, env LIVESTREAM_REDIS_URL)"
    try:
        # Blocking pool: a thousand greenlets asking at once queue for the connections
        # (bounded, each wait at most TIMEOUT) instead of failing with "Too many connections"
        breaker = Breaker(url)
        pool = GuardedPool.from_url(
            url, max_connections=POOL_SIZE, timeout=TIMEOUT, socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT, health_check_interval=10, breaker=breaker,
            connection_class=guarded_connection_class(url, breaker))
        client = redis.Redis(connection_pool=pool)
        client.breaker = breaker
        client.ping()
    except ValueError as exc:
        raise RedisConfigError(f"{where} is not a valid Redis URL: {exc}. Use e.g. "
                               "redis://127.0.0.1:6379/0.") from None
    except redis.AuthenticationError:
        raise RedisConfigError(f"{where} refused the password in the URL; check it "
                               "(redis://:PASSWORD@host:6379/0).") from None
    except redis.RedisError as exc:
        raise RedisConfigError(f"cannot reach {where}: {exc}. Start redis-server (Debian: "
                               "sudo apt-get install redis-server) or fix the URL.") from None
    return client


def stream_reader(client: redis.Redis) -> redis.Redis:
    """A relay's own connection to `client`'s Redis, with a long read timeout: a worker busy
    with thousands of viewers may not read the reply of a 1 s XREAD BLOCK within the usual
    timeout, and that must not look like a lost Redis."""
    pool = client.connection_pool
    return redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, max_connections=2,
        **{**pool.connection_kwargs, "socket_timeout": RELAY_READ_TIMEOUT}))


@contextmanager
def unavailable() -> Iterator[None]:
    """Redis errors as the store's own error: views answer 503 with a sentence."""
    try:
        yield
    except redis.RedisError as exc:
        log.warning("shared store (Redis) unavailable: %s", exc)
        raise StoreUnavailable(f"Redis: {exc}") from exc


def _message(raw: bytes) -> Message:
    return Message(**json.loads(raw))


def _viewer(raw: bytes) -> Viewer:
    return Viewer(**json.loads(raw))


class RedisStore:
    """The `Store` protocol over Redis: the same answers as SQLiteStore, for every worker."""

    def __init__(self, client: redis.Redis, history: int = 5000, shown: int = 100,
                 max_viewers: int = 50000):
        self.r = client
        self.history_size = history
        self.shown = shown
        self.max_viewers = max_viewers
        self._bans: dict[tuple[str, str], Ban] = {}
        self._bans_version: bytes | None = b"unread"
        self._filters: list[Filter] = []
        self._filters_version: bytes | None = b"unread"
        self._viewer_writes = 0
        self._check_layout()

    def _check_layout(self) -> None:
        """The key layout's version (LAYOUT_KEY), like the SQLite store's schema version: a
        Redis written by a newer livestream is refused, not read wrongly."""
        with unavailable():
            self.r.set(LAYOUT_KEY, LAYOUT_VERSION, nx=True)
            found = int(self.r.get(LAYOUT_KEY) or 0)
        if found > LAYOUT_VERSION:
            raise RuntimeError(f"the Redis data was written by a newer livestream (layout "
                               f"{found}; this one knows {LAYOUT_VERSION}): upgrade every "
                               "server sharing it, or point [store] redis_url elsewhere")

    # --- secrets -------------------------------------------------------------------------

    def secret(self, name: str, size: int = 32) -> bytes:
        """Created once by whichever process asks first (SET NX); the same for all."""
        import secrets as random

        key = f"{PREFIX}secret:{name}"
        with unavailable():
            self.r.set(key, random.token_bytes(size), nx=True)
            return bytes(self.r.get(key))

    def get_secret(self, name: str) -> bytes | None:
        with unavailable():
            value = self.r.get(f"{PREFIX}secret:{name}")
        return bytes(value) if value is not None else None

    def set_secret(self, name: str, value: bytes) -> None:
        with unavailable():
            self.r.set(f"{PREFIX}secret:{name}", value)

    # --- messages ------------------------------------------------------------------------

    def add_message(self, message: Message) -> Message:
        with unavailable():
            stored = replace(message, id=int(self.r.incr(PREFIX + "msg:next")))
            pipe = self.r.pipeline()
            pipe.hset(PREFIX + "msg", str(stored.id), json.dumps(asdict(stored)))
            pipe.rpush(PREFIX + "msg:ids", stored.id)
            pipe.execute()
            if stored.id % 100 == 0:
                self._trim()
        return stored

    def _trim(self) -> None:
        """Bounded retention: the newest `history` messages, `max_viewers` viewers."""
        old = self.r.lrange(PREFIX + "msg:ids", 0, -(self.history_size + 1))
        if old:
            self.r.hdel(PREFIX + "msg", *old)
            self.r.ltrim(PREFIX + "msg:ids", -self.history_size, -1)

    def _messages(self, count: int) -> list[Message]:
        with unavailable():
            ids = self.r.lrange(PREFIX + "msg:ids", -count, -1)
            raws = self.r.hmget(PREFIX + "msg", ids) if ids else []
        return [_message(raw) for raw in raws if raw is not None]

    def recent_messages(self, include_hidden: bool = False) -> list[Message]:
        return [m for m in self._messages(self.shown) if include_hidden or not m.hidden]

    def history(self, since: float = 0.0) -> list[Message]:
        return [m for m in self._messages(self.history_size) if m.created >= since]

    def messages_since(self, last_id: int) -> list[Message]:
        return [m for m in self._messages(self.shown) if m.id > last_id and not m.hidden]

    def last_message_id(self) -> int:
        with unavailable():
            value = self.r.get(PREFIX + "msg:next")
        return int(value) if value else 0

    def message(self, message_id: int) -> Message | None:
        if not is_row_id(message_id):
            return None
        with unavailable():
            raw = self.r.hget(PREFIX + "msg", str(message_id))
        return _message(raw) if raw else None

    def _hide(self, found: list[Message], hidden: bool = True) -> None:
        if found:
            with unavailable():
                self.r.hset(PREFIX + "msg", mapping={
                    str(m.id): json.dumps(asdict(replace(m, hidden=hidden))) for m in found})

    def hide_messages(self, ids: list[int], hidden: bool = True) -> list[int]:
        wanted = sorted({i for i in ids if is_row_id(i)})
        if not wanted:
            return []
        with unavailable():
            raws = self.r.hmget(PREFIX + "msg", [str(i) for i in wanted])
        self._hide([_message(raw) for raw in raws if raw is not None], hidden)
        return wanted

    def hide_messages_of(self, viewer_id: str) -> list[int]:
        found = [m for m in self._messages(self.history_size)
                 if m.viewer_id == viewer_id and not m.hidden]
        self._hide(found)
        return [m.id for m in found]

    # --- viewers -------------------------------------------------------------------------

    def viewer(self, viewer_id: str) -> Viewer | None:
        """None also while Redis is down: every request asks (for bans), and video must not
        stop for it; posting fails on its own with StoreUnavailable."""
        try:
            raw = self.r.hget(PREFIX + "viewer", viewer_id)
        except redis.RedisError as exc:
            log.debug("viewer lookup skipped, Redis unavailable: %s", exc)
            return None
        return _viewer(raw) if raw else None

    def save_viewer(self, viewer: Viewer) -> None:
        with unavailable():
            pipe = self.r.pipeline()
            pipe.hset(PREFIX + "viewer", viewer.id, json.dumps(asdict(viewer)))
            pipe.zadd(PREFIX + "viewer:seen", {viewer.id: viewer.last_seen})
            pipe.execute()
            self._viewer_writes += 1
            if self._viewer_writes % 100 == 0:
                old = self.r.zrange(PREFIX + "viewer:seen", 0, -(self.max_viewers + 1))
                if old:
                    self.r.hdel(PREFIX + "viewer", *old)
                    self.r.zrem(PREFIX + "viewer:seen", *old)

    # --- bans and filters: a local copy, read again when the shared version changed ---------

    def bans(self) -> dict[tuple[str, str], Ban]:
        """One GET per call (video never asks: it does not wait on Redis); the last copy
        read while Redis is down or hangs (the breaker answers at once)."""
        try:
            version = self.r.get(PREFIX + "bans:version")
            if version != self._bans_version:
                rows = self.r.hgetall(PREFIX + "bans")
                bans = [Ban(**json.loads(raw)) for raw in rows.values()]
                self._bans = {(b.kind, b.value): b for b in sorted(bans, key=lambda b: b.created)}
                self._bans_version = version
        except redis.RedisError as exc:
            log.debug("bans not refreshed, Redis unavailable: %s", exc)
        return self._bans

    def add_ban(self, ban: Ban) -> None:
        key = f"{ban.kind}\0{ban.value}"
        with unavailable():
            pipe = self.r.pipeline()
            pipe.hset(PREFIX + "bans", key, json.dumps(asdict(ban)))
            pipe.zadd(PREFIX + "bans:order", {key: ban.created})
            pipe.execute()
            old = self.r.zrange(PREFIX + "bans:order", 0, -(self.max_viewers + 1))
            if old:
                self.r.hdel(PREFIX + "bans", *old)
                self.r.zrem(PREFIX + "bans:order", *old)
            self.r.incr(PREFIX + "bans:version")

    def remove_ban(self, kind: str, value: str) -> None:
        key = f"{kind}\0{value}"
        with unavailable():
            pipe = self.r.pipeline()
            pipe.hdel(PREFIX + "bans", key)
            pipe.zrem(PREFIX + "bans:order", key)
            pipe.incr(PREFIX + "bans:version")
            pipe.execute()

    def filters(self) -> list[Filter]:
        """The same list object until another process changes the filters (Chat compiles
        them again only then)."""
        try:
            version = self.r.get(PREFIX + "filters:version")
            if version != self._filters_version:
                rows = self.r.hgetall(PREFIX + "filters")
                self._filters = sorted((Filter(**json.loads(raw)) for raw in rows.values()),
                                       key=lambda f: f.id)
                self._filters_version = version
        except redis.RedisError as exc:
            log.debug("filters not refreshed, Redis unavailable: %s", exc)
        return self._filters

    def add_filter(self, pattern: str, is_regex: bool, case_sensitive: bool,
                   action: str) -> Filter:
        with unavailable():
            added = Filter(int(self.r.incr(PREFIX + "filter:next")), pattern, is_regex,
                           case_sensitive, action, time.time())
            pipe = self.r.pipeline()
            pipe.hset(PREFIX + "filters", str(added.id), json.dumps(asdict(added)))
            pipe.incr(PREFIX + "filters:version")
            pipe.execute()
        return added

    def remove_filter(self, filter_id: int) -> None:
        if not is_row_id(filter_id):
            return
        with unavailable():
            pipe = self.r.pipeline()
            pipe.hdel(PREFIX + "filters", str(filter_id))
            pipe.incr(PREFIX + "filters:version")
            pipe.execute()

    # --- broadcaster sessions and login links (digests only) --------------------------------

    def sessions(self) -> list[tuple[bytes, float, float]]:
        with unavailable():
            rows = self.r.hgetall(PREFIX + "session")
        return [(bytes.fromhex(k.decode()), *json.loads(v)) for k, v in rows.items()]

    def session(self, digest: bytes) -> tuple[float, float] | None:
        with unavailable():
            raw = self.r.hget(PREFIX + "session", digest.hex())
        return tuple(json.loads(raw)) if raw else None

    def save_session(self, digest: bytes, idle_until: float, ends: float) -> None:
        now = time.time()
        ended = [d for d, idle, end in self.sessions() if idle < now or end < now]
        with unavailable():
            if ended:
                self.r.hdel(PREFIX + "session", *(d.hex() for d in ended))
            self.r.hset(PREFIX + "session", digest.hex(), json.dumps([idle_until, ends]))

    def remove_session(self, digest: bytes) -> None:
        with unavailable():
            self.r.hdel(PREFIX + "session", digest.hex())

    def add_login_link(self, digest: bytes, expires: float) -> None:
        with unavailable():
            self.r.set(f"{PREFIX}link:{digest.hex()}", repr(expires),
                       px=max(1, int((expires - time.time()) * 1000)))

    def use_login_link(self, digest: bytes, now: float) -> bool:
        """GETDEL: two uses at once (from any two processes) cannot both succeed."""
        with unavailable():
            raw = self.r.getdel(f"{PREFIX}link:{digest.hex()}")
        return raw is not None and float(raw) >= now

    def close(self) -> None:
        breaker = getattr(self.r, "breaker", None)
        if breaker is not None:
            breaker.stop()
        self.r.close()  # the hub's reader is closed with its greenlet


class RedisHub(Hub):
    """A local hub fed through a Redis stream: chat and hide events published by any worker
    reach the listeners of every worker; stream status and viewer counts stay local (each
    worker's own watcher and the shared count produce the same values everywhere).

    A stream (XADD, XREAD BLOCK) rather than pub/sub: the relay is plain commands on a
    pooled connection, which reconnect by themselves after a Redis restart, and a relay that
    blinks (a slow greenlet, a lost connection) reads on from the last id it saw."""

    def __init__(self, client: redis.Redis, history: int = 200):
        super().__init__(history)
        self.r = client
        self._keep = history
        self.reader = stream_reader(client)

    def publish(self, kind: str, data: dict):  # type: ignore[override]
        if kind not in SHARED_KINDS:
            return super().publish(kind, data)
        with unavailable():
            self.r.xadd(CHANNEL, {"kind": kind, "data": json.dumps(data)},
                        maxlen=self._keep * 5, approximate=True)
        return None

    def start(self) -> gevent.Greenlet:
        return gevent.spawn(self._relay)

    def _relay(self) -> None:
        """Forever: hand each new event to the local hub, reading on from the last id seen.

        After a lost connection it goes on from that id: posts fail while Redis is away, and
        those accepted just before or after are in the stream, so nothing is missed (entry ids
        grow with the clock, even after Redis restarts empty)."""
        pause, lost, last = 0.5, False, None
        while True:
            try:
                if last is None:
                    newest = self.reader.xrevrange(CHANNEL, count=1)
                    last = newest[0][0] if newest else b"0-0"
                replies = self.reader.xread({CHANNEL: last}, block=RELAY_BLOCK_MS, count=100)
                if lost:
                    log.info("shared store (Redis) is back: chat push resumed")
                    lost, pause = False, 0.5
                for _, entries in replies:
                    for entry_id, fields in entries:
                        last = entry_id
                        try:
                            super().publish(fields[b"kind"].decode(),
                                            json.loads(fields[b"data"]))
                        except (ValueError, KeyError) as exc:
                            log.warning("ignored a malformed event on %s: %r", CHANNEL, exc)
                continue
            except (redis.RedisError, ValueError) as exc:  # ValueError: closed while stopping
                if not lost:
                    log.warning("shared store (Redis) lost: %s; chat push paused, retrying",
                                exc)
                lost = True
            gevent.sleep(pause)
            pause = min(pause * 2, 5.0)


class RedisAudience(Audience):
    """Presence in three Redis keys (wall clock): the same list and count for every worker.

    Sightings (video, pages, chat frames) are gathered in memory and written in one pipeline
    by the count publisher every 2 s, never inside a request: a Redis that hangs never holds
    a viewer's video or page (Redis down: skipped). A post is written at once."""

    def __init__(self, settings: ViewersConfig, client: redis.Redis):
        super().__init__(settings)
        self.r = client
        # video sightings wait here and go to Redis together, at most once a second: one
        # pipeline for thousands of viewers instead of one round trip per segment each
        self._pending: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._still: dict[str, float] = {}  # cheap signs of life of listed viewers

    def _write(self, viewer_id: str, tag: str, video: bool, now: float) -> None:
        self._pending[viewer_id] = (tag, now) if video else self._pending.get(
            viewer_id, (tag, 0.0))
        self._pending.move_to_end(viewer_id)
        while len(self._pending) > self.settings.max_present:
            self._pending.popitem(last=False)
        if not video:
            self._flush(now, viewer_id)

    def _flush(self, now: float, posted: str | None = None) -> None:
        pending, self._pending = self._pending, OrderedDict()
        still, self._still = self._still, {}
        try:
            pipe = self.r.pipeline(transaction=False)
            if still:  # XX: only a viewer already listed is kept; none is added
                pipe.zadd(PREFIX + "presence:seen", still, xx=True)
            if pending:
                seen = {v: max(t, now if v == posted else 0.0)
                        for v, (_, t) in pending.items()}
                pipe.zadd(PREFIX + "presence:seen", {v: t or now for v, t in seen.items()})
                videos = {v: t for v, (_, t) in pending.items() if t}
                if videos:
                    pipe.zadd(PREFIX + "presence:video", videos)
                pipe.hset(PREFIX + "presence:tag", mapping={v: tag for v, (tag, _) in
                                                            pending.items()})
            pipe.execute()
            self._cap()
        except redis.RedisError as exc:
            log.debug("presence not saved, Redis unavailable: %s", exc)

    def _cap(self) -> None:
        old = self.r.zrange(PREFIX + "presence:seen", 0, -(self.settings.max_present + 1))
        if old:
            self._drop(old)

    def _drop(self, ids: Sequence[bytes | str]) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.zrem(PREFIX + "presence:seen", *ids)
        pipe.zrem(PREFIX + "presence:video", *ids)
        pipe.hdel(PREFIX + "presence:tag", *ids)
        pipe.execute()

    def saw(self, viewer_id: str, tag: str) -> None:
        self._write(viewer_id, tag, False, time.time())

    def still_here(self, viewer_id: str) -> None:
        if len(self._still) < self.settings.max_present:
            self._still[viewer_id] = time.time()

    def _watched(self, viewer_id: str, tag: str) -> None:
        self._write(viewer_id, tag, True, time.time())

    def _flush_due(self) -> None:
        if self._pending or self._still:
            self._flush(time.time())

    def expire(self) -> None:
        self._flush_due()  # called every 2 s by the viewer-count publisher
        cutoff = time.time() - self.settings.present_seconds
        try:
            old = self.r.zrangebyscore(PREFIX + "presence:seen", "-inf", cutoff)
            if old:
                self._drop(old)
        except redis.RedisError as exc:
            log.debug("presence not expired, Redis unavailable: %s", exc)

    def count(self) -> int:
        try:
            return int(self.r.zcount(PREFIX + "presence:video",
                                     time.time() - self.settings.watching_seconds, "+inf"))
        except redis.RedisError:
            return 0

    def listing(self, limit: int) -> list[Listed]:
        self.expire()
        now = time.time()
        try:
            seen = self.r.zrevrange(PREFIX + "presence:seen", 0, limit - 1)
            if not seen:
                return []
            videos = self.r.zmscore(PREFIX + "presence:video", seen)
            tags = self.r.hmget(PREFIX + "presence:tag", seen)
        except redis.RedisError:
            return []
        people = [Listed(v.decode(), (t or b"").decode(),
                         video is not None and now - video <= self.settings.watching_seconds)
                  for v, video, t in zip(seen, videos, tags, strict=True)]
        return sorted(people, key=lambda p: not p.watching)


FIRST_USE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
return 1
"""


class RedisUsedNonces:
    """Used form nonces in one sorted set (score: the nonce's expiry), checked and added in one
    script, atomic across workers, and capped at `max_used` like the in-memory twin: one
    client posting as fast as it can no longer grows Redis by a key per post."""

    def __init__(self, client: redis.Redis, max_used: int):
        self.r = client
        self.max_used = max_used
        self._first_use = client.register_script(FIRST_USE)

    def first_use(self, signature: bytes, expires: float, now: float) -> bool:
        with unavailable():
            return bool(self._first_use(keys=[PREFIX + "nonces"],
                                        args=[signature.hex(), expires, now, self.max_used]))


class RedisFloodWindows:
    """Each viewer's latest posting times in a short Redis list (wall clock)."""

    def __init__(self, client: redis.Redis, settings: ChatConfig):
        self.r = client
        self.keep = settings.window_messages
        self.ttl = math.ceil(settings.window_seconds + settings.min_interval) + 1

    def now(self) -> float:
        return time.time()

    def times(self, viewer_id: str) -> Sequence[float]:
        with unavailable():
            return [float(t) for t in self.r.lrange(f"{PREFIX}flood:{viewer_id}", 0, -1)]

    def add(self, viewer_id: str, now: float) -> None:
        key = f"{PREFIX}flood:{viewer_id}"
        with unavailable():
            pipe = self.r.pipeline()
            pipe.rpush(key, repr(now))
            pipe.ltrim(key, -self.keep, -1)
            pipe.expire(key, self.ttl)
            pipe.execute()


# One window for every worker: refused (not counted) once full, so a guesser gets
# failed_logins tries per window in all, whichever workers the guesses reach. The window opens
# with its first failure and expires by itself. Negative: milliseconds the lock still lasts.
LOGIN_ATTEMPT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then return -math.max(1, redis.call('PTTL', KEYS[1])) end
count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return count
"""
LOGIN_PROVEN = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
"""


class RedisFailedLogins(FailedLogins):
    """Failed broadcaster logins counted in one Redis window (INCR, PEXPIRE) for all workers."""

    KEY = PREFIX + "login-failures"

    def __init__(self, client: redis.Redis, settings: BroadcasterConfig):
        self.r = client
        self.limit = max(1, settings.failed_logins)
        self.window_ms = max(1, int(settings.failed_window * 1000))
        self._attempt = client.register_script(LOGIN_ATTEMPT)
        self._proven = client.register_script(LOGIN_PROVEN)

    def locked_for(self) -> float:
        with unavailable():
            pipe = self.r.pipeline()
            pipe.get(self.KEY)
            pipe.pttl(self.KEY)
            count, left = pipe.execute()
        return max(left, 1) / 1000 if int(count or 0) >= self.limit else 0.0

    def attempt(self) -> float:
        with unavailable():
            counted = int(self._attempt(keys=[self.KEY], args=[self.limit, self.window_ms]))
        if counted < 0:
            raise LoginLocked(-counted / 1000)
        return float(counted)

    def forget(self, attempt: float) -> None:
        with unavailable():
            self._proven(keys=[self.KEY])


# The stream's generation ledger (Redis server time, so no machine's clock matters): a worker
# that sees a restart takes the number another worker gave it moments ago, or the next one.
NEXT_GENERATION = """
local now = tonumber(redis.call('TIME')[1])
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
local previous = tonumber(ARGV[1])
if gen > previous and now - at < tonumber(ARGV[2]) then return gen end
gen = math.max(gen, previous) + 1
redis.call('HSET', KEYS[1], 'gen', gen, 'at', now)
return gen
"""
# A worker behind a number that settled takes it (the others saw a restart it did not); a worker
# ahead (it counted a restart while Redis was away) writes its own.
AGREE_GENERATION = """
local now = tonumber(redis.call('TIME')[1])
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
local mine = tonumber(ARGV[1])
if mine > gen then
  redis.call('HSET', KEYS[1], 'gen', mine, 'at', now)
  return mine
end
if gen > mine and now - at >= tonumber(ARGV[2]) then return gen end
return mine
"""
SAME_RESTART_SECONDS = 10  # a number given this recently names the restart this worker sees


class RedisGenerations(Generations):
    """One numbering of the broadcasts for every worker's watcher (see Generations). Best
    effort: with Redis away a worker counts on its own and writes its number once it is back."""

    KEY = PREFIX + "generation"
    shared = True

    def __init__(self, client: redis.Redis):
        self.r = client
        self._next = client.register_script(NEXT_GENERATION)
        self._agree = client.register_script(AGREE_GENERATION)

    def current(self) -> int:
        try:
            return int(self.r.hget(self.KEY, "gen") or 0)
        except redis.RedisError as exc:
            log.warning("stream generation not read, Redis unavailable: %s", exc)
            return 0

    def next(self, previous: int) -> int:
        try:
            return int(self._next(keys=[self.KEY], args=[previous, SAME_RESTART_SECONDS]))
        except redis.RedisError as exc:
            log.warning("stream generation counted here alone, Redis unavailable: %s", exc)
            return previous + 1

    def agree(self, mine: int) -> int:
        try:
            return int(self._agree(keys=[self.KEY], args=[mine, SAME_RESTART_SECONDS]))
        except redis.RedisError as exc:
            log.debug("stream generation not compared, Redis unavailable: %s", exc)
            return mine


class RedisHideVersion:
    def __init__(self, client: redis.Redis):
        self.r = client

    def value(self) -> int:
        with unavailable():
            return int(self.r.get(PREFIX + "hides") or 0)

    def bump(self) -> None:
        with unavailable():
            self.r.incr(PREFIX + "hides")


# Take a challenge for its own viewer only: a wrong viewer's attempt leaves it in place, as
# the in-memory version does.
REMEMBER_CHALLENGE = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if extra > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[1], 0, extra - 1)) do
    redis.call('DEL', ARGV[5] .. old)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
end
"""

TAKE_CHALLENGE = """
local v = redis.call('HMGET', KEYS[1], 'viewer', 'answer')
if not v[1] or v[1] ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return v[2]
"""


class RedisCaptchas(Captchas):
    """Pending challenges in Redis (each expires by itself): a captcha shown by one worker
    is drawn, spoken and checked by any other. Images are still drawn locally, in each
    worker's own bounded pool."""

    def __init__(self, settings: CaptchaConfig, client: redis.Redis, answers_file=None):
        super().__init__(settings, answers_file)
        self.r = client
        self._ttl = max(1, math.ceil(settings.expire_seconds))
        self._take = client.register_script(TAKE_CHALLENGE)
        self._cap = client.register_script(REMEMBER_CHALLENGE)

    @staticmethod
    def _key(challenge_id: str) -> str:
        return f"{PREFIX}captcha:{challenge_id}"

    @staticmethod
    def _viewer_key(viewer_id: str) -> str:
        return f"{PREFIX}captcha-of:{viewer_id}"

    def _expire(self) -> None:
        pass  # Redis expires each challenge itself

    def _held_by(self, viewer_id: str) -> Challenge | None:
        with unavailable():
            held = self.r.get(self._viewer_key(viewer_id))
        return self._held(held.decode(), viewer_id) if held else None

    def _remember(self, challenge: Challenge) -> None:
        with unavailable():
            pipe = self.r.pipeline()
            pipe.hset(self._key(challenge.id), mapping={
                "answer": challenge.answer, "image": challenge.image,
                "viewer": challenge.viewer_id})
            pipe.expire(self._key(challenge.id), self._ttl)
            pipe.set(self._viewer_key(challenge.viewer_id), challenge.id, ex=self._ttl)
            pipe.execute()
            # at most max_pending, like the in-memory twin: the oldest go first
            now = time.time()
            self._cap(keys=[PREFIX + "captchas"],
                      args=[now, challenge.id, now - self.settings.expire_seconds,
                            self.settings.max_pending, self._key("")])

    def _held(self, challenge_id: str, viewer_id: str) -> Challenge | None:
        if not challenge_id or len(challenge_id) > 64:
            return None
        with unavailable():
            answer, image, owner, audio = self.r.hmget(
                self._key(challenge_id), ["answer", "image", "viewer", "audio"])
        if owner is None or owner.decode() != viewer_id:
            return None
        return Challenge(challenge_id, answer.decode(), bytes(image), viewer_id, 0.0,
                         bytes(audio) if audio is not None else None)

    def _keep_audio(self, challenge: Challenge) -> None:
        with unavailable():
            self.r.hset(self._key(challenge.id), "audio", challenge.audio)

    def check(self, challenge_id: str, viewer_id: str, answer: str) -> bool:
        import hmac

        from app.community.captcha import normalise

        if not challenge_id or len(challenge_id) > 64:
            return False
        with unavailable():
            right = self._take(keys=[self._key(challenge_id), self._viewer_key(viewer_id)],
                               args=[viewer_id, challenge_id])
        if not right:
            return False
        return hmac.compare_digest(normalise(answer).encode(), bytes(right))
