"""The benchmark keeps working: ``python -m bench --quick`` (tiny N) runs end to end.

No timing is asserted (the figures of a tiny run on a shared machine mean nothing); only
that every part ran, the table was printed, the JSON has its keys, and every 2xx answer
matched exactly one order booked at the emulator (the command exits non-zero otherwise).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow


def test_quick_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "latest.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for line in (
        "server/limit",
        "c=1   p50 ms",
        "c=32  requests/s",
        "start → first filled order",
        "RSS after the run",
        "pipeline alone",
        "every 2xx ↔ exactly one booked order: OK",
    ):
        assert line in run.stdout, line
    result = json.loads(out.read_text())
    assert {"config", "summary", "targets", "runs", "wall_s"} <= set(result)
    summary = result["summary"]
    assert {"c1", "c32", "c32_one_market", "routes", "startup", "rss_mb", "pipeline", "integrity"} <= set(summary)
    for section in ("c1", "c32"):
        assert set(summary[section]) == {"server", "limit", "ratio"}
        assert {"rps", "p50_ms", "p90_ms", "p99_ms"} <= set(summary[section]["ratio"])
    assert {"rest_p50_ms", "ws_p50_ms"} <= set(summary["routes"])
    assert {"p50_us", "cpu_us_per_alert", "durable_commits_per_alert"} <= set(summary["pipeline"])
    assert summary["integrity"]["ok"] and summary["integrity"]["answered_2xx"] > 0
    assert set(result["targets"]) == {
        "c1_p50_ratio",
        "c32_rps_ratio",
        "c32_p99_ratio",
        "pipeline_p50_us",
        "start_to_first_order_s",
        "rss_mb",
    }
    assert {run["target"] for run in result["runs"]} == {"server", "limit"}
    assert result["config"]["ccxt_rate_limit"] is False
