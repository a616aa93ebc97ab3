"""Where events go: one JSON object per thing that happened, to the event socket and the
webhooks of one process.

With `--workers N` and Redis every worker sees its own requests, so each hands its events to
a capped Redis stream and only the dispatching worker (worker 0) reads it and passes them on:
one event per event, whichever worker saw it. A lost Redis loses events, never a request: an
event is a courtesy to bots, and the chat goes on without them.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import gevent

log = logging.getLogger(__name__)

KINDS = ("message", "hide", "ban", "unban", "viewer_arrived", "viewer_left", "live",
         "offline", "restarted", "title", "party", "modes", "unhide")
STREAM_KEY = "livestream:hooks"  # the Redis stream between workers (shared.PREFIX)
STREAM_LENGTH = 10_000  # events kept in it (about)


@dataclass(frozen=True)
class HookEvent:
    kind: str
    data: dict
    time: float

    def as_json(self) -> str:
        moment = datetime.fromtimestamp(self.time, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return json.dumps({"event": self.kind, "time": moment, **self.data},
                          ensure_ascii=False, separators=(",", ":"))


def is_dispatcher() -> bool:
    """This process hands events to the sinks: the only one, or worker 0 of several."""
    return os.environ.get("LIVESTREAM_WORKER", "0") == "0"


class HookBus:
    """`emit()` from anywhere in the app; `start()` in the process that dispatches."""

    def __init__(self, redis=None):
        self.redis = redis  # a redis.Redis client with --workers, else None
        self.sinks: list[Callable[[HookEvent], None]] = []
        self._failing = False

    def emit(self, kind: str, **data) -> None:
        event = HookEvent(kind, data, time.time())
        if self.redis is None:
            self.dispatch(event)
            return
        try:
            self.redis.xadd(STREAM_KEY, {"e": event.as_json()}, maxlen=STREAM_LENGTH,
                            approximate=True)
            self._failing = False
        except Exception as exc:  # noqa: BLE001 - Redis down: bots miss it, viewers do not
            if not self._failing:
                log.warning("an event for the hooks was lost: Redis failed (%s)", exc)
            self._failing = True

    def dispatch(self, event: HookEvent) -> None:
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:  # one broken sink never stops the others
                log.exception("a hook failed on %s", event.kind)

    def start(self) -> gevent.Greenlet | None:
        """With Redis: read every worker's events and dispatch them here."""
        if self.redis is None or not self.sinks:
            return None
        return gevent.spawn(self._relay)

    def _relay(self) -> None:
        from app.community.shared import stream_reader

        reader, last = stream_reader(self.redis), None
        while True:
            try:
                if last is None:  # from now on: what came before was for an earlier process
                    newest = reader.xrevrange(STREAM_KEY, count=1)
                    last = newest[0][0] if newest else b"0-0"
                for _, entries in reader.xread({STREAM_KEY: last}, count=500, block=1000):
                    for entry_id, fields in entries:
                        last = entry_id
                        data = json.loads(fields[b"e"])
                        kind, moment = data.pop("event"), data.pop("time")
                        self.dispatch(HookEvent(kind, data, _parse_moment(moment)))
            except Exception as exc:  # noqa: BLE001 - Redis away: try again, never die
                log.debug("hook relay: %s", exc)
                gevent.sleep(1.0)


def _parse_moment(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
