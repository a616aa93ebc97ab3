"""The RTMP ingest: a publisher's handshake, chunk stream, AMF0 commands and media, checked against
the stream key before anything reaches ffmpeg.
"""
