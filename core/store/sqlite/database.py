"""SQLite access for async code: one writer thread, WAL, group commit.

Every job (``await db.run(fn)``: ``fn(conn)`` on the database's connection) runs on the
database's own worker thread — or, a quick one, on the loop with its COMMIT on the thread
(see "Quick jobs") — so the event loop never waits for a lock or an fsync, and writes are
serialized without locks in Python. Several processes (``hypercorn --workers N``) may
share a file: WAL lets readers run alongside the one writer, ``BEGIN IMMEDIATE`` makes
read-then-write steps atomic across processes and ``busy_timeout`` waits for another
process's write instead of failing.

**Group commit.** Jobs that queue up while the thread is busy (concurrent alerts) run
together in one ``BEGIN IMMEDIATE`` transaction, each inside its own SAVEPOINT — a job
that raises undoes only its own changes — and share its single COMMIT, so one fsync
(synchronous=FULL) makes all of them durable. Every caller is answered only after that
COMMIT: when ``await db.run(fn)`` returns, ``fn``'s writes are as durable as they were
with one transaction per job; if the COMMIT fails, every job of the batch gets its
error. ``transaction(conn)`` inside a batch becomes a SAVEPOINT. A job alone in the queue
runs alone, exactly as before, so a quiet server waits for no one. An idle thread is woken
once the turn of the event loop that queued a job is over (``call_soon``), not by the job
itself: the jobs the rest of that turn queues — the other requests that arrived together —
join the same batch, and the thread does not take the GIL from the loop while it is still
making them. (A lone job waits for the end of its own turn: a few µs.)

**Quick jobs.** A job marked ``quick`` (a few statements by index: the journal's admission
and an alert's outcome) has its statements run on the event loop, in the loop's own
connection, and only the COMMIT — the fsync — on the thread. The sqlite3 module lets go of
the GIL around every statement, so a job on the thread takes the GIL back from the loop
after each one: on a busy loop, each of those is a wake-up of the one thread by the other
and a wait for the GIL; a quick batch costs the thread one. Its statements never wait on
the loop: the writer lock is tried without waiting and ``BEGIN IMMEDIATE`` runs with
``busy_timeout`` 0, so when another process is writing, the thread runs the batch instead
and waits its turn. A batch runs on the loop only when every job of it is quick and of
that loop. One batch is in flight at a time, from the moment it is taken until its COMMIT is
delivered; the jobs queued meanwhile form the next one, started by that delivery.

**Inline.** Handing a job to the thread and back costs more than a small read takes.
``run(fn, read_only=True)`` runs ``fn`` on the calling (event-loop) thread, on a second,
query-only connection, when this process has no job queued, deferred or running (so it sees every
write this process made before it) and the read takes no lock wait (``busy_timeout`` 0;
a busy database sends the job to the thread). ``SqliteDatabase(..., inline=True)`` does
the same for every job of a database with ``synchronous=OFF`` (no fsync: rate-limit
counters), each inline job in its own transaction (undone whole, then sent to the thread,
if it meets a lock). ``run(fn, read_only=True, fresh=False)`` runs inline even while jobs
are queued: it sees what was committed, not what is still queued (a lock wait still sends
it to the thread).

**Later.** ``later(fn)`` queues a write that nobody waits for now (an alert's outcome,
written after its answer): it joins the next batch a caller does wait for, sharing that
batch's COMMIT, or commits on its own ``defer_for`` seconds after it was queued when no
such batch comes (``expedite()``: at once; one timer on the loop at a time, not one
per write). The future it returns is done once it is committed. ``close()`` commits what is still deferred.
``submit(fn, then, patient=True)`` queues a write its caller does wait for, but need not
have committed at once, the same way: the journal's admission of an alert that waits behind
others of its market anyway (``core.pipeline.lanes``), so that such admissions share commits
instead of each paying its own.

**Writers of several processes.** SQLite lets one process write at a time and makes the
others poll: a connection that finds the database locked sleeps 1, 2, 5, 10 ms and more
before it tries again, and a worker whose commit lost the race several times stalls every
alert behind it. So each batch holds an exclusive ``flock`` on ``<database>-writer`` until
its COMMIT is done: the workers of one ``DATA_DIR`` queue for it in the kernel (the thread
waits in ``flock``; a quick batch tries it on the loop without waiting, and leaves the
batch to the thread when it is taken), and the next one goes as soon as the previous one's
COMMIT is done; a process that dies lets it go at once.
It orders the threads, nothing more: SQLite's own locks still decide, so a writer that
does not take it (a CLI, ``run_sync``, an inline job) is waited for as before, within
``busy_timeout``. Where the lock cannot be had, batches go without it: no ``fcntl`` (not
POSIX), or, with one warning, a lock file that cannot be opened or a file system without
``flock``.

**Submit.** ``submit(fn, then)`` is ``run`` without a coroutine (no task to await it
in): ``then(result)`` runs on the loop as the job's COMMIT is delivered, even when the
future it returns was cancelled meanwhile — the journal's admission starts the alert's
execution there, so a request cancelled mid-admission never leaves a journaled alert behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # not POSIX: batches go without the writer lock (SQLite's locks still hold)
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")

log = logging.getLogger(__name__)

_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary codes: BUSY_SNAPSHOT is 517)


def private_dir(path: Path) -> Path:
    """``path`` as a directory, created 0700 (owner only) when it does not exist: DATA_DIR
    holds the journal, token hashes and rate counters. An existing one is left as it is."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def create_private_file(path: Path) -> None:
    """Create ``path`` 0600 unless it exists, atomically (never readable by others, not even
    for a moment). SQLite creates a database's -wal and -shm files with its mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


class _Connection(sqlite3.Connection):
    """A connection of ``SqliteDatabase``: it remembers whether the job running on it is in
    a savepoint of its own with nothing written yet (``transaction`` then uses that one)."""

    # conn.total_changes when the job's SAVEPOINT was taken; None outside a job of a batch,
    # or once a block of the job took it over.
    job_changes: int | None = None


class _Busy(Exception):
    """An inline job met a lock: it runs on the thread instead (nothing of it was kept)."""


class _Job:
    __slots__ = ("fn", "loop", "future", "result", "error", "then", "quick", "order")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        then: Callable[[Any], None] | None = None,
        quick: bool = False,
    ):
        self.fn = fn
        self.loop = loop
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None
        self.then = then  # called with the result on the loop once committed, cancelled or not (submit)
        self.quick = quick  # its statements may run on the loop (see "Quick jobs")
        self.order = 0  # when it was queued, among this database's jobs (a batch runs them in that order)


class _Handoff:
    """A batch for the thread: to run (``conn`` None), or whose statements ran on the loop in
    ``conn``'s open transaction, for the thread to COMMIT (``rest``: the jobs still to run
    after SQLite rolled that transaction back, or None)."""

    __slots__ = ("batch", "conn", "rest")

    def __init__(self, batch: list[_Job], conn: _Connection | None = None, rest: list[_Job] | None = None):
        self.batch = batch
        self.conn = conn
        self.rest = rest


def _enable_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """WAL mode, waiting out another process that opens the same new file at the same moment
    (switching the journal mode takes a lock SQLite's busy handler does not wait for)."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)  # on the database thread (or a CLI), never the event loop's


class SqliteDatabase:
    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        schema: str = "",
        inline: bool = False,
        max_batch: int = 128,
        defer_for: float = 0.02,
        writer_lock: bool = True,
    ):
        if inline and synchronous.upper() != "OFF":
            raise ValueError(
                "inline=True is for databases with synchronous=OFF: a COMMIT must not fsync on the event loop"
            )
        self.path = Path(path)
        private_dir(self.path.parent)
        self._conn: _Connection | None = None
        self._synchronous = synchronous
        self._schema = schema
        self._lock = threading.Lock()  # the worker's connection: the worker thread or run_sync
        self._queued = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._busy = 0  # jobs queued or running on the thread
        self._closed = False
        self._thread: threading.Thread | None = None
        self._max_batch = max_batch
        self._inline = inline
        self._inline_conn: _Connection | None = None
        self._deferred: list[_Job] = []  # later(): committed with the next batch, or once due
        self._queue_order = 0  # the last job's _Job.order
        self._deferred_due = False  # the deferred jobs commit now, batch or not
        self._deferred_since = 0.0  # when the first of the deferred jobs was queued (monotonic)
        self._timer_loop: asyncio.AbstractEventLoop | None = None  # the loop whose timer is armed (_due)
        self._defer_for = defer_for
        # The loop on which a call of _wake is scheduled (one per turn). Another loop's job
        # schedules its own: a loop closed before its call ran leaves no job unwoken.
        self._wake_loop: asyncio.AbstractEventLoop | None = None
        self.writer_lock_path = self.path.with_name(self.path.name + "-writer")
        # The lock file's descriptor, opened by the thread (-1: none; writer_lock=False: a
        # benchmark's comparison, bench.contention).
        self._writer_lock: int | None = None if writer_lock else -1
        # One batch at a time, from the moment it is taken until its COMMIT is delivered:
        # run by the thread, or its statements run on the loop and its COMMIT by the thread.
        self._in_flight = False
        self._handoff: _Handoff | None = None  # what the thread is to do next
        self._thread_turn = False  # the thread takes the queued jobs itself (no loop will)
        self._loop_conn: _Connection | None = None  # the quick jobs' connection (busy_timeout 0)

    def _connect(self) -> _Connection:
        if self._conn is None:
            self._conn = self._open(busy_timeout_ms=30000, query_only=False, schema=True)
        return self._conn

    def _open(self, *, busy_timeout_ms: int, query_only: bool, schema: bool) -> _Connection:
        create_private_file(self.path)
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout_ms / 1000,
            factory=_Connection,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        if not query_only:
            _enable_wal(conn, busy_timeout_ms)
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        if self._schema and schema:
            # executescript commits first; CREATE ... IF NOT EXISTS is safe to repeat.
            conn.executescript(self._schema)
        if query_only:
            conn.execute("PRAGMA query_only=ON")  # an inline "read" that writes fails loudly
        return conn

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on this thread (for CLIs and startup)."""
        with self._lock:
            return fn(self._connect())

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], *, read_only: bool = False, fresh: bool = True, quick: bool = False
    ) -> T:
        """Run ``fn(conn)`` and return its result once its writes are committed.

        ``read_only``: ``fn`` only reads; it may run at once on this thread (see the module
        docstring). Then it sees every write this process committed before — and, unless
        ``fresh`` is False, every write queued before it too (``later`` ones included: it
        waits behind them). ``quick``: ``fn`` runs a few statements by index and nothing
        else that takes time; its statements may run on the loop (see "Quick jobs").
        """
        # Inline only once the thread's connection exists (it creates the schema, waiting
        # for other processes as long as it takes).
        if (
            (read_only or self._inline)
            and ((self._busy == 0 and not self._deferred) or (read_only and not fresh))
            and self._conn is not None
            and not self._closed
        ):
            try:
                return self._run_inline(fn, read_only=read_only and not self._inline)
            except _Busy:
                pass
        return await self._enqueue(fn, deferred=False, quick=quick)

    def submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        then: Callable[[T], None] | None = None,
        *,
        quick: bool = False,
        patient: bool = False,
    ) -> asyncio.Future[T]:
        """Queue ``fn`` as ``run`` does (on the thread, answered after its COMMIT), without a
        coroutine: the future gets its result. ``then(result)`` is called on the loop once
        it is committed, just before the future is done — also when the future was
        cancelled meanwhile (its caller is gone): what must follow a committed write runs
        there. The ``then`` of one batch's jobs run in the jobs' order; one that raises
        gives the future its exception. ``quick`` as for ``run``. ``patient``: committed as
        a ``later`` write is — with the next batch, once due (``defer_for``) or at
        ``expedite()`` — not at once; its future and ``then`` as without."""
        return self._enqueue(fn, deferred=patient, then=then, quick=quick)

    def later(self, fn: Callable[[sqlite3.Connection], T], *, quick: bool = False) -> asyncio.Future[T]:
        """Queue ``fn`` to commit with the next batch (see the module docstring), without
        waiting. ``quick`` as for ``run``."""
        return self._enqueue(fn, deferred=True, quick=quick)

    def expedite(self) -> None:
        """Commit the deferred jobs now instead of with the next batch."""
        with self._queued:
            if not self._deferred or self._deferred_due:
                return
            self._deferred_due = True
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop here to run them: the thread does
                self._thread_turn = True
                self._queued.notify()
                return
        loop.call_soon(self._wake, loop)

    def _due(self) -> None:
        """The deferred jobs' timer (one at a time, on the loop): those queued ``defer_for``
        ago or more commit now; when a batch took them meanwhile, the timer waits for the
        first of those queued since (none queued: it is armed again by the next one)."""
        loop, self._timer_loop = self._timer_loop, None
        with self._queued:
            if not self._deferred or self._deferred_due:
                return
            wait = self._deferred_since + self._defer_for - time.monotonic()
            if wait <= 0:
                self._deferred_due = True
        if wait <= 0:
            self._wake(asyncio.get_running_loop())  # the loop this timer runs on
            return
        if loop is not None and not loop.is_closed():
            self._timer_loop = loop
            loop.call_later(wait, self._due)

    def _enqueue(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        deferred: bool,
        then: Callable[[T], None] | None = None,
        quick: bool = False,
    ) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(fn, loop, future, then, quick)
        with self._queued:
            if self._closed:
                raise RuntimeError(f"database {self.path.name} is closed")
            self._queue_order += 1
            job.order = self._queue_order
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=f"sqlite-{self.path.stem}", daemon=True)
                self._thread.start()
            if deferred:
                # The thread is not woken (a wake-up costs more than the job): the job joins
                # the next batch, or commits when this timer on the loop says it is due.
                self._deferred.append(job)
                if len(self._deferred) == 1:
                    self._deferred_since = time.monotonic()
                if self._timer_loop is not loop:  # one timer at a time, not one per job
                    self._timer_loop = loop
                    loop.call_later(self._defer_for, self._due)
                return future
            self._jobs.append(job)
            self._busy += 1
            if self._wake_loop is loop:
                return future
            self._wake_loop = loop
        # The batch starts once this turn of the loop is over, not with every job: the jobs
        # that the rest of the turn queues (the other requests that arrived together) join
        # it, and the thread does not take the GIL from the loop meanwhile.
        loop.call_soon(self._wake, loop)
        return future

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the next batch (on ``loop``): its statements here when every job of it is
        quick and of this loop, else on the thread. Nothing while a batch is in flight: its
        delivery calls this again."""
        with self._queued:
            if self._wake_loop is loop:
                self._wake_loop = None
            if self._in_flight or self._closed or not (self._jobs or (self._deferred and self._deferred_due)):
                return
            batch = self._take()
            self._in_flight = True
            if self._conn is None or not all(job.quick and job.loop is loop for job in batch):
                self._hand_over(_Handoff(batch))
                return
        handoff = None
        try:
            handoff = self._statements_on_loop(batch)
        finally:  # whatever happens here, the thread gets the batch: to commit, or to run
            with self._queued:
                self._hand_over(handoff or _Handoff(batch))

    def _take(self) -> list[_Job]:
        """The next batch (under ``_queued``): every deferred job — counted busy before they
        leave the deferred list, so that a fresh inline read on the loop (which looks at
        both without the lock) never sees neither — and the jobs, up to ``max_batch``, in
        the order they were all queued. A job queued before a deferred one is never left
        for a later batch: an alert admitted at once and one admitted patiently after it
        keep their order (the journal's arrival numbers)."""
        self._busy += len(self._deferred)
        batch, self._deferred, self._deferred_due = self._deferred, [], False
        jobs = self._jobs
        count = min(len(jobs), self._max_batch)
        if not batch:
            return [jobs.popleft() for _ in range(count)]
        newest = batch[-1].order
        while jobs and (count > 0 or jobs[0].order < newest):
            batch.append(jobs.popleft())
            count -= 1
        batch.sort(key=_queued_at)
        return batch

    def _hand_over(self, handoff: _Handoff) -> None:
        self._handoff = handoff
        self._queued.notify()

    def _statements_on_loop(self, batch: list[_Job]) -> _Handoff | None:
        """Run the quick ``batch``'s statements on the loop, in a transaction the thread
        commits; None, having run nothing, when another process holds the writer lock or
        SQLite's write lock (the thread then waits its turn and runs the batch)."""
        if not self._try_writer_turn():
            return None
        try:
            if self._loop_conn is None:
                self._loop_conn = self._open(busy_timeout_ms=0, query_only=False, schema=False)
            conn = self._loop_conn
            conn.execute("BEGIN IMMEDIATE")  # busy_timeout 0: never waits on the loop
        except (sqlite3.Error, OSError):
            self._end_writer_turn()
            return None
        try:
            rest = self._statements(conn, batch)
        except BaseException as exc:  # a SAVEPOINT failed (I/O error): every job of the batch fails
            _rollback(conn)
            for job in batch:
                job.result, job.error = None, job.error or exc
            rest = []
        return _Handoff(batch, conn, rest)

    # -- inline ----------------------------------------------------------------

    def _run_inline(self, fn: Callable[[sqlite3.Connection], T], *, read_only: bool) -> T:
        try:
            if self._inline_conn is None:
                self._inline_conn = self._open(busy_timeout_ms=0, query_only=read_only, schema=False)
            conn = self._inline_conn
            if read_only:
                return fn(conn)  # autocommit, as a job alone on the thread runs
            conn.execute("BEGIN")  # a write undone whole if it meets a lock, then redone on the thread
            result = fn(conn)
            conn.execute("COMMIT")
            return result
        except sqlite3.OperationalError as exc:
            if self._inline_conn is not None:
                _rollback(self._inline_conn)
            if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in _BUSY_CODES or "locked" in str(exc):
                raise _Busy from exc
            raise
        except BaseException:
            if self._inline_conn is not None:
                _rollback(self._inline_conn)
            raise

    # -- the worker thread ---------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._queued:
                while self._handoff is None and not self._thread_turn and not self._closed:
                    self._queued.wait()
                while self._in_flight and self._handoff is None:  # closed while the loop runs a batch
                    self._queued.wait()
                handoff, self._handoff = self._handoff, None
                if handoff is None:  # the thread's turn, or closed: it takes what is queued
                    self._thread_turn = False
                    if not self._jobs and not self._deferred:
                        if self._closed:
                            return  # every queued job has run
                        continue
                    handoff = _Handoff(self._take())
                    self._in_flight = True
            if handoff.conn is None:
                self._run(handoff.batch)
            else:
                self._commit(handoff)
            with self._queued:
                self._busy -= len(handoff.batch)
                self._in_flight = False
            if not self._deliver(handoff.batch):
                with self._queued:  # no loop will start the next batch: the thread does
                    self._thread_turn = True

    def _run(self, batch: list[_Job]) -> None:
        """The whole batch on the thread: waiting for its turn to write, if it must."""
        with self._lock:
            try:
                conn = self._connect()
                with self._writer_turn():
                    self._execute(conn, batch)
            except BaseException as exc:  # no connection: every job of the batch fails
                for job in batch:
                    job.error = exc

    def _commit(self, handoff: _Handoff) -> None:
        """COMMIT the transaction in which the loop ran the batch's statements (the fsync
        waits here, not on the loop), then run the jobs SQLite's rollback left to run."""
        conn = handoff.conn
        assert conn is not None
        try:
            if conn.in_transaction:
                try:
                    conn.execute("COMMIT")
                except BaseException as exc:
                    _rollback(conn)
                    for job in handoff.batch:
                        job.result, job.error = None, job.error or exc
        finally:
            self._end_writer_turn()
        if handoff.rest:
            self._run(handoff.rest)

    def _try_writer_turn(self) -> bool:
        """The writer lock without waiting (on the loop): whether this process may write now.
        False before the thread opened it (its first batch does), or while it is held."""
        fd = self._writer_lock
        if fd is None:
            return False
        if fd < 0:
            return True  # no writer lock here: SQLite's locks alone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another process's turn (or a failing flock, which the thread reports)
            return False
        return True

    def _end_writer_turn(self) -> None:
        fd = self._writer_lock
        if fd is not None and fd >= 0:
            with contextlib.suppress(OSError):  # not on an open descriptor; the thread must not die of it
                fcntl.flock(fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """This process's turn to write among the processes of this database (see the module
        docstring): the thread blocks in ``flock`` until the writer before it is done."""
        if self._writer_lock is None:
            self._writer_lock = self._open_writer_lock()
        if self._writer_lock < 0:
            yield
            return
        try:
            fcntl.flock(self._writer_lock, fcntl.LOCK_EX)  # releases the GIL while it waits
        except OSError as exc:  # e.g. a file system without flock: SQLite's locks still hold
            os.close(self._writer_lock)
            self._writer_lock = self._no_writer_lock(exc)
            yield
            return
        try:
            yield
        finally:
            self._end_writer_turn()

    def _open_writer_lock(self) -> int:
        if fcntl is None:
            return -1
        try:
            create_private_file(self.writer_lock_path)
            fd = os.open(self.writer_lock_path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            return self._no_writer_lock(exc)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As SQLite does with -wal and -shm: a CLI run as root leaves the lock file to the
            # database's owner (the server's user), who could not open it otherwise.
            with contextlib.suppress(OSError):
                owner = self.path.stat()
                os.fchown(fd, owner.st_uid, owner.st_gid)
        return fd

    def _no_writer_lock(self, exc: OSError) -> int:
        log.warning("%s: no writer lock (%s); writers of several processes wait as SQLite makes them", self.path, exc)
        return -1

    def _execute(self, conn: _Connection, batch: list[_Job]) -> None:
        if len(batch) == 1:
            job = batch[0]
            try:
                job.result = job.fn(conn)
            except BaseException as exc:
                job.error = exc
            finally:
                if conn.in_transaction:  # a job must not leave a transaction open
                    _rollback(conn)
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for job in batch:
                job.error = exc
            return
        rest = self._statements(conn, batch)
        if rest is not None:  # SQLite rolled the transaction back: nothing to commit
            if rest:
                self._execute(conn, rest)
            return
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback(conn)
            for job in batch:
                job.result, job.error = None, job.error or exc

    @staticmethod
    def _statements(conn: _Connection, batch: list[_Job]) -> list[_Job] | None:
        """Run each job of ``batch`` in a savepoint of its own, in ``conn``'s open
        transaction: a job that raises undoes only its own writes. None when the transaction
        is still open (for the COMMIT); when SQLite rolled it back (I/O error, disk full),
        the jobs run before lost their writes and get the error, and the jobs after are
        returned, to start a new one."""
        done: list[_Job] = []
        for index, job in enumerate(batch):
            conn.execute("SAVEPOINT job")
            conn.job_changes = conn.total_changes
            try:
                job.result = job.fn(conn)
            except BaseException as exc:
                job.error = exc
            finally:
                conn.job_changes = None
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (I/O error, disk full): the jobs
                # before this one lost their writes too; the rest start a new batch.
                lost = job.error or sqlite3.OperationalError("the transaction was rolled back")
                for earlier in done + [job]:
                    earlier.result, earlier.error = None, earlier.error or lost
                return batch[index + 1 :]
            if job.error is None:
                conn.execute("RELEASE job")
            else:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
            done.append(job)
        return None

    def _deliver(self, batch: list[_Job]) -> bool:
        """Answer the batch's jobs on their loops, each of which then starts the next batch;
        False when no loop could be reached (every one closed: no one is waiting)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in batch:
            by_loop.setdefault(job.loop, []).append(job)
        reached = False
        for loop, jobs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: no one is waiting
                loop.call_soon_threadsafe(self._delivered, jobs, loop)
                reached = True
        return reached

    def _delivered(self, jobs: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        _settle(jobs)
        self._wake(loop)

    def close(self) -> None:
        """Run the jobs already queued, then close the connections."""
        with self._queued:
            self._closed = True
            self._queued.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._writer_lock is not None and self._writer_lock >= 0:
                os.close(self._writer_lock)
                self._writer_lock = None
        if self._inline_conn is not None:
            self._inline_conn.close()
            self._inline_conn = None
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None


def _queued_at(job: _Job) -> int:
    return job.order


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.then is not None and job.error is None:
            try:
                job.then(job.result)
            except Exception as exc:
                job.error = exc
                if job.future.cancelled():
                    log.exception("a committed job's continuation failed (its caller is gone)")
        if job.future.cancelled():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class _immediate:
    """``with _immediate(conn):`` — a write transaction taken up front (BEGIN IMMEDIATE),
    or a SAVEPOINT when the connection is already in a transaction (a group commit).

    In a batch, each job runs in a savepoint of its own (``SAVEPOINT job``). A block that
    starts before the job wrote anything uses that one instead of taking another: rolling
    back to it then undoes exactly the block (nothing was written before it), and on
    success the batch releases it. Two statements fewer per job; nested blocks, and a block
    after the job wrote, take their own."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.savepoint: str | None = None  # None: a transaction of its own

    def __enter__(self) -> sqlite3.Connection:
        conn = self.conn
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        elif isinstance(conn, _Connection) and conn.job_changes == conn.total_changes:
            conn.job_changes = None  # the blocks nested in this one take savepoints of their own
            self.savepoint = "job"
        else:
            self.savepoint = "tx"
            conn.execute("SAVEPOINT tx")
        return conn

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self.savepoint is None:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        elif not self.conn.in_transaction:
            return  # SQLite already rolled everything back; the batch reports it
        elif exc_type:
            self.conn.execute(f"ROLLBACK TO {self.savepoint}")
            if self.savepoint == "tx":
                self.conn.execute("RELEASE tx")
        elif self.savepoint == "tx":
            self.conn.execute("RELEASE tx")


def transaction(conn: sqlite3.Connection) -> _immediate:
    return _immediate(conn)
