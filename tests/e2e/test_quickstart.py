"""The README's quick start, as a newcomer runs it: `make run` in a fresh copy of the
repository, `curl /`, `python simulate_tradingview.py`, and the paper ledger holds the fill.

The test's own virtual environment stands in for the install step (VENV=…), so the
test needs no network; everything else is the real command.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, free_port

pytestmark = pytest.mark.slow


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line and (ROOT / line).is_file()]


@pytest.fixture
def fresh_checkout(tmp_path: Path) -> Path:
    target = tmp_path / "checkout"
    for name in tracked_files():
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest)
    return target


def test_make_run_then_simulate_fills_on_paper(fresh_checkout: Path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = Path(sys.prefix)  # this test's own virtual environment (not the interpreter it links to)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    # -o: take the install step as done (this environment is installed); the rest is `make run` as written.
    proc = subprocess.Popen(
        ["make", "-o", f"{venv}/.installed", "run", f"VENV={venv}", f"PORT={port}"],
        cwd=fresh_checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        health = None
        while time.monotonic() < deadline and health is None:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.1)  # polling the port, bounded by the 15 s deadline
        assert health is not None and health.status_code == 200, "no health answer within 15 s"
        assert health.json() == {"status": "ok"}  # liveness only, for anyone

        env_file = (fresh_checkout / ".env").read_text()
        assert "DEFAULT_EXCHANGE=paper" in env_file
        values = dict(line.split("=", 1) for line in env_file.splitlines() if "=" in line and not line.startswith("#"))
        assert len(values["WEBHOOK_SECRET"]) >= 32 and len(values["METRICS_TOKEN"]) >= 32
        monitor = {"Authorization": f"Bearer {values['METRICS_TOKEN']}"}  # as the README's quick start does
        assert (
            httpx.get(f"http://127.0.0.1:{port}/", headers=monitor, timeout=5).json()["accounts"]["paper"]["ready"]
            is True
        )

        sim = subprocess.run(
            [sys.executable, "simulate_tradingview.py", "--url", f"http://127.0.0.1:{port}/webhook"],
            cwd=fresh_checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sim.returncode == 0, sim.stdout + sim.stderr
        assert "HTTP 200" in sim.stdout and '"status": "filled"' in sim.stdout

        ledger = sqlite3.connect(fresh_checkout / "data" / "paper.sqlite3")
        assert ledger.execute("SELECT symbol, side, status FROM paper_orders").fetchall() == [
            ("BTC/USDT", "buy", "closed")
        ]
    finally:
        # A graceful stop (hypercorn.toml's graceful_timeout, 15 s, for requests still open),
        # with room for a loaded CI machine: usually ~1 s. If it hangs, say what it printed.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            # Every thread's stack of the master and the worker (SIGUSR1: core.web.worker),
            # then the end: what the stop waited for is in the failure.
            os.killpg(proc.pid, signal.SIGUSR1)
            time.sleep(1)  # the dumps are written by the signal handlers; no event to wait on
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate(timeout=10)[0].decode(errors="replace")
            pytest.fail(f"`make run` did not stop within 45 s of SIGTERM; it printed:\n{output[-12000:]}")
