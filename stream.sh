#!/usr/bin/env bash
# Capture the screen and system audio (or a test pattern) into stream/ as live fMP4 HLS.
#
#   ./stream.sh            capture this X11 display and PulseAudio's default source
#   ./stream.sh --test     a synthetic test pattern and tone: no capture devices needed
#   ./stream.sh --help     every setting below, with its default
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
PLAYLIST_SIZE=${PLAYLIST_SIZE:-15}
DISPLAY_INPUT=${DISPLAY_INPUT:-${DISPLAY:-:0.0}+0,0}
AUDIO_INPUT=${AUDIO_INPUT:-default}
CLOCK=${CLOCK:-1}
DURATION=${DURATION:-}
LOGLEVEL=${LOGLEVEL:-warning}

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  cat <<TXT
Settings (environment variables) and their current values:
  STREAM_DIR=$STREAM_DIR
  VIDEO_SIZE=$VIDEO_SIZE  FRAMERATE=$FRAMERATE  VIDEO_BITRATE=$VIDEO_BITRATE
  AUDIO_BITRATE=$AUDIO_BITRATE  PRESET=$PRESET  SEGMENT_SECONDS=$SEGMENT_SECONDS
  PLAYLIST_SIZE=$PLAYLIST_SIZE  DISPLAY_INPUT=$DISPLAY_INPUT  AUDIO_INPUT=$AUDIO_INPUT
  CLOCK=$CLOCK (1 draws the time in the corner)  DURATION=${DURATION:-unlimited} (seconds)
TXT
}

mode=capture
case "${1:-}" in
  --test) mode=test ;;
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "stream.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

if ! command -v ffmpeg >/dev/null 2>&1; then
  echo "stream.sh: ffmpeg is not installed." >&2
  echo "  Debian/Ubuntu: sudo apt-get install ffmpeg    macOS: brew install ffmpeg" >&2
  exit 127
fi

if [ "$mode" = test ]; then
  inputs=(-re -f lavfi -i "testsrc2=size=$VIDEO_SIZE:rate=$FRAMERATE"
          -re -f lavfi -i "sine=frequency=440:beep_factor=4:sample_rate=48000")
else
  inputs=(-thread_queue_size 512 -f x11grab -framerate "$FRAMERATE" -video_size "$VIDEO_SIZE"
          -i "$DISPLAY_INPUT" -thread_queue_size 512 -f pulse -i "$AUDIO_INPUT")
fi

filters="format=yuv420p"
if [ "$CLOCK" = 1 ]; then
  filters="drawtext=text='%{localtime\\:%H\\\\\\:%M\\\\\\:%S}':x=16:y=h/14:fontsize=h/20:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=8,$filters"
fi

keyint=$(( ${FRAMERATE%%/*} * SEGMENT_SECONDS ))
mkdir -p "$STREAM_DIR"
# A new broadcast starts clean: stale segments from the last one must not be served.
rm -f "$STREAM_DIR"/stream*.m4s "$STREAM_DIR"/stream*.tmp "$STREAM_DIR"/init.mp4 "$STREAM_DIR"/stream.m3u8

limit=()
[ -n "$DURATION" ] && limit=(-t "$DURATION")

set +e
ffmpeg -hide_banner -nostdin -loglevel "$LOGLEVEL" "${inputs[@]}" "${limit[@]}" \
  -map 0:v:0 -map 1:a:0 -vf "$filters" \
  -c:v libx264 -preset "$PRESET" -tune zerolatency -b:v "$VIDEO_BITRATE" \
  -maxrate "$VIDEO_BITRATE" -bufsize "$VIDEO_BITRATE" \
  -g "$keyint" -keyint_min "$keyint" -sc_threshold 0 \
  -force_key_frames "expr:gte(t,n_forced*$SEGMENT_SECONDS)" \
  -c:a aac -b:a "$AUDIO_BITRATE" -ac 2 \
  -map_metadata -1 -map_chapters -1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
  -f hls -hls_time "$SEGMENT_SECONDS" -hls_list_size "$PLAYLIST_SIZE" \
  -hls_segment_type fmp4 -hls_fmp4_init_filename init.mp4 \
  -hls_flags delete_segments+temp_file+independent_segments \
  -hls_segment_filename "$STREAM_DIR/stream%d.m4s" "$STREAM_DIR/stream.m3u8"
status=$?
set -e
if [ $status -ne 0 ] && [ $status -ne 255 ]; then
  echo "stream.sh: ffmpeg stopped with status $status." >&2
  if [ "$mode" = capture ]; then
    echo "  Could it open the screen ($DISPLAY_INPUT) and the audio source ($AUDIO_INPUT)?" >&2
    echo "  Set DISPLAY_INPUT / AUDIO_INPUT, or try './stream.sh --test' (no devices needed)." >&2
  fi
fi
exit $status
