"""`[webhooks] urls`: every event POSTed as JSON to each URL, signed, retried, never waited for.

Each URL has its own sender and its own bounded queue, so a slow or dead receiver delays only
itself; when its queue is full the oldest events go (and the log says how many). A failed
POST is tried again after 1, 2, 4, 8 and 16 s, then given up.

The signature: `X-Livestream-Signature: sha256=HEX`, the HMAC-SHA256 with `[webhooks] secret`
of `TIMESTAMP.BODY`, where TIMESTAMP is the `X-Livestream-Timestamp` header (Unix seconds):
a receiver recomputes it (constant-time compare) and refuses old timestamps, so a captured
request cannot be replayed later. `.onion` receivers are reached through tor's SOCKS port.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import time
from collections import deque
from urllib.parse import urlsplit

import gevent
import gevent.event
import requests

from app.hooks.bus import HookEvent

log = logging.getLogger(__name__)

QUEUE = 1000  # events waiting per URL
RETRIES = (1, 2, 4, 8, 16)  # seconds before each new try
TIMEOUT = (5, 10)  # connect, read


class WebhookError(ValueError):
    """A webhook URL the server will not send to; the message says why and what to do."""


def check_url(url: str, tor: bool, allow_clearnet: bool) -> None:
    """http(s) only; with [tor] enabled only loopback and .onion unless allowed: a POST to
    any other host leaves the machine in clear and tells that host this server exists."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"{url!r} is not an http:// or https:// URL")
    if not tor or allow_clearnet or parts.hostname.endswith(".onion"):
        return
    try:
        loopback = ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = parts.hostname == "localhost"
    if not loopback:
        raise WebhookError(f"{parts.hostname} is neither loopback nor an .onion address and "
                           "[tor] is enabled: a webhook there would reveal this server; set "
                           "webhooks.allow_clearnet = true if you mean it")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class Webhooks:
    """The sink for the bus: one sender greenlet per URL."""

    def __init__(self, urls: list[str], secret: str, tor_socks: str | None = None):
        self.secret = secret
        self.targets = [_Target(url, tor_socks) for url in urls]

    def start(self) -> list[gevent.Greenlet]:
        return [gevent.spawn(self._send_all, target) for target in self.targets]

    def __call__(self, event: HookEvent) -> None:
        body = event.as_json().encode()
        for target in self.targets:
            if len(target.queue) >= QUEUE:
                target.queue.popleft()
                target.dropped += 1
            target.queue.append((event.kind, body))
            target.ready.set()

    def _send_all(self, target: _Target) -> None:
        while True:
            target.ready.wait()
            target.ready.clear()
            while target.queue:
                if target.dropped:
                    log.warning("webhook %s: %d events dropped (its queue was full)",
                                target.shown, target.dropped)
                    target.dropped = 0
                kind, body = target.queue.popleft()
                self._deliver(target, kind, body)

    def _deliver(self, target: _Target, kind: str, body: bytes) -> None:
        for pause in (0, *RETRIES):
            gevent.sleep(pause)
            timestamp = str(int(time.time()))
            try:
                response = target.session.post(target.url, data=body, timeout=TIMEOUT,
                                               allow_redirects=False, headers={
                    "Content-Type": "application/json",
                    "X-Livestream-Event": kind,
                    "X-Livestream-Timestamp": timestamp,
                    "X-Livestream-Signature": signature(self.secret, timestamp, body)})
                if response.status_code < 300:
                    target.failing = False
                    return
                reason = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                reason = type(exc).__name__
            if not target.failing:
                log.warning("webhook %s failed (%s); trying again", target.shown, reason)
            target.failing = True
        log.warning("webhook %s: gave up on one %s event after %d tries", target.shown, kind,
                    len(RETRIES) + 1)


class _Target:
    def __init__(self, url: str, tor_socks: str | None):
        self.url = url
        parts = urlsplit(url)
        self.shown = f"{parts.scheme}://{parts.hostname}"  # never the path (it may hold a key)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "livestream-webhook"
        if tor_socks and (parts.hostname or "").endswith(".onion"):
            proxy = f"socks5h://{tor_socks}"
            self.session.proxies = {"http": proxy, "https": proxy}
        self.queue: deque[tuple[str, bytes]] = deque()
        self.ready = gevent.event.Event()
        self.dropped = 0
        self.failing = False
