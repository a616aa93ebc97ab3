"""A small publish/subscribe hub for the push channel (server-sent events, no-JS chat frames).

Publishers append to one bounded history; listeners keep only the id of the last event they
sent, so a thousand listeners cost a thousand integers, not a thousand queues. A listener that
falls behind the history is told to resynchronise instead of being buffered for.
"""
from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import gevent
import gevent.event


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: str  # JSON text, encoded once for every listener

    def sse(self) -> bytes:
        return f"id: {self.id}\nevent: {self.kind}\ndata: {self.data}\n\n".encode()


RESYNC = "resync"  # sent to a listener whose next event is no longer held


class Hub:
    def __init__(self, history: int = 200):
        self._events: deque[Event] = deque(maxlen=history)
        self._ids = itertools.count(1)
        self._changed = gevent.event.Event()

    def start(self) -> gevent.Greenlet | None:
        """Background work of the hub: none here (a shared hub relays from Redis)."""
        return None

    @property
    def last_id(self) -> int:
        return self._events[-1].id if self._events else 0

    def publish(self, kind: str, data: dict) -> Event:
        event = Event(next(self._ids), kind, json.dumps(data, separators=(",", ":")))
        self._events.append(event)
        changed, self._changed = self._changed, gevent.event.Event()
        changed.set()
        return event

    def since(self, last_id: int) -> list[Event]:
        """Events after last_id; a single RESYNC event when some were already dropped."""
        if self._events and last_id < self._events[0].id - 1:
            return [Event(self._events[-1].id, RESYNC, "{}")]
        return [e for e in self._events if e.id > last_id]

    def listen(self, last_id: int | None = None, kinds: frozenset[str] | None = None,
               timeout: float = 15.0) -> Iterator[Event | None]:
        """Yield events as they come; None every `timeout` seconds so callers can keep alive."""
        position = self.last_id if last_id is None else last_id
        while True:
            pending = self.since(position)
            if not pending:
                if not self._changed.wait(timeout):
                    yield None
                continue
            for event in pending:
                position = event.id
                if kinds is None or event.kind in kinds or event.kind == RESYNC:
                    yield event
