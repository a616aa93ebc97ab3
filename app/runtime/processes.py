"""Stopping child processes (ffmpeg, tor, a push command): ask first, then insist, never hang."""
from __future__ import annotations

import logging
import signal
import subprocess

log = logging.getLogger(__name__)


def stop(proc: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send `sig` (SIGINT lets ffmpeg finish its playlist), then kill after `timeout` seconds."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("process %d did not stop within %.0f s; killing it", proc.pid, timeout)
        proc.kill()
        proc.wait(timeout=5)
