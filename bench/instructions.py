"""Instructions per alert, counted by callgrind: the server's CPU cost beside the durable limit's
and the Quart route's, without the noise of a shared machine.

    python -m bench.instructions [--n 300] [--concurrency 1] [--one-market] [--targets server,quart,durable]

CPU seconds on a VM that shares its host drift from one run to the next by more than most
changes to the hot path save (docs/performance.md shows the Quart route, unchanged, between
1.13x and 1.45x the durable limit's CPU across four runs). Instructions do not drift: each
target's hypercorn worker runs under valgrind's callgrind, which counts every instruction
its threads execute in user space, the same count for the same code and inputs whatever
else the machine is doing. For each target in turn, on the benchmark's emulator:

1. the target is started under ``valgrind --tool=callgrind`` (its worker followed into
   the child hypercorn spawns), and warmed up until it has filled an order and then
   ``--warmup`` alerts more;
2. the worker's counters are zeroed (``callgrind_control --zero``), ``--n`` alerts are
   sent by the load generator at ``--concurrency``, and the counters are dumped, one file
   per thread (``--separate-threads``);
3. instructions per alert: all the worker's threads, its main thread (the event loop) and
   the others (the SQLite writer, executors), and the shared objects they were spent in.

What it does not count: the kernel's work (system calls, fsync: the ``system`` part of
``bench``'s CPU figures), and time. Callgrind runs a program about 40 times slower and one
thread at a time, so time-dependent behaviour differs from a native run: at concurrency 1
an alert's outcome, which is otherwise committed with the next alert's admission, is
usually committed on its own once ``later``'s timer fires; at concurrency 32 more alerts
share a commit. Compare a change with its baseline at the same settings, not these counts
with ``bench``'s CPU times. Writes JSON to ``--out`` (default
``bench/results/instructions.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.emulator import bench_tickers
from bench.processes import ROOT, Process
from bench.targets import (
    QUART_LIMIT,
    REST_ACCOUNT,
    TICKERS,
    Deadline,
    Target,
    first_filled_order,
    limit_process,
    load_run,
    say,
    server_process,
    start_emulator,
    worker_pid,
)

TARGETS = ("server", "quart", "durable")
TOOLS = ("valgrind", "callgrind_control")


def missing_tools() -> str | None:
    """Why the count cannot run here (valgrind's tools not on PATH), or None."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    return f"{', '.join(missing)} not found (Debian: apt-get install valgrind)" if missing else None


VALGRIND = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--separate-threads=yes", "--dump-instr=no"]


def make_target(name: str, tmp: Path, secret: str, emulator_url: str) -> Target:
    def make(process_name: str) -> tuple[Process, int]:
        if name == "server":
            process, port = server_process(process_name, tmp, secret, emulator_url, [])
        else:
            app = QUART_LIMIT if name == "quart" else "bench.limit_app:app"
            process, port = limit_process(process_name, tmp, secret, emulator_url, [], durable=True, app=app)
        out = tmp / f"callgrind-{process_name}"
        out.mkdir()
        process.cmd = [*VALGRIND, f"--callgrind-out-file={out}/cg.%p", *process.cmd]
        return process, port

    return Target(name, make, account=REST_ACCOUNT)


def callgrind_control(command: str, pid: int) -> None:
    """``callgrind_control --zero PID`` or ``--dump PID``: valgrind's gdbserver reaches the
    process even while it waits in a system call."""
    subprocess.run(["callgrind_control", f"--{command}", str(pid)], check=True, capture_output=True, timeout=120)


def dump_files(directory: Path, pid: int) -> list[Path]:
    """The files of the worker's first dump, one per thread (``cg.<pid>.1-<thread>``), in
    thread order: callgrind numbers the main thread 01."""
    return sorted(directory.glob(f"cg.{pid}.1-*"), key=lambda path: int(path.name.rsplit("-", 1)[1]))


_SUMMARY = re.compile(r"^summary:\s*(\d+)", re.MULTILINE)
_NAME = re.compile(r"^c?ob=(?:\((\d+)\))?\s*(.*)$")


def summary(text: str, name: str = "dump") -> int:
    """The instructions a callgrind dump file's text counted (its ``summary:`` line)."""
    found = _SUMMARY.search(text)
    if found is None:
        raise ValueError(f"{name}: not a callgrind dump (no summary line)")
    return int(found.group(1))


def by_object(text: str) -> dict[str, int]:
    """Self instructions per shared object in one callgrind dump file.

    Read from the file itself (callgrind's format: ``ob=`` names the object of the cost
    lines that follow, compressed as ``(id) name`` the first time and ``(id)`` after; a
    cost line is ``position cost``; the line after a ``calls=`` line is the call's
    inclusive cost, which belongs to the callee and is skipped). ``callgrind_annotate``
    is not used: for a dump taken after ``--zero`` it charges the frames that were open
    then with their callees' cost."""
    names: dict[str, str] = {}
    objects: collections.Counter[str] = collections.Counter()
    current = "?"
    after_call = False
    for line in text.splitlines():
        if not line:
            continue
        head = line[0]
        if head.isdigit() or head in "+-*":
            if after_call:
                after_call = False
                continue
            parts = line.split()
            if len(parts) >= 2:
                objects[current] += int(parts[1])
            continue
        if line.startswith("calls="):
            after_call = True
        elif line.startswith(("ob=", "cob=")):
            found = _NAME.match(line)
            if found is None:
                continue
            ident, name = found.groups()
            if name:
                name = Path(name).name
                if ident:
                    names[ident] = name  # defined where first named, by ob= or by cob=
            if line.startswith("ob="):
                current = name or names.get(ident or "", "?")
    return dict(objects)


def counts(paths: list[Path]) -> tuple[list[int], dict[str, float]]:
    """Each dump file's instructions (a worker's threads, in order) and the instructions per
    shared object over all of them, each file read once. A dump taken after ``--zero`` holds
    a few per cent more self cost than its ``summary`` counted (costs at the boundaries):
    each file's objects are scaled to its summary, so that they add up to the total."""
    threads: list[int] = []
    total: collections.Counter[str] = collections.Counter()
    for path in paths:
        text = path.read_text(errors="replace")
        threads.append(summary(text, path.name))
        objects = by_object(text)
        counted = sum(objects.values())
        scale = threads[-1] / counted if counted else 0.0
        total.update({name: count * scale for name, count in objects.items()})
    return threads, dict(total)


def measure(target: Target, args: argparse.Namespace, tmp: Path, secret: str, deadline: Deadline) -> dict[str, Any]:
    say(f"bench.instructions: {target.name}: starting under callgrind ...")
    process = target.launch(f"{target.name}-instructions")
    try:
        first_filled_order(target, secret, [], timeout=min(deadline.left(), args.start_timeout))
        warmup = f"{target.name}-warmup"
        tickers = bench_tickers()[0] if args.one_market else TICKERS
        load_run(warmup, target.port, args.warmup, args.concurrency, target.account, secret, tmp, deadline, tickers)
        worker = worker_pid(process)
        callgrind_control("zero", worker)
        say(f"bench.instructions: {target.name}: {args.n} alerts at concurrency {args.concurrency} ...")
        counted = f"{target.name}-counted"
        load = load_run(counted, target.port, args.n, args.concurrency, target.account, secret, tmp, deadline, tickers)
        callgrind_control("dump", worker)
        files = dump_files(tmp / f"callgrind-{process.name}", worker)
    finally:
        process.stop()
    if not files:
        raise RuntimeError(f"{target.name}: callgrind wrote no dump for worker {worker}:\n{process.log()}")
    answered = len(load["ids_2xx"])
    if answered != args.n:
        statuses = load["statuses"]
        raise RuntimeError(f"{target.name}: {answered} of {args.n} alerts answered 2xx under callgrind: {statuses}")
    threads, objects = counts(files)
    return {
        "n": args.n,
        "concurrency": args.concurrency,
        "one_market": args.one_market,
        "per_alert": sum(threads) / args.n,
        "main_thread_per_alert": threads[0] / args.n,
        "other_threads_per_alert": sum(threads[1:]) / args.n,
        "threads": len(threads),
        "objects_per_alert": {name: count / args.n for name, count in sorted(objects.items(), key=lambda kv: -kv[1])},
    }


def table(results: dict[str, dict[str, Any]], top: int = 8) -> str:
    """The figures as text: thousands of instructions per alert, and the server's ratios."""
    lines = [f"{'target':<9} {'all threads':>12} {'event loop':>11} {'other threads':>14}   (k instructions per alert)"]
    for name, r in results.items():
        lines.append(
            f"{name:<9} {r['per_alert'] / 1e3:>12,.0f} {r['main_thread_per_alert'] / 1e3:>11,.0f}"
            f" {r['other_threads_per_alert'] / 1e3:>14,.0f}"
        )
    server = results.get("server")
    for reference in ("durable", "quart"):
        if server is not None and reference in results:
            ref = results[reference]
            lines.append(
                f"server / {reference}: {server['per_alert'] / ref['per_alert']:.2f}x all threads,"
                f" {server['main_thread_per_alert'] / ref['main_thread_per_alert']:.2f}x the event loop"
            )
    for name, r in results.items():
        shown = list(r["objects_per_alert"].items())[:top]
        lines.append(f"{name}: " + ", ".join(f"{obj} {count / 1e3:,.0f}k" for obj, count in shown))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="alerts counted per target (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="alerts sent before counting (default 30)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument(
        "--one-market",
        action="store_true",
        help="every alert on one market (the benchmark's one-market load: the server executes them one at a time)",
    )
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, of " + ", ".join(TARGETS))
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to start under callgrind")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the whole run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "instructions.json"))
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown or not names:
        parser.error(f"--targets: {', '.join(unknown) or 'none given'}; choose from {', '.join(TARGETS)}")
    missing = missing_tools()
    if missing:
        print(f"bench.instructions: {missing}", file=sys.stderr)
        return 2
    deadline = Deadline(args.timeout)
    secret = "bench-instructions-" + "0" * 32
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as directory:
        tmp = Path(directory)
        emulator, url = start_emulator(tmp, deadline)
        try:
            for name in names:
                started = time.monotonic()
                results[name] = measure(make_target(name, tmp, secret, url), args, tmp, secret, deadline)
                took = time.monotonic() - started
                say(f"bench.instructions: {name}: {results[name]['per_alert']:,.0f} per alert ({took:.0f} s)")
        finally:
            Process.stop_all()
            emulator.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
