"""The SQLite store's schema version (`PRAGMA user_version`), and migrations between them.

An older install is migrated when it opens, after a copy of the file is taken beside it
(SQLite's online backup API, 0600); a file written by a newer livestream is refused with a
sentence, rather than read wrongly. Version 0 is every store from before versions were kept:
its tables are version 1's, so its migration only records the version. A change to the
tables adds the next version to MIGRATIONS, with the statements that bring the one before
it up to date.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
MIGRATIONS: dict[int, list[str]] = {
    1: [],  # from 0: the same tables; from now on the version is kept
    2: ["ALTER TABLE bans ADD COLUMN expires REAL NOT NULL DEFAULT 0"],  # timed bans
}


class SchemaTooNew(RuntimeError):
    """The store was written by a newer livestream; the text says what to do."""


def version_of(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def upgrade(db: sqlite3.Connection, path: Path) -> int:
    """Bring the store at `path` to SCHEMA_VERSION; returns the version it had."""
    found = version_of(db)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path} was written by a newer livestream (store schema {found}; this one knows "
            f"{SCHEMA_VERSION}). Upgrade livestream, or restore a backup this version made "
            "(livestream restore FILE).")
    has_tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                            "name = 'secrets'").fetchone()[0]
    if found < SCHEMA_VERSION and has_tables:
        copy = path.with_name(f"{path.name}.schema{found}-{time.strftime('%Y%m%d%H%M%S')}.bak")
        backup_to(db, copy)
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                db.execute(statement)
        log.warning("state database migrated from schema %d to %d (the old file is kept as "
                    "%s)", found, SCHEMA_VERSION, copy.name)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return found


def backup_to(db: sqlite3.Connection, target: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup API), readable by its
    owner only."""
    os.close(os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
    copy = sqlite3.connect(target)
    try:
        db.backup(copy)
    finally:
        copy.close()
