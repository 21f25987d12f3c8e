"""The benchmark's own parts, each against the real thing it stands for: the durable limit's
journal on SQLite, the original implementation's checkout verification and its emulator
hook (``sitecustomize``) in a real interpreter, the classic payload's signature, and the
profile's self-time summary, the CPU accounting by thread, and ``--instructions``: the targets
it counts, and a machine without valgrind. No timing is asserted."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from bench import original, pyspy
from bench.durable import GroupCommitJournal
from bench.loadgen import build_requests, classic_body, classic_symbol, signature_headers
from bench.processes import thread_cpu_s, thread_cpu_split
from tests.support import ROOT


async def test_the_durable_journal_commits_every_row_before_answering_and_groups_concurrent_ones(tmp_path):
    journal = GroupCommitJournal(tmp_path)
    journal.start()
    try:
        rows = [(f"a{i}", f"coid{i}", 1.0, b"{}") for i in range(64)]
        assert await asyncio.gather(*(journal.write(row) for row in rows)) == [True] * 64
        # an alert id is journaled once: the second write of it is refused
        assert await journal.write(("a0", "coid0", 2.0, b"{}")) is False
        assert journal.rows == 65 and journal.commits < journal.rows  # concurrent writes shared commits
    finally:
        journal.close()
    with sqlite3.connect(tmp_path / "durable-limit.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM alerts").fetchone()[0] == 64
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_classic_payload_is_signed_over_the_body_alone_and_every_body_is_unique():
    body = classic_body("n-1", "key", "secret", "buy", "B07USDT")
    payload = json.loads(body)
    assert payload == {
        "exchange": "binance",
        "apiKey": "key",
        "secret": "secret",
        "symbol": "B07/USDT",
        "side": "buy",
        "amount": 0.1,
        "price": 100,
        "nonce": "n-1",
    }
    headers = signature_headers(body, "whsec", "classic", timestamp=1700000000)
    assert headers["X-Signature"] == hmac.new(b"whsec", body, hashlib.sha256).hexdigest()
    tradingview = signature_headers(body, "whsec", "tradingview", timestamp=1700000000)
    assert tradingview["X-Signature"] == hmac.new(b"whsec", b"1700000000." + body, hashlib.sha256).hexdigest()
    tickers = ["B00USDT", "B01USDT"]
    requests = build_requests("http://127.0.0.1:9", 40, "bench", "r0", "whsec", tickers, "classic", ("k", "s"))
    bodies = [request.split(b"\r\n\r\n", 1)[1] for _, request in requests]
    assert len(set(bodies)) == 40 and {json.loads(b)["symbol"] for b in bodies} == {"B00/USDT", "B01/USDT"}
    assert classic_symbol("B00USDT") == "B00/USDT"


def test_git_blob_ids_are_gits(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"hello\n")
    assert original.git_blob_id(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object


def test_a_checkout_that_is_not_the_original_at_4c888e79_is_refused_with_one_line(tmp_path):
    with pytest.raises(original.OriginalUnavailable, match="not a checkout"):
        original.verify(tmp_path)
    (tmp_path / "app").mkdir()
    (tmp_path / "main.py").write_text("app = None\n")
    (tmp_path / "app" / "routes.py").write_text("")
    with pytest.raises(original.OriginalUnavailable, match="differs from commit 4c888e79|is missing"):
        original.verify(tmp_path)


@pytest.mark.skipif(not os.environ.get("BENCH_ORIGINAL"), reason="BENCH_ORIGINAL names no checkout of the original")
def test_the_named_checkout_verifies_and_an_edited_copy_does_not(tmp_path):
    import shutil

    checkout = original.locate(None)
    assert checkout is not None
    assert "match commit 4c888e79" in original.verify(checkout)
    copy = tmp_path / "copy"
    shutil.copytree(checkout, copy, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__"))
    with (copy / "app" / "routes.py").open("a") as f:
        f.write("\n# edited\n")
    with pytest.raises(original.OriginalUnavailable, match="app/routes.py differs"):
        original.verify(copy)


def test_sitecustomize_points_every_ccxt_exchange_at_the_configured_urls_through_the_environment():
    overrides = original.ccxt_overrides("http://127.0.0.1:9")
    assert "apiKey" not in overrides and "secret" not in overrides and overrides["enableRateLimit"] is False
    probe = (
        "import ccxt.async_support as c, json\n"
        "x = c.binance({'apiKey': 'own-key', 'secret': 'own', 'options': {'defaultType': 'future'}})\n"
        "print(json.dumps([x.urls['api']['public'], x.apiKey, x.enableRateLimit, x.options['defaultType'],"
        " x.options['fetchMarkets']]))\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(original.ENV_DIR),
        "BENCH_CCXT_CONFIG": json.dumps(overrides),
    }
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    public, key, throttle, default_type, fetch_markets = json.loads(run.stdout)
    assert public.startswith("http://127.0.0.1:9/") and key == "own-key" and throttle is False
    assert default_type == "future" and fetch_markets["types"] == ["spot", "linear"]  # merged, not replaced
    broken = subprocess.run(
        [sys.executable, "-c", "print('ran')"],
        env={**env, "BENCH_CCXT_CONFIG": "{not json"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode == 3 and "ran" not in broken.stdout  # not pointed at the emulator: it does not run


def test_the_profile_summary_counts_self_samples_by_function(tmp_path):
    folded = tmp_path / "profile.txt"
    site = "/v/lib/python3.11/site-packages"
    folded.write_text(
        f"run (a.py:1);handle ({site}/h11/_conn.py:10) 30\n"
        f"run (a.py:1);handle ({site}/h11/_conn.py:12) 10\n"
        f"run (a.py:1);select (/usr/lib/python3.11/selectors.py:468) 20\n"
        f"run ({ROOT}/core/web/app.py:5) 40\n"
    )
    summary = pyspy.summarize(folded, alerts=10)
    top = [(x["function"], x["file"], x["samples"]) for x in summary["top_self"]]
    assert top == [("handle", "h11/_conn.py", 40), ("run", "core/web/app.py", 40), ("select", "selectors.py", 20)]
    assert summary["samples"] == 100
    assert summary["top_self"][0]["us_per_alert"] == pytest.approx(40 * 1e6 / pyspy.RATE / 10)
    scaled = pyspy.summarize(folded, alerts=10, cpu_ms_per_alert=2.0)  # shares of the measured CPU
    assert scaled["top_self"][0]["us_per_alert"] == pytest.approx(0.4 * 2000)
    assert [(x["package"], x["samples"]) for x in scaled["by_package"]] == [
        ("h11", 40),
        ("core.web", 40),
        ("selectors", 20),
    ]


def test_a_threads_cpu_is_counted_apart_from_the_main_threads():
    def burn(burned: threading.Event, release: threading.Event) -> None:
        start = time.thread_time()  # ~0.3 s of this thread's own CPU, as the thread counts it
        digest = b""
        while time.thread_time() - start < 0.3:
            digest = hashlib.sha256(digest * 64).digest()
        burned.set()
        release.wait(10)

    pid = os.getpid()
    before = thread_cpu_s(pid)
    burned, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=burn, args=(burned, release))
    worker.start()
    assert burned.wait(10)  # the main thread meanwhile uses next to nothing
    alive = thread_cpu_split(pid, before)
    release.set()
    worker.join()
    assert set(alive) == {"loop_user", "loop_system", "threads_user", "threads_system"}
    others = alive["threads_user"] + alive["threads_system"]
    assert others >= 0.2  # /proc counts in 10 ms ticks
    assert alive["loop_user"] + alive["loop_system"] < others


def test_instructions_without_valgrind_are_skipped_with_why(tmp_path, monkeypatch):
    from bench import runner
    from bench.__main__ import parse_args
    from bench.targets import Deadline

    args = parse_args(["--quick", "--instructions"])
    assert args.instructions and args.instructions_n == 32
    monkeypatch.setattr(runner.instructions.shutil, "which", lambda tool: None)
    skipped = runner.instructions_alone(args, tmp_path, Deadline(60))
    assert skipped == {"skipped": "valgrind, callgrind_control not found (Debian: apt-get install valgrind)"}
    assert not parse_args([]).instructions and parse_args([]).instructions_n == 600


def test_instructions_count_the_targets_named_and_refuse_others(tmp_path, monkeypatch, capsys):
    from bench import runner
    from bench.__main__ import parse_args
    from bench.targets import Deadline

    assert parse_args(["--instructions"]).instructions_targets == "server,quart,durable"
    args = parse_args(["--quick", "--instructions", "--instructions-targets", " durable, server,durable"])
    assert args.instructions_targets == "durable,server"
    for wrong in ("server,nginx", ","):
        with pytest.raises(SystemExit) as exit_:
            parse_args(["--instructions-targets", wrong])
        assert exit_.value.code == 2
    refused = capsys.readouterr().err
    assert "--instructions-targets: nginx; choose from server, quart, durable" in refused
    assert "--instructions-targets: none given; choose from" in refused

    ran: list[list[str]] = []
    monkeypatch.setattr(runner.instructions, "missing_tools", lambda: None)
    monkeypatch.setattr(runner, "run_module", lambda name, cmd, *rest, **kw: ran.append(cmd) or {"server": {}})
    counted = runner.instructions_alone(args, tmp_path, Deadline(60))
    assert counted == {"n": 32, "concurrency": 32, "targets": {"server": {}}}
    [cmd] = ran
    assert cmd[0] == "bench.instructions" and cmd[cmd.index("--targets") + 1] == "durable,server"


@pytest.mark.parametrize(("lock", "quick"), [(True, False), (False, False), (True, True)])
def test_contention_runs_writer_processes_on_one_file_and_reports_each(tmp_path, capsys, lock, quick):
    from bench import contention

    out = tmp_path / "contention.json"
    argv = ["--processes", "2", "--n", "40", "--concurrency", "2", "--out", str(out)]
    argv += ([] if lock else ["--no-writer-lock"]) + (["--quick"] if quick else [])
    assert contention.main(argv) == 0
    result = json.loads(out.read_text())
    assert {k: result[k] for k in ("processes", "n", "concurrency", "writer_lock", "quick")} == {
        "processes": 2,
        "n": 40,
        "concurrency": 2,
        "writer_lock": lock,
        "quick": quick,
    }
    assert [row["process"] for row in result["rows"]] == ["p0", "p1"]
    for row in result["rows"]:
        assert row["commits_per_s"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    printed = capsys.readouterr().out
    assert ("with the writer lock" if lock else "without the writer lock") in printed and "  all " in printed
    assert ("quick jobs" if quick else "jobs on the thread") in printed


def test_contention_refuses_impossible_settings(capsys):
    from bench import contention

    with pytest.raises(SystemExit) as exit_:
        contention.main(["--n", "2", "--concurrency", "4"])
    assert exit_.value.code == 2 and "--n at least --concurrency" in capsys.readouterr().err
