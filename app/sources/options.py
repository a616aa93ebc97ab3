"""What a person types for a source (times, sizes, bitrates, URLs) and the error that
answers them: one place, so every command reads and reports them alike."""
from __future__ import annotations

import math
import re

INSTALL_HINT = "Debian/Ubuntu: sudo apt-get install ffmpeg    macOS: brew install ffmpeg"


class SourceError(Exception):
    """A problem with the input or the options, written for the person who typed them."""




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


