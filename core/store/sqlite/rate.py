"""Rate-limit counters in ``DATA_DIR/ratelimit.sqlite3``: a storage of the ``limits``
library, so the workers of one machine (``hypercorn --workers N``) share every budget.

limits ships storages for memory, Redis, Memcached and MongoDB, none for SQLite, which
is this project's embedded store. This implements limits' storage interface (``Storage``
with ``MovingWindowSupport``) the way the project makes every check-then-write atomic
across processes on SQLite: one ``BEGIN IMMEDIATE`` transaction per hit, so no other
process writes between the count and the charge. ``refund`` (the newest entry of a
window given back) is what ``core.web.ratelimit`` adds to limits' interface.

Moving-window entries are rows ``(key, at, expires_at)``; a hit deletes its counter's
expired rows, so a counter holds at most its limit. ``incr``/``get`` are limits' plain
expiring counters (the dashboard's logged-out sessions use them).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from limits.aio.storage import MovingWindowSupport, Storage

from core.store.sqlite.database import SqliteDatabase, transaction

SCHEMA = """
DROP TABLE IF EXISTS tats;
CREATE TABLE IF NOT EXISTS window_entries (key TEXT NOT NULL, at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS window_entries_by_key ON window_entries (key, at);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at REAL NOT NULL
) WITHOUT ROWID;
"""

PRUNE_EVERY = 1000
"""Every this many writes, the rows of every counter that have expired are deleted."""


class SqliteRateStorage(Storage, MovingWindowSupport):
    """limits' storage interface over one SQLite file shared by the processes of a machine."""

    STORAGE_SCHEME = None  # constructed directly, never from a limits storage URI

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        # OFF: a count forgotten in a power cut is harmless; speed matters on every request.
        # inline: these tiny transactions run on the event loop (no fsync, no lock wait;
        # another worker's write sends them to the database thread instead).
        self.db = SqliteDatabase(path, synchronous="OFF", schema=SCHEMA, inline=True)
        self._writes = 0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    def _prune_due(self) -> bool:
        self._writes += 1
        return self._writes % PRUNE_EVERY == 0

    # -- the moving window ------------------------------------------------------

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now, prune = time.time(), self._prune_due()

        def acquire(conn: sqlite3.Connection) -> bool:
            with transaction(conn):  # BEGIN IMMEDIATE: no other process between the count and the charge
                conn.execute("DELETE FROM window_entries WHERE key = ? AND at < ?", (key, now - expiry))
                if prune:
                    conn.execute("DELETE FROM window_entries WHERE expires_at < ?", (now,))
                    conn.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
                (count,) = conn.execute("SELECT COUNT(*) FROM window_entries WHERE key = ?", (key,)).fetchone()
                if count + amount > limit:
                    return False
                conn.executemany("INSERT INTO window_entries VALUES (?, ?, ?)", [(key, now, now + expiry)] * amount)
                return True

        return await self.db.run(acquire)

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()

        def window(conn: sqlite3.Connection) -> tuple[float, int]:
            oldest, count = conn.execute(
                "SELECT MIN(at), COUNT(*) FROM window_entries WHERE key = ? AND at >= ?", (key, now - expiry)
            ).fetchone()
            return (oldest, count) if count else (now, 0)

        return await self.db.run(window, read_only=True)

    async def refund(self, key: str) -> None:
        await self.db.run(
            lambda conn: conn.execute(
                "DELETE FROM window_entries WHERE rowid = "
                "(SELECT rowid FROM window_entries WHERE key = ? ORDER BY at DESC LIMIT 1)",
                (key,),
            )
        )

    # -- plain expiring counters --------------------------------------------------

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()

        def incr(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                row = conn.execute("SELECT count, expires_at FROM counters WHERE key = ?", (key,)).fetchone()
                count, expires_at = (row[0] + amount, row[1]) if row and row[1] > now else (amount, now + expiry)
                conn.execute(
                    "INSERT INTO counters (key, count, expires_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET count = excluded.count, expires_at = excluded.expires_at",
                    (key, count, expires_at),
                )
                return int(count)

        return await self.db.run(incr)

    async def get(self, key: str) -> int:
        now = time.time()
        row = await self.db.run(
            lambda conn: conn.execute(
                "SELECT count FROM counters WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone(),
            read_only=True,
        )
        return int(row[0]) if row else 0

    async def get_expiry(self, key: str) -> float:
        now = time.time()
        row = await self.db.run(
            lambda conn: conn.execute(
                "SELECT expires_at FROM counters WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone(),
            read_only=True,
        )
        return float(row[0]) if row else now

    async def clear(self, key: str) -> None:
        def clear(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM window_entries WHERE key = ?", (key,))
            conn.execute("DELETE FROM counters WHERE key = ?", (key,))

        await self.db.run(clear)

    async def reset(self) -> int | None:
        def reset(conn: sqlite3.Connection) -> int:
            keys = conn.execute(
                "SELECT COUNT(*) FROM (SELECT key FROM window_entries UNION SELECT key FROM counters)"
            ).fetchone()[0]
            conn.execute("DELETE FROM window_entries")
            conn.execute("DELETE FROM counters")
            return int(keys)

        return await self.db.run(reset)

    async def check(self) -> bool:
        try:
            await self.db.run(lambda conn: conn.execute("SELECT 1").fetchone(), read_only=True)
        except sqlite3.Error:
            return False
        return True

    async def after_serving(self) -> None:
        self.db.close()
