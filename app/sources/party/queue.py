"""The queue: files with their own subtitle and audio choices, from the command line or .m3u."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.sources.options import SourceError, is_url, parse_time

PLAYLIST_SUFFIXES = (".m3u", ".m3u8")
ITEM_OPTIONS = ("subs", "audio", "start")
MAX_ITEMS = 1000


@dataclass(frozen=True)
class Item:
    source: str
    subs: str | None = None
    audio: int | None = None
    start: float = 0.0
    label: str = ""

    @property
    def name(self) -> str:
        """What viewers see in the title: the playlist's #EXTINF text or the file's name."""
        if self.label:
            return self.label
        return Path(self.source).stem if not is_url(self.source) else self.source


def is_playlist_file(source: str) -> bool:
    return not is_url(source) and source.lower().endswith(PLAYLIST_SUFFIXES)


def item_with(source: str, options: dict[str, str], label: str = "") -> Item:
    """An item from textual options (command line or #EXTLIVESTREAM), checked."""
    unknown = set(options) - set(ITEM_OPTIONS)
    if unknown:
        raise SourceError(f"{source}: unknown item option {sorted(unknown)[0]!r}; "
                          f"use {', '.join(ITEM_OPTIONS)}")
    audio = options.get("audio")
    if audio is not None and (not audio.isdigit()):
        raise SourceError(f"{source}: audio={audio!r}: a track number from 0")
    start = options.get("start")
    return Item(source, subs=options.get("subs") or None,
                audio=int(audio) if audio is not None else None,
                start=parse_time(start) if start else 0.0, label=label)


def read_m3u(path: Path) -> list[Item]:
    """An .m3u list; `#EXTLIVESTREAM:subs=0,audio=1` sets the next entry's choices, #EXTINF's
    text its title. Relative paths are relative to the list's folder."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the playlist ({exc.strerror})") from exc
    items: list[Item] = []
    pending: dict[str, str] = {}
    label = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().lstrip("\ufeff")
        if not line:
            continue
        if line.upper().startswith("#EXTLIVESTREAM:"):
            for part in line.split(":", 1)[1].split(","):
                key, sep, value = part.strip().partition("=")
                if not sep:
                    raise SourceError(f"{path} line {number}: expected key=value in {part!r}")
                pending[key.strip().lower()] = value.strip()
            continue
        if line.upper().startswith("#EXTINF:"):
            label = line.partition(",")[2].strip()
            continue
        if line.startswith("#"):
            continue
        source = line if is_url(line) or Path(line).is_absolute() else str(
            Path(path).parent / line)
        items.append(item_with(source, pending, label))
        pending, label = {}, ""
        if len(items) > MAX_ITEMS:
            raise SourceError(f"{path}: more than {MAX_ITEMS} entries")
    if not items:
        raise SourceError(f"{path}: the playlist names no files")
    return items


def expand(sources: list[str], subs: str | None, audio: int | None,
           start: float = 0.0) -> list[Item]:
    """One command-line group (files sharing its --subs/--audio) -> items; .m3u files are
    read in place, their own #EXTLIVESTREAM choices winning."""
    items: list[Item] = []
    for source in sources:
        if is_playlist_file(source):
            items += read_m3u(Path(source))
        else:
            items.append(Item(source, subs=subs, audio=audio, start=start))
    return items


def split_play_argv(argv: list[str]) -> tuple[list[str], list[list[str]]]:
    """`play a.mkv --subs 0 -- b.mkv --audio 1` -> (argv up to the first `--`, the later
    groups). Only `play` and `cloud play` are split; every other command is left alone."""
    position = _command_position(argv)
    if position is not None and argv[position] == "cloud" and argv[position + 1:position + 2] \
            == ["play"]:
        position += 1
    if position is None or argv[position] != "play":
        return argv, []
    head, groups, current = argv[:position + 1], [], None
    for token in argv[position + 1:]:
        if token == "--":
            current = []
            groups.append(current)
        elif current is None:
            head.append(token)
        else:
            current.append(token)
    return head, [g for g in groups if g]


def _command_position(argv: list[str]) -> int | None:
    skip = False
    for index, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token in ("--config", "--log-level"):
            skip = True
            continue
        if token.startswith("-"):
            continue
        return index
    return None


def parse_group(tokens: list[str]) -> list[Item]:
    """A later group: FILE... [--subs N|PATH] [--audio N] [--start T]."""
    sources: list[str] = []
    options: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("--") and token[2:] in ITEM_OPTIONS:
            if index + 1 >= len(tokens):
                raise SourceError(f"{token} needs a value")
            options[token[2:]] = tokens[index + 1]
            index += 2
            continue
        if token.startswith("-") and token != "-":
            raise SourceError(f"{token}: after `--` only --subs, --audio and --start apply "
                              "(to that group's files); put other options before the first --")
        sources.append(token)
        index += 1
    if not sources:
        raise SourceError("an empty group between `--` separators")
    checked = item_with(sources[0], options)
    return expand(sources, checked.subs, checked.audio, checked.start)
