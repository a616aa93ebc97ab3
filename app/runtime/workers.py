"""Several worker processes on one port: `livestream serve --workers N`.

One process uses one core. Each worker is `livestream serve --worker` (a fresh interpreter,
not a fork of a gevent process): it binds the port itself with SO_REUSEPORT, so the kernel
spreads new connections over the workers, and runs its own watcher and hub. The parent only
supervises: it restarts a worker that died (with a growing pause, so a worker that cannot
start does not spin), and SIGINT/SIGTERM stops them all. The onion service, the RTMP ingest
and a demo source run once, in the parent.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

import gevent
import gevent.event

from app.runtime import processes

log = logging.getLogger(__name__)

FIRST_PAUSE = 1.0  # seconds before restarting a worker that died
LONGEST_PAUSE = 30.0
STABLE_SECONDS = 60.0  # a worker that lived this long starts over with the first pause
STOP_SECONDS = 10.0  # SIGTERM, then SIGKILL after this


def reuse_port_listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening socket that other workers may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def port_is_free(host: str, port: int) -> None:
    """Raise OSError if a server that does not share (no SO_REUSEPORT) holds the port."""
    probe = reuse_port_listener(host, port, backlog=1)
    probe.close()


class Supervisor:
    """Keeps `count` workers running until `stop()`."""

    def __init__(self, argv: Sequence[str], count: int,
                 stopping: gevent.event.Event | None = None):
        self.argv = list(argv)
        self.count = count
        self.workers: list[subprocess.Popen | None] = [None] * count
        # the parent's stop event: a Ctrl-C reaches the workers too, and their exit must
        # not be taken for a crash
        self._stopping = stopping if stopping is not None else gevent.event.Event()
        self._greenlets: list[gevent.Greenlet] = []

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w is not None and w.poll() is None]

    def start(self) -> None:
        for slot in range(self.count):
            self._greenlets.append(gevent.spawn(self._keep, slot))

    def _spawn(self, slot: int) -> subprocess.Popen:
        env = dict(os.environ, LIVESTREAM_WORKER=str(slot))
        proc = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL,
                                preexec_fn=processes.dies_with_us(signal.SIGTERM))
        log.info("worker %d started (pid %d)", slot, proc.pid)
        return proc

    def _keep(self, slot: int) -> None:
        pause = FIRST_PAUSE
        while not self._stopping.is_set():
            started = time.monotonic()
            proc = self.workers[slot] = self._spawn(slot)
            while proc.poll() is None and not self._stopping.wait(0.5):
                pass
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started
            pause = FIRST_PAUSE if lived > STABLE_SECONDS else pause
            log.warning("worker %d (pid %d) exited with %s after %.0f s; restarting it in "
                        "%.0f s", slot, proc.pid, proc.returncode, lived, pause)
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, LONGEST_PAUSE)

    def stop(self) -> None:
        """SIGTERM every worker, wait, then SIGKILL whichever is still there."""
        self._stopping.set()
        gevent.joinall(self._greenlets, timeout=2)
        running = [w for w in self.workers if w is not None and w.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait(5)
        log.info("all workers stopped")


def worker_argv(config_path: str | None, host: str, port: int, stream_dir: str,
                log_level: str | None) -> list[str]:
    """The command line of one worker: only the web app, on the parent's address."""
    argv = [sys.executable, "-m", "app.cli"]
    if config_path:
        argv += ["--config", config_path]
    if log_level:
        argv += ["--log-level", log_level]
    return argv + ["serve", "--worker", "--host", host, "--port", str(port),
                   "--stream-dir", stream_dir]
