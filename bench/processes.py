"""The benchmark's processes: each in its own session (process group) on a free loopback
port, with its output in a log file, stopped with its whole group however the run ends.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment: nothing from the caller's shell configures the processes."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class Process:
    """One child process group: ``start()``, ``stop()``; its log is kept for failures."""

    running: list[Process] = []  # every started process, for the orchestrator's cleanup

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str], cwd: Path, log_dir: Path):
        self.name = name
        self.cmd = cmd
        self.env = env
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self.started_at = 0.0  # time.monotonic() just before the spawn

    def start(self) -> Process:
        self._log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        Process.running.append(self)
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, tail: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:]

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """Poll the log for ``pattern`` (bounded); raise with the log if the process dies."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = regex.search(self.log(tail=1 << 20))
            if found:
                return found
            if not self.alive():
                status = self.proc.returncode if self.proc is not None else "no process (never started)"
                raise RuntimeError(f"{self.name} exited with {status}:\n{self.log()}")
            time.sleep(0.01)
        raise TimeoutError(f"{self.name}: no line matching {pattern!r} after {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL after ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc is not None:
            _signal_group(self.proc.pid, signal.SIGKILL)  # leftovers of the group (hypercorn's worker)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self in Process.running:
            Process.running.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for process in reversed(list(cls.running)):
            try:
                process.stop(timeout=5)
            except Exception:  # cleanup goes on for the others
                pass


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (hypercorn's worker processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return sorted(found)


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MB (10^6 bytes), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def rss_mib(pid: int) -> float | None:
    """VmRSS of ``pid`` in MiB (2^20 bytes), or None when it is gone."""
    mb = rss_mb(pid)
    return None if mb is None else mb * 1e6 / 2**20


def descendants(pid: int) -> list[int]:
    """``pid``'s children, their children, and so on."""
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) used so far by ``pid`` and its descendants,
    from /proc/<pid>/stat (clock ticks: 10 ms resolution); a process gone counts 0."""
    ticks = 0
    for each in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{each}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


THREAD_FIGURES = ("loop_user", "loop_system", "threads_user", "threads_system")


def thread_cpu_s(pid: int) -> dict[int, tuple[float, float]]:
    """Each live thread of ``pid``: its user and system CPU seconds so far, by thread id
    (/proc/<pid>/task/<tid>/stat; 10 ms ticks). Empty when the process is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[float, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        found[int(tid)] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return found


def thread_cpu_split(pid: int, before: dict[int, tuple[float, float]]) -> dict[str, float]:
    """CPU seconds ``pid``'s threads used since ``before`` (``thread_cpu_s``), split into its
    main thread — the event loop of an asyncio server — and the others (database writers,
    executors), each as user and system time (``THREAD_FIGURES``). A thread that ended
    meanwhile is not counted; one that started is counted whole."""
    split = dict.fromkeys(THREAD_FIGURES, 0.0)
    for tid, (user, system) in thread_cpu_s(pid).items():
        user0, system0 = before.get(tid, (0.0, 0.0))
        side = "loop" if tid == pid else "threads"
        split[f"{side}_user"] += max(0.0, user - user0)
        split[f"{side}_system"] += max(0.0, system - system0)
    return split
