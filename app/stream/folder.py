"""The stream folder contract: the names every source writes and every reader expects.

ffmpeg (stream.sh, `livestream play`, the RTMP ingest) and OBS write fMP4 HLS into one folder:
an init segment, numbered media segments and a playlist, ended with ENDLIST when the broadcast
is over. The watcher, the file views and the sources all take the names from here.
"""
from __future__ import annotations

import os
from pathlib import Path

SEGMENT_SECONDS = 2
PLAYLIST_SIZE = 15
INIT_NAME = "init.mp4"
SEGMENT_PATTERN = "stream%d.m4s"
ENDLIST = "#EXT-X-ENDLIST"



def prepare_stream_dir(stream_dir: Path, playlist: str = "stream.m3u8") -> None:
    """A new broadcast starts clean: stale segments from the last one must not be served."""
    stream_dir = Path(stream_dir)
    stream_dir.mkdir(parents=True, exist_ok=True)
    for path in stream_dir.iterdir():
        name = path.name
        if (name in (INIT_NAME, playlist, playlist + ".tmp")
                or (name.startswith("stream") and name.endswith((".m4s", ".tmp")))):
            path.unlink(missing_ok=True)


def ensure_endlist(playlist_path: Path) -> bool:
    """Make sure viewers see 'ended', not a stalled stream. True when we had to add it."""
    path = Path(playlist_path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return False
    if ENDLIST in text.split():
        return False
    temp = path.with_name(path.name + ".end.tmp")
    temp.write_text(text.rstrip("\n") + "\n" + ENDLIST + "\n")
    os.replace(temp, path)  # atomic, like ffmpeg's temp_file flag
    return True


