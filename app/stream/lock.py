"""One source writes a stream folder at a time.

Two writers in one folder (the demo and a `play`, two `play`s, an edge and the ingest) each
clean the folder and number segments their own way, so the watcher sees a restart every few
seconds and every viewer is told to reload. Every source therefore takes this lock before it
touches the folder, and a second one is refused with the name of the first.

The lock is `flock` on `.source.lock` in the folder: the kernel drops it when the holder dies,
however it dies, so a stale lock needs no clean-up and is simply taken over. The file's one
line says who holds it (pid and command) for the refusal message. `stream.sh` takes the same
lock with util-linux's `flock`. OBS recording straight into the folder cannot take it; the
watcher notices two writers by their playlists instead (app/stream/watcher.py).
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = ".source.lock"
HOLDER_MAX = 300  # bytes of the holder line we read back


class FolderBusy(Exception):
    """Another live source writes this folder; the message names it and how to stop it."""


class FolderLock:
    """Held from `take()` until `release()` (or until this process ends)."""

    def __init__(self, stream_dir: Path, fd: int):
        self.stream_dir = stream_dir
        self.fd = fd

    def describe(self, who: str) -> None:
        """Say more about the holder once it is known (the ingest: the publisher's encoder)."""
        if self.fd >= 0:
            _write_holder(self.fd, who)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *_exc) -> None:
        self.release()


def take(stream_dir: Path, who: str) -> FolderLock:
    """Lock `stream_dir` for this process as `who` (e.g. "livestream play movie.mkv").

    Raises FolderBusy, before anything in the folder is touched, when a live process holds it.
    """
    stream_dir = Path(stream_dir)
    stream_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(stream_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise FolderBusy(busy_message(stream_dir, holder)) from None
    except BaseException:
        os.close(fd)
        raise
    _write_holder(fd, who)
    return FolderLock(stream_dir, fd)


def _write_holder(fd: int, who: str) -> None:
    who = "".join(ch for ch in who if ch.isprintable())
    line = f"pid {os.getpid()}: {who} (since {time.strftime('%H:%M:%S', time.gmtime())} UTC)"
    os.ftruncate(fd, 0)
    os.pwrite(fd, line.encode("utf-8", "replace")[:HOLDER_MAX] + b"\n", 0)


def holder(stream_dir: Path) -> str | None:
    """Who writes `stream_dir` now, or None when nobody holds the lock."""
    try:
        fd = os.open(Path(stream_dir) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        return None
    finally:
        os.close(fd)


def busy_message(stream_dir: Path, holder_line: str) -> str:
    pid = holder_line.split(":", 1)[0].removeprefix("pid ").strip()
    how = (f"stop it first (Ctrl-C in its terminal, or `kill {pid}`)" if pid.isdigit()
           else "stop it first")
    return (f"{stream_dir} is already being written by another source: {holder_line or '?'}. "
            f"Two sources in one folder would restart the stream for every viewer again and "
            f"again; {how}, or give this one its own folder (--stream-dir).")


def _read_holder(fd: int) -> str:
    try:
        data = os.pread(fd, HOLDER_MAX, 0)
    except OSError:
        return ""
    return data.decode("utf-8", "replace").strip().splitlines()[0] if data.strip() else ""
