"""Stopping child processes (ffmpeg, tor, a push command): ask first, then insist, never hang."""
from __future__ import annotations

import logging
import os
import signal
import subprocess

log = logging.getLogger(__name__)


def stop(proc: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGTERM,
         group: bool = False) -> None:
    """Send `sig` (SIGINT lets ffmpeg finish its playlist), then kill after `timeout` seconds.
    `group`: the process leads a session of its own (start_new_session) and every process in
    it gets the signals, so a script's children (stream.sh's ffmpeg) stop with it."""
    if proc.poll() is not None and not group:
        return

    def send(signum: int) -> None:
        try:
            os.killpg(proc.pid, signum) if group else proc.send_signal(signum)
        except ProcessLookupError:
            pass

    try:
        send(sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("process %d did not stop within %.0f s; killing it", proc.pid, timeout)
        send(signal.SIGKILL)
        proc.wait(timeout=5)
    if group:
        send(signal.SIGKILL)  # whatever of the session outlived its leader
