"""Everything that feeds `stream/`: ffmpeg command builders, input probing and the runner.

Builders are pure functions returning argv lists, so they can be read, tested and printed
(`livestream play --dry-run`) without running anything. Every source shares one set of HLS
output options (fMP4, 2 s segments, a keyframe at every segment start, metadata stripped),
the same ones `stream.sh` uses, so the watcher sees the same layout whoever writes it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from app.runtime import processes

log = logging.getLogger(__name__)

SEGMENT_SECONDS = 2
PLAYLIST_SIZE = 15
INIT_NAME = "init.mp4"
SEGMENT_PATTERN = "stream%d.m4s"
ENDLIST = "#EXT-X-ENDLIST"
DEFAULT_PRESET = "veryfast"
DEFAULT_VIDEO_KBPS = 1500
DEFAULT_AUDIO_KBPS = 128
SUBTITLE_FILE_TYPES = (".srt", ".ass", ".ssa", ".vtt")
# Picture-based subtitle codecs: libass cannot draw them, so they are overlaid instead.
BITMAP_SUBTITLES = {"hdmv_pgs_subtitle", "dvd_subtitle", "dvb_subtitle", "xsub"}
COPYABLE_PIXEL_FORMATS = {"yuv420p", "yuvj420p"}  # what every browser decodes
HARDWARE_ENCODERS = {
    "vaapi": "h264_vaapi",
    "nvenc": "h264_nvenc",
    "videotoolbox": "h264_videotoolbox",
    "qsv": "h264_qsv",
    "v4l2m2m": "h264_v4l2m2m",
    "amf": "h264_amf",
}
VAAPI_DEVICE = "/dev/dri/renderD128"
INSTALL_HINT = "Debian/Ubuntu: sudo apt-get install ffmpeg    macOS: brew install ffmpeg"


class SourceError(Exception):
    """A problem with the input or the options, written for the person who typed them."""


# ---------------------------------------------------------------- parsing user values

def parse_time(text: str) -> float:
    """'HH:MM:SS', 'MM:SS' or seconds (fractions allowed) -> seconds."""
    parts = text.strip().split(":")
    try:
        if len(parts) > 3 or any(p == "" for p in parts):
            raise ValueError
        seconds = 0.0
        for part in parts:
            value = float(part)
            if value < 0:
                raise ValueError
            seconds = seconds * 60 + value
    except ValueError:
        raise SourceError(f"'{text}' is not a time; write HH:MM:SS, MM:SS or seconds") from None
    return seconds


def parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{2,5})[xX](\d{2,5})", text.strip())
    if not match:
        raise SourceError(f"'{text}' is not a size; write WIDTHxHEIGHT, e.g. 1280x720")
    width, height = int(match[1]), int(match[2])
    if width % 2 or height % 2:
        raise SourceError(f"size {width}x{height}: H.264 needs an even width and height")
    return width, height


def parse_kbps(text: str) -> int:
    """'1500', '1500k' or '1.5M' -> kbit/s."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmM]?)", text.strip())
    if not match:
        raise SourceError(f"'{text}' is not a bitrate; write kbit/s like 1500 or 1500k, or 1.5M")
    value = float(match[1]) * (1000 if match[2] in "mM" and match[2] else 1)
    if not 50 <= value <= 100_000:
        raise SourceError(f"bitrate {value:g} kbit/s is out of range (50 to 100000)")
    return int(value)


def format_clock(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "--:--:--"
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def is_url(source: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source) is not None


# ---------------------------------------------------------------- probing

@dataclass(frozen=True)
class Track:
    """One track; `number` counts among tracks of its kind, as --audio and --subs do."""

    number: int
    codec: str
    language: str = ""
    title: str = ""
    width: int = 0
    height: int = 0
    fps: float = 0.0
    pix_fmt: str = ""
    channels: int = 0

    def describe(self) -> str:
        bits = [str(self.number), self.codec]
        if self.width:
            bits.append(f"{self.width}x{self.height}")
        if self.language:
            bits.append(self.language)
        if self.title:
            bits.append(repr(self.title))
        return " ".join(bits)


@dataclass(frozen=True)
class MediaInfo:
    source: str
    duration: float | None
    video: tuple[Track, ...] = ()
    audio: tuple[Track, ...] = ()
    subtitles: tuple[Track, ...] = ()


def require_ffmpeg() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise SourceError(f"{tool} is not installed. {INSTALL_HINT}")


def probe(source: str, timeout: float = 30.0) -> MediaInfo:
    """Ask ffprobe what the input holds; fail with a message a person can act on."""
    require_ffmpeg()
    if not is_url(source):
        path = Path(source)
        if not path.exists():
            raise SourceError(f"{source}: no such file. Check the path (or give a URL).")
        if not path.is_file():
            raise SourceError(f"{source}: not a file")
        if not os.access(path, os.R_OK):
            raise SourceError(f"{source}: not readable (permissions)")
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    if is_url(source):
        cmd += ["-rw_timeout", str(int(timeout * 1_000_000))]
    cmd.append(source)
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout + 5,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SourceError(f"{source}: no answer within {timeout:.0f} s; is it reachable?") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        what = "cannot reach or read" if is_url(source) else "cannot read"
        raise SourceError(f"{source}: {what} it as a media file: {reason}")
    return parse_probe(source, json.loads(done.stdout or "{}"))


def parse_probe(source: str, data: dict) -> MediaInfo:
    kinds: dict[str, list[Track]] = {"video": [], "audio": [], "subtitle": []}
    for stream in data.get("streams", []):
        kind = stream.get("codec_type")
        if kind not in kinds:
            continue
        if kind == "video" and stream.get("disposition", {}).get("attached_pic"):
            continue  # cover art is not a picture track
        tags = stream.get("tags", {})
        kinds[kind].append(Track(
            number=len(kinds[kind]),
            codec=stream.get("codec_name", "unknown"),
            language=tags.get("language", ""),
            title=tags.get("title", ""),
            width=int(stream.get("width") or 0),
            height=int(stream.get("height") or 0),
            fps=_rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")),
            pix_fmt=stream.get("pix_fmt", ""),
            channels=int(stream.get("channels") or 0),
        ))
    try:
        duration = float(data.get("format", {}).get("duration"))
    except (TypeError, ValueError):
        duration = None
    return MediaInfo(source, duration, tuple(kinds["video"]), tuple(kinds["audio"]),
                     tuple(kinds["subtitle"]))


def _rate(text: str | None) -> float:
    try:
        num, _, den = (text or "0/1").partition("/")
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


# ---------------------------------------------------------------- command builders

@dataclass(frozen=True)
class Encoding:
    """How to encode when copying is not possible."""

    preset: str = DEFAULT_PRESET
    video_kbps: int = DEFAULT_VIDEO_KBPS
    audio_kbps: int = DEFAULT_AUDIO_KBPS
    encoder: str = "libx264"
    fps: float = 0.0
    segment_seconds: int = SEGMENT_SECONDS


@dataclass(frozen=True)
class PlayOptions:
    source: str
    subs: str | None = None
    audio: int | None = None
    start: float = 0.0
    loop: bool = False
    size: tuple[int, int] | None = None
    video_kbps: int | None = None
    preset: str | None = None
    hwaccel: str | None = None
    to: str | None = None

    @property
    def wants_encoding(self) -> bool:
        """Any picture setting means the picture must be encoded, never copied."""
        return bool(self.subs is not None or self.size or self.video_kbps or self.preset
                    or self.hwaccel)


@dataclass(frozen=True)
class Plan:
    """What `play` will do, decided from the probe and the options; shown to the user."""

    argv: list[str]
    copy_video: bool
    copy_audio: bool
    audio: Track | None
    subtitles: str
    notes: tuple[str, ...] = field(default=())


def hls_output_args(stream_dir: Path, playlist: str = "stream.m3u8",
                    segment_seconds: int = SEGMENT_SECONDS,
                    list_size: int = PLAYLIST_SIZE) -> list[str]:
    """The output half every HLS source shares (the same layout stream.sh writes)."""
    stream_dir = Path(stream_dir)
    return [
        "-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact",
        "-f", "hls", "-hls_time", str(segment_seconds), "-hls_list_size", str(list_size),
        "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", INIT_NAME,
        "-hls_flags", "delete_segments+temp_file+independent_segments",
        "-hls_segment_filename", str(stream_dir / SEGMENT_PATTERN), str(stream_dir / playlist),
    ]


def rtmp_output_args(url: str) -> list[str]:
    if not re.match(r"^rtmps?://[^/]+/[^/]+/.+", url):
        raise SourceError(f"--to {redact_url(url)}: expected rtmp://HOST[:PORT]/live/KEY")
    return ["-map_metadata", "-1", "-fflags", "+bitexact", "-f", "flv", url]


def redact_url(url: str) -> str:
    """An RTMP URL without its last part (the stream key), fit for messages and logs."""
    head, sep, _ = url.rpartition("/")
    return f"{head}/***" if sep and head.count("/") >= 3 else url


def hardware_encoder(name: str) -> str:
    name = name.strip().lower()
    if name in HARDWARE_ENCODERS.values():
        return name
    if name in HARDWARE_ENCODERS:
        return HARDWARE_ENCODERS[name]
    known = ", ".join(sorted(HARDWARE_ENCODERS))
    raise SourceError(f"--hwaccel {name}: unknown; use one of {known} "
                      f"(or an encoder name such as h264_vaapi)")


def video_encoder_args(encoding: Encoding) -> list[str]:
    """H.264 with a keyframe at every segment boundary, so every segment starts cleanly."""
    kbps = encoding.video_kbps
    seg = encoding.segment_seconds
    args = ["-c:v", encoding.encoder, "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k",
            "-bufsize", f"{kbps * 2}k"]
    if encoding.encoder == "libx264":
        args += ["-preset", encoding.preset, "-profile:v", "high", "-sc_threshold", "0"]
    elif encoding.encoder == "h264_nvenc":
        args += ["-forced-idr", "1"]
    if encoding.fps > 0:
        keyint = max(1, round(encoding.fps * seg))
        args += ["-g", str(keyint), "-keyint_min", str(keyint)]
    args += ["-force_key_frames", f"expr:gte(t,n_forced*{seg})", "-flags:v", "+bitexact"]
    return args


def audio_encoder_args(encoding: Encoding) -> list[str]:
    return ["-c:a", "aac", "-b:a", f"{encoding.audio_kbps}k", "-ac", "2", "-ar", "48000",
            "-flags:a", "+bitexact"]


def escape_filter_value(value: str) -> str:
    """Escape a filter option value for both levels ffmpeg parses (option, then graph).

    Without this a path containing ':', ',', "'", '[' or '\\' breaks the graph or, worse,
    is read as further filter options.
    """
    option_level = re.sub(r"([\\':])", r"\\\1", value)
    return re.sub(r"([\\'\[\],;])", r"\\\1", option_level)


def _subtitle_filter(options: PlayOptions, info: MediaInfo) -> tuple[str, str, Track | None]:
    """-> (libass filter or '', description, bitmap track to overlay or None)."""
    subs = options.subs
    if subs is None:
        return "", "none", None
    if subs.isdigit():
        number = int(subs)
        if number >= len(info.subtitles):
            raise SourceError(_missing_track("subtitle", "--subs", number, info.subtitles,
                                             info.source))
        track = info.subtitles[number]
        if track.codec in BITMAP_SUBTITLES:
            return "", f"track {track.describe()} (picture overlay)", track
        path = escape_filter_value(info.source)
        return f"subtitles=filename={path}:si={number}", f"track {track.describe()}", None
    path = Path(subs)
    if not path.is_file():
        raise SourceError(f"--subs {subs}: no such subtitle file, and not a track number "
                          f"(this input has {len(info.subtitles)} subtitle tracks)")
    if path.suffix.lower() not in SUBTITLE_FILE_TYPES:
        raise SourceError(f"--subs {subs}: use a subtitle file ending in "
                          f"{', '.join(SUBTITLE_FILE_TYPES)}")
    return f"subtitles=filename={escape_filter_value(str(path))}", f"file {path.name}", None


def _missing_track(kind: str, flag: str, number: int, tracks: tuple[Track, ...],
                   source: str) -> str:
    if not tracks:
        return f"{flag} {number}: {source} has no {kind} tracks"
    listing = "; ".join(t.describe() for t in tracks)
    return (f"{flag} {number}: {source} has {len(tracks)} {kind} track(s), numbered from 0: "
            f"{listing}")


def plan_play(info: MediaInfo, options: PlayOptions, stream_dir: Path,
              playlist: str = "stream.m3u8", ffmpeg: str = "ffmpeg") -> Plan:
    """Build the ffmpeg command for `livestream play` from what the input holds."""
    if not info.video:
        raise SourceError(f"{info.source}: has no video track (audio only?); "
                          "play needs a picture to stream")
    if options.audio is not None and options.audio >= len(info.audio):
        raise SourceError(_missing_track("audio", "--audio", options.audio, info.audio,
                                         info.source))
    if info.duration and options.start >= info.duration:
        raise SourceError(f"--start {format_clock(options.start)} is past the end "
                          f"({format_clock(info.duration)})")
    video = info.video[0]
    audio = info.audio[options.audio or 0] if info.audio else None
    sub_filter, sub_text, bitmap = _subtitle_filter(options, info)
    encoder = hardware_encoder(options.hwaccel) if options.hwaccel else "libx264"
    encoding = Encoding(preset=options.preset or DEFAULT_PRESET,
                        video_kbps=options.video_kbps or DEFAULT_VIDEO_KBPS,
                        encoder=encoder, fps=video.fps)
    copy_video = (not options.wants_encoding and video.codec == "h264"
                  and video.pix_fmt in COPYABLE_PIXEL_FORMATS)
    copy_audio = audio is not None and audio.codec == "aac"

    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-nostats",
            "-progress", "pipe:1"]
    if encoder == "h264_vaapi":
        argv += ["-vaapi_device", VAAPI_DEVICE]
    if options.loop:
        argv += ["-stream_loop", "-1"]
    if is_url(info.source) and info.source.startswith(("http://", "https://")):
        argv += ["-reconnect", "1", "-reconnect_streamed", "1", "-reconnect_delay_max", "5"]
    argv.append("-re")
    if options.start:
        argv += ["-ss", f"{options.start:.3f}"]
    argv += ["-i", info.source]

    chain = []
    if sub_filter:
        if options.start:  # the subtitle timeline still starts at 0: shift the picture to it
            chain += [f"setpts=PTS+{options.start:.3f}/TB", sub_filter, "setpts=PTS-STARTPTS"]
        else:
            chain.append(sub_filter)
    if options.size:
        w, h = options.size
        chain += [f"scale={w}:{h}:force_original_aspect_ratio=decrease",
                  f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2", "setsar=1"]
    if encoder == "h264_vaapi":
        chain += ["format=nv12", "hwupload"]
    elif encoder == "h264_qsv":
        chain.append("format=nv12")
    else:
        chain.append("format=yuv420p")

    if copy_video:
        argv += ["-map", "0:v:0", "-c:v", "copy"]
    elif bitmap is not None:
        graph = f"[0:v:0][0:s:{bitmap.number}]overlay=eof_action=pass," + ",".join(chain)
        argv += ["-filter_complex", graph + "[v]", "-map", "[v]"]
        argv += video_encoder_args(encoding)
    else:
        argv += ["-map", "0:v:0", "-vf", ",".join(chain)] + video_encoder_args(encoding)
    if audio is not None:
        argv += ["-map", f"0:a:{audio.number}"]
        argv += (["-c:a", "copy", "-bsf:a", "aac_adtstoasc"] if copy_audio
                 else audio_encoder_args(encoding))
    argv += ["-sn", "-dn"]
    argv += rtmp_output_args(options.to) if options.to else hls_output_args(stream_dir, playlist)

    notes = []
    if not copy_video and not options.wants_encoding:
        notes.append(f"video is {video.codec}/{video.pix_fmt}, not browser-ready H.264: "
                     "encoding it")
    if copy_video and video.fps == 0:
        notes.append("keyframes come from the file as it is; segments follow them")
    return Plan(argv, copy_video, copy_audio, audio, sub_text, tuple(notes))


def ingest_command(stream_dir: Path, playlist: str, copy_video: bool, copy_audio: bool,
                   has_audio: bool, encoding: Encoding, ffmpeg: str = "ffmpeg") -> list[str]:
    """FLV on stdin (what an RTMP publisher sends) -> HLS in stream_dir."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-nostats",
            "-f", "flv", "-i", "pipe:0", "-map", "0:v:0"]
    argv += ["-c:v", "copy"] if copy_video else (["-vf", "format=yuv420p"]
                                                 + video_encoder_args(encoding))
    if has_audio:
        argv += ["-map", "0:a:0"]
        argv += ["-c:a", "copy"] if copy_audio else audio_encoder_args(encoding)
    return argv + ["-sn", "-dn"] + hls_output_args(stream_dir, playlist)


def shell_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


# ---------------------------------------------------------------- the stream folder

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


# ---------------------------------------------------------------- progress

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
               hide: tuple[str, ...] = ()) -> int:
    """Run ffmpeg with a progress line; on exit or Ctrl-C make sure the playlist is ended.

    ffmpeg runs in its own session so a terminal's Ctrl-C reaches only us; we then ask it to
    stop once (SIGINT: it finishes the segment and writes ENDLIST itself) and kill it if it
    does not within `stop_timeout`. Strings in `hide` (an RTMP URL with its key) are masked
    in ffmpeg's messages before they are shown or logged.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)
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

def play(options: PlayOptions, stream_dir: Path, playlist: str = "stream.m3u8",
         dry_run: bool = False, out: TextIO = sys.stderr) -> int:
    """Check the input, explain the plan, then stream it in real time."""
    info = probe(options.source)
    plan = plan_play(info, options, stream_dir, playlist)
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
    playlist_path = None if options.to else Path(stream_dir) / playlist
    return run_ffmpeg(plan.argv, duration=info.duration, offset=options.start,
                      playlist_path=playlist_path, out=out,
                      hide=(options.to,) if options.to else ())


def _check_encoder(encoder: str) -> None:
    done = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], check=False,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if f" {encoder} " not in done.stdout:
        raise SourceError(f"--hwaccel: this ffmpeg has no {encoder} encoder; "
                          "see `ffmpeg -encoders`")
