"""Figures over time that survive a restart: one point per 10 s for 24 hours, then one per
minute for 30 days, in a small SQLite file of their own in the state folder.

Each process (each worker of `--workers N`) writes its own rows, keyed by its worker number;
reading sums additive figures (viewers, bytes, CPU, memory, chat posts) over the workers of a
moment and takes the largest of the others (the incoming bitrate every worker sees alike).
A file of its own keeps the chat store's writes and this apart, and works the same whether
the chat lives in SQLite or Redis.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from app.community.store import private_database

FINE_SECONDS = 10
FINE_KEEP = 24 * 3600
COARSE_SECONDS = 60
COARSE_KEEP = 30 * 24 * 3600
NOT_ADDITIVE = {"incoming_kbps"}  # the same stream seen by every worker


@dataclass(frozen=True)
class Point:
    at: int  # unix time, start of the bucket
    figures: dict[str, float]


class History:
    def __init__(self, path: Path, worker: int = 0):
        self.path = Path(path)
        self.worker = worker
        self._lock = threading.Lock()
        private_database(self.path)  # 0600, like the chat store: it is the server's business
        self._db = sqlite3.connect(self.path, timeout=5, check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        for table in ("fine", "coarse"):
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (at INTEGER, worker INTEGER, "
                             "figures TEXT, PRIMARY KEY (at, worker))")

    def add(self, figures: dict[str, float], now: float | None = None) -> None:
        """Record this process's figures for the current 10-s bucket (and its minute)."""
        now = time.time() if now is None else now
        fine = int(now) // FINE_SECONDS * FINE_SECONDS
        coarse = int(now) // COARSE_SECONDS * COARSE_SECONDS
        data = json.dumps({k: round(float(v), 3) for k, v in figures.items()})
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO fine VALUES (?, ?, ?)",
                             (fine, self.worker, data))
            self._db.execute("INSERT OR REPLACE INTO coarse VALUES (?, ?, ?)",
                             (coarse, self.worker, data))  # the minute's last 10 s stand for it
            self._db.execute("DELETE FROM fine WHERE at < ?", (fine - FINE_KEEP,))
            self._db.execute("DELETE FROM coarse WHERE at < ?", (coarse - COARSE_KEEP,))

    def points(self, since: float, coarse: bool = False) -> list[Point]:
        """Every moment since `since`, the workers' figures combined, oldest first."""
        table = "coarse" if coarse else "fine"
        with self._lock:
            rows = self._db.execute(f"SELECT at, figures FROM {table} WHERE at >= ? "
                                    "ORDER BY at", (int(since),)).fetchall()
        combined: dict[int, dict[str, float]] = {}
        for at, data in rows:
            into = combined.setdefault(at, {})
            for key, value in json.loads(data).items():
                if key in NOT_ADDITIVE:
                    into[key] = max(into.get(key, 0.0), value)
                else:
                    into[key] = into.get(key, 0.0) + value
        return [Point(at, figures) for at, figures in combined.items()]

    def close(self) -> None:
        with self._lock:
            self._db.close()
