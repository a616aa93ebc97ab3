"""A circuit breaker for Redis: a Redis that stops answering costs a request nothing.

Without it, every request that touches Redis while it hangs (a link that drops packets, a
server stopped by SIGSTOP) waits the socket timeout, and so does every page and every video
request behind it. With it, the first failure (a timeout, a refused or dropped connection)
opens the breaker: from then on every Redis call fails at once with a ConnectionError, which
the store turns into its fallbacks (the last bans read, no presence, "chat unavailable"),
while one background greenlet pings Redis every second and closes the breaker when it
answers again. redis-py has retries and health checks, but nothing that stops asking a
server that does not answer, hence this module.
"""
from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import gevent
import redis
import redis.connection

log = logging.getLogger(__name__)

PROBE_EVERY = 1.0  # seconds between pings while open
PROBE_TIMEOUT = 1.0


class Breaker:
    def __init__(self, url: str):
        self.url = url
        self.opened_at: float | None = None
        self.trips = 0  # since start, for /metrics
        self._prober: gevent.Greenlet | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def check(self) -> None:
        if self.opened_at is not None:
            raise redis.ConnectionError("Redis did not answer just now (breaker open; "
                                        "asking again in the background)")

    def trip(self, reason: Exception) -> None:
        if self.opened_at is not None:
            return
        self.opened_at = time.monotonic()
        self.trips += 1
        log.warning("Redis is not answering (%s): chat paused, video goes on; checking "
                    "again every %.0f s", type(reason).__name__, PROBE_EVERY)
        if self._prober is None or self._prober.dead:
            self._prober = gevent.spawn(self._probe)

    def _probe(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=PROBE_TIMEOUT,
                                      socket_connect_timeout=PROBE_TIMEOUT)
        try:
            while self.opened_at is not None:
                gevent.sleep(PROBE_EVERY)
                try:
                    client.ping()
                except redis.RedisError:
                    continue
                log.warning("Redis answers again after %.0f s", time.monotonic()
                            - self.opened_at)
                self.opened_at = None
        finally:
            client.close()

    def stop(self) -> None:
        if self._prober is not None:
            self._prober.kill(block=False)


FAILURES = (redis.ConnectionError, redis.TimeoutError)


def guarded_connection_class(url: str, breaker: Breaker) -> type:
    """The connection class redis-py would pick for `url`, with every socket step guarded."""
    scheme = urlsplit(url).scheme
    base = {"rediss": redis.connection.SSLConnection,
            "unix": redis.connection.UnixDomainSocketConnection}.get(scheme,
                                                                     redis.connection.Connection)

    def guard(step):
        def guarded(self, *args, **kwargs):
            breaker.check()
            try:
                return step(self, *args, **kwargs)
            except FAILURES as exc:
                breaker.trip(exc)
                raise
        return guarded

    return type("Guarded" + base.__name__, (base,), {
        name: guard(getattr(base, name))
        for name in ("connect", "send_packed_command", "read_response")})


class GuardedPool(redis.BlockingConnectionPool):
    """Refuses at once while the breaker is open, instead of waiting for a free connection
    that every stuck request holds."""

    def __init__(self, *args, breaker: Breaker, **kwargs):
        super().__init__(*args, **kwargs)
        self.breaker = breaker

    def get_connection(self, *args, **kwargs):
        self.breaker.check()
        try:
            return super().get_connection(*args, **kwargs)
        except FAILURES as exc:
            self.breaker.trip(exc)
            raise
