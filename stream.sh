#!/usr/bin/env bash
# Capture the screen and what you hear (or a test pattern) into stream/ as live fMP4 HLS.
#
#   ./stream.sh            the whole X11 screen, scaled to VIDEO_SIZE, and the sound this
#                          machine plays (PulseAudio/PipeWire: the default output's monitor)
#   ./stream.sh --list     screens (monitors) and audio sources to choose from
#   ./stream.sh --test     a synthetic test pattern and tone: no capture devices needed
#   ./stream.sh --help     every setting below, with its default
#
# Wayland desktops (GNOME's default) do not let x11grab see the screen: use OBS's
# "Screen Capture (PipeWire)" with `livestream ingest`, or log in to an Xorg session.
#
# Settings come from the environment, e.g. VIDEO_SIZE=1920x1080 FRAMERATE=60 ./stream.sh
#
# Other systems (same output options, other inputs):
#   macOS:   ffmpeg -f avfoundation -capture_cursor 1 -framerate 30 -i "1:0" ...
#            (list devices: ffmpeg -f avfoundation -list_devices true -i "")
#   Windows: ffmpeg -f gdigrab -framerate 30 -i desktop -f dshow -i audio="Stereo Mix" ...
#            (list devices: ffmpeg -list_devices true -f dshow -i dummy)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STREAM_DIR=${STREAM_DIR:-$here/stream}
VIDEO_SIZE=${VIDEO_SIZE:-1280x720}
FRAMERATE=${FRAMERATE:-30}
VIDEO_BITRATE=${VIDEO_BITRATE:-1200k}
AUDIO_BITRATE=${AUDIO_BITRATE:-96k}
PRESET=${PRESET:-veryfast}
SEGMENT_SECONDS=${SEGMENT_SECONDS:-2}
KEYFRAME_SECONDS=${KEYFRAME_SECONDS:-1}
PLAYLIST_SIZE=${PLAYLIST_SIZE:-15}
DISPLAY_INPUT=${DISPLAY_INPUT:-${DISPLAY:-:0.0}}
CAPTURE_REGION=${CAPTURE_REGION:-}
AUDIO_INPUT=${AUDIO_INPUT:-}
PLAYLIST=${PLAYLIST:-stream.m3u8}
RENDITIONS=${RENDITIONS-low:360:400:64}
CLOCK=${CLOCK:-0}
DURATION=${DURATION:-}
LOGLEVEL=${LOGLEVEL:-warning}
LOW_LATENCY=${LOW_LATENCY:-0}
PART_MS=${PART_MS:-200}

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  cat <<TXT
Settings (environment variables) and their current values:
  STREAM_DIR=$STREAM_DIR
  VIDEO_SIZE=$VIDEO_SIZE  FRAMERATE=$FRAMERATE  VIDEO_BITRATE=$VIDEO_BITRATE
  AUDIO_BITRATE=$AUDIO_BITRATE  PRESET=$PRESET  SEGMENT_SECONDS=$SEGMENT_SECONDS
  KEYFRAME_SECONDS=$KEYFRAME_SECONDS (a whole part of SEGMENT_SECONDS: Firefox and Tor Browser
    play /stream.mp4 about one keyframe interval behind what they have)
  PLAYLIST_SIZE=$PLAYLIST_SIZE  DISPLAY_INPUT=$DISPLAY_INPUT (the X display)
  CAPTURE_REGION=${CAPTURE_REGION:-whole screen} (WxH+X+Y: one monitor or a part, see --list;
    always scaled to VIDEO_SIZE)
  AUDIO_INPUT=${AUDIO_INPUT:-the monitor of the default output} (a PulseAudio/PipeWire source name
    from --list; "default" is usually the microphone)
  PLAYLIST=$PLAYLIST (the top rendition's playlist; config.toml's stream.playlist)
  RENDITIONS=${RENDITIONS:-none} (lower qualities NAME:HEIGHT:VIDEO_KBPS:AUDIO_KBPS, space
    separated, as config.toml's [[stream.renditions]]; empty writes the source quality only)
  CLOCK=$CLOCK (1 draws the time in UTC in the corner; off by default: a clock in local time
    would tell every viewer the streamer's time zone)  DURATION=${DURATION:-unlimited} (seconds)
  LOW_LATENCY=$LOW_LATENCY (1: every PART_MS=$PART_MS ms of video reaches the server as it is
    encoded, through \`livestream segment\`, instead of a whole segment at a time)
TXT
}

# Screens and audio sources, for CAPTURE_REGION and AUDIO_INPUT.
list_devices() {
  echo "Screens on $DISPLAY_INPUT (CAPTURE_REGION=WxH+X+Y picks one; the default is all):"
  if command -v xrandr >/dev/null 2>&1; then
    DISPLAY=$DISPLAY_INPUT xrandr --listmonitors 2>/dev/null | tail -n +2 |
      sed -E 's#^ *[0-9]+: [+*]*([^ ]+) ([0-9]+)/[0-9]+x([0-9]+)/[0-9]+\+([0-9]+)\+([0-9]+).*#  \1: CAPTURE_REGION=\2x\3+\4+\5#' ||
      echo "  (cannot open display $DISPLAY_INPUT)"
  else
    echo "  (install xrandr to list them: sudo apt-get install x11-xserver-utils)"
  fi
  echo "Audio sources (AUDIO_INPUT=NAME):"
  if command -v pactl >/dev/null 2>&1; then
    pactl list short sources 2>/dev/null | while read -r _ name _; do
      case "$name" in
        *.monitor) echo "  $name   <- what you hear (the sound of this output)" ;;
        *) echo "  $name   (a microphone or line input)" ;;
      esac
    done
  else
    echo "  (install pactl to list them: sudo apt-get install pulseaudio-utils)"
  fi
}

# What you hear: the monitor of the default output, when PulseAudio or PipeWire say which.
default_audio() {
  local sink
  sink=$(pactl get-default-sink 2>/dev/null || true)
  if [ -n "$sink" ]; then echo "$sink.monitor"; else echo default; fi
}

mode=capture
case "${1:-}" in
  --test) mode="test" ;;
  --list) list_devices; exit 0 ;;
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "stream.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

if ! command -v ffmpeg >/dev/null 2>&1; then
  echo "stream.sh: ffmpeg is not installed." >&2
  echo "  Debian/Ubuntu: sudo apt-get install ffmpeg    macOS: brew install ffmpeg" >&2
  exit 127
fi


if [ "$mode" = capture ]; then
  if [ -n "${WAYLAND_DISPLAY:-}" ] || [ "${XDG_SESSION_TYPE:-}" = wayland ]; then
    if [ "${FORCE_X11:-0}" != 1 ]; then
      echo "stream.sh: this is a Wayland desktop: x11grab would capture only X11 windows (a" >&2
      echo "  black screen). Use OBS (source 'Screen Capture (PipeWire)') streaming to" >&2
      echo "  \`livestream ingest\`, or log in to an Xorg session. FORCE_X11=1 tries anyway." >&2
      exit 2
    fi
  fi
  [ -n "$AUDIO_INPUT" ] || AUDIO_INPUT=$(default_audio)
  echo "stream.sh: capturing ${CAPTURE_REGION:-the whole screen} of $DISPLAY_INPUT scaled to" \
       "$VIDEO_SIZE, sound from $AUDIO_INPUT (see --list)" >&2
fi

case "$PLAYLIST" in
  */*|.*|"") echo "stream.sh: PLAYLIST=$PLAYLIST must be a plain file name such as stream.m3u8" >&2
             exit 2 ;;
esac

picture="format=yuv420p"
if [ "$mode" = capture ]; then  # any screen or region, letterboxed into VIDEO_SIZE
  width=${VIDEO_SIZE%x*} height=${VIDEO_SIZE#*x}
  picture="scale=$width:$height:force_original_aspect_ratio=decrease,pad=$width:$height:(ow-iw)/2:(oh-ih)/2,setsar=1,$picture"
fi
if [ "$CLOCK" = 1 ]; then
  # gmtime, never localtime: the picture must not give away the streamer's time zone.
  picture="drawtext=text='%{gmtime\\:%H\\\\\\:%M\\\\\\:%S} UTC':x=16:y=h/14:fontsize=h/20:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=8,$picture"
fi

# Segments start on keyframes; a keyframe every second inside them costs a little bitrate and
# lets Firefox's plain player (Tor Browser at Safest) start and play nearer live
# (docs/benchmarks.md, "Sub-second live (issue 22, fourth part)").
if ! [[ $SEGMENT_SECONDS =~ ^[0-9]+$ && $KEYFRAME_SECONDS =~ ^[1-9][0-9]*$ ]] ||
   (( SEGMENT_SECONDS % KEYFRAME_SECONDS )); then
  echo "stream.sh: SEGMENT_SECONDS=$SEGMENT_SECONDS and KEYFRAME_SECONDS=$KEYFRAME_SECONDS must be" \
       "whole seconds, the keyframe interval a whole part of the segment (e.g. 2 and 1)" >&2
  exit 2
fi
keyint=$(( ${FRAMERATE%%/*} * KEYFRAME_SECONDS ))
keyframes="expr:gte(t,n_forced*$KEYFRAME_SECONDS)"
mkdir -p "$STREAM_DIR"
# One source per folder (app/stream/lock.py): two writers would restart the stream for every
# viewer again and again. The lock is held on fd 9, which ffmpeg inherits, until it exits.
lock="$STREAM_DIR/.source.lock"
exec 9<>"$lock"
if command -v flock >/dev/null 2>&1; then
  if ! flock -n 9; then
    holder=$(head -n 1 "$lock" | cut -c 1-300)
    pid=$(sed -n 's/^pid \([0-9]*\):.*/\1/p' <<<"$holder")
    echo "stream.sh: $STREAM_DIR is already being written by another source: ${holder:-?}." >&2
    echo "  Two sources in one folder would restart the stream for every viewer again and" \
         "again; stop it first (Ctrl-C in its terminal${pid:+, or kill $pid}), or set" \
         "STREAM_DIR to a folder of its own." >&2
    exit 75
  fi
  printf 'pid %s: stream.sh%s (since %s UTC)\n' "$$" "${1:+ $1}" "$(date -u +%H:%M:%S)" >"$lock"
fi
# A new broadcast starts clean: stale segments from the last one must not be served.
rm -f "$STREAM_DIR"/*.m4s "$STREAM_DIR"/*.tmp "$STREAM_DIR"/init.mp4 "$STREAM_DIR"/*-init.mp4 \
      "$STREAM_DIR"/*.m3u8

limit=()  # on every input, so every rendition's output ends with it
[ -n "$DURATION" ] && limit=(-t "$DURATION")

if [ "$mode" = test ]; then
  inputs=(-re "${limit[@]}" -f lavfi -i "testsrc2=size=$VIDEO_SIZE:rate=$FRAMERATE"
          -re "${limit[@]}" -f lavfi -i "sine=frequency=440:beep_factor=4:sample_rate=48000")
else
  region=()  # x11grab takes the whole screen unless given a size and an offset
  grab=$DISPLAY_INPUT
  if [ -n "$CAPTURE_REGION" ]; then
    if ! [[ "$CAPTURE_REGION" =~ ^([0-9]+x[0-9]+)\+([0-9]+)\+([0-9]+)$ ]]; then
      echo "stream.sh: CAPTURE_REGION=$CAPTURE_REGION is not WxH+X+Y (see --list)" >&2
      exit 2
    fi
    region=(-video_size "${BASH_REMATCH[1]}")
    grab="$DISPLAY_INPUT+${BASH_REMATCH[2]},${BASH_REMATCH[3]}"
  fi
  inputs=(-thread_queue_size 512 "${limit[@]}" -f x11grab -framerate "$FRAMERATE"
          "${region[@]}" -i "$grab"
          -thread_queue_size 512 "${limit[@]}" -f pulse -i "$AUDIO_INPUT")
fi

# The output options every rendition shares: fMP4 HLS, metadata and x264's SEI (its version
# and options: a fingerprint of this machine) stripped. With LOW_LATENCY=1 each rendition is
# fragmented MP4 on a pipe instead (a fragment every PART_MS), cut into segments and parts by
# `livestream segment` (app/sources/segmenter.py), one per rendition, reading fd 3, 4, ...
hls() {  # hls INIT SEGMENT_PATTERN PLAYLIST FD (the pipe's, with LOW_LATENCY=1)
  if [ "$LOW_LATENCY" = 1 ]; then
    echo -map_metadata -1 -map_chapters -1 -fflags +bitexact -f mp4 \
      -movflags +frag_keyframe+empty_moov+default_base_moof -frag_duration "${PART_MS}000" \
      "pipe:$4"
    return
  fi
  echo -map_metadata -1 -map_chapters -1 -fflags +bitexact \
    -f hls -hls_time "$SEGMENT_SECONDS" -hls_list_size "$PLAYLIST_SIZE" \
    -hls_segment_type fmp4 -hls_fmp4_init_filename "$1" \
    -hls_flags delete_segments+temp_file+independent_segments \
    -hls_segment_filename "$STREAM_DIR/$2" "$STREAM_DIR/$3"
}
x264() {  # x264 KBPS
  echo -c:v libx264 -preset "$PRESET" -tune zerolatency -b:v "$1" -maxrate "$1" -bufsize "$1" \
    -g "$keyint" -keyint_min "$keyint" -sc_threshold 0 -force_key_frames "$keyframes" \
    -flags:v +bitexact -bsf:v filter_units=remove_types=6
}

# The picture is drawn once, then split: one encoder per rendition, the same keyframe times.
read -r -a wanted <<<"$RENDITIONS"
lower=()
for entry in "${wanted[@]}"; do  # a "lower" rendition as tall as the source would only upscale
  height=$(cut -d: -f2 <<<"$entry")
  if [[ "$height" =~ ^[0-9]+$ ]] && [ "$height" -ge "${VIDEO_SIZE#*x}" ]; then
    echo "stream.sh: skipping rendition '$entry': not smaller than VIDEO_SIZE=$VIDEO_SIZE" >&2
    continue
  fi
  lower+=("$entry")
done
graph="[0:v:0]$picture,split=$(( ${#lower[@]} + 1 ))[top]"
outputs=()
segmenters=("")  # LOW_LATENCY=1: one `livestream segment` per rendition, the top one first
master="#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=$(( (${VIDEO_BITRATE%k} + ${AUDIO_BITRATE%k}) * 1000 )),RESOLUTION=$VIDEO_SIZE,NAME=\"source\"
$PLAYLIST"
for i in "${!lower[@]}"; do
  IFS=: read -r name height vkbps akbps <<<"${lower[$i]}"
  if ! [[ "$name" =~ ^[a-z][a-z0-9]{0,15}$ && "$height" =~ ^[0-9]+$ && "$vkbps" =~ ^[0-9]+$
          && "$akbps" =~ ^[0-9]+$ ]]; then
    echo "stream.sh: RENDITIONS entry '${lower[$i]}' is not NAME:HEIGHT:VIDEO_KBPS:AUDIO_KBPS" \
         "(e.g. low:360:400:64)" >&2
    exit 2
  fi
  graph+="[in$i]"
  scaled+=";[in$i]scale=-2:$height:flags=bicubic,setsar=1,format=yuv420p[v$i]"
  # shellcheck disable=SC2207
  outputs+=(-map "[v$i]" $(x264 "${vkbps}k") -map 1:a:0 -c:a aac -b:a "${akbps}k" -ac 2
            -flags:a +bitexact $(hls "$name-init.mp4" "$name-%d.m4s" "$name.m3u8" $(( 4 + i ))))
  segmenters+=("$name")
  width=$(( ${VIDEO_SIZE%x*} * height / ${VIDEO_SIZE#*x} / 2 * 2 ))
  master+="
#EXT-X-STREAM-INF:BANDWIDTH=$(( (vkbps + akbps) * 1000 )),RESOLUTION=${width}x$height,NAME=\"$name\"
$name.m3u8"
done
graph+=";[top]null[v]${scaled:-}"
if [ ${#lower[@]} -gt 0 ]; then
  printf '%s\n' "$master" >"$STREAM_DIR/master.m3u8.tmp"
  mv "$STREAM_DIR/master.m3u8.tmp" "$STREAM_DIR/master.m3u8"
fi

set +e
# ffmpeg runs in the background so that a signal meant for this script (`kill PID`, a closed
# terminal, the server that started it dying) reaches the trap below, which stops ffmpeg the
# way Ctrl-C does: it finishes the segment and ends the playlist. ffmpeg ignores SIGHUP (it
# would die at once, leaving the playlist open). A signal sent to the whole group reaches
# ffmpeg itself; the trap then only waits, because a second signal makes ffmpeg abandon the
# playlist it is writing (it is left empty).
trap '' HUP
if [ "$LOW_LATENCY" = 1 ]; then  # the top rendition on fd 3, the lower ones on 4, 5, ...
  python=$here/.venv/bin/python
  if [ ! -x "$python" ]; then
    echo "stream.sh: LOW_LATENCY=1 needs the project's Python environment ($python):" \
         "run .ci/setup first." >&2
    exit 2
  fi
  for i in "${!segmenters[@]}"; do
    fd=$(( 3 + i ))
    # each segmenter ignores Ctrl-C and ends its playlist when ffmpeg closes its pipe
    eval "exec $fd> >(cd \"\$here\" && LIVESTREAM_STREAM_DIR=\"\$STREAM_DIR\" \"\$python\" -m app.cli segment --locked --segment-seconds \"\$SEGMENT_SECONDS\" --playlist \"\$PLAYLIST\" \${segmenters[$i]:+--rendition \"\${segmenters[$i]}\"})"
  done
fi
# shellcheck disable=SC2046
ffmpeg -hide_banner -nostdin -loglevel "$LOGLEVEL" "${inputs[@]}" \
  -filter_complex "$graph" \
  -map "[v]" $(x264 "$VIDEO_BITRATE") -map 1:a:0 -c:a aac -b:a "$AUDIO_BITRATE" -ac 2 \
  -flags:a +bitexact $(hls init.mp4 "stream%d.m4s" "$PLAYLIST" 3) \
  "${outputs[@]}" &
encoder=$!
if [ "$LOW_LATENCY" = 1 ]; then  # ffmpeg holds the pipes now; the segmenters see its end
  for i in "${!segmenters[@]}"; do eval "exec $(( 3 + i ))>&-"; done
fi
stopping=0
# shellcheck disable=SC2317  # called by the trap
stop_encoder() {
  [ "$stopping" = 1 ] && return
  stopping=1
  for _ in 1 2 3 4 5 6 7 8 9 10; do  # already stopping by itself (a group signal)?
    kill -0 "$encoder" 2>/dev/null || return
    sleep 0.2
  done
  kill -INT "$encoder" 2>/dev/null
}
trap stop_encoder INT TERM HUP
while kill -0 "$encoder" 2>/dev/null; do wait "$encoder"; done
wait "$encoder"
status=$?
wait  # the segmenters, ending their playlists
set -e
if [ $status -ne 0 ] && [ $status -ne 255 ]; then
  echo "stream.sh: ffmpeg stopped with status $status." >&2
  if [ "$mode" = capture ]; then
    echo "  Could it open the screen ($DISPLAY_INPUT) and the audio source ($AUDIO_INPUT)?" >&2
    echo "  Set DISPLAY_INPUT / AUDIO_INPUT, or try './stream.sh --test' (no devices needed)." >&2
  fi
fi
exit $status
