"""The stream folder and everything that turns it into bytes for viewers: the folder contract,
playlist parsing, the one watcher, MP4 boxes, the /stream.mp4 fan-out and the player's timeline.
"""
