"""Waiting for the end: SIGINT (Ctrl-C) or SIGTERM (systemd, kill) sets one event that the
server, the ingest and anything else waiting on it can watch."""
from __future__ import annotations

import signal

import gevent
import gevent.event


def stop_event(stopping: gevent.event.Event | None = None) -> gevent.event.Event:
    """An event set by SIGINT or SIGTERM (or by whoever else holds it)."""
    stopping = stopping if stopping is not None else gevent.event.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, stopping.set)
    return stopping
