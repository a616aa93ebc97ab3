"""A source's last word: its playlists end (ENDLIST) even when the source is killed outright.

Ctrl-C, SIGTERM and SIGHUP are caught and end the stream in order. SIGKILL (or the OOM
killer) cannot be caught: ffmpeg then stops on its own (PR_SET_PDEATHSIG, see
app/runtime/processes.py), but a watch party's ffmpeg never writes ENDLIST (the party goes on
across runs), so viewers would wait on a "paused" stream. This small process, started by the
source, waits for the source's pipe to close (however the source ends), then for the folder
lock (ffmpeg holds it until its last segment is written), and ends the playlists and removes
the party's markers. When a new source took the folder first, it touches nothing.
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from app.stream import folder, lock

WAIT_FOR_WRITER = 20.0  # seconds ffmpeg may take to finish its last segment


def start(stream_dir: Path, playlists: list[str]) -> Callable[[], None]:
    """Start the guard for these playlists in `stream_dir`; returns what to call on a normal
    end (the guard then finds the playlists ended already and leaves)."""
    guard = subprocess.Popen(
        [sys.executable, "-m", "app.sources.last_word", str(stream_dir), *playlists],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)

    def done() -> None:
        guard.stdin.close()
        try:  # normally at once; when a new source took the folder, the guard leaves later
            guard.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass

    return done


def end_when_orphaned(stream_dir: Path, playlists: list[str]) -> None:
    sys.stdin.buffer.read()  # returns when the source closes the pipe or dies
    deadline = time.monotonic() + WAIT_FOR_WRITER
    while True:
        try:
            held = lock.take(stream_dir, "ending the playlist of a source that stopped")
            break
        except lock.FolderBusy:
            if time.monotonic() > deadline:
                return
            time.sleep(0.2)
    with held:
        for name in playlists:
            folder.ensure_endlist(stream_dir / name)
        for name in (folder.HOLD_FILE, folder.COUNTDOWN_FILE):
            (stream_dir / name).unlink(missing_ok=True)


if __name__ == "__main__":
    end_when_orphaned(Path(sys.argv[1]), sys.argv[2:])
