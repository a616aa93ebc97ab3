"""Times the host types (seek targets, start times) and where the written stream ends."""
from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

from app.sources.options import SourceError, parse_time
from app.stream import playlist as hls

MAX_WAIT = 7 * 24 * 3600.0  # a countdown further away than a week is a typo


def seek_target(spec: str, position: float, duration: float | None) -> float:
    """'+30', '-10' (relative) or '1:02:03' / '95' (absolute) -> a position in the item."""
    spec = spec.strip()
    if spec[:1] in "+-" and len(spec) > 1:
        target = position + (1 if spec[0] == "+" else -1) * parse_time(spec[1:])
    else:
        target = parse_time(spec)
    target = max(0.0, target)
    if duration:
        target = min(target, max(0.0, duration - 1.0))
    return target


def parse_duration(text: str) -> float:
    """'5m', '90s', '1h30m', '2h' or a plain clock ('5:00') -> seconds."""
    text = text.strip().lower()
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if match and any(match.groups()):
        hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return hours * 3600 + minutes * 60 + seconds
    return parse_time(text)


def start_time(start_at: str | None, wait: str | None, now: float | None = None) -> float | None:
    """--start-at HH:MM (today, or tomorrow once passed; local time) or --in 5m -> unix time."""
    now = time.time() if now is None else now
    if start_at and wait:
        raise SourceError("use --start-at or --in, not both")
    if wait:
        seconds = parse_duration(wait)
    elif start_at:
        match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", start_at.strip())
        if not match or int(match[1]) > 23 or int(match[2]) > 59:
            raise SourceError(f"--start-at {start_at}: expected a time of day such as 20:30")
        today = datetime.fromtimestamp(now)
        moment = today.replace(hour=int(match[1]), minute=int(match[2]),
                               second=int(match[3] or 0), microsecond=0)
        if moment.timestamp() <= now:
            moment += timedelta(days=1)
        seconds = moment.timestamp() - now
    else:
        return None
    if seconds > MAX_WAIT:
        raise SourceError("the start is more than a week away; check --start-at/--in")
    return now + seconds


def written_end(stream_dir: Path, playlist: str) -> tuple[int, float] | None:
    """(last segment number, media time where it ends) of what is in the folder, read from
    the last listed segment with ffprobe; None when nothing is written yet."""
    try:
        parsed = hls.parse((Path(stream_dir) / playlist).read_text())
    except (OSError, hls.PlaylistError, UnicodeDecodeError):
        return None
    if not parsed.entries or parsed.init_uri is None:
        return None
    last = parsed.entries[-1]
    try:
        data = (Path(stream_dir) / parsed.init_uri).read_bytes()
        data += (Path(stream_dir) / last.uri).read_bytes()
    except OSError:
        return None
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=pts_time,dts_time,duration_time",
         "-of", "csv=p=0", "-i", "pipe:0"], input=data, capture_output=True, check=False,
        timeout=30)
    end = 0.0
    for line in done.stdout.decode("ascii", "replace").splitlines():
        values = []
        for part in line.split(","):
            try:
                values.append(float(part))
            except ValueError:
                values.append(None)
        if len(values) < 3 or values[2] is None:
            continue
        for stamp in values[:2]:
            if stamp is not None:
                end = max(end, stamp + values[2])
    return last.sequence, end


def listed_last(stream_dir: Path, playlist: str) -> int | None:
    """The number of the newest segment the playlist lists (cheap: no ffprobe)."""
    try:
        parsed = hls.parse((Path(stream_dir) / playlist).read_text())
    except (OSError, hls.PlaylistError, UnicodeDecodeError):
        return None
    return parsed.entries[-1].sequence if parsed.entries else None
