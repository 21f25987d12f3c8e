"""One benchmark run (``python -m bench``): start-up, the interleaved load rounds, RSS, the
integrity check and the pipeline alone, summed up into the result that ``report`` tabulates."""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.emulator import bench_tickers
from bench.processes import PYTHON, ROOT, Process, clean_env, rss_mb
from bench.summary import _warnings, check_orders, dashboard_summary
from bench.targets import (
    HYPERCORN_ARGS,
    REST_ACCOUNT,
    SERVER_ENV_NOTE,
    TICKERS,
    WS_ACCOUNT,
    Deadline,
    first_filled_order,
    limit_process,
    load_run,
    say,
    server_process,
    start_emulator,
    worker_pid,
)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    wall_started = time.monotonic()
    deadline = Deadline(args.timeout)
    webhook_secret = secrets.token_hex(32)
    extra = list(args.hypercorn_arg)
    loop = "uvloop" if any("uvloop" in a for a in extra) else "asyncio"
    answered: list[tuple[str, str]] = []  # (account, alert id) of every 2xx answer
    say(
        f"bench: {args.rounds} rounds × ({args.n1} alerts at c=1, {args.n32} at c=32, {args.n_ws} over WebSocket); "
        f"logs in {tmp}"
    )
    say("bench: ccxt's throttle (enableRateLimit) is OFF for both servers: the emulator does not ban")
    say(f"bench: server settings: {SERVER_ENV_NOTE}, journal synchronous={args.journal_synchronous}")
    emulator, emulator_url = start_emulator(tmp, deadline)
    say(f"bench: emulator at {emulator_url}")

    # -- start-up: cold starts, alternating
    startup: dict[str, list[float]] = {"server": [], "limit": []}
    for i in range(args.startup_samples):
        for kind, make, account in (("server", server_process, REST_ACCOUNT), ("limit", limit_process, REST_ACCOUNT)):
            process, port = make(f"{kind}-start{i}", tmp, webhook_secret, emulator_url, extra, args.journal_synchronous)
            process.start()
            try:
                startup[kind].append(
                    first_filled_order(process, port, account, webhook_secret, answered, min(60, deadline.left()))
                )
            finally:
                process.stop()
        say(
            f"bench: start → first filled order: server {startup['server'][-1]:.2f} s, "
            f"limit {startup['limit'][-1]:.2f} s"
        )

    # -- load
    server, server_port = server_process("server", tmp, webhook_secret, emulator_url, extra, args.journal_synchronous)
    limit, limit_port = limit_process("limit", tmp, webhook_secret, emulator_url, extra)
    server.start(), limit.start()
    first_filled_order(server, server_port, REST_ACCOUNT, webhook_secret, answered, min(60, deadline.left()))
    first_filled_order(limit, limit_port, REST_ACCOUNT, webhook_secret, answered, min(60, deadline.left()))
    targets = {"server": (server_port, REST_ACCOUNT), "limit": (limit_port, REST_ACCOUNT)}
    dashboard_password = secrets.token_urlsafe(18)
    dashboard = None
    if args.dashboard:
        dashboard, dashboard_port = server_process(
            "dashboard",
            tmp,
            webhook_secret,
            emulator_url,
            extra,
            args.journal_synchronous,
            dashboard_password=dashboard_password,
        )
        dashboard.start()
        first_filled_order(dashboard, dashboard_port, REST_ACCOUNT, webhook_secret, answered, min(60, deadline.left()))
        targets = {"server": targets["server"], "dashboard": (dashboard_port, REST_ACCOUNT), "limit": targets["limit"]}
    runs: list[dict[str, Any]] = []
    statuses: collections.Counter = collections.Counter()
    browser_polls: list[dict[str, Any]] = []

    def drive(
        label: str,
        port: int,
        n: int,
        concurrency: int,
        account: str,
        record: dict[str, Any] | None,
        tickers: str = TICKERS,
    ) -> dict:
        if dashboard is not None and port == targets["dashboard"][0]:
            result, polls = with_browser(
                label,
                port,
                dashboard_password,
                args.dashboard_interval,
                tmp,
                deadline,
                lambda: load_run(label, port, n, concurrency, account, webhook_secret, tmp, deadline, tickers),
            )
            if record is not None:
                browser_polls.append(polls)
        else:
            result = load_run(label, port, n, concurrency, account, webhook_secret, tmp, deadline, tickers)
        answered.extend((account, alert_id) for alert_id in result["ids_2xx"])
        statuses.update(result["statuses"])
        if result["errors"]:
            say(f"bench: {label}: {len(result['errors'])} request errors, e.g. {result['errors'][0]}")
        if record is not None:
            stats = report.run_stats(result)
            runs.append({**record, **stats, "statuses": result["statuses"], "reconnects": result["reconnects"]})
        return result

    for kind, (port, account) in targets.items():  # warm-up, not counted
        drive(f"warm-{kind}-c32", port, args.warmup, 32, account, None)
        drive(f"warm-{kind}-c1", port, max(10, args.warmup // 4), 1, account, None)
    drive("warm-server-ws", server_port, max(10, args.warmup // 4), 1, WS_ACCOUNT, None)

    for r in range(args.rounds):
        if dashboard is None:
            order = ["server", "limit"] if r % 2 == 0 else ["limit", "server"]
        else:  # each target in each place of the order equally often
            kinds = list(targets)
            order = kinds[r % 3 :] + kinds[: r % 3]
        for concurrency, n in ((1, args.n1), (32, args.n32)):
            for kind in order:
                port, account = targets[kind]
                drive(
                    f"r{r}-{kind}-c{concurrency}",
                    port,
                    n,
                    concurrency,
                    account,
                    {"round": r, "target": kind, "concurrency": concurrency, "route": "rest"},
                )
        drive(
            f"r{r}-server-ws-c1",
            server_port,
            args.n_ws,
            1,
            WS_ACCOUNT,
            {"round": r, "target": "server", "concurrency": 1, "route": "websocket"},
        )
        for kind in (k for k in order if k != "dashboard"):
            port, account = targets[kind]
            drive(
                f"r{r}-{kind}-same-c32",
                port,
                args.n_same,
                32,
                account,
                {"round": r, "target": kind, "concurrency": 32, "route": "one-market"},
                tickers=bench_tickers()[0],
            )
        line = ", ".join(
            f"{x['target']} c={x['concurrency']}{'' if x['route'] == 'rest' else ' ' + x['route']}: "
            f"{x['rps']:.0f}/s p50 {x['p50_ms']:.2f} ms p99 {x['p99_ms']:.2f} ms"
            for x in runs
            if x["round"] == r
        )
        say(f"bench: round {r + 1}/{args.rounds}: {line}")

    rss = {
        "server": rss_mb(worker_pid(server)),
        "limit": rss_mb(worker_pid(limit)),
        "server_parent": rss_mb(server.pid),
        "limit_parent": rss_mb(limit.pid),
    }
    if dashboard is not None:
        rss["dashboard"] = rss_mb(worker_pid(dashboard))
        dashboard_log = dashboard.log(20000)
        dashboard.stop()
    server_log, limit_log = server.log(20000), limit.log(20000)
    server.stop(), limit.stop()
    integrity = check_orders(emulator_url, answered, deadline)
    emulator.stop()

    # -- the pipeline alone (nothing else running)
    say("bench: pipeline alone ...")
    pipe_out = tmp / "pipeline.json"
    pipeline = Process(
        "pipeline",
        [
            PYTHON,
            "-m",
            "bench.pipeline",
            "--n",
            str(args.pipeline_n),
            "--loop",
            loop,
            "--journal-synchronous",
            args.journal_synchronous,
            "--data-dir",
            str(tmp / "pipeline-data"),
            "--out",
            str(pipe_out),
        ],
        env=clean_env(),
        cwd=ROOT,
        log_dir=tmp,
    ).start()
    try:
        assert pipeline.proc is not None
        code = pipeline.proc.wait(timeout=min(deadline.left(), 120))
    finally:
        pipeline.stop()
    if code != 0:
        raise RuntimeError(f"bench.pipeline exited with {code}:\n{pipeline.log()}")
    pipe = json.loads(pipe_out.read_text())

    # -- summary
    def pick(target: str, concurrency: int, route: str = "rest") -> list[dict[str, float]]:
        return [x for x in runs if x["target"] == target and x["concurrency"] == concurrency and x["route"] == route]

    summary: dict[str, Any] = {}
    for key, concurrency in (("c1", 1), ("c32", 32)):
        s, lim = report.median_of(pick("server", concurrency)), report.median_of(pick("limit", concurrency))
        summary[key] = {"server": s, "limit": lim, "ratio": report.ratios(s, lim)}
    rest_p50 = summary["c1"]["server"]["p50_ms"]
    ws_p50 = report.median_of(pick("server", 1, "websocket"))["p50_ms"]
    summary["routes"] = {
        "rest_p50_ms": rest_p50,
        "ws_p50_ms": ws_p50,
        "ws_over_rest": ws_p50 / rest_p50,
        "ws": report.median_of(pick("server", 1, "websocket")),
    }
    same = {
        "server": report.median_of(pick("server", 32, "one-market")),
        "limit": report.median_of(pick("limit", 32, "one-market")),
    }
    same["ratio"] = report.ratios(same["server"], same["limit"])
    summary["c32_one_market"] = same
    summary["startup"] = {
        "server_s": statistics.median(startup["server"]),
        "limit_s": statistics.median(startup["limit"]),
        "server_samples": startup["server"],
        "limit_samples": startup["limit"],
    }
    summary["rss_mb"] = rss
    summary["pipeline"] = pipe
    summary["integrity"] = integrity
    summary["statuses"] = dict(statuses)
    if dashboard is not None:
        summary["dashboard"] = dashboard_summary(runs, browser_polls, args.dashboard_interval)
    values = {
        "c1_p50_ratio": summary["c1"]["ratio"]["p50_ms"],
        "c32_rps_ratio": summary["c32"]["ratio"]["rps"],
        "c32_p99_ratio": summary["c32"]["ratio"]["p99_ms"],
        "pipeline_p50_us": pipe["p50_us"],
        "start_to_first_order_s": summary["startup"]["server_s"],
        "rss_mb": rss["server"],
    }
    return {
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
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
            "dashboard": args.dashboard,
            "dashboard_interval_s": args.dashboard_interval,
        },
        "summary": summary,
        "targets": report.check_targets(values),
        "runs": runs,
        "logs_tail": {
            "server": _warnings(server_log),
            "limit": _warnings(limit_log),
            **({"dashboard": _warnings(dashboard_log)} if dashboard is not None else {}),
        },
        "wall_s": time.monotonic() - wall_started,
        "json_path": str(args.out),
    }


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
