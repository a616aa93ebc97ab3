"""ffmpeg command lines for every source we run, as pure functions returning argv lists.

They can be read, tested and printed (`livestream play --dry-run`) without running anything.
Every source shares one set of HLS output options (fMP4, 2 s segments, a keyframe at every
segment start, metadata stripped) so the watcher sees the same layout whoever writes it.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from app.config import Config, Rendition
from app.sources.options import SourceError, format_clock, is_url
from app.sources.probe import MediaInfo, Track
from app.stream.folder import (
    DEFAULT_PLAYLIST,
    PLAYLIST_SIZE,
    SEGMENT_SECONDS,
    Variant,
    rendition_files,
)

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
# Every H.264 we write, copied or encoded, loses its SEI units: x264 writes its version and
# every option into one (a fingerprint of the streamer's machine), and nothing a viewer's
# player needs is in them (every segment starts with an IDR frame).
STRIP_SEI = ["-bsf:v", "filter_units=remove_types=6"]
# Lower renditions of a copied picture take their keyframes where the source has them, so
# their segments are cut at the same times; x264 adds none of its own in between.
SOURCE_KEYFRAMES = "source"



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
    variants: tuple[Variant, ...] = field(default=())  # the master playlist; () for one


@dataclass(frozen=True)
class Pipes:
    """Where the outputs go when our segmenters write the folder (app/sources/pipes.py):
    one file descriptor per rendition, the top one first, and the fragment length."""

    fds: tuple[int, ...]
    part_ms: int


def fragmented_output_args(fd: int, part_ms: int) -> list[str]:
    """Fragmented MP4 into pipe `fd`: a fragment at least every `part_ms` and at every
    keyframe, written the moment it is complete. frag_discont with negative timestamps left
    alone keeps -output_ts_offset in the fragments (a watch party's media time goes on)."""
    return ["-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact",
            "-avoid_negative_ts", "disabled", "-f", "mp4",
            "-movflags", "+frag_keyframe+empty_moov+default_base_moof+frag_discont",
            "-frag_duration", str(part_ms * 1000), f"pipe:{fd}"]


def output_args(stream_dir: Path, playlist: str, index: int, rendition: str | None,
                pipes: Pipes | None, segment_seconds: int = SEGMENT_SECONDS) -> list[str]:
    """Output `index` (0: the top rendition): into its pipe, or ffmpeg's own HLS muxer."""
    if pipes is not None:
        return fragmented_output_args(pipes.fds[index], pipes.part_ms)
    return hls_output_args(stream_dir, playlist, segment_seconds=segment_seconds,
                           rendition=rendition)


def hls_output_args(stream_dir: Path, playlist: str = DEFAULT_PLAYLIST,
                    segment_seconds: int = SEGMENT_SECONDS,
                    list_size: int = PLAYLIST_SIZE, rendition: str | None = None) -> list[str]:
    """The output half every HLS source shares (the same layout stream.sh writes).

    `rendition` names a lower rendition (its own files); None is the top one.
    """
    stream_dir = Path(stream_dir)
    files = rendition_files(rendition or "", rendition is None, playlist)
    return [
        "-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact",
        "-f", "hls", "-hls_time", str(segment_seconds), "-hls_list_size", str(list_size),
        "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", files.init,
        "-hls_flags", "delete_segments+temp_file+independent_segments",
        "-hls_segment_filename", str(stream_dir / files.segment_pattern),
        str(stream_dir / files.playlist),
    ]


def lower_rendition_args(stream_dir: Path, rendition: Rendition, *, video: list[str],
                         audio_map: str | None, keyframes: str, preset: str, fps: float,
                         segment_seconds: int = SEGMENT_SECONDS, index: int = 1,
                         pipes: Pipes | None = None) -> list[str]:
    """One more HLS output of the same input: a smaller picture at a lower bitrate.

    `video` maps (and filters) the picture, e.g. ["-map", "0:v:0", "-vf", "scale=..."];
    `keyframes` is the -force_key_frames value of the top rendition (or "source" when the top
    is copied), so every rendition cuts its segments at the same media times.
    """
    kbps = rendition.video_kbps
    args = list(video) + ["-c:v", "libx264", "-preset", preset, "-profile:v", "main",
                          "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps * 2}k",
                          "-sc_threshold", "0", "-force_key_frames", keyframes,
                          "-flags:v", "+bitexact"] + STRIP_SEI
    if keyframes == SOURCE_KEYFRAMES:
        args += ["-g", "100000"]  # only the source's keyframes, or the segments drift apart
    elif fps > 0:
        keyint = max(1, round(fps * segment_seconds))
        args += ["-g", str(keyint), "-keyint_min", str(keyint)]
    if audio_map is not None:
        args += ["-map", audio_map, "-c:a", "aac", "-b:a", f"{rendition.audio_kbps}k",
                 "-ac", "2", "-ar", "48000", "-flags:a", "+bitexact"]
    return args + ["-sn", "-dn"] + output_args(stream_dir, DEFAULT_PLAYLIST, index,
                                               rendition.name, pipes, segment_seconds)


def scale_filter(height: int) -> str:
    """Fit the height, keep the aspect (even width), as browsers' 4:2:0 decoders need."""
    return f"scale=-2:{height}:flags=bicubic,setsar=1,format=yuv420p"


def variants(renditions: list[Rendition], playlist: str, top_kbps: int,
             top_size: tuple[int, int] | None = None) -> list[Variant]:
    """What the master playlist lists: the top rendition, then every lower one."""
    top, lower = renditions[0], renditions[1:]
    width, height = top_size or (0, 0)
    listed = [Variant(top.name, playlist, max(1, top_kbps) * 1000, width, height)]
    for rendition in lower:
        scaled = (round(width * rendition.height / height / 2) * 2) if height else 0
        listed.append(Variant(rendition.name, rendition_files(rendition.name, False).playlist,
                              rendition.bandwidth, scaled, rendition.height if scaled else 0))
    return listed


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
    args += ["-force_key_frames", keyframe_times(seg), "-flags:v", "+bitexact"]
    return args + STRIP_SEI


def keyframe_times(segment_seconds: int) -> str:
    """A keyframe at every segment boundary (the same expression for every rendition)."""
    return f"expr:gte(t,n_forced*{segment_seconds})"


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
              playlist: str = DEFAULT_PLAYLIST, ffmpeg: str = "ffmpeg",
              renditions: list[Rendition] | None = None, pipes: Pipes | None = None) -> Plan:
    """Build the ffmpeg command for `livestream play` from what the input holds.

    `renditions` (config's stream.renditions) adds one encoded HLS output per lower quality;
    a push to RTMP (--to) writes only the top one (the receiving ingest makes the others).
    With `pipes` the outputs go to our segmenters (one fd per rendition in plan.variants, or
    one) instead of ffmpeg's HLS muxer.
    """
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
    lower = [] if options.to else list((renditions or [])[1:])
    top_height = options.size[1] if options.size else video.height
    skipped = [r for r in lower if top_height and r.height >= top_height]
    lower = [r for r in lower if r not in skipped]  # never upscale into a "lower" quality
    sub_filter, sub_text, bitmap = _subtitle_filter(options, info)
    encoder = hardware_encoder(options.hwaccel) if options.hwaccel else "libx264"
    encoding = Encoding(preset=options.preset or DEFAULT_PRESET,
                        video_kbps=options.video_kbps or DEFAULT_VIDEO_KBPS,
                        encoder=encoder, fps=video.fps)
    copy_video = (not options.wants_encoding and video.codec == "h264"
                  and video.pix_fmt in COPYABLE_PIXEL_FORMATS)
    # A looped copy of AAC would need aac_adtstoasc, which ffmpeg 5.1 ends after the first
    # pass (every later packet refused): looped audio is encoded, which costs next to nothing.
    copy_audio = audio is not None and audio.codec == "aac" and not options.loop

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

    picture = []  # what the top picture gets before its pixel format
    if sub_filter:
        if options.start:  # the subtitle timeline still starts at 0: shift the picture to it
            picture += [f"setpts=PTS+{options.start:.3f}/TB", sub_filter, "setpts=PTS-STARTPTS"]
        else:
            picture.append(sub_filter)
    if options.size:
        w, h = options.size
        picture += [f"scale={w}:{h}:force_original_aspect_ratio=decrease",
                    f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2", "setsar=1"]
    if encoder == "h264_vaapi":
        pixels = ["format=nv12", "hwupload"]
    elif encoder == "h264_qsv":
        pixels = ["format=nv12"]
    else:
        pixels = ["format=yuv420p"]

    lower_video: list[list[str]] = []
    if copy_video:
        # ffmpeg 5.1 ends an output bitstream filter at the first loop's end and then refuses
        # every packet, so a looped copy keeps the file's SEI (the film's encoder, not ours).
        argv += ["-map", "0:v:0", "-c:v", "copy"] + ([] if options.loop else STRIP_SEI)
        lower_video = [["-map", "0:v:0", "-vf", scale_filter(r.height)] for r in lower]
    elif bitmap is not None or lower:
        # One graph: the picture is drawn once (subtitles, size), then split per rendition.
        head = (f"[0:v:0][0:s:{bitmap.number}]overlay=eof_action=pass" if bitmap is not None
                else "[0:v:0]null")
        graph = ",".join([head] + picture) + f",split={1 + len(lower)}[top]"
        graph += "".join(f"[in{i}]" for i in range(len(lower)))
        graph += ";[top]" + ",".join(pixels) + "[v]"
        for i, rendition in enumerate(lower):
            graph += f";[in{i}]{scale_filter(rendition.height)}[v{i}]"
            lower_video.append(["-map", f"[v{i}]"])
        argv += ["-filter_complex", graph, "-map", "[v]"] + video_encoder_args(encoding)
    else:
        argv += ["-map", "0:v:0", "-vf", ",".join(picture + pixels)]
        argv += video_encoder_args(encoding)
    audio_map = f"0:a:{audio.number}" if audio is not None else None
    if audio is not None:
        argv += ["-map", audio_map]
        argv += (["-c:a", "copy", "-bsf:a", "aac_adtstoasc"] if copy_audio
                 else audio_encoder_args(encoding))
    argv += ["-sn", "-dn"]
    argv += (rtmp_output_args(options.to) if options.to
             else output_args(stream_dir, playlist, 0, None, pipes))
    keyframes = SOURCE_KEYFRAMES if copy_video else keyframe_times(encoding.segment_seconds)
    for index, (rendition, picture_args) in enumerate(zip(lower, lower_video, strict=True), 1):
        argv += lower_rendition_args(stream_dir, rendition, video=picture_args,
                                     audio_map=audio_map, keyframes=keyframes,
                                     preset=encoding.preset, fps=video.fps, index=index,
                                     pipes=pipes)

    notes = []
    if not copy_video and not options.wants_encoding:
        notes.append(f"video is {video.codec}/{video.pix_fmt}, not browser-ready H.264: "
                     "encoding it")
    if copy_video and options.loop:
        notes.append("--loop copies the picture with the file's own encoder notes (SEI); "
                     "add --preset veryfast to re-encode it without them")
    if copy_video and video.fps == 0:
        notes.append("keyframes come from the file as it is; segments follow them")
    if skipped:
        notes.append("not encoding " + ", ".join(r.name for r in skipped)
                     + f": not smaller than the {top_height}p picture")
    if lower:
        notes.append("also encoding " + ", ".join(f"{r.name} ({r.height}p, {r.video_kbps} "
                                                  "kbit/s)" for r in lower))
    size = options.size or ((video.width, video.height) if video.width else None)
    top_kbps = encoding.video_kbps + encoding.audio_kbps  # a copied file: about that
    listed = tuple(variants([renditions[0]] + lower, playlist, top_kbps, size)) if lower else ()
    return Plan(argv, copy_video, copy_audio, audio, sub_text, tuple(notes), listed)


def ingest_command(stream_dir: Path, playlist: str, copy_video: bool, copy_audio: bool,
                   has_audio: bool, encoding: Encoding, ffmpeg: str = "ffmpeg",
                   renditions: list[Rendition] | None = None,
                   pipes: Pipes | None = None) -> list[str]:
    """FLV on stdin (what an RTMP publisher sends) -> HLS in stream_dir, one output per
    rendition: the top one copied when it can be, the lower ones always encoded. With
    `pipes`, through our segmenters (one fd per rendition)."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-nostats",
            "-f", "flv", "-i", "pipe:0", "-map", "0:v:0"]
    argv += ["-c:v", "copy"] + STRIP_SEI if copy_video else (["-vf", "format=yuv420p"]
                                                             + video_encoder_args(encoding))
    if has_audio:
        argv += ["-map", "0:a:0"]
        argv += ["-c:a", "copy"] if copy_audio else audio_encoder_args(encoding)
    argv += ["-sn", "-dn"] + output_args(stream_dir, playlist, 0, None, pipes,
                                         encoding.segment_seconds)
    keyframes = SOURCE_KEYFRAMES if copy_video else keyframe_times(encoding.segment_seconds)
    for index, rendition in enumerate((renditions or [])[1:], 1):
        argv += lower_rendition_args(stream_dir, rendition,
                                     video=["-map", "0:v:0", "-vf", scale_filter(rendition.height)],
                                     audio_map="0:a:0" if has_audio else None,
                                     keyframes=keyframes, preset=encoding.preset,
                                     fps=encoding.fps, segment_seconds=encoding.segment_seconds,
                                     index=index, pipes=pipes)
    return argv


def stream_sh_environment(config: Config) -> dict[str, str]:
    """What stream.sh needs to write the folder this config's server reads (`serve --demo`):
    the folder, the playlist name, the lower renditions as NAME:HEIGHT:VIDEO:AUDIO and the
    part length (stream.part_ms; 0: whole segments)."""
    lower = " ".join(f"{r.name}:{r.height}:{r.video_kbps}:{r.audio_kbps}"
                     for r in config.stream.renditions[1:])
    part_ms = config.stream.part_ms
    return {"STREAM_DIR": str(config.stream_dir), "PLAYLIST": config.stream.playlist,
            "RENDITIONS": lower, "LOW_LATENCY": "1" if part_ms else "0",
            "PART_MS": str(part_ms or 200)}


def shell_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


