"""Child processes (ffmpeg, tor, stream.sh): they die with us, and stopping them asks first,
then insists, never hangs."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
from collections.abc import Callable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
try:  # loaded once in the parent: the child between fork and exec only calls it
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
    _libc.prctl  # noqa: B018 (Linux only: AttributeError elsewhere)
except (OSError, AttributeError):
    _libc = None


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: this process gets `sig` when its parent dies, even by SIGKILL, so nothing we
    start outlives us (an ffmpeg still streaming a film with nobody at the controls)."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, int(sig))


def dies_with_us(sig: int = signal.SIGINT) -> Callable[[], None]:
    """A `preexec_fn` for Popen: the child gets `sig` when this process dies. SIGINT lets
    ffmpeg end its playlist (ENDLIST) as it does on Ctrl-C. The setting survives the exec
    (stream.sh passes it on to nothing: it traps the signal and stops its own ffmpeg).

    The kernel ties it to the thread that started the child, so start children from the
    thread that lives as long as they do (the main thread, or a gevent greenlet in it)."""
    return lambda: die_with_parent(sig)


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
