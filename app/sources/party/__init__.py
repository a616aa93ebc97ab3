"""The watch party: one continuous stream from a queue the host pauses, seeks and skips.

`queue` reads the items (command line groups or an .m3u), `timeline` the host's times and the
stream's end, `runner` the ffmpeg command per item and position and the controller that
restarts it, `control` the Unix socket only the broadcaster's account can use.
"""
