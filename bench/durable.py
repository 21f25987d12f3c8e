"""The durable limit's journal: one SQLite row per alert, group-committed and fsynced
before the order is sent (``bench.limit_app`` with ``BENCH_DURABLE_DIR`` set).

One writer thread drains a queue and commits whatever is queued in one transaction
(WAL mode, ``synchronous=FULL``: each commit fsyncs the WAL); each request awaits its
own row's commit. At concurrency 1 every alert waits for one fsync; under load the
alerts that arrive while a commit is on the disk share the next one. That is the least
a server that never loses an accepted alert has to add to the bare limit.

Standard library only: the limit loads nothing of the project.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    client_order_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    body BLOB NOT NULL
)
"""

Row = tuple[str, str, float, bytes]  # alert id, client order id, received at, the alert's body
_Job = tuple[Row, asyncio.Future[bool]]


class GroupCommitJournal:
    """``await journal.write(row)``: True once the row is on the disk, False if its alert id
    was journaled before (INSERT OR IGNORE: an alert id is admitted once)."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "durable-limit.sqlite3"
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="durable-journal", daemon=True)
        self.commits = 0
        self.rows = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def write(self, row: Row) -> bool:
        assert self._loop is not None, "start() first"
        future: asyncio.Future[bool] = self._loop.create_future()
        self._queue.put((row, future))
        return await future

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)
        self._db.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while True:  # whatever else is queued joins this commit
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                inserted = [
                    self._db.execute("INSERT OR IGNORE INTO alerts VALUES (?, ?, ?, ?)", row).rowcount == 1
                    for row, _ in batch
                ]
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._settle(batch, None, exc)
                continue
            self.commits += 1
            self.rows += len(batch)
            self._settle(batch, inserted, None)

    def _settle(self, batch: list[_Job], inserted: list[bool] | None, error: Exception | None) -> None:
        """One hand-off to the event loop per commit, resolving every request of the batch."""

        def resolve() -> None:
            for i, (_, future) in enumerate(batch):
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    assert inserted is not None
                    future.set_result(inserted[i])

        assert self._loop is not None
        self._loop.call_soon_threadsafe(resolve)
