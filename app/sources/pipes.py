"""ffmpeg's outputs through pipes into our segmenters: the route that gives sub-second live.

`livestream play`, the watch party and the RTMP ingest run ffmpeg with one fragmented-MP4
output per rendition (a fragment every `stream.part_ms`), each written to a pipe this process
made (`pipe:N`, inherited by ffmpeg), and a thread here reads each pipe into a Segmenter
(app/sources/segmenter.py), which writes the rendition's parts, segments and playlist as
each fragment comes. ffmpeg's own HLS muxer writes a segment only when it ends, about 2 s
late (docs/benchmarks.md, "Sub-second live").
"""
from __future__ import annotations

import logging
import os
import threading
import typing
from pathlib import Path

from app.sources.segmenter import InputError, Segmenter
from app.stream.folder import PLAYLIST_SIZE, SEGMENT_SECONDS, rendition_files

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 16


def segmenters(stream_dir: Path, playlist: str, lower: list[str],
               segment_seconds: float = SEGMENT_SECONDS) -> list[Segmenter]:
    """One segmenter per rendition, the top one first, writing the files every source
    writes (app/stream/folder.py)."""
    names = [rendition_files("", True, playlist)]
    names += [rendition_files(name, False) for name in lower]
    return [Segmenter(stream_dir, files, segment_seconds, PLAYLIST_SIZE) for files in names]


class SegmenterPipes:
    """One run of ffmpeg: a pipe per segmenter, read in a thread until ffmpeg closes it.

        pipes = SegmenterPipes(segmenters)
        fds = pipes.open()          # ffmpeg writes pipe:fds[i] (pass them with pass_fds);
                                    # open(last=False): the input ends, the stream goes on
        ... start ffmpeg ...; pipes.spawned()
        ... ffmpeg ends ...;  pipes.close()
    """

    def __init__(self, outputs: list[Segmenter]):
        self.outputs = outputs
        self.threads: list[threading.Thread] = []
        self.write_ends: list[int] = []

    def open(self, last: bool = True) -> list[int]:
        """The write ends, for ffmpeg. `last`: the runs' last input ends the playlists."""
        for segmenter in self.outputs:
            read_end, write_end = os.pipe()
            self.write_ends.append(write_end)
            thread = threading.Thread(target=self._read, args=(segmenter, read_end, last),
                                      name=f"segmenter {segmenter.files.playlist}",
                                      daemon=True)
            thread.start()
            self.threads.append(thread)
        return list(self.write_ends)

    def spawned(self) -> None:
        """ffmpeg holds its own copies now: ours would keep the pipes open after it ends."""
        for fd in self.write_ends:
            os.close(fd)
        self.write_ends = []

    def close(self, timeout: float = 30.0) -> None:
        """Wait until every segmenter has written what ffmpeg sent (ffmpeg has ended)."""
        self.spawned()
        for thread in self.threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s did not finish within %.0f s", thread.name, timeout)

    def _read(self, segmenter: Segmenter, fd: int, last: bool) -> None:
        stream = _reader(fd)
        try:
            segmenter.run(stream, last=last)
        except InputError as exc:
            log.warning("segmenter for %s: %s", segmenter.files.playlist, exc)
            while stream.read(READ_CHUNK):
                pass  # drain, so ffmpeg never blocks on a pipe nobody reads
        finally:
            stream.close()


def _reader(fd: int) -> typing.BinaryIO:
    """The pipe as a file. Under gevent's monkey-patching (the CLI patches everything) our
    "threads" are greenlets: a plain blocking read would stop them all, and ffmpeg, blocked
    on another rendition's full pipe, would never write the one being read."""
    from gevent import monkey

    if monkey.is_module_patched("threading"):
        from gevent.fileobject import FileObjectPosix

        return FileObjectPosix(fd, "rb", bufsize=READ_CHUNK)
    return os.fdopen(fd, "rb", buffering=READ_CHUNK)
