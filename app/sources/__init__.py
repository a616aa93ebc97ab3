"""What writes the stream folder: ffmpeg command lines, input probing, `livestream play` and the
RTMP ingest.
"""
