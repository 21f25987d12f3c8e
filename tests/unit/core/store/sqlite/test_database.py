"""core.store.sqlite.database: group commit keeps every job's own outcome; inline reads see what was
committed before them; a busy database sends inline work to the thread; the writers of several
processes take turns through a lock in the kernel."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import platform
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.store.sqlite import database
from core.store.sqlite.database import SqliteDatabase, transaction

SCHEMA = "CREATE TABLE IF NOT EXISTS items (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"


@pytest.fixture
def db(tmp_path):
    database = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA)
    yield database
    database.close()


def insert(name: str, value: int = 1):
    def job(conn: sqlite3.Connection) -> str:
        with transaction(conn):
            conn.execute("INSERT INTO items (name, value) VALUES (?, ?)", (name, value))
        return name

    return job


def rows(conn: sqlite3.Connection) -> dict[str, int]:
    return {r["name"]: r["value"] for r in conn.execute("SELECT name, value FROM items")}


def parked(database: SqliteDatabase, timeout: float = 5.0) -> None:
    """Return once the worker thread waits for a job (having delivered its last batch, it
    takes a job queued meanwhile without being woken)."""
    deadline = time.monotonic() + timeout
    while not database._queued._waiters:  # type: ignore[attr-defined]  # threading.Condition's waiters
        assert time.monotonic() < deadline, "the worker thread never waited for a job"
        time.sleep(0.001)


def blocker(started: threading.Event, release: threading.Event):
    def job(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)

    return job


async def test_concurrent_jobs_share_one_commit_and_keep_their_own_outcomes(db):
    await db.run(lambda conn: None)  # the worker exists
    started, release = threading.Event(), threading.Event()
    first = asyncio.ensure_future(db.run(blocker(started, release)))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    # Queued while the thread is busy: one batch. "b" fails (duplicate key), alone.
    batch = [asyncio.ensure_future(db.run(insert(name))) for name in ("a", "b", "c")]
    duplicate = asyncio.ensure_future(db.run(insert("b", 2)))
    release.set()
    await first
    assert [await job for job in batch] == ["a", "b", "c"]
    with pytest.raises(sqlite3.IntegrityError):
        await duplicate
    assert await db.run(rows) == {"a": 1, "b": 1, "c": 1}


async def test_the_jobs_of_one_turn_of_the_loop_share_one_commit(db):
    """The thread is woken once the turn that queued a job is over, not by the job: the
    jobs the rest of the turn queues (requests that arrived together) join its batch."""
    await db.run(lambda conn: None)  # the worker exists
    await asyncio.get_running_loop().run_in_executor(None, parked, db)
    started = threading.Event()

    def first(conn: sqlite3.Connection) -> bool:
        started.set()
        return conn.in_transaction  # a job alone runs outside a transaction; in a batch, inside one

    queued = db.submit(first)
    # Still in the same turn: the thread, which a job used to wake at once, has not started it.
    assert not started.wait(0.2)
    later = [db.submit(insert(name)) for name in ("a", "b")]
    assert await queued is True  # it ran in the batch of all three
    assert [await job for job in later] == ["a", "b"]
    assert started.is_set()


def test_a_loop_closed_before_its_turn_ended_leaves_no_later_job_unwoken(tmp_path):
    database = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA)
    try:
        asyncio.run(database.run(lambda conn: None))  # the worker exists ...
        parked(database)  # ... and waits for a job
        first = asyncio.new_event_loop()
        # A job queued in the last turn the loop runs: its call to wake the thread never runs.
        first.call_soon(lambda: (database.submit(insert("a")), first.stop()))
        first.run_forever()
        first.close()

        async def on_another_loop() -> tuple[str, dict[str, int]]:
            return await asyncio.wait_for(database.run(insert("b")), 5), await database.run(rows)

        assert asyncio.run(on_another_loop()) == ("b", {"a": 1, "b": 1})
    finally:
        database.close()


async def test_a_failing_job_in_a_batch_undoes_only_its_own_writes(db):
    await db.run(lambda conn: None)
    started, release = threading.Event(), threading.Event()
    first = asyncio.ensure_future(db.run(blocker(started, release)))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO items (name, value) VALUES ('half', 1)")  # no transaction(): still undone
        raise ValueError("boom")

    jobs = [
        asyncio.ensure_future(db.run(insert("x"))),
        asyncio.ensure_future(db.run(half_then_fail)),
        asyncio.ensure_future(db.run(insert("y"))),
    ]
    release.set()
    await first
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert results[0] == "x" and results[2] == "y"
    assert isinstance(results[1], ValueError)
    assert await db.run(rows) == {"x": 1, "y": 1}


async def test_results_arrive_only_after_the_batch_is_committed(db, tmp_path):
    await db.run(insert("first"))
    started, release = threading.Event(), threading.Event()
    first = asyncio.ensure_future(db.run(blocker(started, release)))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    jobs = [asyncio.ensure_future(db.run(insert(f"n{i}"))) for i in range(20)]
    release.set()
    await first
    await asyncio.gather(*jobs)
    # Another connection (another process) sees every answered write.
    other = sqlite3.connect(tmp_path / "t.sqlite3")
    try:
        assert other.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 21
    finally:
        other.close()


async def test_inline_reads_see_every_write_committed_before_them(db):
    await db.run(insert("a"))
    seen = await db.run(rows, read_only=True)
    assert seen == {"a": 1}
    # An inline read that writes is refused (query-only connection), not committed.
    with pytest.raises(sqlite3.OperationalError):
        await db.run(lambda conn: conn.execute("INSERT INTO items VALUES ('z', 1)"), read_only=True)
    assert await db.run(rows) == {"a": 1}


async def test_a_read_while_writes_are_queued_waits_behind_them(db):
    await db.run(lambda conn: None)
    started, release = threading.Event(), threading.Event()
    first = asyncio.ensure_future(db.run(blocker(started, release)))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    write = asyncio.ensure_future(db.run(insert("queued")))
    read = asyncio.ensure_future(db.run(rows, read_only=True))
    release.set()
    await asyncio.gather(first, write)
    assert await read == {"queued": 1}


async def test_inline_database_falls_back_to_the_thread_when_another_writer_holds_the_lock(tmp_path):
    path = tmp_path / "counters.sqlite3"
    db = SqliteDatabase(path, synchronous="OFF", schema=SCHEMA, inline=True)
    try:
        await db.run(insert("first"))  # the thread's connection exists: later jobs run inline
        await db.run(insert("inline"))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        job = asyncio.ensure_future(db.run(insert("after-lock")))
        await asyncio.sleep(0.05)
        assert not job.done()  # inline met the lock: queued on the thread, which waits
        other.execute("COMMIT")
        other.close()
        assert await job == "after-lock"
        assert set(await db.run(rows)) == {"first", "inline", "after-lock"}
    finally:
        db.close()


def test_inline_needs_synchronous_off(tmp_path):
    with pytest.raises(ValueError):
        SqliteDatabase(tmp_path / "x.sqlite3", synchronous="FULL", inline=True)


async def test_close_runs_the_jobs_already_queued(db):
    jobs = [asyncio.ensure_future(db.run(insert(f"q{i}"))) for i in range(5)]
    await asyncio.sleep(0)
    db.close()
    assert [await job for job in jobs] == [f"q{i}" for i in range(5)]
    with pytest.raises(RuntimeError):
        await db.run(rows)


class BatchCounter:
    """Counts the batches (one COMMIT each) the database's thread runs."""

    def __init__(self, db: SqliteDatabase, monkeypatch):
        self.batches: list[int] = []
        original = db._execute

        def counting(conn, batch):
            self.batches.append(len(batch))
            return original(conn, batch)

        monkeypatch.setattr(db, "_execute", counting)


async def test_a_later_write_shares_the_commit_of_the_next_write_waited_for(tmp_path, monkeypatch):
    db = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA, defer_for=30)
    try:
        await db.run(lambda conn: None)
        counter = BatchCounter(db, monkeypatch)
        later = db.later(insert("later"))
        await asyncio.sleep(0.05)
        assert not later.done()  # nothing to share a commit with yet, and not due for 30 s
        assert await db.run(insert("now")) == "now"
        assert later.done() and later.result() == "later"
        assert counter.batches == [2]
        assert await db.run(rows) == {"later": 1, "now": 1}
    finally:
        db.close()


async def test_a_patient_write_is_committed_with_the_next_batch_or_when_expedited(tmp_path, monkeypatch):
    db = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA, defer_for=30)
    try:
        await db.run(lambda conn: None)
        counter = BatchCounter(db, monkeypatch)
        continued: list[str] = []
        patient = db.submit(insert("patient"), continued.append, quick=True, patient=True)
        for _ in range(5):
            await asyncio.sleep(0)  # turns of the loop: nothing starts a batch for it
        assert not patient.done() and continued == []
        assert await db.run(rows, read_only=True, fresh=False) == {}  # not committed: not even begun
        assert await db.run(insert("now")) == "now"  # the next batch takes it along, first
        assert patient.done() and patient.result() == "patient" and continued == ["patient"]
        assert counter.batches == [2]
        second = db.submit(insert("second"), continued.append, patient=True)
        db.expedite()
        assert await asyncio.wait_for(second, 5) == "second" and continued == ["patient", "second"]
        assert await db.run(rows) == {"patient": 1, "now": 1, "second": 1}
    finally:
        db.close()


async def test_a_batch_runs_its_jobs_in_the_order_they_were_queued_patient_or_not(tmp_path):
    # An alert admitted at once, then one admitted patiently: the first must get the lower
    # arrival number (the journal's seq: the order its lane executes them in).
    db = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA, defer_for=30)
    try:
        await db.run(lambda conn: None)
        ran: list[str] = []

        def job(name: str):
            def run(conn: sqlite3.Connection) -> str:
                ran.append(name)
                return insert(name)(conn)

            return run

        outcome = db.later(job("outcome"))  # queued first, waited for by no one
        waited = db.submit(job("waited"), quick=True)  # its batch starts at the end of this turn
        patient = db.submit(job("patient"), quick=True, patient=True)  # queued last: it rides along
        assert await asyncio.gather(outcome, waited, patient) == ["outcome", "waited", "patient"]
        assert ran == ["outcome", "waited", "patient"]
        rowids = await db.run(lambda conn: [r[0] for r in conn.execute("SELECT name FROM items ORDER BY rowid")])
        assert rowids == ["outcome", "waited", "patient"]
    finally:
        db.close()
    # Batches of one job: the jobs queued before a patient one still go no later than it.
    small = SqliteDatabase(tmp_path / "s.sqlite3", synchronous="FULL", schema=SCHEMA, defer_for=30, max_batch=1)
    try:
        await small.run(lambda conn: None)
        ran.clear()
        queued = [small.submit(job(name), quick=True) for name in ("first", "second")]
        queued.append(small.submit(job("third"), quick=True, patient=True))
        await asyncio.gather(*queued)
        assert ran == ["first", "second", "third"]
    finally:
        small.close()


async def test_a_fresh_read_waits_behind_a_later_write(tmp_path):
    db = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA, defer_for=30)
    try:
        await db.run(lambda conn: None)
        later = db.later(insert("later"))
        # Not run inline (it would miss the deferred write): it joins the next batch, after it.
        assert await db.run(rows, read_only=True) == {"later": 1}
        assert later.done()
        # Nothing deferred any more: a fresh read runs inline again, and sees the write too.
        assert await db.run(rows, read_only=True) == {"later": 1}
    finally:
        db.close()


async def test_a_later_write_commits_alone_once_due_or_expedited(tmp_path):
    db = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA, defer_for=0.01)
    try:
        assert await db.later(insert("due")) == "due"
        slow = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA, defer_for=30)
        try:
            later = slow.later(insert("expedited"))
            slow.expedite()
            assert await asyncio.wait_for(later, 5) == "expedited"
        finally:
            slow.close()
        assert await db.run(rows) == {"due": 1, "expedited": 1}
    finally:
        db.close()


async def test_a_later_write_queued_after_a_batch_took_the_earlier_ones_still_commits_once_due(tmp_path):
    db = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA, defer_for=0.05)
    try:
        await db.run(lambda conn: None)
        first = db.later(insert("first"))  # arms the one timer
        assert await db.run(insert("now")) == "now"  # the batch takes the first along
        assert first.done()
        second = db.later(insert("second"))  # the timer is still armed: it waits for this one
        assert await asyncio.wait_for(second, 5) == "second"
        third = db.later(insert("third"))  # nothing armed any more: it arms a new timer
        assert await asyncio.wait_for(third, 5) == "third"
        assert await db.run(rows) == {"first": 1, "now": 1, "second": 1, "third": 1}
    finally:
        db.close()


async def test_close_commits_what_is_deferred_and_a_failed_later_write_reports_its_error(tmp_path):
    db = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA, defer_for=30)
    await db.run(insert("dup"))
    kept, failed = db.later(insert("kept")), db.later(insert("dup"))
    db.close()
    assert await kept == "kept"
    with pytest.raises(sqlite3.IntegrityError):
        await failed
    reopened = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA)
    try:
        assert await reopened.run(rows) == {"dup": 1, "kept": 1}
    finally:
        reopened.close()


async def test_a_read_that_need_not_be_fresh_runs_inline_while_writes_are_queued(db):
    await db.run(insert("committed"))
    started, release = threading.Event(), threading.Event()
    first = asyncio.ensure_future(db.run(blocker(started, release)))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    write = asyncio.ensure_future(db.run(insert("queued")))
    try:
        # Answered at once, on this thread: what was committed, not what is queued.
        assert await db.run(rows, read_only=True, fresh=False) == {"committed": 1}
        assert not write.done()
    finally:
        release.set()
        await asyncio.gather(first, write)


async def run_as_one_batch(db: SqliteDatabase, jobs) -> list:
    """Run ``jobs`` in one batch (queued while the thread is busy); their results or errors."""
    await db.run(lambda conn: None)
    started, release = threading.Event(), threading.Event()
    first = asyncio.ensure_future(db.run(blocker(started, release)))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    futures = [asyncio.ensure_future(db.run(job)) for job in jobs]
    release.set()
    await first
    return await asyncio.gather(*futures, return_exceptions=True)


async def test_a_block_that_starts_a_job_in_a_batch_uses_the_jobs_savepoint(db):
    """No SAVEPOINT of its own for a block that starts its job (nothing written before
    it): two statements fewer per job. A block after the job wrote takes its own."""
    statements: list[str] = []
    await db.run(lambda conn: conn.set_trace_callback(statements.append))

    def writes_first(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO items (name, value) VALUES ('before', 1)")
        with transaction(conn):
            conn.execute("INSERT INTO items (name, value) VALUES ('inside', 1)")
        return "inside"

    try:
        results = await run_as_one_batch(db, [insert("a"), insert("b"), writes_first])
    finally:
        await db.run(lambda conn: conn.set_trace_callback(None))
    assert results == ["a", "b", "inside"]
    assert statements.count("SAVEPOINT job") == 3
    assert statements.count("SAVEPOINT tx") == 1  # writes_first's block alone
    assert await db.run(rows) == {"a": 1, "b": 1, "before": 1, "inside": 1}


async def test_a_failed_block_that_a_job_catches_undoes_only_the_block(db):
    def catches(conn: sqlite3.Connection) -> str:
        try:
            with transaction(conn):  # the job's first block: on the job's savepoint
                conn.execute("INSERT INTO items (name, value) VALUES ('undone', 1)")
                with transaction(conn):  # nested: a savepoint of its own
                    conn.execute("INSERT INTO items (name, value) VALUES ('nested', 1)")
                raise ValueError("the block fails")
        except ValueError:
            pass
        with transaction(conn):
            conn.execute("INSERT INTO items (name, value) VALUES ('after', 1)")
        return "caught"

    def writes_then_catches(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO items (name, value) VALUES ('kept', 1)")
        try:
            with transaction(conn):  # after a write: a savepoint of its own, 'kept' stays
                conn.execute("INSERT INTO items (name, value) VALUES ('undone-too', 1)")
                raise ValueError("fails too")
        except ValueError:
            pass
        return "kept"

    results = await run_as_one_batch(db, [insert("a"), catches, writes_then_catches, insert("z")])
    assert results == ["a", "caught", "kept", "z"]
    assert await db.run(rows) == {"a": 1, "after": 1, "kept": 1, "z": 1}


# -- the writer lock: the processes of one database take turns in the kernel -----------------

SYS_FLOCK = {"x86_64": 73, "aarch64": 32}.get(platform.machine())


def probe_lock(path) -> bool:
    """Whether another open file could take the writer lock now (it is let go at once)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing lets go of a lock it took
    return True


async def test_each_batch_holds_the_writer_lock_and_lets_it_go_after(db):
    held_during: list[bool] = []

    def job(conn: sqlite3.Connection) -> str:
        held_during.append(not probe_lock(db.writer_lock_path))
        return insert("a")(conn)

    assert await db.run(job) == "a"
    assert held_during == [True]
    assert probe_lock(db.writer_lock_path)  # free between batches
    assert db.writer_lock_path.name == "t.sqlite3-writer"
    assert stat.S_IMODE(db.writer_lock_path.stat().st_mode) == 0o600


@contextlib.contextmanager
def held_by_another_process(path):
    """The writer lock taken by another process, as another worker's batch holds it; the
    process is yielded, to be killed (SIGKILL) while it holds the lock."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX);"
            " print('held', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def current_syscall(thread: threading.Thread) -> int:
    """The number of the system call ``thread`` (of this process) is in (Linux); -1 while it
    runs outside one (the file then reads "running")."""
    first = Path(f"/proc/self/task/{thread.native_id}/syscall").read_text().split()[0]
    return int(first) if first.lstrip("-").isdigit() else -1


async def test_a_writer_of_another_process_is_waited_for_and_its_death_lets_the_next_one_go(db):
    await db.run(insert("before"))
    with held_by_another_process(db.writer_lock_path) as holder:
        job = asyncio.ensure_future(db.run(insert("after")))
        if SYS_FLOCK is not None:  # the thread waits in flock(), not in SQLite's sleeps
            assert db._thread is not None
            deadline = time.monotonic() + 10
            while current_syscall(db._thread) != SYS_FLOCK:
                assert time.monotonic() < deadline, "the writer thread never waited for the lock"
                await asyncio.sleep(0.001)
            assert not job.done()
        holder.kill()  # SIGKILL: the kernel lets its lock go
        assert await asyncio.wait_for(job, 10) == "after"
    assert set(await db.run(rows)) == {"before", "after"}


async def test_without_fcntl_batches_go_without_the_writer_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(database, "fcntl", None)
    db = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA)
    try:
        assert await db.run(insert("a")) == "a"
        assert not db.writer_lock_path.exists()
    finally:
        db.close()


async def test_a_file_system_without_flock_leaves_the_batches_to_sqlites_locks(tmp_path, monkeypatch, caplog):
    class NoFlock:
        LOCK_EX, LOCK_UN = fcntl.LOCK_EX, fcntl.LOCK_UN

        @staticmethod
        def flock(fd: int, operation: int) -> None:
            raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(database, "fcntl", NoFlock)
    db = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA)
    try:
        assert await db.run(insert("a")) == "a"  # committed all the same
        assert await db.run(insert("b")) == "b"  # and the lock is not tried again
        (warning,) = [r.getMessage() for r in caplog.records if "writer lock" in r.getMessage()]
        assert "no writer lock ([Errno" in warning and "No locks available" in warning
    finally:
        db.close()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root can give a file away")
async def test_a_writer_running_as_root_leaves_the_lock_file_to_the_databases_owner(tmp_path):
    # A CLI run with sudo creates the lock file first: the server's user must still open it.
    path = tmp_path / "t.sqlite3"
    made = SqliteDatabase(path, synchronous="FULL", schema=SCHEMA)
    made.run_sync(lambda conn: None)  # the database file, owned by root
    made.close()
    os.chown(path, 65534, 65534)  # now the service user's (nobody)
    db = SqliteDatabase(path, synchronous="FULL", schema=SCHEMA)
    try:
        assert await db.run(insert("a")) == "a"
        owner = db.writer_lock_path.stat()
        assert (owner.st_uid, owner.st_gid) == (65534, 65534)
        assert stat.S_IMODE(owner.st_mode) == 0o600
    finally:
        db.close()


# -- quick jobs: their statements on the loop, their COMMIT on the thread -----------------------


def where(ran: list[int]):
    """A quick insert that records the thread its statements ran on."""

    def job(conn: sqlite3.Connection) -> str:
        ran.append(threading.get_ident())
        return insert(f"n{len(ran)}")(conn)

    return job


class CommitCounter:
    """Records the thread of each COMMIT the thread runs for a batch the loop ran."""

    def __init__(self, db: SqliteDatabase, monkeypatch):
        self.threads: list[int] = []
        original = db._commit

        def counting(handoff):
            self.threads.append(threading.get_ident())
            return original(handoff)

        monkeypatch.setattr(db, "_commit", counting)


def seen_by_another_connection(path) -> dict[str, int]:
    other = sqlite3.connect(path)
    other.row_factory = sqlite3.Row
    try:
        return rows(other)
    finally:
        other.close()


async def test_a_quick_batch_runs_its_statements_on_the_loop_and_one_commit_on_the_thread(db, tmp_path, monkeypatch):
    await db.run(lambda conn: None)  # the thread's connection exists (it makes the schema)
    commits = CommitCounter(db, monkeypatch)
    ran: list[int] = []
    jobs = [db.submit(where(ran), quick=True) for _ in range(3)]  # one turn of the loop: one batch
    assert await asyncio.gather(*jobs) == ["n1", "n2", "n3"]
    assert ran == [threading.get_ident()] * 3
    assert len(commits.threads) == 1 and commits.threads[0] == db._thread.ident  # type: ignore[union-attr]
    # Answered once committed: another connection (another process) sees every write.
    assert seen_by_another_connection(tmp_path / "t.sqlite3") == {"n1": 1, "n2": 1, "n3": 1}


async def test_a_failing_quick_job_undoes_only_its_own_writes(db):
    await db.run(lambda conn: None)

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO items (name, value) VALUES ('half', 1)")
        raise ValueError("boom")

    jobs = [
        db.submit(insert("x"), quick=True),
        db.submit(half_then_fail, quick=True),
        db.submit(insert("y"), quick=True),
    ]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert results[0] == "x" and results[2] == "y" and isinstance(results[1], ValueError)
    assert await db.run(rows) == {"x": 1, "y": 1}


async def test_a_quick_batch_whose_commit_fails_gives_every_job_the_error(tmp_path):
    schema = (
        SCHEMA + "CREATE TABLE IF NOT EXISTS parents (id TEXT PRIMARY KEY);"
        "CREATE TABLE IF NOT EXISTS children (parent TEXT REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);"
    )
    db = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=schema)
    try:
        await db.run(lambda conn: None)
        orphan = db.submit(lambda conn: conn.execute("INSERT INTO children VALUES ('none')").rowcount, quick=True)
        fine = db.submit(insert("a"), quick=True)
        # The statements succeed on the loop; the deferred key fails the COMMIT, on the thread.
        for job in (orphan, fine):
            with pytest.raises(sqlite3.IntegrityError):
                await job
        assert await db.run(rows) == {}
        assert await db.submit(insert("b"), quick=True) == "b"  # the loop's connection is usable again
        assert await db.run(rows) == {"b": 1}
    finally:
        db.close()


async def test_a_quick_job_goes_to_the_thread_while_another_connection_writes(db, tmp_path):
    await db.run(lambda conn: None)
    other = sqlite3.connect(tmp_path / "t.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # SQLite's write lock, as a CLI or another process holds it
        ran: list[int] = []
        job = db.submit(where(ran), quick=True)
        await asyncio.sleep(0.05)
        # BEGIN IMMEDIATE on the loop met the lock at once (busy_timeout 0): the loop went on,
        # and the thread runs the batch, waiting for the lock.
        assert not job.done() and threading.get_ident() not in ran
        other.execute("COMMIT")
        assert await asyncio.wait_for(job, 10) == "n1"
        assert ran == [db._thread.ident]  # type: ignore[union-attr]
    finally:
        other.close()


async def test_a_quick_job_waits_on_the_thread_while_another_process_holds_the_writer_lock(db):
    await db.run(insert("before"))
    ran: list[int] = []
    with held_by_another_process(db.writer_lock_path) as holder:
        job = db.submit(where(ran), quick=True)
        if SYS_FLOCK is not None:  # the thread waits in flock(); the loop is free meanwhile
            assert db._thread is not None
            deadline = time.monotonic() + 10
            while current_syscall(db._thread) != SYS_FLOCK:
                assert time.monotonic() < deadline, "the writer thread never waited for the lock"
                await asyncio.sleep(0.001)
        assert not job.done() and ran == []
        holder.kill()
        assert await asyncio.wait_for(job, 10) == "n1"
    assert ran == [db._thread.ident]  # type: ignore[union-attr]
    assert probe_lock(db.writer_lock_path)  # let go after the batch
    # The next quick batch takes the lock on the loop again, and lets it go after its COMMIT.
    held_during: list[bool] = []

    def probing(conn: sqlite3.Connection) -> str:
        held_during.append(not probe_lock(db.writer_lock_path))
        return insert("after")(conn)

    assert await db.submit(probing, quick=True) == "after"
    assert held_during == [True] and probe_lock(db.writer_lock_path)


async def test_a_batch_with_a_job_that_is_not_quick_runs_on_the_thread(db):
    await db.run(lambda conn: None)
    ran: list[int] = []
    quick, slow = db.submit(where(ran), quick=True), db.submit(where(ran))  # one turn: one batch
    assert await asyncio.gather(quick, slow) == ["n1", "n2"]
    assert ran == [db._thread.ident] * 2  # type: ignore[union-attr]


async def test_quick_later_writes_join_the_next_quick_batch_or_commit_on_the_loop_once_due(tmp_path, monkeypatch):
    db = SqliteDatabase(tmp_path / "t.sqlite3", synchronous="FULL", schema=SCHEMA, defer_for=0.05)
    try:
        await db.run(lambda conn: None)
        commits = CommitCounter(db, monkeypatch)
        ran: list[int] = []
        first = db.later(where(ran), quick=True)
        assert await db.submit(where(ran), quick=True) == "n2"
        assert first.done() and first.result() == "n1"
        assert len(commits.threads) == 1  # one batch, one COMMIT
        due = db.later(where(ran), quick=True)  # nothing to join: committed once due
        assert await asyncio.wait_for(due, 5) == "n3"
        assert ran == [threading.get_ident()] * 3 and len(commits.threads) == 2
        assert await db.run(rows) == {"n1": 1, "n2": 1, "n3": 1}
    finally:
        db.close()


async def test_jobs_queued_while_a_quick_batch_commits_form_the_next_batch(db, monkeypatch):
    await db.run(lambda conn: None)
    commits = CommitCounter(db, monkeypatch)
    ran: list[int] = []
    first = db.submit(where(ran), quick=True)
    await asyncio.sleep(0)  # the first batch is taken (its statements run) at the end of that turn
    assert ran == [threading.get_ident()]
    following = [db.submit(where(ran), quick=True) for _ in range(3)]
    assert await first == "n1" and await asyncio.gather(*following) == ["n2", "n3", "n4"]
    # Queued while the first was in flight, they were not taken one by one: one batch, one COMMIT.
    assert len(commits.threads) == 2
