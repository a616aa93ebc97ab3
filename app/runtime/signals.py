"""Waiting for the end: SIGINT (Ctrl-C), SIGTERM (systemd, kill, timeout) and SIGHUP (the
terminal closed) all mean "stop cleanly", so every child is stopped and every playlist ended
whichever of them arrives."""
from __future__ import annotations

import signal
from collections.abc import Callable

import gevent
import gevent.event

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_event(stopping: gevent.event.Event | None = None) -> gevent.event.Event:
    """An event set by any of STOP_SIGNALS (or by whoever else holds it)."""
    stopping = stopping if stopping is not None else gevent.event.Event()
    for sig in STOP_SIGNALS:
        gevent.signal_handler(sig, stopping.set)
    return stopping


def interrupt_on_stop() -> None:
    """For plain (non-server) commands such as `play`: Ctrl-C, SIGTERM and SIGHUP raise
    KeyboardInterrupt in the calling (main) greenlet, which stops ffmpeg and ends the playlist.

    Python runs a signal handler in whichever greenlet is running (the CLI's threads are
    greenlets): Ctrl-C's own KeyboardInterrupt could land in a segmenter, which died mid-write,
    closed its pipe and left ffmpeg failing on it instead of finishing the segment."""
    main = gevent.getcurrent()

    def interrupt(*_args) -> None:
        if gevent.getcurrent() is main:
            raise KeyboardInterrupt
        gevent.kill(main, KeyboardInterrupt)

    for sig in STOP_SIGNALS:
        signal.signal(sig, interrupt)


def on_stop(handler: Callable[[], None]) -> dict[int, object]:
    """Call `handler` on SIGTERM and SIGHUP (SIGINT stays Ctrl-C's KeyboardInterrupt); returns
    the previous handlers for `restore`."""
    return {sig: signal.signal(sig, lambda *_: handler())
            for sig in (signal.SIGTERM, signal.SIGHUP)}


def restore(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
