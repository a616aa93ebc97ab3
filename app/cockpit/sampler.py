"""Every 10 s, this process's figures into the history: viewers per rendition, what comes
in and goes out, chat posts, CPU and memory. Counters only: nothing on the video path."""
from __future__ import annotations

import logging
import os
import resource
import time

import gevent

from app.cockpit.history import FINE_SECONDS, History
from app.stream.deliveries import Deliveries
from app.stream.health import rendition_health

log = logging.getLogger(__name__)
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def memory_bytes() -> int:
    """This process's resident memory (Linux), 0 where /proc is not there."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Sampler:
    def __init__(self, history: History, stream, deliveries: Deliveries, chat):
        self.history = history
        self.stream = stream
        self.deliveries = deliveries
        self.chat = chat
        self._last = (time.monotonic(), cpu_seconds(), deliveries.bytes_sent, chat.posted)

    def sample(self) -> dict[str, float]:
        now, cpu, sent, posted = (time.monotonic(), cpu_seconds(),
                                  self.deliveries.bytes_sent, self.chat.posted)
        then, cpu_then, sent_then, posted_then = self._last
        self._last = (now, cpu, sent, posted)
        elapsed = max(now - then, 1e-6)
        snapshot = self.stream.snapshot
        figures = {"outgoing_mbps": (sent - sent_then) * 8 / 1e6 / elapsed,
                   "cpu_percent": 100 * (cpu - cpu_then) / elapsed,
                   "memory_mib": memory_bytes() / (1 << 20),
                   "chat_posts": float(posted - posted_then),
                   "incoming_kbps": (sum(rendition_health(v).bitrate_kbps
                                         for v in snapshot.views)
                                     if snapshot.online else 0.0)}
        for quality, row in self.deliveries.report(snapshot).items():
            name = quality or "source"
            figures[f"viewers:{name}"] = float(row.watching)
            figures[f"keeping_up:{name}"] = float(row.keeping_up)
            figures[f"dropped_total:{name}"] = float(self.deliveries.drops_total[quality])
        # running totals, so /metrics can add up every worker's (history.py sums them)
        figures["sent_bytes_total"] = float(sent)
        figures["chat_posts_total"] = float(posted)
        figures["chat_refused_total"] = float(self.chat.refused)
        return figures

    def run(self) -> None:
        while True:
            # every worker files its point under the same 10-s mark, even when its timer
            # fires a hair before it (a bucket from the clock alone would then differ)
            due = (time.time() // FINE_SECONDS + 1) * FINE_SECONDS
            gevent.sleep(max(0.0, due - time.time()))
            try:
                # a few rows, every 10 s: written here, in the server's own thread (the
                # history's lock is a gevent one, not for the threadpool's native threads)
                self.history.add(self.sample(), now=due)
            except Exception:  # a full disk must not end the sampling for good
                log.exception("could not record the cockpit's figures")
