"""The durable outbox: every QoS 1 message is on disk before it is sent.

paho keeps unacknowledged messages only in memory, so a broker outage followed by a
restart of the rig would lose them. Here a message is committed to SQLite (WAL,
``synchronous=FULL`` so a power cut keeps every committed row) before the publisher may
send it, and its row is deleted only when the broker acknowledges it (PUBACK). Rows are
sent in id order, so the backlog goes out in the order it was produced.

Bounds: at most ``max_rows`` rows and ``max_age_s`` of age; past either, the oldest
rows are dropped and counted in ``dropped`` (persisted in the ``meta`` table, so the count
survives restarts). Ages use wall-clock time (``time.time_ns``), the one place we do not
use CLOCK_MONOTONIC, because the monotonic clock restarts at boot and rows outlive boots.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    created_wall_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_age ON outbox (created_wall_ns);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Row:
    id: int
    topic: str
    payload: bytes
    qos: int


class Outbox:
    """A thread-safe FIFO on SQLite. ``put`` commits before it returns."""

    def __init__(self, path: str | Path, max_rows: int = 100_000,
                 max_age_s: float = 7 * 24 * 3600.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # -- producer side -------------------------------------------------------------
    def put(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Commit one message; returns its row id."""
        return self.put_many([(topic, payload, qos)])[-1]

    def put_many(self, items: list[tuple[str, bytes, int]]) -> list[int]:
        """Commit several messages in one transaction (one fsync)."""
        now = time.time_ns()
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            ids = []
            for topic, payload, qos in items:
                cur.execute(
                    "INSERT INTO outbox (topic, payload, qos, created_wall_ns) VALUES (?,?,?,?)",
                    (topic, payload, qos, now),
                )
                ids.append(int(cur.lastrowid or 0))
            self._count += len(items)
            self._enforce_bounds(cur, now)
            cur.execute("COMMIT")
            return ids

    def _enforce_bounds(self, cur: sqlite3.Cursor, now_wall_ns: int) -> None:
        dropped = 0
        cutoff = now_wall_ns - int(self.max_age_s * 1e9)
        cur.execute("DELETE FROM outbox WHERE created_wall_ns < ?", (cutoff,))
        dropped += cur.rowcount
        self._count -= cur.rowcount
        excess = self._count - self.max_rows
        if excess > 0:
            cur.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                (excess,),
            )
            dropped += cur.rowcount
            self._count -= cur.rowcount
        if dropped:
            cur.execute(
                "INSERT INTO meta (key, value) VALUES ('dropped', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                (dropped,),
            )

    # -- sender side ---------------------------------------------------------------
    def peek(self, after_id: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows with id > after_id, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [Row(int(r[0]), str(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    def ack(self, row_ids: list[int]) -> None:
        """The broker has the messages: forget them."""
        if not row_ids:
            return
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in row_ids])
            self._count -= cur.rowcount if cur.rowcount > 0 else 0
            cur.execute("COMMIT")

    @property
    def dropped(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        return int(row[0]) if row else 0

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
