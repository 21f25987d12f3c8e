"""The ``ReplayCache`` in ``DATA_DIR/replay.sqlite3``: survives a restart and is shared by
every process on the same DATA_DIR."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from core.store.sqlite.database import SqliteDatabase, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_signatures (
    key        TEXT PRIMARY KEY,
    expires_at REAL            -- unix seconds; NULL: remembered for ever
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_signatures_expiry ON seen_signatures(expires_at) WHERE expires_at IS NOT NULL;
"""


class SqliteReplayCache:
    """A ``ReplayCache`` in one SQLite file (WAL; ``BEGIN IMMEDIATE`` makes the
    set-if-absent atomic across processes). Expired rows are pruned now and then,
    during an insert, at most once per ``prune_interval`` seconds."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time, prune_interval: float = 60.0):
        # FULL: a record lost to a power cut would let its request be replayed.
        self.db = SqliteDatabase(path, synchronous="FULL", schema=SCHEMA)
        self._clock = clock
        self._prune_interval = prune_interval
        self._next_prune = 0.0

    async def add_if_absent(self, key: str, expires_at: float | None) -> bool:
        return await self.db.run(lambda conn: self._add(conn, key, expires_at))

    def _add(self, conn: sqlite3.Connection, key: str, expires_at: float | None) -> bool:
        now = self._clock()
        with transaction(conn):
            row = conn.execute("SELECT expires_at FROM seen_signatures WHERE key = ?", (key,)).fetchone()
            if row is not None and (row[0] is None or row[0] >= now):
                return False
            if expires_at is not None and expires_at <= now:
                return True  # already expired: nothing to remember
            conn.execute("INSERT OR REPLACE INTO seen_signatures (key, expires_at) VALUES (?, ?)", (key, expires_at))
            if now >= self._next_prune:
                conn.execute("DELETE FROM seen_signatures WHERE expires_at IS NOT NULL AND expires_at < ?", (now,))
                self._next_prune = now + self._prune_interval
            return True

    async def count(self) -> int:
        """Rows stored (expired ones not yet pruned included): for tests and metrics."""
        return await self.db.run(lambda conn: int(conn.execute("SELECT COUNT(*) FROM seen_signatures").fetchone()[0]))

    async def close(self) -> None:
        self.db.close()
