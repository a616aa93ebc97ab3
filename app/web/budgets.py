"""What one client (a Tor circuit, an IPv4 address, an IPv6 /64: app/web/clients.py) may take.

Tokens cost nothing to keep, so every per-token limit is only as strong as the cost of a new
token. These budgets put the cost where an attacker pays it: per circuit over Tor (a new
rendezvous circuit takes seconds and, with proof-of-work on, real CPU) and per address on the
clear web. Counted per window (`window_seconds`): new identities, captchas drawn, posts. Held
at once: open video responses, open push responses (chat frames, event streams, long polls,
blocking playlist reloads) and the viewers a client may have listed as watching. A client that
keeps being refused is reported to `on_abuse` once per window (the onion service closes its
circuit).

Per process: with `--workers N` each worker keeps its own, so a client gets up to N times a
budget, and circuits are not closed (tor's controller lives in the parent).
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from app.config import BudgetsConfig

log = logging.getLogger(__name__)


@dataclass
class ClientUse:
    window_start: float
    taken: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    watching: OrderedDict[str, float] = field(default_factory=OrderedDict)
    refused: int = 0
    reported: bool = False


class ClientBudgets:
    def __init__(self, settings: BudgetsConfig,
                 on_abuse: Callable[[str], None] | None = None):
        self.settings = settings
        self.on_abuse = on_abuse
        self._clients: OrderedDict[str, ClientUse] = OrderedDict()
        self.refusals = 0  # all clients, since start: the cockpit's figure

    def limit(self, kind: str) -> int:
        return getattr(self.settings, kind)

    def _use(self, client: str) -> ClientUse:
        now = time.monotonic()
        use = self._clients.get(client)
        if use is None:
            use = self._clients[client] = ClientUse(now)
            while len(self._clients) > self.settings.max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
            if now - use.window_start >= self.settings.window_seconds:
                use.window_start, use.taken, use.refused, use.reported = now, {}, 0, False
        return use

    def _refuse(self, client: str, use: ClientUse, kind: str) -> bool:
        use.refused += 1
        self.refusals += 1
        if use.refused == 1:
            log.info("a client went over its %s budget", kind)  # never which one: no addresses
        if (use.refused >= self.settings.close_circuit_after and not use.reported
                and self.on_abuse is not None):
            use.reported = True
            self.on_abuse(client)
        return False

    def take(self, client: str | None, kind: str) -> bool:
        """One more of a counted kind in this window; False (and counted as refused) when
        the budget is spent. Unbudgeted clients (None) always may."""
        if client is None:
            return True
        use = self._use(client)
        taken = use.taken.get(kind, 0)
        if taken >= self.limit(kind):
            return self._refuse(client, use, kind)
        use.taken[kind] = taken + 1
        return True

    def hold(self, client: str | None, kind: str) -> bool:
        """One more open response of `kind`; pair with `release`."""
        if client is None:
            return True
        use = self._use(client)
        held = use.held.get(kind, 0)
        if held >= self.limit(kind):
            return self._refuse(client, use, kind)
        use.held[kind] = held + 1
        return True

    def release(self, client: str | None, kind: str) -> None:
        use = self._clients.get(client) if client is not None else None
        if use is not None and use.held.get(kind, 0) > 0:
            use.held[kind] -= 1

    def may_watch(self, client: str | None, viewer_id: str, seconds: float) -> bool:
        """Whether this viewer may count as watching: a client lists at most `watching`
        viewers at once (those that received video in the last `seconds`)."""
        if client is None:
            return True
        use = self._use(client)
        now = time.monotonic()
        for old, seen in list(use.watching.items()):
            if now - seen <= seconds:
                break
            del use.watching[old]
        if viewer_id not in use.watching and len(use.watching) >= self.settings.watching:
            return self._refuse(client, use, "watching")
        use.watching[viewer_id] = now
        use.watching.move_to_end(viewer_id)
        return True

    def __len__(self) -> int:
        return len(self._clients)
