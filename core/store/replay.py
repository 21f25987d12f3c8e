"""The replay cache: every HMAC signature that verified, so no request is accepted twice.

``add_if_absent(key, expires_at)`` records a key and answers ``True`` the first time,
``False`` for every later call while the key is remembered: the check and the record
are one atomic step, across the workers and processes that share the store.

What is remembered, and for how long, is the HMAC plugin's decision
(``plugins.auth.hmac_auth``): a timestamp-bound signature until its timestamp leaves the
±SIGNATURE_CACHE_TTL window (after that the timestamp check refuses it anyway),
a body-only signature for ever (``expires_at=None``). Only verified signatures are
recorded, so an attacker cannot fill the store.

``SqliteReplayCache`` keeps the keys in ``DATA_DIR/replay.sqlite3``, which survives a
restart and is shared by every process on the same DATA_DIR; a Redis implementation of
the same protocol serves several machines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from core.store.sqlite.database import SqliteDatabase, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_signatures (
    key        TEXT PRIMARY KEY,
    expires_at REAL            -- unix seconds; NULL: remembered for ever
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_signatures_expiry ON seen_signatures(expires_at) WHERE expires_at IS NOT NULL;
"""


class ReplayCache(Protocol):
    async def add_if_absent(self, key: str, expires_at: float | None) -> bool:
        """Record ``key`` until ``expires_at`` (unix seconds; ``None``: for ever).

        ``True`` when the key was not remembered (it is now), ``False`` when it was.
        """

    async def close(self) -> None:
        """Release the store's resources."""


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

    def _add(self, conn, key: str, expires_at: float | None) -> bool:
        now = self._clock()
        with transaction(conn):
            row = conn.execute("SELECT expires_at FROM seen_signatures WHERE key = ?", (key,)).fetchone()
            if row is not None and (row[0] is None or row[0] >= now):
                return False
            conn.execute("INSERT OR REPLACE INTO seen_signatures (key, expires_at) VALUES (?, ?)", (key, expires_at))
            if now >= self._next_prune:
                conn.execute("DELETE FROM seen_signatures WHERE expires_at IS NOT NULL AND expires_at < ?", (now,))
                self._next_prune = now + self._prune_interval
            return True

    async def count(self) -> int:
        """Rows stored (expired ones not yet pruned included): for tests and metrics."""
        return await self.db.run(lambda conn: conn.execute("SELECT COUNT(*) FROM seen_signatures").fetchone()[0])

    async def close(self) -> None:
        self.db.close()
