"""The controller: ffmpeg for the current item from a position, restarted on every control.

Each run continues the one stream: media time goes on (`-output_ts_offset` past the end of
what is written, and `movflags=+frag_discont` so the fragments carry it), and every run
encodes to the same size, frame rate and audio format so ffmpeg writes a byte-identical init
segment: the watcher sees one stream, and /stream.mp4 responses simply go on. With
`stream.part_ms` (the default) every run's outputs go through pipes into one set of
segmenters that live as long as the party (app/sources/pipes.py): they number on and end
the playlists only when the party ends. With part_ms 0, ffmpeg's HLS muxer writes the
folder: segment numbers go on with `-start_number` and `omit_endlist` keeps ENDLIST out
between runs. Between runs (and while paused) the folder's hold marker keeps the stream
online.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from app.config import Rendition
from app.runtime import processes, signals
from app.sources.ffmpeg import (
    DEFAULT_PRESET,
    Encoding,
    Pipes,
    Plan,
    PlayOptions,
    audio_encoder_args,
    plan_play,
    redact_url,
)
from app.sources.options import SourceError, format_clock
from app.sources.party import control
from app.sources.party.queue import Item
from app.sources.party.timeline import listed_last, seek_target, written_end
from app.sources.pipes import SegmenterPipes, segmenters
from app.sources.play import run_ffmpeg
from app.sources.probe import MediaInfo, probe
from app.sources.segmenter import Segmenter
from app.stream.folder import (
    COUNTDOWN_FILE,
    DEFAULT_PLAYLIST,
    HOLD_FILE,
    PLAYLIST_SIZE,
    TITLE_FILE,
    ensure_endlist,
    prepare_stream_dir,
    rendition_files,
    write_marker,
    write_master,
    write_title,
)

log = logging.getLogger(__name__)

HOLD_REFRESH = 5.0  # rewrite the hold marker this often (the watcher drops it after 15 s)
TIMESTAMP_GAP = 0.05  # past the written end: room for the AAC encoder's priming samples
DEFAULT_FPS = 25.0


def run_argv(info: MediaInfo, item: Item, base: PlayOptions, position: float,
             offset: float, start_number: int, size: tuple[int, int], fps: float,
             stream_dir: Path, playlist: str,
             renditions: list[Rendition] | None = None, pipes: Pipes | None = None) -> list[str]:
    """The ffmpeg command for one run: plan_play's (every configured rendition), held to the
    party's one output format, each output continuing the numbering and the media time."""
    return _run_plan(info, item, base, position, offset, start_number, size, fps, stream_dir,
                     playlist, renditions, pipes)[0]


def _run_plan(info: MediaInfo, item: Item, base: PlayOptions, position: float,
              offset: float, start_number: int, size: tuple[int, int], fps: float,
              stream_dir: Path, playlist: str,
              renditions: list[Rendition] | None,
              pipes: Pipes | None = None) -> tuple[list[str], Plan]:
    options = replace(base, source=item.source, subs=item.subs, audio=item.audio,
                      start=position, size=size, preset=base.preset or DEFAULT_PRESET,
                      loop=False)
    plan = plan_play(info, options, stream_dir, playlist, renditions=renditions, pipes=pipes)
    argv = list(plan.argv)
    if plan.copy_audio:  # copied AAC keeps the file's rate and layout: the init would change
        at = argv.index("-c:a")
        argv[at:at + 4] = audio_encoder_args(Encoding())
    # Every output (the top one, then each lower rendition) begins its shared options at
    # -map_metadata; each gets the same frame rate, time offset and segment numbering.
    outputs = [i for i, arg in enumerate(argv) if arg == "-map_metadata"]
    for out in reversed(outputs):
        extra = ["-r", f"{fps:g}", "-output_ts_offset", f"{offset:.3f}"]
        if not base.to and pipes is None:
            at = argv.index("-hls_flags", out)
            argv[at + 1] += "+omit_endlist"
            at = argv.index("-f", out)
            argv[at + 2:at + 2] = ["-hls_segment_options", "movflags=+frag_discont",
                                   "-start_number", str(start_number)]
        argv[out:out] = extra
    return argv, plan


@dataclass
class _State:
    index: int = 0
    position: float = 0.0  # where in the current item the next run starts (or runs from)
    paused: bool = False
    running_since: float | None = None  # monotonic time the current run started
    starts_at: float | None = None


class Party:
    """Plays the queue as one stream and obeys the control channel."""

    def __init__(self, items: list[Item], base: PlayOptions, stream_dir: Path,
                 state_dir: Path, playlist: str = DEFAULT_PLAYLIST, out: TextIO = sys.stderr,
                 starts_at: float | None = None, renditions: list[Rendition] | None = None,
                 pass_fds: tuple[int, ...] = (), part_ms: int = 0):
        self.items = items
        self.part_ms = 0 if base.to else part_ms
        self.segmenters: list[Segmenter] = []  # with part_ms: for the whole party
        self.renditions = list(renditions or [])
        self.variants: tuple = ()  # the master playlist, from the first item's plan
        self.base = base
        self.pass_fds = pass_fds  # the stream folder's lock, held by each ffmpeg too
        self.stream_dir = Path(stream_dir)
        self.state_dir = Path(state_dir)
        self.playlist = playlist
        self.out = out
        self.infos: list[MediaInfo] = []
        self.state = _State(position=items[0].start if items else 0.0, starts_at=starts_at)
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.pending: list[tuple[str, str]] = []
        self.proc: subprocess.Popen | None = None
        self.next_number = 0
        self.offset = 0.0
        self.hold = ""
        self.hold_written = 0.0
        self.server = control.ControlServer(self.state_dir, self.command)
        self.last_change: float | None = None  # monotonic time the last control arrived
        self.stopping = threading.Event()  # SIGTERM: end like Ctrl-C (ENDLIST, no marker)

    # --- set-up -----------------------------------------------------------------------

    def check(self) -> None:
        """Probe every item first: a typo in item 7 should not stop the party at 11 pm."""
        self.infos = [probe(item.source) for item in self.items]
        first = self.infos[0]
        for item, info in zip(self.items, self.infos, strict=True):
            if not info.video:
                raise SourceError(f"{item.source}: has no video track; play needs a picture")
            if bool(info.audio) != bool(first.audio):
                raise SourceError(f"{item.source}: every item needs an audio track, or none "
                                  f"does ({self.items[0].source} "
                                  f"{'has' if first.audio else 'has none'})")
            plan = plan_play(info, replace(self.base, source=item.source, subs=item.subs,
                                           audio=item.audio, start=item.start, loop=False,
                                           preset=self.base.preset or DEFAULT_PRESET,
                                           size=self.size), self.stream_dir, self.playlist,
                             renditions=self.renditions)
            if not self.variants:
                self.variants = plan.variants  # the same size for every item: the same list

    @property
    def size(self) -> tuple[int, int]:
        if self.base.size:
            return self.base.size
        video = self.infos[0].video[0]
        return (max(2, video.width // 2 * 2), max(2, video.height // 2 * 2))

    @property
    def fps(self) -> float:
        fps = self.infos[0].video[0].fps
        return fps if 1 <= fps <= 120 else DEFAULT_FPS

    # --- the control channel (runs in the control thread) ----------------------------

    def command(self, name: str, argument: str) -> dict:
        """Validate and queue a command; stop the running ffmpeg when it moves the stream."""
        if name == "status":
            return {"ok": True, "status": self.status()}
        if name == "seek":
            try:
                seek_target(argument or "?", 0.0, None)
            except SourceError as exc:
                raise control.ControlError(f"seek {argument}: {exc}") from exc
        with self.lock:
            if self.state.starts_at is not None:
                raise control.ControlError("the party has not started yet (countdown); "
                                           "controls work once it plays")
            if name == "pause" and self.state.paused:
                return {"ok": True, "status": self.status(), "note": "already paused"}
            if name == "resume" and not self.state.paused:
                return {"ok": True, "status": self.status(), "note": "not paused"}
            self.last_change = time.monotonic()
            self.pending.append((name, argument))
            proc = self.proc
        if name == "pause" or (proc is not None and name != "resume"):
            self._hold("host" if name == "pause" else "seek")
        if proc is not None:
            processes.stop(proc, 10.0, signal.SIGINT)
        self.wake.set()
        deadline = time.monotonic() + 10  # answer with the new state once the loop took it
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending:
                    break
            time.sleep(0.02)
        return {"ok": True, "status": self.status()}

    def status(self) -> dict:
        s = self.state
        position = s.position
        if s.running_since is not None:
            position += time.monotonic() - s.running_since
        items = [{"name": item.name, "duration": info.duration}
                 for item, info in zip(self.items, self.infos, strict=False)]
        return {"index": s.index, "position": round(position, 1), "paused": s.paused,
                "items": items, "starts_at": s.starts_at,
                "state": ("countdown" if s.starts_at and s.starts_at > time.time()
                          else "paused" if s.paused else "playing")}

    # --- the main loop ------------------------------------------------------------------

    def run(self) -> int:
        self.server.start()  # first: refused while another party plays, its folder untouched
        title_before = self._title()
        if not self.base.to:
            prepare_stream_dir(self.stream_dir, self.playlist)
            (self.stream_dir / HOLD_FILE).unlink(missing_ok=True)
            if self.variants:
                write_master(self.stream_dir, list(self.variants))
                self.out.write("renditions: " + ", ".join(v.name for v in self.variants)
                               + " (every one continues across pauses and seeks)\n")
        previous = signals.on_stop(self._terminate)
        self.out.write(f"watch party: {len(self.items)} item(s); control it with `livestream "
                       f"party pause|resume|seek +30|next|prev|status` or on /broadcaster\n")
        try:
            self._countdown()
            status = self._loop()
        except KeyboardInterrupt:
            status = 130
        finally:
            signals.restore(previous)
            self.server.stop()
            if not self.base.to:
                self._hold("")
                (self.stream_dir / COUNTDOWN_FILE).unlink(missing_ok=True)
                for segmenter in self.segmenters:
                    segmenter.end()
                ensure_endlist(self.stream_dir / self.playlist)
                for variant in self.variants[1:]:  # the lower renditions end with the top
                    ensure_endlist(self.stream_dir / variant.playlist)
                self._restore_title(title_before)
        return status

    def _title(self) -> str | None:
        """The stream's own title, put back when the party ends (items name themselves)."""
        try:
            return (self.stream_dir / TITLE_FILE).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None

    def _restore_title(self, title: str | None) -> None:
        if title:
            write_title(self.stream_dir, title)
        else:
            (self.stream_dir / TITLE_FILE).unlink(missing_ok=True)

    def _countdown(self) -> None:
        starts_at = self.state.starts_at
        if not starts_at:
            return
        if not self.base.to:
            write_marker(self.stream_dir, COUNTDOWN_FILE, f"{starts_at:.0f}")
        self.out.write(f"starting in {format_clock(starts_at - time.time())}\n")
        while time.time() < starts_at and not self.stopping.is_set():
            time.sleep(min(1.0, max(0.0, starts_at - time.time())))
        with self.lock:
            self.state.starts_at = None
        (self.stream_dir / COUNTDOWN_FILE).unlink(missing_ok=True)

    def _loop(self) -> int:
        failures = 0
        while self.state.index < len(self.items):
            if self.stopping.is_set():
                return 143
            with self.lock:  # taken and applied at once: a status never sees it half done
                commands, self.pending = self.pending, []
                if commands:
                    self._apply(commands)
            if commands:
                continue
            if self.state.paused:
                self._hold("host")
                self.wake.wait(HOLD_REFRESH)
                self.wake.clear()
                continue
            status = self._run_current()
            if status == 130 or self.stopping.is_set():
                return 143 if self.stopping.is_set() else 130
            with self.lock:
                moved = bool(self.pending)
            if moved:
                continue
            if status not in (0, 255) and failures < 3:
                failures += 1  # a broken item: skip it rather than stop the party
            else:
                failures = 0
            self._hold("seek")  # the next item starts: stay online across the gap
            with self.lock:
                self.state.index += 1
                if self.state.index < len(self.items):
                    self.state.position = self.items[self.state.index].start
        return 0

    def _run_current(self) -> int:
        index, position = self.state.index, self.state.position
        item, info = self.items[index], self.infos[index]
        piped, pipes = None, None
        if self.part_ms:
            if not self.segmenters:
                self.segmenters = segmenters(self.stream_dir, self.playlist,
                                             [v.name for v in self.variants[1:]])
            piped = SegmenterPipes(self.segmenters)
            pipes = Pipes(tuple(piped.open(last=False)), self.part_ms)
        argv = run_argv(info, item, self.base, position, self.offset, self.next_number,
                        self.size, self.fps, self.stream_dir, self.playlist, self.renditions,
                        pipes)
        if not self.base.to:
            write_title(self.stream_dir, item.name if len(self.items) == 1
                        else f"{item.name} ({index + 1}/{len(self.items)})")
        target = redact_url(self.base.to) if self.base.to else self.playlist
        self.out.write(f"[{index + 1}/{len(self.items)}] {item.name} from "
                       f"{format_clock(position)} -> {target}\n")
        release = threading.Thread(target=self._release_hold_when_written,
                                   args=(self.next_number,), daemon=True)
        release.start()
        with self.lock:
            self.state.running_since = time.monotonic()
        def started(proc: subprocess.Popen) -> None:
            if piped is not None:
                piped.spawned()
            self._started(proc)

        try:
            status = run_ffmpeg(argv, duration=info.duration, offset=position,
                                out=self.out, started=started,
                                pass_fds=self.pass_fds + (pipes.fds if pipes else ()),
                                hide=(self.base.to,) if self.base.to else ())
        finally:
            if piped is not None:
                piped.close()  # every fragment ffmpeg wrote is in the folder
            with self.lock:
                self.proc = None
                elapsed = time.monotonic() - (self.state.running_since or time.monotonic())
                self.state.running_since = None
        self._account(position, elapsed)
        return status

    def _terminate(self) -> None:
        """SIGTERM (systemd, kill) or SIGHUP (the terminal closed): stop ffmpeg and let the
        main loop end the stream."""
        self.stopping.set()
        self.wake.set()
        with self.lock:
            proc = self.proc
        if proc is not None:
            processes.stop(proc, 10.0, signal.SIGINT)

    def _started(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.proc = proc
            stop_now = bool(self.pending)
        if stop_now:  # a control arrived while this run was being set up
            processes.stop(proc, 10.0, signal.SIGINT)

    def _account(self, position: float, elapsed: float) -> None:
        """After a run: where the stream ends now, and where in the item we stopped."""
        if self.base.to:  # nothing to read back: the wall clock is the measure
            self.offset += elapsed + TIMESTAMP_GAP
            self.state.position = position + elapsed
            return
        end = written_end(self.stream_dir, self.playlist)
        if end is None or end[0] < self.next_number:
            return  # this run wrote nothing: the next one starts where this one did
        last, media_end = end
        with self.lock:
            self.state.position = position + max(0.0, media_end - self.offset)
        for variant in self.variants[1:]:  # a lower rendition may have cut one more segment
            lower = listed_last(self.stream_dir, variant.playlist)
            if lower is not None:
                last = max(last, lower)
        self.next_number = last + 1
        self.offset = media_end + TIMESTAMP_GAP
        self._clean_old_segments()

    def _apply(self, commands: list[tuple[str, str]]) -> None:
        for name, argument in commands:
            s = self.state
            duration = self.infos[s.index].duration
            with self.lock:
                if name == "pause":
                    s.paused = True
                elif name == "resume":
                    s.paused = False
                elif name == "seek":
                    s.position = seek_target(argument, s.position, duration)
                elif name == "next":
                    if s.index + 1 < len(self.items):
                        s.index += 1
                        s.position = self.items[s.index].start
                    else:
                        s.position = max(0.0, (duration or s.position) - 1.0)
                elif name == "prev":
                    s.index = max(0, s.index - 1)
                    s.position = self.items[s.index].start
            log.info("party: %s %s -> item %d at %s%s", name, argument, s.index + 1,
                     format_clock(s.position), " (paused)" if s.paused else "")
        if self.state.paused:
            self._hold("host")
        elif self.hold == "host":
            self._hold("seek")  # resuming: hold until the new run has written a segment

    # --- the hold marker ------------------------------------------------------------------

    def _hold(self, reason: str) -> None:
        if self.base.to:
            return
        path = self.stream_dir / HOLD_FILE
        if not reason:
            path.unlink(missing_ok=True)
        elif reason != self.hold or time.monotonic() - self.hold_written > HOLD_REFRESH / 2:
            write_marker(self.stream_dir, HOLD_FILE, reason)
            self.hold_written = time.monotonic()
        self.hold = reason

    def _release_hold_when_written(self, first_number: int) -> None:
        """Drop the hold once the new run's first segment is listed (bounded wait)."""
        deadline = time.monotonic() + 60
        while self.hold and time.monotonic() < deadline:
            with self.lock:
                if self.pending or self.state.paused:
                    return
            last = listed_last(self.stream_dir, self.playlist)
            if last is not None and last >= first_number:
                with self.lock:
                    if not self.pending and not self.state.paused:
                        self._hold("")
                return
            self._hold(self.hold)  # keep it fresh while ffmpeg starts
            time.sleep(0.05)

    def _clean_old_segments(self) -> None:
        """ffmpeg deletes only its own run's old segments; drop earlier runs' ones too."""
        keep_from = self.next_number - 2 * PLAYLIST_SIZE
        patterns = ["stream%d.m4s"] + [rendition_files(v.name, False).segment_pattern
                                       for v in self.variants[1:]]
        for pattern in patterns:
            head, tail = pattern.split("%d")
            for path in self.stream_dir.glob(f"{head}*{tail}"):
                number = path.name[len(head):len(path.name) - len(tail)]
                if number.isdigit() and int(number) < keep_from:
                    path.unlink(missing_ok=True)


def describe(items: list[Item], infos: list[MediaInfo]) -> str:
    lines = []
    for number, (item, info) in enumerate(zip(items, infos, strict=True), 1):
        extra = [f"subs {item.subs}"] if item.subs is not None else []
        extra += [f"audio {item.audio}"] if item.audio is not None else []
        lines.append(f"  {number}. {item.name} ({format_clock(info.duration)})"
                     + (f" [{', '.join(extra)}]" if extra else ""))
    return "\n".join(lines)

