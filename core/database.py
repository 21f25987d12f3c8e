"""SQLite access for async code: one connection, one thread, WAL.

Every statement of a database runs on its own single worker thread, so the event loop
never blocks on disk and writes are serialized without locks in Python. Several
processes (``hypercorn --workers N``) may share a file: WAL lets readers run alongside
the one writer, ``BEGIN IMMEDIATE`` makes read-then-write steps atomic across processes
and ``busy_timeout`` waits for another process's write instead of failing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SqliteDatabase:
    def __init__(self, path: str | Path, *, synchronous: str = "FULL", schema: str = ""):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{self.path.stem}")
        self._conn: sqlite3.Connection | None = None
        self._synchronous = synchronous
        self._schema = schema
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            if self._schema:
                # executescript commits first; CREATE ... IF NOT EXISTS is safe to repeat.
                conn.executescript(self._schema)
            self._conn = conn
        return self._conn

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on this thread (for CLIs and startup)."""
        with self._lock:
            return fn(self._connect())

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the database's thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self.run_sync, fn)

    def close(self) -> None:
        def close_conn() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        self._thread.submit(close_conn).result()
        self._thread.shutdown(wait=True)


class _immediate:
    """``with _immediate(conn):`` — a write transaction taken up front (BEGIN IMMEDIATE)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, *_: Any) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def transaction(conn: sqlite3.Connection) -> _immediate:
    return _immediate(conn)
