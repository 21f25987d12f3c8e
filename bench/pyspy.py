"""``python -m bench --profile``: py-spy on the server's worker during an extra c=32 run.

py-spy (the ``dev`` extra) samples the hypercorn worker's Python stack 100 times a second
from outside the process (the server runs unchanged), the thread holding the GIL only
(``--gil``): where Python's CPU goes, whichever thread runs it. (Without ``--gil`` py-spy
also counts threads that are runnable but waiting for a CPU — on a busy 2-core machine the
database thread woken in ``Condition.wait`` would top the list.) The samples are written
as folded stacks (``py-spy record --format raw``: one line per distinct stack,
``frame;frame;... count``, the input of flamegraph.pl or speedscope) to
``bench/results/profile-<time>.txt``, and the report lists the functions with the most
*self* samples (the innermost frame of a stack).

Native work that releases the GIL (SQLite's statements and fsync) is not in those
samples, so the worker's threads are accounted too: each thread's CPU time
(/proc/<pid>/task) over the same run, per alert, named as ``py-spy dump`` names it. py-spy
samples with ``--nonblocking``: pausing the process for each sample (its default) makes a
line that enters the kernel (``getpid()`` inside ``asyncio.get_running_loop``, a lock)
collect samples out of all proportion to its cost. Sampling still slows the process, so
the profiled run is an extra run, not one of the measured rounds.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.processes import ROOT, Process, clean_env

RATE = 1000  # samples per second (--nonblocking: reading the worker does not pause it)
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def executable() -> str | None:
    """py-spy next to this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recorder:
    """``start()`` attaches to ``pid``; ``stop()`` ends the recording and returns the summary."""

    def __init__(self, pid: int, out: Path, log_dir: Path):
        self.pid, self.out, self.log_dir = pid, out, log_dir
        self.process: Process | None = None
        self.threads_before: dict[int, float] = {}

    def start(self, timeout: float = 30) -> str | None:
        """None once py-spy samples, else why it cannot (the run goes on without a profile)."""
        spy = executable()
        if spy is None:
            return "py-spy is not installed (pip install py-spy; it is in the dev extra)"
        self.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [spy, "record", "--pid", str(self.pid), "--gil", "--nonblocking", "--format", "raw", "--rate", str(RATE)]
        cmd += ["-o", str(self.out)]
        self.process = Process("py-spy", cmd, env=clean_env(), cwd=ROOT, log_dir=self.log_dir).start()
        try:
            self.process.wait_for_line(r"Sampling process", timeout)
        except (RuntimeError, TimeoutError):
            log = self.process.log(2000).strip().splitlines()
            self.process.stop()
            reason = next((line for line in log if "Error" in line or "ermission" in line), log[-1] if log else "")
            return f"py-spy could not attach to the worker (pid {self.pid}): {reason[:300]}"
        self.threads_before = thread_cpu(self.pid)
        return None

    def stop(self, alerts: int) -> dict[str, Any]:
        """SIGINT (py-spy then writes its file), and the top self-time frames."""
        assert self.process is not None and self.process.proc is not None
        after = thread_cpu(self.pid)
        try:
            os.killpg(self.process.pid, signal.SIGINT)
            self.process.proc.wait(30)
        except (ProcessLookupError, OSError, TimeoutError):
            pass
        finally:
            self.process.stop()
        if not self.out.exists():
            return {"skipped": f"py-spy wrote no profile: {self.process.log(600).strip()[-300:]}"}
        names = thread_names(self.pid)
        cpu_ms = sum(cpu - self.threads_before.get(tid, 0.0) for tid, cpu in after.items()) * 1000 / max(1, alerts)
        threads = [
            {
                "tid": tid,
                "thread": "MainThread (the event loop)" if tid == self.pid else names.get(tid, "(unnamed)"),
                "cpu_ms_per_alert": (cpu - self.threads_before.get(tid, 0.0)) * 1000 / max(1, alerts),
            }
            for tid, cpu in sorted(after.items(), key=lambda x: x[1] - self.threads_before.get(x[0], 0.0), reverse=True)
            if cpu - self.threads_before.get(tid, 0.0) > 0
        ]
        return {**summarize(self.out, alerts, cpu_ms), "threads": threads}


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of ``pid`` so far."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_names(pid: int) -> dict[int, str]:
    """OS thread id → ``"name (what it runs)"`` from ``py-spy dump`` (empty if it fails)."""
    spy = executable()
    if spy is None:
        return {}
    try:
        dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names: dict[int, str] = {}
    for block in re.split(r"\n(?=Thread )", dump):
        head = re.match(r'Thread (\d+) \([^)]*\): "([^"]*)"', block)
        if not head:
            continue
        frames = [line.strip() for line in block.splitlines()[1:] if line.strip()]
        frames = [f for f in frames if not f.startswith(("Thread.run ", "Thread._bootstrap"))]
        runs = FRAME.match(frames[-1]) if frames else None
        names[int(head[1])] = head[2] + (f" ({runs['function']})" if runs else "")
    return names


def summarize(path: Path, alerts: int, cpu_ms_per_alert: float | None = None, top: int = 15) -> dict[str, Any]:
    """Self samples per function (file without line) and per package over the folded stacks
    in ``path``. ``us_per_alert`` is each share of ``cpu_ms_per_alert`` (the worker's
    measured CPU per alert), else of the sampled time: on a busy machine a sample also
    lands while the thread holding the GIL waits for a CPU, so the sampled time per alert
    exceeds the CPU time, while the shares hold."""
    own: collections.Counter[tuple[str, str]] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        leaf = stack.split(";")[-1]
        found = FRAME.match(leaf)
        function, file = (found["function"], short(found["file"])) if found else (leaf, "")
        own[(function, file)] += int(samples)
        total += int(samples)
    sampled_ms = total * 1000 / RATE / alerts if alerts else 0.0
    budget_us = 1000 * (cpu_ms_per_alert if cpu_ms_per_alert is not None else sampled_ms)
    packages: collections.Counter[str] = collections.Counter()
    for (_, file), count in own.items():
        packages[package_of(file)] += count

    def share(count: int) -> float:
        return count / total if total else 0.0

    return {
        "path": str(path),
        "rate_hz": RATE,
        "samples": total,
        "alerts": alerts,
        "sampled_ms_per_alert": sampled_ms,
        "cpu_ms_per_alert": cpu_ms_per_alert,
        "top_self": [
            {
                "function": function,
                "file": file,
                "samples": count,
                "share": share(count),
                "us_per_alert": share(count) * budget_us,
            }
            for (function, file), count in own.most_common(top)
        ],
        "by_package": [
            {"package": name, "samples": count, "share": share(count), "us_per_alert": share(count) * budget_us}
            for name, count in packages.most_common(top)
        ],
    }


def package_of(file: str) -> str:
    """``aiohttp/client.py`` → ``aiohttp``, ``core/store/sqlite/database.py`` → ``core.store``,
    ``selectors.py`` → ``selectors`` (the standard library's modules by name)."""
    parts = file.removesuffix(".py").split("/")
    if parts[0] in ("core", "plugins") and len(parts) > 2:
        return ".".join(parts[:2])
    return parts[0] or "?"


def short(file: str) -> str:
    """A path from site-packages or the repository on; the standard library's from its name."""
    for marker in ("site-packages/", f"{ROOT}/"):
        if marker in file:
            return file.split(marker, 1)[1]
    found = re.search(r"python3\.\d+/(.*)$", file)
    return found.group(1) if found else file
