"""`livestream play`: a file or URL streamed in real time, with a progress line, a warning
when encoding falls behind real time, and an ended playlist whatever happens."""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from app.config import Rendition
from app.runtime import processes
from app.sources.ffmpeg import Pipes, PlayOptions, plan_play, redact_url, shell_line
from app.sources.options import SourceError, format_clock
from app.sources.pipes import SegmenterPipes, segmenters
from app.sources.probe import probe
from app.stream.folder import (
    DEFAULT_PLAYLIST,
    ENDLIST,
    ensure_endlist,
    prepare_stream_dir,
    write_master,
)

log = logging.getLogger(__name__)





@dataclass(frozen=True)
class Progress:
    position: float  # seconds of output written
    speed: float | None
    fps: float | None
    ended: bool


def parse_progress(lines: Iterable[str]) -> Iterator[Progress]:
    """ffmpeg `-progress` blocks (key=value lines ending in progress=...) -> Progress."""
    block: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        block[key] = value.strip()
        if key != "progress":
            continue
        micros = block.get("out_time_us") or block.get("out_time_ms") or "0"
        try:
            position = max(0.0, int(micros) / 1e6)
        except ValueError:
            position = 0.0
        yield Progress(position, _float(block.get("speed", "").rstrip("x")),
                       _float(block.get("fps")), value == "end")
        block = {}


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None


def format_progress(position: float, duration: float | None, speed: float | None,
                    width: int = 30) -> str:
    """'00:01:05 / 01:40:00 [####------]   1.1%  1.00x' (no bar when the length is unknown)."""
    speed_text = f"{speed:5.2f}x" if speed is not None else "  ---x"
    if not duration:
        return f"{format_clock(position)} (live)  {speed_text}"
    fraction = min(1.0, max(0.0, position / duration))
    filled = int(fraction * width)
    bar = "#" * filled + "-" * (width - filled)
    return (f"{format_clock(position)} / {format_clock(duration)} [{bar}] "
            f"{fraction * 100:5.1f}%  {speed_text}")


class SpeedWatch:
    """Notices encoding slower than real time over a window (ffmpeg's own figure is an
    average since the start, which hides a slowdown late in a film)."""

    def __init__(self, threshold: float = 0.95, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.window = window
        self.clock = clock
        self.samples: deque[tuple[float, float]] = deque()
        self.slow_since: float | None = None
        self.warned = False

    def update(self, position: float) -> float | None:
        """Record a position; return the recent speed once a full window is known."""
        now = self.clock()
        self.samples.append((now, position))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        first_time, first_position = self.samples[0]
        if now - first_time < self.window * 0.9:
            return None
        speed = (position - first_position) / (now - first_time)
        if speed < self.threshold:
            self.slow_since = self.slow_since if self.slow_since is not None else now
        else:
            self.slow_since, self.warned = None, False
        return speed

    def should_warn(self) -> bool:
        """True once per slow period (the speed is already an average over a window)."""
        if self.slow_since is None or self.warned:
            return False
        self.warned = True
        return True


# ---------------------------------------------------------------- running ffmpeg

SLOW_ADVICE = ("viewers will see stalls. Try --preset ultrafast, a smaller --size, a lower "
               "--bitrate or --hwaccel; or copy without re-encoding (no --subs/--size).")


def run_ffmpeg(argv: list[str], *, duration: float | None = None, offset: float = 0.0,
               playlist_path: Path | None = None, out: TextIO = sys.stderr,
               stop_timeout: float = 10.0, watch: SpeedWatch | None = None,
               hide: tuple[str, ...] = (), pass_fds: tuple[int, ...] = (),
               started: Callable[[subprocess.Popen], None] | None = None) -> int:
    """Run ffmpeg with a progress line; on exit or Ctrl-C make sure the playlist is ended.

    ffmpeg runs in its own session so a terminal's Ctrl-C reaches only us; we then ask it to
    stop once (SIGINT: it finishes the segment and writes ENDLIST itself) and kill it if it
    does not within `stop_timeout`. Strings in `hide` (an RTMP URL with its key) are masked
    in ffmpeg's messages before they are shown or logged. `started` gets the process as
    soon as it runs (the watch party stops it to pause or seek). `pass_fds`: the stream
    folder's lock, so ffmpeg holds it until its last segment is written.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True, preexec_fn=processes.dies_with_us(),
                            pass_fds=pass_fds)
    if started is not None:
        started(proc)
    errors: deque[str] = deque(maxlen=20)
    interactive = out.isatty()
    watch = watch or SpeedWatch()
    reader = threading.Thread(target=_collect_stderr, args=(proc.stderr, errors, hide),
                              daemon=True)
    reader.start()
    interrupted = False
    last_line = 0.0
    try:
        for progress in parse_progress(proc.stdout):
            position = progress.position + offset
            if duration and position > duration:
                position %= duration  # --loop: where we are in the current pass
            line = format_progress(position, duration, progress.speed)
            recent = watch.update(progress.position)
            if recent is not None and watch.should_warn():
                _print(out, f"warning: encoding runs at {recent:.2f}x real time; "
                            + SLOW_ADVICE, interactive)
            now = time.monotonic()
            if interactive:
                out.write("\r" + line + "\x1b[K")
                out.flush()
            elif now - last_line >= 5 or progress.ended:
                out.write(line + "\n")
                out.flush()
                last_line = now
        proc.wait()
    except KeyboardInterrupt:
        interrupted = True
        _print(out, "stopping (ffmpeg finishes the current segment)...", interactive)
        processes.stop(proc, stop_timeout, signal.SIGINT)
    finally:
        if proc.poll() is None:
            processes.stop(proc, stop_timeout, signal.SIGINT)
        reader.join(timeout=2)
        if interactive:
            out.write("\n")
    if playlist_path is not None and ensure_endlist(playlist_path):
        log.info("ffmpeg did not end the playlist; added %s", ENDLIST)
    if interrupted:
        return 130
    if proc.returncode not in (0, 255):
        detail = "\n  ".join(errors) or "(no message)"
        out.write(f"ffmpeg stopped with status {proc.returncode}:\n  {detail}\n")
    return proc.returncode


def _print(out: TextIO, message: str, interactive: bool) -> None:
    out.write(("\r\x1b[K" if interactive else "") + message + "\n")
    out.flush()


def _collect_stderr(stream, errors: deque, hide: tuple[str, ...]) -> None:
    """Keep ffmpeg's last messages (masked) for the error report."""
    for line in stream:
        line = line.rstrip()
        for secret in hide:
            line = line.replace(secret, redact_url(secret))
            key = secret.rpartition("/")[2]
            if len(key) >= 8:
                line = line.replace(key, "***")
        if line:
            errors.append(line)
            log.debug("ffmpeg: %s", line)


# ---------------------------------------------------------------- `livestream play`

def play(options: PlayOptions, stream_dir: Path, playlist: str = DEFAULT_PLAYLIST,
         dry_run: bool = False, out: TextIO = sys.stderr,
         renditions: list[Rendition] | None = None, pass_fds: tuple[int, ...] = (),
         part_ms: int = 0) -> int:
    """Check the input, explain the plan, then stream it in real time: with `part_ms`,
    fragment by fragment through our segmenters (app/sources/pipes.py)."""
    info = probe(options.source)
    plan = plan_play(info, options, stream_dir, playlist, renditions=renditions)
    if options.hwaccel and not dry_run:
        _check_encoder(plan.argv[plan.argv.index("-c:v") + 1])
    if dry_run:
        print(shell_line(plan.argv))
        return 0
    target = redact_url(options.to) if options.to else str(Path(stream_dir) / playlist)
    video = info.video[0]
    audio = "none"
    if plan.audio:
        audio = f"{plan.audio.describe()} ({'copied' if plan.copy_audio else 'encoded'})"
    out.write(f"playing {info.source} ({format_clock(info.duration)}) -> {target}\n"
              f"  video: {video.describe()} ({'copied' if plan.copy_video else 'encoded'})\n"
              f"  audio: {audio}\n"
              f"  subtitles: {plan.subtitles}\n")
    out.writelines(f"  note: {note}\n" for note in plan.notes)
    if not options.to:
        prepare_stream_dir(Path(stream_dir), playlist)
        if plan.variants:
            write_master(Path(stream_dir), list(plan.variants))
    if part_ms and not options.to:
        piped = SegmenterPipes(segmenters(Path(stream_dir), playlist,
                                          [v.name for v in plan.variants[1:]]))
        pipes = Pipes(tuple(piped.open()), part_ms)
        argv = plan_play(info, options, stream_dir, playlist, renditions=renditions,
                         pipes=pipes).argv
        try:
            return run_ffmpeg(argv, duration=info.duration, offset=options.start,
                              out=out, pass_fds=pass_fds + pipes.fds,
                              started=lambda _: piped.spawned())
        finally:
            piped.close()  # the segmenters write what came, then ENDLIST
    playlist_path = None if options.to else Path(stream_dir) / playlist
    status = run_ffmpeg(plan.argv, duration=info.duration, offset=options.start,
                        playlist_path=playlist_path, out=out, pass_fds=pass_fds,
                        hide=(options.to,) if options.to else ())
    for variant in plan.variants[1:]:  # the lower renditions end with the top one
        ensure_endlist(Path(stream_dir) / variant.playlist)
    return status


def _check_encoder(encoder: str) -> None:
    done = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], check=False,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if f" {encoder} " not in done.stdout:
        raise SourceError(f"--hwaccel: this ffmpeg has no {encoder} encoder; "
                          "see `ffmpeg -encoders`")
