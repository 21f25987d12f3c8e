"""One benchmark run (``python -m bench``): start-up, the interleaved load rounds (with each
target's CPU per alert), the optional profile, RSS, the integrity check and the pipeline
alone, summed up into the result that ``report`` tabulates."""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import instructions, original, pyspy, report
from bench.emulator import bench_tickers
from bench.processes import PYTHON, ROOT, Process, clean_env, rss_mib, thread_cpu_s, thread_cpu_split, tree_cpu_s
from bench.summary import (
    _warnings,
    check_orders,
    dashboard_summary,
    durability_cost,
    framework_cost,
    load_summary,
    round_ratios,
)
from bench.targets import (
    CLASSIC,
    HYPERCORN_ARGS,
    QUART_LIMIT,
    SERVER_ENV_NOTE,
    TICKERS,
    WS_ACCOUNT,
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

RESULTS = ROOT / "bench" / "results"


def prepare_original(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The original implementation's checkout verified and its venv ready, or why not measured.
    A checkout that was named but cannot be used stops the run (``OriginalUnavailable``)."""
    checkout = original.locate(args.original)
    if checkout is None:
        return {
            "measured": False,
            "reason": "no checkout of samkomo/ccxt-trading-webhook@4c888e79 given (--original PATH or "
            "BENCH_ORIGINAL); the benchmark downloads nothing from GitHub",
        }
    checkout = checkout.resolve()
    verified = original.verify(checkout)
    say(f"bench: original implementation at {checkout}: {verified}; preparing its venv ...")
    python, venv = original.venv_python(checkout, RESULTS, tmp, args.original_venv)
    say(f"bench: original's venv: {venv}")
    return {
        "measured": True,
        "repository": original.REPOSITORY,
        "commit": original.COMMIT,
        "checkout": str(checkout),
        "verified": verified,
        "venv": venv,
        "python": str(python),
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    wall_started = time.monotonic()
    webhook_secret = secrets.token_hex(32)
    extra = list(args.hypercorn_arg)
    loop = "uvloop" if any("uvloop" in a for a in extra) else "asyncio"
    orig = prepare_original(args, tmp)  # before the deadline: making its venv takes minutes, once
    deadline = Deadline(args.timeout)
    answered: list[tuple[str, str]] = []  # (account, alert id) of every 2xx answer; CLASSIC for the original
    say(
        f"bench: {args.rounds} rounds × ({args.n1} alerts at c=1, {args.n32} at c=32 over 32 markets, "
        f"{args.n_same} at c=32 on one market, {args.n_ws} over WebSocket); logs in {tmp}"
    )
    say("bench: ccxt's throttle (enableRateLimit) is OFF for every target: the emulator does not ban")
    say(f"bench: server settings: {SERVER_ENV_NOTE}, journal synchronous={args.journal_synchronous}")
    if not orig["measured"]:
        say(f"bench: the original implementation is NOT measured: {orig['reason']}")
    emulator, emulator_url = start_emulator(tmp, deadline)
    say(f"bench: emulator at {emulator_url}")
    redis_prefix = f"bench-{secrets.token_hex(4)}"
    dashboard_password = secrets.token_urlsafe(18)

    def maker(kind: str) -> Callable[[str], tuple[Process, int]]:
        common = (tmp, webhook_secret, emulator_url, extra, args.journal_synchronous)
        makers: dict[str, Callable[[str], tuple[Process, int]]] = {
            "server": lambda name: server_process(name, *common),
            "durable": lambda name: limit_process(name, *common, durable=True),
            "limit": lambda name: limit_process(name, *common),
            "quart": lambda name: limit_process(name, *common, durable=True, app=QUART_LIMIT),
            "original": lambda name: original.original_process(
                name, tmp, Path(orig["checkout"]), Path(orig["python"]), webhook_secret, emulator_url
            ),
            "redis": lambda name: server_process(
                name, *common, state_url=args.redis, state_prefix=f"{redis_prefix}-{name}"
            ),
            "dashboard": lambda name: server_process(name, *common, dashboard_password=dashboard_password),
        }
        return makers[kind]

    kinds = ["server", "durable", "limit", "quart"]
    kinds += ["original"] * orig["measured"] + ["redis"] * bool(args.redis) + ["dashboard"] * args.dashboard
    targets = {k: Target(k, maker(k), payload="classic" if k == "original" else "tradingview") for k in kinds}

    # -- start-up: cold starts, in turn
    startup: dict[str, list[float]] = {k: [] for k in kinds if k != "dashboard"}
    for i in range(args.startup_samples):
        for kind in startup:
            cold = Target(kind, targets[kind].make, payload=targets[kind].payload)
            cold.launch(f"{kind}-start{i}")
            try:
                startup[kind].append(first_filled_order(cold, webhook_secret, answered, min(60, deadline.left())))
            finally:
                assert cold.process is not None
                cold.process.stop()
        say("bench: start → first filled order: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in startup.items()))

    # -- load: every target started once more, its RSS taken after its first order
    rss_first: dict[str, float | None] = {}
    for target in targets.values():
        process = target.launch(target.name)
        first_filled_order(target, webhook_secret, answered, min(60, deadline.left()))
        rss_first[target.name] = rss_mib(worker_pid(process))
    runs: list[dict[str, Any]] = []
    statuses: collections.Counter = collections.Counter()
    browser_polls: list[dict[str, Any]] = []

    def drive(
        label: str,
        target: Target,
        n: int,
        concurrency: int,
        record: dict[str, Any] | None,
        tickers: str = TICKERS,
        account: str = "",
    ) -> dict:
        assert target.process is not None
        account = account or target.account
        port = target.port

        def load() -> dict[str, Any]:
            return load_run(
                label, port, n, concurrency, account, webhook_secret, tmp, deadline, tickers, target.payload
            )

        cpu_before = tree_cpu_s(target.process.pid)
        worker = worker_pid(target.process)
        threads_before = thread_cpu_s(worker)
        if target.name == "dashboard":
            result, polls = with_browser(label, port, dashboard_password, args.dashboard_interval, tmp, deadline, load)
            if record is not None:
                browser_polls.append(polls)
        else:
            result = load()
        cpu = tree_cpu_s(target.process.pid) - cpu_before
        threads = thread_cpu_split(worker, threads_before)
        key = CLASSIC if target.payload == "classic" else account
        answered.extend((key, alert_id) for alert_id in result["ids_2xx"])
        statuses.update(result["statuses"])
        if result["errors"]:
            say(f"bench: {label}: {len(result['errors'])} request errors, e.g. {result['errors'][0]}")
        if record is not None:
            stats = {**report.run_stats(result), "cpu_ms_per_alert": cpu * 1000 / max(1, n)}
            stats.update(report.thread_stats(threads, n))
            runs.append({**record, **stats, "statuses": result["statuses"], "reconnects": result["reconnects"]})
        return result

    server = targets["server"]
    for kind, target in targets.items():  # warm-up, not counted
        drive(f"warm-{kind}-c32", target, args.warmup, 32, None)
        drive(f"warm-{kind}-c1", target, max(10, args.warmup // 4), 1, None)
    drive("warm-server-ws", server, max(10, args.warmup // 4), 1, None, account=WS_ACCOUNT)

    one_market = bench_tickers()[0]
    for r in range(args.rounds):
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]  # each target in each place in turn
        for concurrency, n in ((1, args.n1), (32, args.n32)):
            for kind in order:
                record = {"round": r, "target": kind, "concurrency": concurrency, "route": "rest"}
                drive(f"r{r}-{kind}-c{concurrency}", targets[kind], n, concurrency, record)
        record = {"round": r, "target": "server", "concurrency": 1, "route": "websocket"}
        drive(f"r{r}-server-ws-c1", server, args.n_ws, 1, record, account=WS_ACCOUNT)
        for kind in (k for k in order if k != "dashboard"):
            record = {"round": r, "target": kind, "concurrency": 32, "route": "one-market"}
            drive(f"r{r}-{kind}-same-c32", targets[kind], args.n_same, 32, record, tickers=one_market)
        line = ", ".join(
            f"{x['target']} c={x['concurrency']}{'' if x['route'] == 'rest' else ' ' + x['route']}: "
            f"{x['rps']:.0f}/s p50 {x['p50_ms']:.2f} ms p99 {x['p99_ms']:.2f} ms cpu {x['cpu_ms_per_alert']:.2f} ms"
            for x in runs
            if x["round"] == r
        )
        say(f"bench: round {r + 1}/{args.rounds}: {line}")

    profile = None
    if args.profile:  # an extra run, not one of the measured ones: sampling slows the worker
        assert server.process is not None
        out = RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.txt"
        recorder = pyspy.Recorder(worker_pid(server.process), out, tmp)
        why_not = recorder.start(min(30, deadline.left()))
        if why_not is None:
            drive("profile-server-c32", server, args.n32, 32, None)
            profile = recorder.stop(args.n32)
        else:
            profile = {"skipped": why_not}
        say(f"bench: profile: {profile.get('path') or profile.get('skipped')}")

    rss_run = {k: rss_mib(worker_pid(t.process)) for k, t in targets.items() if t.process is not None}
    logs = {k: _warnings(t.process.log(20000)) for k, t in targets.items() if t.process is not None}
    for target in targets.values():
        if target.process is not None:
            target.process.stop()
    integrity = check_orders(emulator_url, answered, deadline)
    emulator.stop()
    if args.redis:
        forget_redis_keys(args.redis, redis_prefix)
    pipe = pipeline_alone(args, loop, tmp, deadline)
    counted = instructions_alone(args, tmp, deadline) if args.instructions else None

    # -- summary
    summary: dict[str, Any] = load_summary(runs, kinds)
    summary["round_ratios"] = round_ratios(runs)
    ws = report.median_of([x for x in runs if x["route"] == "websocket"])
    rest_p50 = summary["c1"]["server"]["p50_ms"]
    summary["routes"] = {"rest_p50_ms": rest_p50, "ws_p50_ms": ws["p50_ms"], "ws_over_rest": ws["p50_ms"] / rest_p50}
    summary["routes"]["ws"] = ws
    summary["durability_cost"] = durability_cost(summary)
    summary["framework_cost"] = framework_cost(summary)
    summary["startup"] = {f"{k}_s": statistics.median(v) for k, v in startup.items()}
    summary["startup"]["samples"] = startup
    summary["rss_mib"] = {"after_first_order": rss_first, "after_run": rss_run}
    summary["pipeline"] = pipe
    summary["integrity"] = integrity
    summary["statuses"] = dict(statuses)
    summary["original"] = {k: v for k, v in orig.items() if k != "python"}
    if profile is not None:
        summary["profile"] = profile
    if counted is not None:
        summary["instructions"] = counted
    if args.dashboard:
        summary["dashboard"] = dashboard_summary(runs, browser_polls, args.dashboard_interval)
    return {
        "version": 2,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "targets": kinds,
            "rounds": args.rounds,
            "n1": args.n1,
            "n32": args.n32,
            "n_ws": args.n_ws,
            "n_same": args.n_same,
            "markets": len(bench_tickers()),
            "warmup": args.warmup,
            "startup_samples": args.startup_samples,
            "pipeline_n": args.pipeline_n,
            "quick": args.quick,
            "hypercorn_args": HYPERCORN_ARGS + extra,
            "loop": loop,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "server_env_note": SERVER_ENV_NOTE,
            "ccxt_rate_limit": False,
            "journal_synchronous": args.journal_synchronous,
            "redis_url": args.redis or None,
            "dashboard": args.dashboard,
            "dashboard_interval_s": args.dashboard_interval,
            "profile": args.profile,
            "instructions": args.instructions,
        },
        "summary": summary,
        "targets": target_values(summary),
        "runs": runs,
        "logs_tail": logs,
        "wall_s": time.monotonic() - wall_started,
        "json_path": str(args.out),
    }


def target_values(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets from the summary (None where a target was not run, with why)."""
    c1, c32 = summary["c1"]["ratios"], summary["c32"]["ratios"]
    vs_orig1, vs_orig32 = c1["server/original"], c32["server/original"]
    redis = c32.get("redis/durable")
    integrity = summary["integrity"]
    mismatches = integrity["missing"] + integrity["doubled"] + integrity["unanswered_booked"]
    mismatches += abs(integrity["original"]["booked"] - integrity["original"]["answered_2xx"])
    values = {
        "c1_p50_vs_durable": c1["server/durable"]["p50_ms"],
        "c1_p50_vs_original": vs_orig1["p50_ms"] if vs_orig1 else None,
        "c32_rps_vs_durable": c32["server/durable"]["rps"],
        "c32_rps_vs_original": vs_orig32["rps"] if vs_orig32 else None,
        "c32_p99_vs_durable": c32["server/durable"]["p99_ms"],
        "cpu_per_alert_vs_durable": c32["server/durable"].get("cpu_ms_per_alert"),
        "start_to_first_order_s": summary["startup"]["server_s"],
        "rss_mib": summary["rss_mib"]["after_first_order"]["server"],
        "redis_c32_rps_vs_durable": redis["rps"] if redis else None,
        "integrity_mismatches": float(mismatches),
        "pipeline_p50_us": summary["pipeline"]["p50_us"],
    }
    no_original = f"original not measured: {summary['original'].get('reason', '')}"[:60]
    why_not = {
        "c1_p50_vs_original": no_original,
        "c32_rps_vs_original": no_original,
        "redis_c32_rps_vs_durable": "no --redis URL given",
    }
    return report.check_targets(values, why_not, summary.get("round_ratios"))


def forget_redis_keys(url: str, prefix: str) -> None:
    """The Redis target's keys (journal, replay cache, rate limits) are removed after the run."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{prefix}-*", count=1000):
            client.delete(key)
    finally:
        client.close()


def pipeline_alone(args: argparse.Namespace, loop: str, tmp: Path, deadline: Deadline) -> dict[str, Any]:
    """``bench.pipeline`` in its own process, nothing else running."""
    say("bench: pipeline alone ...")
    cmd = ["bench.pipeline", "--n", str(args.pipeline_n), "--loop", loop]
    cmd += ["--journal-synchronous", args.journal_synchronous, "--data-dir", str(tmp / "pipeline-data")]
    return run_module("pipeline", cmd, tmp, deadline, limit=120)


def instructions_alone(args: argparse.Namespace, tmp: Path, deadline: Deadline) -> dict[str, Any]:
    """``bench.instructions`` at c=32 for ``--instructions-targets`` (the server, the quart
    target and the durable limit), nothing else running (its own emulator); or why it was
    skipped (no valgrind)."""
    missing = instructions.missing_tools()
    if missing:
        return {"skipped": missing}
    say("bench: instructions per alert under callgrind ...")
    cmd = ["bench.instructions", "--n", str(args.instructions_n), "--concurrency", "32"]
    cmd += ["--warmup", str(min(64, args.instructions_n)), "--targets", args.instructions_targets]
    targets = run_module("instructions", cmd, tmp, deadline, limit=1200)
    return {"n": args.instructions_n, "concurrency": 32, "targets": targets}


def run_module(name: str, args: list[str], tmp: Path, deadline: Deadline, limit: float) -> dict[str, Any]:
    """``python -m <args> --out tmp/<name>.json`` as a process of its own (at most ``limit``
    seconds): the JSON it wrote, or a RuntimeError with its log if it failed."""
    out = tmp / f"{name}.json"
    process = Process(name, [PYTHON, "-m", *args, "--out", str(out)], env=clean_env(), cwd=ROOT, log_dir=tmp).start()
    try:
        assert process.proc is not None
        code = process.proc.wait(timeout=min(deadline.left(), limit))
    finally:
        process.stop()
    if code != 0:
        raise RuntimeError(f"{args[0]} exited with {code}:\n{process.log()}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def with_browser(
    label: str, port: int, password: str, interval: float, tmp: Path, deadline: Deadline, load: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``load()`` while a browser (``bench.dashclient``) is logged in and polling the live feed.

    The browser logs in and answers its first poll before the load starts, so what the
    load measures is the dashboard's steady state: sessions checked, the feed read and
    rendered every ``interval`` seconds. Its polls (count, statuses, latencies) come back.
    """
    out = tmp / f"browser-{label}.json"
    browser = Process(
        f"browser-{label}",
        [
            PYTHON,
            "-m",
            "bench.dashclient",
            "--url",
            f"http://127.0.0.1:{port}",
            "--interval",
            str(interval),
            "--out",
            str(out),
        ],
        env=clean_env(BENCH_DASHBOARD_PASSWORD=password),
        cwd=ROOT,
        log_dir=tmp,
    ).start()
    try:
        browser.wait_for_line(r"^polling$", min(30, deadline.left()))
        began = time.time()
        result = load()
        ended = time.time()
        if not browser.alive():
            raise RuntimeError(f"the dashboard browser stopped during {label}:\n{browser.log()}")
    finally:
        browser.stop()
    polls = json.loads(out.read_text())
    polls["during_load"] = sum(1 for at in polls["sent_at"] if began <= at <= ended)
    return result, polls
