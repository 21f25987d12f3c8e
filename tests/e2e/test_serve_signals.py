"""``python -m core serve`` and its worker print every thread's stack on SIGUSR1 and go
on serving; two SIGTERMs in a row stop it as one does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.web.worker import in_hypercorn_worker
from tests.support import ROOT, free_port

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")


def serve(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env |= {"PYTHONPATH": str(ROOT), "DATA_DIR": str(tmp_path / "data"), "WEBHOOK_SECRET": "s" * 32}
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "serve", "--bind", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.05)  # polling the port, bounded by the deadline
    proc.kill()
    pytest.fail("no health answer within 20 s")


def stop(proc: subprocess.Popen[bytes], *signals: signal.Signals) -> str:
    for signum in signals:
        os.killpg(proc.pid, signum)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("serve did not stop within 30 s:\n" + proc.communicate()[0].decode(errors="replace")[-4000:])
    return proc.communicate()[0].decode(errors="replace")


def test_sigusr1_prints_every_threads_stack_of_master_and_worker_and_serving_goes_on(tmp_path):
    assert not in_hypercorn_worker()
    proc, port = serve(tmp_path)
    # The master and its worker: each writes its dump as the signal is delivered (from C),
    # before the SIGTERM below, and neither ends.
    os.killpg(proc.pid, signal.SIGUSR1)
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    assert proc.poll() is None
    output = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, output
    assert "hypercorn/run.py" in output, "the master's stack: in hypercorn's run()"
    assert "asyncio/base_events.py" in output, "the worker's stack: its event loop"


def test_two_sigterms_in_a_row_stop_the_server(tmp_path):
    proc, _ = serve(tmp_path)
    output = stop(proc, signal.SIGTERM, signal.SIGTERM)
    assert proc.returncode == 0, output
