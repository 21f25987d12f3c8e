"""``python -m bench.instructions`` runs end to end: the durable limit under callgrind on the
emulator, its worker's counters zeroed after the warm-up and dumped after the counted
alerts, one file per thread. No count is asserted beyond what any run must show (the
figures are compared between runs by people, not by tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow


def test_instructions_per_alert_of_a_target_under_callgrind(tmp_path):
    if shutil.which("callgrind_control") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("valgrind is not installed (.ci/run installs it)")
        pytest.skip("valgrind is not installed (Debian: apt-get install valgrind)")
    out = tmp_path / "instructions.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.instructions", "--targets", "durable", "--n", "8", "--warmup", "2"]
        + ["--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "durable" in run.stdout and "k instructions per alert" in run.stdout
    result = json.loads(out.read_text())["durable"]
    assert result["n"] == 8 and result["threads"] >= 2  # the event loop and the SQLite writer
    assert result["main_thread_per_alert"] > 0 and result["other_threads_per_alert"] > 0
    assert result["per_alert"] == pytest.approx(result["main_thread_per_alert"] + result["other_threads_per_alert"])
    objects = result["objects_per_alert"]
    assert sum(objects.values()) == pytest.approx(result["per_alert"])
    assert any(name.startswith("libpython3") for name in objects)
    assert any(name.startswith("libsqlite3") for name in objects)  # the writer's INSERT and COMMIT


def test_an_unknown_target_is_refused_with_one_line():
    run = subprocess.run(
        [sys.executable, "-m", "bench.instructions", "--targets", "server,nginx"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--targets: nginx" in run.stderr
