"""The state store: messages, viewers, bans, filters and secrets behind one small interface.

`Store` is what the rest of the app uses; `SQLiteStore` keeps everything in one SQLite file in
WAL mode in the state folder (nothing to install, survives restarts and `kill -9`). Hot reads
(recent messages, bans, filters, recently seen viewers, and ids known to have no viewer record)
are answered from memory; every in-memory collection has a cap. `RedisStore`
(app/community/shared.py), the store several workers or edges share, implements the same
methods.
"""
from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import gevent

from app.community import schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    id: int
    viewer_id: str
    name: str
    tag: str
    tripcode: str
    colour: int
    body: str
    created: float
    broadcaster: bool = False
    hidden: bool = False


@dataclass(frozen=True)
class Viewer:
    id: str  # derived from the token; the token itself is never stored
    tag: str
    name: str = ""
    tripcode: str = ""
    verified: bool = False  # solved a captcha and has not tripped a flood rule since
    first_seen: float = 0.0
    last_seen: float = 0.0


@dataclass(frozen=True)
class Ban:
    kind: str  # "viewer" or "tripcode"
    value: str
    created: float
    note: str = ""
    expires: float = 0.0  # a timed ban ends then; 0: for good

    def active(self, now: float) -> bool:
        return not self.expires or self.expires > now


@dataclass(frozen=True)
class Filter:
    id: int
    pattern: str
    is_regex: bool
    case_sensitive: bool
    action: str  # "censor", "block" or "ban"
    created: float


BUSY_SECONDS = 2.0  # how long a write waits for another process's lock before giving up


class StoreUnavailable(RuntimeError):
    """The state database cannot be written (or read) right now: locked, full or broken.

    Views answer 503 with a sentence for the viewer; nothing already stored is lost.
    """


class Store(Protocol):
    def secret(self, name: str, size: int = 32) -> bytes: ...
    def get_secret(self, name: str) -> bytes | None: ...
    def set_secret(self, name: str, value: bytes) -> None: ...
    def add_message(self, message: Message) -> Message: ...
    def recent_messages(self, include_hidden: bool = False) -> list[Message]: ...
    def history(self, since: float = 0.0) -> list[Message]: ...
    def messages_since(self, last_id: int) -> list[Message]: ...
    def last_message_id(self) -> int: ...
    def hide_messages(self, ids: list[int], hidden: bool = True) -> list[int]: ...
    def hide_messages_of(self, viewer_id: str) -> list[int]: ...
    def viewer(self, viewer_id: str) -> Viewer | None: ...
    def save_viewer(self, viewer: Viewer) -> None: ...
    def bans(self) -> dict[tuple[str, str], Ban]: ...
    def add_ban(self, ban: Ban) -> None: ...
    def remove_ban(self, kind: str, value: str) -> None: ...
    def filters(self) -> list[Filter]: ...
    def add_filter(self, pattern: str, is_regex: bool, case_sensitive: bool,
                   action: str) -> Filter: ...
    def remove_filter(self, filter_id: int) -> None: ...
    def sessions(self) -> list[tuple[bytes, float, float]]: ...
    def session(self, digest: bytes) -> tuple[float, float] | None: ...
    def save_session(self, digest: bytes, idle_until: float, ends: float) -> None: ...
    def remove_session(self, digest: bytes) -> None: ...
    def add_login_link(self, digest: bytes, expires: float) -> None: ...
    def use_login_link(self, digest: bytes, now: float) -> bool: ...
    def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, viewer_id TEXT NOT NULL, name TEXT NOT NULL,
    tag TEXT NOT NULL, tripcode TEXT NOT NULL, colour INTEGER NOT NULL, body TEXT NOT NULL,
    created REAL NOT NULL, broadcaster INTEGER NOT NULL, hidden INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS messages_viewer ON messages (viewer_id);
CREATE TABLE IF NOT EXISTS viewers (
    id TEXT PRIMARY KEY, tag TEXT NOT NULL, name TEXT NOT NULL, tripcode TEXT NOT NULL,
    verified INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL);
CREATE INDEX IF NOT EXISTS viewers_seen ON viewers (last_seen);
CREATE TABLE IF NOT EXISTS bans (
    kind TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL, note TEXT NOT NULL,
    expires REAL NOT NULL DEFAULT 0, PRIMARY KEY (kind, value));
CREATE TABLE IF NOT EXISTS broadcaster_sessions (
    digest BLOB PRIMARY KEY, idle_until REAL NOT NULL, ends REAL NOT NULL);
CREATE TABLE IF NOT EXISTS login_links (digest BLOB PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS filters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pattern TEXT NOT NULL, is_regex INTEGER NOT NULL,
    case_sensitive INTEGER NOT NULL, action TEXT NOT NULL, created REAL NOT NULL);
"""


class SQLiteStore:
    """SQLite in WAL mode; one connection, used from greenlets of one process."""

    def __init__(self, path: Path, history: int = 5000, shown: int = 100,
                 max_viewers: int = 50000, cache_size: int = 5000):
        self.path = Path(path)
        self.history_size = history
        self.max_viewers = max_viewers
        self.cache_size = cache_size
        self.db = sqlite3.connect(str(self.path), isolation_level=None,
                                  check_same_thread=False, timeout=5.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across kill -9
        schema.upgrade(self.db, self.path)  # refuses a newer store before anything is written
        self.db.executescript(SCHEMA)
        self._recent: deque[Message] = deque(maxlen=shown)
        self._recent.extend(self._load_recent(shown))
        self._viewers: OrderedDict[str, Viewer] = OrderedDict()
        # ids known to have no record: most viewers never post, and every one of their
        # requests (and every user list naming them) would otherwise ask SQLite again
        self._unknown_viewers: OrderedDict[str, None] = OrderedDict()
        self._bans = {(b.kind, b.value): b for b in self._load_bans()}
        self._filters = self._load_filters()
        self._writes = 0
        # From here on a busy database is waited for in _run, between greenlets: SQLite's
        # own busy wait would sleep inside C and stop every viewer of this process.
        self.db.execute("PRAGMA busy_timeout = 0")

    def _run(self, sql: str, params=()) -> sqlite3.Cursor:
        """One statement; waits cooperatively while another process holds the lock, and turns
        an unusable database (locked too long, disk full, I/O error) into StoreUnavailable."""
        deadline = time.monotonic() + BUSY_SECONDS
        while True:
            try:
                return self.db.execute(sql, params)
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if busy and time.monotonic() < deadline:
                    gevent.sleep(0.02)
                    continue
                log.warning("state database unavailable: %s", exc)
                raise StoreUnavailable(str(exc)) from exc

    # --- secrets -------------------------------------------------------------------------

    def secret(self, name: str, size: int = 32) -> bytes:
        """A random secret that stays the same across restarts (created on first use)."""
        row = self._run("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        if row:
            return bytes(row[0])
        value = secrets.token_bytes(size)
        self._run("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)", (name, value))
        return self.secret(name, size)

    def get_secret(self, name: str) -> bytes | None:
        row = self._run("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return bytes(row[0]) if row else None

    def set_secret(self, name: str, value: bytes) -> None:
        self._run("INSERT OR REPLACE INTO secrets (name, value) VALUES (?, ?)",
                        (name, value))

    # --- messages ------------------------------------------------------------------------

    def add_message(self, message: Message) -> Message:
        cur = self._run(
            "INSERT INTO messages (viewer_id, name, tag, tripcode, colour, body, created,"
            " broadcaster, hidden) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (message.viewer_id, message.name, message.tag, message.tripcode, message.colour,
             message.body, message.created, int(message.broadcaster), int(message.hidden)),
        )
        stored = replace(message, id=cur.lastrowid)
        self._recent.append(stored)
        self._writes += 1
        if self._writes % 100 == 0:
            try:
                self._trim()
            except StoreUnavailable:
                pass  # the message is stored; trimming waits for the next hundred
        return stored

    def _trim(self) -> None:
        """Bounded retention: keep the newest `history` messages and `max_viewers` viewers."""
        self._run("DELETE FROM messages WHERE id <= (SELECT MAX(id) FROM messages) - ?",
                        (self.history_size,))
        self._run(
            "DELETE FROM viewers WHERE id IN (SELECT id FROM viewers ORDER BY last_seen DESC"
            " LIMIT -1 OFFSET ?)", (self.max_viewers,))

    def recent_messages(self, include_hidden: bool = False) -> list[Message]:
        return [m for m in self._recent if include_hidden or not m.hidden]

    def history(self, since: float = 0.0) -> list[Message]:
        """Every kept message posted at or after `since` (hidden ones too), oldest first."""
        rows = self._run("SELECT * FROM messages WHERE created >= ? ORDER BY id", (since,))
        return [_message(r) for r in rows.fetchall()]

    def messages_since(self, last_id: int) -> list[Message]:
        return [m for m in self._recent if m.id > last_id and not m.hidden]

    def last_message_id(self) -> int:
        return self._recent[-1].id if self._recent else 0

    def message(self, message_id: int) -> Message | None:
        for m in self._recent:
            if m.id == message_id:
                return m
        if not is_row_id(message_id):
            return None
        row = self._run("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        return _message(row) if row else None

    def hide_messages(self, ids: list[int], hidden: bool = True) -> list[int]:
        """Hide these messages (or show them again, hidden=False)."""
        ids = [i for i in ids if is_row_id(i)]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        self._run(f"UPDATE messages SET hidden = ? WHERE id IN ({marks})", [int(hidden), *ids])
        wanted = set(ids)
        self._hide_cached(lambda m: m.id in wanted, hidden)
        return sorted(wanted)

    def hide_messages_of(self, viewer_id: str) -> list[int]:
        ids = [r[0] for r in self._run(
            "SELECT id FROM messages WHERE viewer_id = ? AND hidden = 0", (viewer_id,))]
        self._run("UPDATE messages SET hidden = 1 WHERE viewer_id = ?", (viewer_id,))
        self._hide_cached(lambda m: m.viewer_id == viewer_id)
        return ids

    def _hide_cached(self, matches, hidden: bool = True) -> None:
        recent = [replace(m, hidden=hidden) if matches(m) else m for m in self._recent]
        self._recent.clear()
        self._recent.extend(recent)

    def _load_recent(self, count: int) -> list[Message]:
        rows = self._run("SELECT * FROM messages ORDER BY id DESC LIMIT ?", (count,))
        return [_message(r) for r in reversed(rows.fetchall())]

    # --- viewers -------------------------------------------------------------------------

    def viewer(self, viewer_id: str) -> Viewer | None:
        cached = self._viewers.get(viewer_id)
        if cached is not None:
            self._viewers.move_to_end(viewer_id)
            return cached
        if viewer_id in self._unknown_viewers:
            self._unknown_viewers.move_to_end(viewer_id)
            return None
        row = self._run("SELECT id, tag, name, tripcode, verified, first_seen, last_seen"
                              " FROM viewers WHERE id = ?", (viewer_id,)).fetchone()
        if row is None:
            self._unknown_viewers[viewer_id] = None
            while len(self._unknown_viewers) > self.cache_size:
                self._unknown_viewers.popitem(last=False)
            return None
        viewer = Viewer(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])
        self._cache_viewer(viewer)
        return viewer

    def save_viewer(self, viewer: Viewer) -> None:
        self._unknown_viewers.pop(viewer.id, None)
        self._run(
            "INSERT OR REPLACE INTO viewers (id, tag, name, tripcode, verified, first_seen,"
            " last_seen) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (viewer.id, viewer.tag, viewer.name, viewer.tripcode, int(viewer.verified),
             viewer.first_seen, viewer.last_seen))
        self._cache_viewer(viewer)

    def _cache_viewer(self, viewer: Viewer) -> None:
        self._viewers[viewer.id] = viewer
        self._viewers.move_to_end(viewer.id)
        while len(self._viewers) > self.cache_size:
            self._viewers.popitem(last=False)

    # --- bans ----------------------------------------------------------------------------

    def bans(self) -> dict[tuple[str, str], Ban]:
        return self._bans

    def add_ban(self, ban: Ban) -> None:
        """Keep a ban. Bans come from fresh tokens too (a word filter bans every token that
        trips it), so at most `max_viewers` are kept: beyond that the oldest is dropped."""
        self._run("INSERT OR REPLACE INTO bans (kind, value, created, note, expires)"
                  " VALUES (?, ?, ?, ?, ?)",
                  (ban.kind, ban.value, ban.created, ban.note, ban.expires))
        bans = {k: b for k, b in self._bans.items() if k != (ban.kind, ban.value)}
        bans[(ban.kind, ban.value)] = ban  # newest last: the dict keeps insertion order
        while len(bans) > self.max_viewers:
            kind, value = next(iter(bans))
            self._run("DELETE FROM bans WHERE kind = ? AND value = ?", (kind, value))
            del bans[(kind, value)]
        self._bans = bans

    def remove_ban(self, kind: str, value: str) -> None:
        self._run("DELETE FROM bans WHERE kind = ? AND value = ?", (kind, value))
        self._bans = {k: b for k, b in self._bans.items() if k != (kind, value)}

    def _load_bans(self) -> list[Ban]:
        return [Ban(*r) for r in self._run(
            "SELECT kind, value, created, note, expires FROM bans ORDER BY created")]

    # --- filters -------------------------------------------------------------------------

    def filters(self) -> list[Filter]:
        return self._filters

    def add_filter(self, pattern: str, is_regex: bool, case_sensitive: bool,
                   action: str) -> Filter:
        created = time.time()
        cur = self._run(
            "INSERT INTO filters (pattern, is_regex, case_sensitive, action, created)"
            " VALUES (?, ?, ?, ?, ?)", (pattern, int(is_regex), int(case_sensitive), action,
                                        created))
        added = Filter(cur.lastrowid, pattern, is_regex, case_sensitive, action, created)
        self._filters = [*self._filters, added]
        return added

    def remove_filter(self, filter_id: int) -> None:
        if not is_row_id(filter_id):
            return
        self._run("DELETE FROM filters WHERE id = ?", (filter_id,))
        self._filters = [f for f in self._filters if f.id != filter_id]

    def _load_filters(self) -> list[Filter]:
        rows = self._run("SELECT id, pattern, is_regex, case_sensitive, action, created"
                               " FROM filters ORDER BY id")
        return [Filter(r[0], r[1], bool(r[2]), bool(r[3]), r[4], r[5]) for r in rows]

    # --- broadcaster sessions and one-time login links (only digests are stored) ----------

    def sessions(self) -> list[tuple[bytes, float, float]]:
        rows = self._run("SELECT digest, idle_until, ends FROM broadcaster_sessions")
        return [(bytes(r[0]), r[1], r[2]) for r in rows]

    def session(self, digest: bytes) -> tuple[float, float] | None:
        row = self._run("SELECT idle_until, ends FROM broadcaster_sessions WHERE digest = ?",
                        (digest,)).fetchone()
        return (row[0], row[1]) if row else None

    def save_session(self, digest: bytes, idle_until: float, ends: float) -> None:
        now = time.time()  # ended sessions go as new ones come: the table stays small
        self._run("DELETE FROM broadcaster_sessions WHERE idle_until < ? OR ends < ?",
                  (now, now))
        self._run("INSERT OR REPLACE INTO broadcaster_sessions (digest, idle_until, ends)"
                  " VALUES (?, ?, ?)", (digest, idle_until, ends))

    def remove_session(self, digest: bytes) -> None:
        self._run("DELETE FROM broadcaster_sessions WHERE digest = ?", (digest,))

    def add_login_link(self, digest: bytes, expires: float) -> None:
        self._run("DELETE FROM login_links WHERE expires < ?", (time.time(),))
        self._run("INSERT INTO login_links (digest, expires) VALUES (?, ?)", (digest, expires))

    def use_login_link(self, digest: bytes, now: float) -> bool:
        """True once for a live link: the row is deleted by the same statement that finds it,
        so two uses at once (even from two processes) cannot both succeed."""
        cur = self._run("DELETE FROM login_links WHERE digest = ? AND expires >= ?",
                        (digest, now))
        return cur.rowcount == 1

    def close(self) -> None:
        self.db.close()


ROW_ID_MAX = 2**63 - 1


def is_row_id(value: int) -> bool:
    """Ids come from forms: one SQLite cannot even hold names no row (and must not crash)."""
    return isinstance(value, int) and 0 < value <= ROW_ID_MAX


def _message(row) -> Message:
    (id_, viewer_id, name, tag, tripcode, colour, body, created, broadcaster, hidden) = row
    return Message(id_, viewer_id, name, tag, tripcode, colour, body, created,
                   bool(broadcaster), bool(hidden))


PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """The state folder holds the server secret, the tripcode salt, the broadcaster's password
    hash and the chat log: only the user running the server may list or read it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)  # mkdir's mode is cut by the umask and ignored for old folders
    return path


def private_database(path: Path) -> None:
    """Create the SQLite file (and fix its journal files) as 0600 before SQLite opens it.

    SQLite gives the -wal and -shm files the mode of the database file, so a database
    created 0600 keeps all three private; an older, readable one is tightened here too.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
    for suffix in ("", "-wal", "-shm", "-journal"):
        extra = Path(f"{path}{suffix}")
        if extra.exists():
            os.chmod(extra, PRIVATE_FILE)


def open_store(state_dir: Path, chat_history: int, shown: int, max_viewers: int,
               cache_size: int) -> SQLiteStore:
    path = private_dir(state_dir) / "livestream.sqlite3"
    try:
        private_database(path)
        return SQLiteStore(path, chat_history, shown, max_viewers, cache_size)
    except schema.SchemaTooNew:
        raise
    except sqlite3.DatabaseError as exc:
        raise RuntimeError(f"cannot open the state database {path}: {exc}. Check the folder is "
                           "writable (server.state_dir), or move a damaged file away.") from exc
