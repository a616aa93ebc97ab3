"""The clock the player sees: seconds on a scale private to this server process.

Players need a shared clock to stay in step (the live edge is "server now - origin"), but not
the host's: a wall clock to the microsecond tells a viewer the machine's exact time (and, with
the minute-rounded `Date` header, undoes the rounding). So every time a viewer is given (the
/api/clock "now", the timeline's origin and segment times, the stream's start) is the wall time
minus one secret random shift chosen at start-up. Differences are exact, so players sync and
show uptime as before; the values say nothing about the host's clock or time zone.
"""
from __future__ import annotations

import secrets
import time

SHIFT_RANGE = 10**6  # the public clock starts somewhere in [1e6, 2e6) seconds: never Unix time


SHARED_SHIFT_MIN = 10**8  # a shift from a shared secret: somewhere in [1e8, 1.6e9) seconds


class StreamClock:
    def __init__(self, shared_secret: bytes | None = None) -> None:
        """A random shift of this process; or, for several workers that must show viewers
        the same clock, a shift derived from a secret they share (never stored elsewhere)."""
        if shared_secret is None:
            # public = wall - shift, and at start-up public is a random value in [1e6, 2e6)
            self._shift = time.time() - (SHIFT_RANGE + secrets.randbelow(SHIFT_RANGE))
        else:
            spread = int.from_bytes(shared_secret[:8], "big") % (15 * SHARED_SHIFT_MIN)
            self._shift = float(SHARED_SHIFT_MIN + spread)

    def now(self) -> float:
        """The public "now", to the millisecond (what an NTP-style sync can use)."""
        return round(time.time() - self._shift, 3)

    def of(self, wall: float | None) -> float | None:
        """A wall-clock moment (time.time()) on the public scale; None stays None."""
        return None if wall is None else round(wall - self._shift, 3)
