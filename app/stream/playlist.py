"""Parse the HLS media playlist that ffmpeg (or OBS) writes, and write one back.

Only what the server needs: the init segment, the listed media segments with their
sequence numbers and durations, and whether the stream has ended. Numbers must be finite and
in range (a duration of `inf` or `nan` reached players as Infinity). `render` writes a
playlist from only these parts: an edge passes on what it understood, never tags it did not
(an EXT-X-KEY naming another host, say).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Entry:
    uri: str
    sequence: int
    duration: float
    parts: tuple[str, ...] = ()  # the parts listed before it: the segment, byte for byte


@dataclass(frozen=True)
class Part:
    """One part (a fragment) of the segment in progress, from `#EXT-X-PART`."""
    uri: str
    duration: float
    independent: bool = False  # starts with a keyframe


@dataclass(frozen=True)
class Playlist:
    target_duration: float
    media_sequence: int
    init_uri: str | None
    entries: tuple[Entry, ...]
    ended: bool
    pending: tuple[Part, ...] = ()  # the parts of the segment after the last one listed
    part_uris: frozenset[str] = frozenset()  # every part listed (players may fetch them)
    part_target: float | None = None  # #EXT-X-PART-INF: a source writing parts
    preload_hint: str | None = None  # the part a low-latency HLS player may ask for next
    can_block: bool = False  # the server answers _HLS_msn/_HLS_part (EXT-X-SERVER-CONTROL)

    @property
    def pending_sequence(self) -> int:
        return self.media_sequence + len(self.entries)

    @property
    def uris(self) -> frozenset[str]:
        names = {e.uri for e in self.entries} | self.part_uris
        if self.init_uri:
            names.add(self.init_uri)
        return frozenset(names)


class PlaylistError(ValueError):
    pass


def parse(text: str) -> Playlist:
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistError("not an HLS playlist (no #EXTM3U header)")
    target = 2.0
    media_sequence = 0
    init_uri = None
    ended = False
    entries: list[Entry] = []
    parts: list[Part] = []
    part_uris: set[str] = set()
    duration = None
    part_target = hint = None
    can_block = False
    for line in lines[1:]:
        if not line:
            continue
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = _number(line, float, MAX_DURATION)
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            media_sequence = _number(line, int, MAX_SEQUENCE)
        elif line.startswith("#EXT-X-MAP:"):
            init_uri = _attribute(line, "URI")
        elif line.startswith("#EXTINF:"):
            duration = _number(line.split(",", 1)[0], float, MAX_DURATION)
        elif line.startswith("#EXT-X-PART-INF:"):
            part_target = _number("x:" + _attribute(line, "PART-TARGET"), float, MAX_DURATION)
        elif line.startswith("#EXT-X-SERVER-CONTROL:"):
            can_block = _attributes(line.split(":", 1)[1]).get("CAN-BLOCK-RELOAD") == "YES"
        elif line.startswith("#EXT-X-PRELOAD-HINT:"):
            hint = _safe_name(_attribute(line, "URI"))
        elif line.startswith("#EXT-X-PART:"):
            parts.append(Part(_safe_name(_attribute(line, "URI")),
                              _number("x:" + _attribute(line, "DURATION"), float,
                                      MAX_DURATION),
                              _attributes(line.split(":", 1)[1]).get("INDEPENDENT") == "YES"))
            part_uris.add(parts[-1].uri)
            if len(parts) > MAX_PARTS:
                raise PlaylistError(f"more than {MAX_PARTS} parts in one segment")
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif not line.startswith("#"):
            if duration is None:
                raise PlaylistError(f"segment {line!r} has no #EXTINF")
            entries.append(Entry(_safe_name(line), media_sequence + len(entries), duration,
                                 tuple(part.uri for part in parts)))
            duration = None
            parts = []  # those were this segment's; only the trailing ones are pending
            hint = None
    if init_uri is not None:
        init_uri = _safe_name(init_uri)
    return Playlist(target, media_sequence, init_uri, tuple(entries), ended, tuple(parts),
                    frozenset(part_uris), part_target or None, hint, can_block)


MAX_DURATION = 3600.0  # seconds, for one segment or the target
MAX_PARTS = 1000  # parts of one segment
MAX_SEQUENCE = 2 ** 53  # what a JavaScript player still counts exactly


def _number(line: str, kind, largest: float):
    try:
        value = kind(line.split(":", 1)[1].strip())
    except (IndexError, ValueError, OverflowError):
        raise PlaylistError(f"bad number in {line[:80]!r}") from None
    if not math.isfinite(value) or not 0 <= value <= largest:
        raise PlaylistError(f"number out of range in {line[:80]!r}")
    return value


def newest(playlist: Playlist, count: int) -> Playlist:
    """Only the `count` newest segments of a playlist (numbered as before)."""
    kept = playlist.entries[-count:] if count else ()
    first = kept[0].sequence if kept else playlist.media_sequence + len(playlist.entries)
    return replace(playlist, entries=tuple(kept), media_sequence=first)


def render(playlist: Playlist) -> str:
    """A media playlist with only the tags this module understands: with parts, the segment
    in progress as parts and the hint of the next (low-latency HLS, as the segmenter writes)."""
    parts = playlist.part_target is not None and not playlist.ended
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{9 if parts else 7}", "#EXT-X-INDEPENDENT-SEGMENTS",
             f"#EXT-X-TARGETDURATION:{math.ceil(playlist.target_duration)}"]
    if parts:
        lines += ["#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
                  f"PART-HOLD-BACK={3 * playlist.part_target:.3f}",
                  f"#EXT-X-PART-INF:PART-TARGET={playlist.part_target:.3f}"]
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{playlist.media_sequence}")
    if playlist.init_uri:
        lines.append(f'#EXT-X-MAP:URI="{playlist.init_uri}"')
    for entry in playlist.entries:
        lines += [f"#EXTINF:{entry.duration:.6f},", entry.uri]
    if parts:
        lines += [f'#EXT-X-PART:DURATION={part.duration:.6f},URI="{part.uri}"'
                  + (",INDEPENDENT=YES" if part.independent else "")
                  for part in playlist.pending]
        if playlist.preload_hint:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{playlist.preload_hint}"')
    if playlist.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _attribute(line: str, name: str) -> str:
    for part in line.split(":", 1)[1].split(","):
        key, _, value = part.partition("=")
        if key.strip() == name:
            return value.strip().strip('"')
    raise PlaylistError(f"{line!r} has no {name}")


def _safe_name(uri: str) -> str:
    """Segments must be plain files inside the stream folder; anything else is refused."""
    if not uri or "/" in uri or "\\" in uri or uri.startswith(".") or "\0" in uri:
        raise PlaylistError(f"segment name {uri!r} is not a plain file name")
    return uri


MAX_VARIANTS = 8  # renditions a master playlist may list; more are ignored


@dataclass(frozen=True)
class Variant:
    """One rendition a master playlist lists: its name, media playlist and advertised rate."""

    name: str
    uri: str
    bandwidth: int
    resolution: str = ""


def parse_master(text: str) -> tuple[Variant, ...]:
    """The renditions of a master playlist, top first; NAME="..." or the file's stem names one."""
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistError("not an HLS playlist (no #EXTM3U header)")
    found: list[Variant] = []
    pending: dict[str, str] | None = None
    for line in lines[1:]:
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = _attributes(line.split(":", 1)[1])
        elif line and not line.startswith("#") and pending is not None:
            uri = _safe_name(line)
            name = pending.get("NAME") or uri.rsplit(".", 1)[0]
            try:
                bandwidth = int(pending.get("BANDWIDTH", "0"))
            except ValueError:
                raise PlaylistError(f"bad BANDWIDTH for {uri!r}") from None
            if all(v.name != name and v.uri != uri for v in found):
                found.append(Variant(name, uri, bandwidth, pending.get("RESOLUTION", "")))
            pending = None
            if len(found) == MAX_VARIANTS:
                break
    return tuple(found)


def _attributes(text: str) -> dict[str, str]:
    """KEY=VALUE,KEY="VALUE, with commas",... -> dict (quoted values may hold commas)."""
    result, key, value, quoted, reading_key = {}, "", "", False, True
    for ch in text + ",":
        if reading_key:
            if ch == "=":
                reading_key = False
            elif ch != ",":
                key += ch
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            result[key.strip()] = value.strip()
            key, value, reading_key = "", "", True
        else:
            value += ch
    return result


def with_query(text: str, query: str) -> str:
    """The playlist with `?query` on every segment and init URI.

    An HLS player resolves the playlist's relative URIs against the playlist's address but
    drops its query, so a viewer's `?token=` would not reach the segment requests that count
    them as watching. `query` must already be URL-safe (a checked token).
    """
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#EXT-X-MAP:") and 'URI="' in stripped:
            head, _, rest = stripped.partition('URI="')
            uri, _, tail = rest.partition('"')
            line = f'{head}URI="{uri}?{query}"{tail}'
        elif stripped and not stripped.startswith("#"):
            line = f"{stripped}?{query}"
        out.append(line)
    return "\n".join(out) + "\n"
