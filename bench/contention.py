"""Writers of several processes on one SQLite file: what each waits for its commits.

    python -m bench.contention --processes 4 --n 1000 [--concurrency 1] [--quick] [--out contention.json]

``hypercorn --workers N`` on one ``DATA_DIR`` gives N processes that commit to the same
journal. Each process here is such a writer and nothing else: a ``SqliteDatabase``
(``core.store.sqlite.database``, synchronous=FULL, its writer lock included) on a file
they share, committing ``--n`` small transactions, ``--concurrency`` at a time (one
waited for after another within each), all processes at once. Per process it reports the
commits per second and the wait of one commit, from queueing to committed: p50, p99 and
the worst. ``--no-writer-lock`` runs the same without the writer lock (batches left to
SQLite's own locking, whose busy wait sleeps 1, 2, 5, 10 ms and more between tries), to
compare the two on the same disk. ``--quick`` marks the jobs quick, as the journal's
admission and outcome are: their statements run on the event loop, which tries the writer
lock without waiting and leaves the batch to the thread when another process holds it.

Writes JSON: processes, n, concurrency, writer_lock, quick, and per process commits_per_s,
p50_ms, p99_ms, max_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCHEMA = "CREATE TABLE IF NOT EXISTS rows (id TEXT PRIMARY KEY, body TEXT NOT NULL);"


def writer(
    path: str, n: int, concurrency: int, name: str, writer_lock: bool, quick: bool, start: Any, results: Any
) -> None:
    """One process: ``n`` commits, ``concurrency`` at a time, from when every process is ready
    (``start``: a barrier of them all)."""
    from core.store.sqlite.database import SqliteDatabase, transaction

    db = SqliteDatabase(Path(path), synchronous="FULL", schema=SCHEMA, writer_lock=writer_lock)

    def insert(key: str):
        def job(conn):
            with transaction(conn):
                conn.execute("INSERT INTO rows (id, body) VALUES (?, ?)", (key, "x" * 200))

        return job

    async def commits() -> tuple[float, list[float]]:
        await db.run(insert(f"{name}-ready"))  # the schema and the thread exist
        await asyncio.get_running_loop().run_in_executor(None, start.wait, 120)  # every process ready
        waits: list[float] = []

        async def one_at_a_time(lane: int) -> None:
            for i in range(n // concurrency):
                queued = time.perf_counter()
                await db.run(insert(f"{name}-{lane}-{i}"), quick=quick)
                waits.append(time.perf_counter() - queued)

        started = time.perf_counter()
        await asyncio.gather(*(one_at_a_time(lane) for lane in range(concurrency)))
        return time.perf_counter() - started, waits

    try:
        elapsed, waits = asyncio.run(commits())
    finally:
        db.close()
    waits.sort()
    results.put(
        {
            "process": name,
            "commits_per_s": len(waits) / elapsed,
            "p50_ms": statistics.median(waits) * 1e3,
            "p99_ms": waits[int(0.99 * (len(waits) - 1))] * 1e3,
            "max_ms": waits[-1] * 1e3,
        }
    )


def measure(
    processes: int, n: int, concurrency: int, writer_lock: bool, directory: Path, quick: bool = False
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes), context.Queue()
    path = str(directory / "contention.sqlite3")
    workers = [
        context.Process(target=writer, args=(path, n, concurrency, f"p{i}", writer_lock, quick, start, results))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    rows = sorted((results.get(timeout=600) for _ in workers), key=lambda row: row["process"])
    for worker in workers:
        worker.join(timeout=60)
        if worker.exitcode != 0:
            raise RuntimeError(f"a writer process exited with {worker.exitcode}")
    return {
        "processes": processes,
        "n": n,
        "concurrency": concurrency,
        "writer_lock": writer_lock,
        "quick": quick,
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    lock = "with the writer lock" if result["writer_lock"] else "without the writer lock (SQLite's busy wait)"
    jobs = "quick jobs (statements on the loop)" if result.get("quick") else "jobs on the thread"
    lines = [
        f"{result['processes']} processes × {result['n']} commits, {result['concurrency']} at a time each, {lock},"
        f" {jobs}",
        f"  {'process':8} {'commits/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for row in result["rows"]:
        lines.append(
            f"  {row['process']:8} {row['commits_per_s']:10,.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
            f"{row['max_ms']:8.2f}"
        )
    total = sum(row["commits_per_s"] for row in result["rows"])
    lines.append(f"  {'all':8} {total:10,.0f} {'':8} {'':8} {max(r['max_ms'] for r in result['rows']):8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--n", type=int, default=1000, help="commits per process (default 1000)")
    parser.add_argument("--concurrency", type=int, default=1, help="commits in flight per process (default 1)")
    parser.add_argument("--no-writer-lock", action="store_true", help="leave the batches to SQLite's locking")
    parser.add_argument("--quick", action="store_true", help="quick jobs, as the journal's admission and outcome")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    if args.processes < 1 or args.concurrency < 1 or args.n < args.concurrency:
        parser.error("--processes and --concurrency at least 1, --n at least --concurrency")
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as directory:
        result = measure(
            args.processes, args.n, args.concurrency, not args.no_writer_lock, Path(directory), quick=args.quick
        )
    print(table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
