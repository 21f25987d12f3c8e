"""``python -m bench``: the router against the least any such server can do, in one run.

Everything runs on 127.0.0.1, each part in its own process (group), on free ports:

1. the project's exchange emulator (``bench.emulator``: ``emulator.Emulator`` with
   32 extra spot markets, one per alert in flight at concurrency 32), with a benchmark
   API key holding ample balances;
2. start-up: the server (hypercorn ``core.web.app:app``) and the limit (``bench.limit_app``)
   are each started cold, alternately, ``--startup-samples`` times, and timed from the
   spawn to the first answer 200 with a filled order;
3. load: both are started once more and driven by the load generator
   (``bench.loadgen``, its own process per run) with N signed alerts at concurrency 1
   and at concurrency 32, in ``--rounds`` rounds, server and limit interleaved (the
   order alternates every round); each round also sends the concurrency-1 alerts to
   the server's WebSocket account, for the REST vs WebSocket comparison;
4. RSS of both workers after the load, then the check that every 2xx answer corresponds
   to exactly one order booked at the emulator (by client order id) and no order was
   booked without one;
5. the pipeline alone, in process (``bench.pipeline``);

With ``--dashboard``, a third target joins the same interleaved rounds of step 3 (at
concurrency 1 and 32): the server started with DASHBOARD_PASSWORD set and, during each of
its load runs, a browser (``bench.dashclient``, its own process) logged in to the
dashboard and polling the live alert feed as the page does; the table adds its figures
over the plain server's, round by round, with the spread.
6. the table, and ``bench/results/latest.json``.

Both servers: hypercorn with the same options, one worker, no access log; ccxt's
throttle (``enableRateLimit``) off, since the emulator does not ban; the router with
LOG_LEVEL=WARNING, its journal at the default synchronous=FULL, and RATE_LIMIT high
enough never to refuse (the limiter still runs).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import http.client
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench import report
from bench.emulator import bench_tickers
from bench.loadgen import alert_body
from bench.processes import (
    PYTHON,
    ROOT,
    Process,
    children,
    clean_env,
    free_port,
    rss_mb,
)

RESULTS = ROOT / "bench" / "results"
API_KEY, API_SECRET = "bench-key", "bench-secret-0123456789"
REST_ACCOUNT, WS_ACCOUNT = "bench", "bench_ws"
# The same for the server and the limit. One worker: figures are per worker.
HYPERCORN_ARGS = ["--workers", "1", "--graceful-timeout", "5"]
SERVER_ENV_NOTE = "LOG_LEVEL=WARNING, no access log, RATE_LIMIT=1000000/second (never refuses)"
DEFAULTS = {
    "rounds": 5,
    "n1": 500,
    "n32": 2000,
    "n_ws": 300,
    "n_same": 500,
    "warmup": 300,
    "startup_samples": 3,
    "pipeline_n": 3000,
}
QUICK = {
    "rounds": 3,
    "n1": 10,
    "n32": 64,
    "n_ws": 10,
    "n_same": 32,
    "warmup": 32,
    "startup_samples": 1,
    "pipeline_n": 200,
}
TICKERS = ",".join(bench_tickers())


class Deadline:
    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the benchmark ran out of time (--timeout)")
        return left


def say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------- configuration


def ccxt_passthrough(emulator_url: str) -> dict[str, Any]:
    """The ``ccxt:`` mapping of the benchmark accounts: the emulator's urls and options."""
    from emulator.ccxt_config import ccxt_config

    config = ccxt_config("binance", emulator_url, api_key=API_KEY, secret=API_SECRET, match_production_errors=False)
    config.pop("apiKey"), config.pop("secret")
    config["options"].pop("fetchMarkets", None)  # the account's market_types decide
    return config


def server_plugins_yaml(emulator_url: str, journal_synchronous: str = "FULL") -> str:
    account = {
        "exchange": "binance",
        "api_key": API_KEY,
        "secret": API_SECRET,
        "rate_limit": False,
        "market_types": ["spot"],
        "ccxt": ccxt_passthrough(emulator_url),
    }
    accounts = {REST_ACCOUNT: {**account, "websocket": False}, WS_ACCOUNT: {**account, "websocket": True}}
    router = {"plugin_dir": "./local_plugins", "journal_synchronous": journal_synchronous}
    return yaml.safe_dump({"router": router, "ccxt": {"accounts": accounts}}, sort_keys=False)


def limit_ccxt_config(emulator_url: str) -> dict[str, Any]:
    """What the router's ``build_client`` makes of the same account, for the limit's client."""
    from plugins.exchanges.ccxt.accounts import _deep_merge

    base = {
        "enableRateLimit": False,
        "apiKey": API_KEY,
        "secret": API_SECRET,
        "has": {"fetchCurrencies": False},
        "options": {"fetchMarkets": {"types": ["spot"]}},
    }
    return _deep_merge(base, ccxt_passthrough(emulator_url))


# ---------------------------------------------------------------- processes


def start_emulator(tmp: Path, deadline: Deadline) -> tuple[Process, str]:
    emulator = Process(
        "emulator",
        [PYTHON, "-m", "bench.emulator", "--key", API_KEY, "--secret", API_SECRET],
        env=clean_env(),
        cwd=ROOT,
        log_dir=tmp,
    ).start()
    url = emulator.wait_for_line(r"listening on (http://\S+)", min(30, deadline.left())).group(1)
    return emulator, url


def server_process(
    name: str,
    tmp: Path,
    webhook_secret: str,
    emulator_url: str,
    extra_args: list[str],
    journal_synchronous: str = "FULL",
    dashboard_password: str = "",
) -> tuple[Process, int]:
    data = tmp / name
    data.mkdir()
    (data / "plugins.yaml").write_text(server_plugins_yaml(emulator_url, journal_synchronous))
    port = free_port()
    env = clean_env(
        WEBHOOK_SECRET=webhook_secret,
        DATA_DIR=str(data),
        PLUGINS_FILE=str(data / "plugins.yaml"),
        LOG_LEVEL="WARNING",
        RATE_LIMIT="1000000/second",
        DEFAULT_EXCHANGE="paper",
    )
    if dashboard_password:
        env["DASHBOARD_PASSWORD"] = dashboard_password
    cmd = [PYTHON, "-m", "hypercorn", "core.web.app:app", "--bind", f"127.0.0.1:{port}", *HYPERCORN_ARGS, *extra_args]
    return Process(name, cmd, env=env, cwd=data, log_dir=tmp), port


def limit_process(
    name: str,
    tmp: Path,
    webhook_secret: str,
    emulator_url: str,
    extra_args: list[str],
    journal_synchronous: str = "FULL",
) -> tuple[Process, int]:
    """The limit (``journal_synchronous`` is accepted like the server's and ignored: no journal)."""
    port = free_port()
    env = clean_env(
        BENCH_WEBHOOK_SECRET=webhook_secret,
        BENCH_CCXT_CONFIG=json.dumps(limit_ccxt_config(emulator_url)),
        BENCH_ACCOUNT=REST_ACCOUNT,
    )
    cmd = [
        PYTHON,
        "-m",
        "hypercorn",
        "bench.limit_app:app",
        "--bind",
        f"127.0.0.1:{port}",
        *HYPERCORN_ARGS,
        *extra_args,
    ]
    return Process(name, cmd, env=env, cwd=ROOT, log_dir=tmp), port


def post_alert(port: int, alert_id: str, account: str, webhook_secret: str, timeout: float = 10) -> tuple[int, dict]:
    body = alert_body(alert_id, account, "buy")
    ts = str(int(time.time()))
    signature = hmac.new(webhook_secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/webhook",
            body=body,
            headers={"Content-Type": "application/json", "X-Timestamp": ts, "X-Signature": signature},
        )
        response = conn.getresponse()
        text = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, {"raw": text[:300].decode("utf-8", "replace")}


def first_filled_order(
    process: Process, port: int, account: str, webhook_secret: str, answered: list[tuple[str, str]], timeout: float
) -> float:
    """Seconds from the process's spawn to the first 200 answer carrying a filled order.

    Polls every 5 ms (bounded): a refused connection means not listening yet; any other
    answer is retried with a fresh alert id.
    """
    ends = time.monotonic() + timeout
    attempt = 0
    last = ""
    while time.monotonic() < ends:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited:\n{process.log()}")
        attempt += 1
        alert_id = f"start-{process.name}-{attempt}-{time.time_ns()}"
        try:
            status, answer = post_alert(port, alert_id, account, webhook_secret)
        except (ConnectionError, OSError) as exc:
            last = f"{type(exc).__name__}"
            time.sleep(0.005)
            continue
        if 200 <= status < 300:
            answered.append((account, alert_id))
        if status == 200 and answer.get("status") == "filled":
            return time.monotonic() - process.started_at
        last = f"{status} {answer}"
        time.sleep(0.005)
    raise TimeoutError(f"{process.name}: no filled order within {timeout}s (last: {last[:300]}):\n{process.log()}")


def worker_pid(process: Process) -> int:
    """hypercorn's worker (``--workers 1`` spawns one child); the process itself if none."""
    for pid in children(process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            return pid
    return process.pid


def load_run(
    label: str,
    port: int,
    n: int,
    concurrency: int,
    account: str,
    webhook_secret: str,
    tmp: Path,
    deadline: Deadline,
    tickers: str = TICKERS,
) -> dict[str, Any]:
    out = tmp / f"load-{label}.json"
    cmd = [
        PYTHON,
        "-m",
        "bench.loadgen",
        "--url",
        f"http://127.0.0.1:{port}",
        "--n",
        str(n),
        "--concurrency",
        str(concurrency),
        "--account",
        account,
        "--id-prefix",
        f"{label}-{secrets.token_hex(3)}",
        "--out",
        str(out),
        "--tickers",
        tickers,
    ]
    process = Process(
        f"loadgen-{label}", cmd, env=clean_env(BENCH_WEBHOOK_SECRET=webhook_secret), cwd=ROOT, log_dir=tmp
    ).start()
    try:
        assert process.proc is not None
        code = process.proc.wait(timeout=min(deadline.left(), 30 + n * 0.2))
    finally:
        process.stop()
    if code != 0:
        raise RuntimeError(f"load generator {label} exited with {code}:\n{process.log()}")
    return json.loads(out.read_text())


# ---------------------------------------------------------------- the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny N (the smoke test): checks the harness, not the figures"
    )
    parser.add_argument("--rounds", type=int, help=f"rounds of load (default {DEFAULTS['rounds']}, at least 1)")
    parser.add_argument("--n1", type=int, help=f"alerts per round at concurrency 1 (default {DEFAULTS['n1']})")
    parser.add_argument("--n32", type=int, help=f"alerts per round at concurrency 32 (default {DEFAULTS['n32']})")
    parser.add_argument(
        "--n-ws", type=int, help=f"alerts per round to the WebSocket account (default {DEFAULTS['n_ws']})"
    )
    parser.add_argument(
        "--n-same", type=int, help=f"alerts per round at concurrency 32 on one market (default {DEFAULTS['n_same']})"
    )
    parser.add_argument(
        "--startup-samples", type=int, help=f"cold starts of each (default {DEFAULTS['startup_samples']})"
    )
    parser.add_argument(
        "--warmup", type=int, help=f"warm-up alerts per server, not counted (default {DEFAULTS['warmup']})"
    )
    parser.add_argument(
        "--pipeline-n", type=int, help=f"alerts through the pipeline alone (default {DEFAULTS['pipeline_n']})"
    )
    parser.add_argument(
        "--hypercorn-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra hypercorn option for both servers (repeat), e.g. --hypercorn-arg=--worker-class=uvloop",
    )
    parser.add_argument(
        "--journal-synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="the router's journal_synchronous (default FULL, the project's default; NORMAL only to "
        "measure what durable commits cost: it survives a crash of the process, not of the machine)",
    )
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="add a third target: the server with the dashboard on and a browser polling its live feed "
        "during the target's runs (c=1 and c=32), reported over the plain server",
    )
    parser.add_argument(
        "--dashboard-interval",
        type=float,
        default=2.0,
        help="seconds between the browser's feed polls (default 2, as the page)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--timeout", type=float, default=290.0, help="abort after this many seconds (default 290)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, journals)")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.rounds = max(1, args.rounds)
    return args


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
            f"bench: start → first filled order: server {startup['server'][-1]:.2f} s, limit {startup['limit'][-1]:.2f} s"
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
        s, l = report.median_of(pick("server", concurrency)), report.median_of(pick("limit", concurrency))
        summary[key] = {"server": s, "limit": l, "ratio": report.ratios(s, l)}
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


def dashboard_summary(runs: list[dict[str, Any]], polls: list[dict[str, Any]], interval: float) -> dict[str, Any]:
    """The server with the dashboard on and a browser connected, over the plain server.

    ``ratio``: the medians' ratio; ``round_ratios``: the same figure's ratio within each
    round (the two ran minutes apart at most), whose range is the noise a reader judges it
    by; ``server_spread``: the plain server's own figure across rounds, min and max over
    its median (what the same code does from round to round).
    """
    out: dict[str, Any] = {
        "interval_s": interval,
        "polls": sum(p["polls"] for p in polls),
        "polls_during_load": sum(p["during_load"] for p in polls),
        "runs": len(polls),
        "poll_statuses": dict(sum((collections.Counter(p["statuses"]) for p in polls), collections.Counter())),
        "poll_p50_ms": report.percentile([v for p in polls for v in p["latencies_ms"]], 50),
    }
    for key, concurrency in (("c1", 1), ("c32", 32)):
        pick = {
            t: sorted(
                (x for x in runs if x["target"] == t and x["concurrency"] == concurrency and x["route"] == "rest"),
                key=lambda x: x["round"],
            )
            for t in ("server", "dashboard")
        }
        s, d = report.median_of(pick["server"]), report.median_of(pick["dashboard"])
        by_round = {x["round"]: x for x in pick["server"]}
        round_ratios = {
            k: [x[k] / by_round[x["round"]][k] for x in pick["dashboard"] if by_round[x["round"]][k]] for k in s
        }
        spread = {
            k: [min(x[k] for x in pick["server"]) / s[k], max(x[k] for x in pick["server"]) / s[k]] for k in s if s[k]
        }
        out[key] = {
            "server": s,
            "dashboard": d,
            "ratio": report.ratios(d, s),
            "round_ratios": round_ratios,
            "server_spread": spread,
        }
    return out


def _warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line][-10:]


def check_orders(emulator_url: str, answered: list[tuple[str, str]], deadline: Deadline) -> dict[str, Any]:
    """Every 2xx answer ↔ exactly one order booked at the emulator, matched by client order id."""
    from core.trading.execution import client_order_id
    from emulator.control import EmulatorControl

    control = EmulatorControl(emulator_url, timeout=30)
    expected = {client_order_id(alert_id, account) for account, alert_id in answered}
    booked: collections.Counter = collections.Counter()
    # An answer 202 leaves the order executing: wait (bounded) until the book stops growing.
    previous = -1
    for _ in range(20):
        orders = control.orders(account_key=API_KEY)
        if len(orders) == previous:
            break
        previous = len(orders)
        time.sleep(0.25)
        deadline.left()
    booked.update(o["client_order_id"] for o in orders)
    missing = [c for c in expected if booked[c] == 0]
    doubled = [c for c, k in booked.items() if k > 1]
    unanswered = [c for c in booked if c not in expected]
    return {
        "ok": not (missing or doubled or unanswered),
        "answered_2xx": len(answered),
        "distinct_2xx": len(expected),
        "booked": sum(booked.values()),
        "missing": len(missing),
        "doubled": len(doubled),
        "unanswered_booked": len(unanswered),
        "examples": (missing + doubled + unanswered)[:5],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))

    def interrupted(signum, frame):  # SIGTERM: stop the children, then exit
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        result = run(args, tmp)
    except BaseException as exc:
        Process.stop_all()
        if isinstance(exc, KeyboardInterrupt):
            say("bench: interrupted")
            return 130
        say(f"bench: FAILED: {type(exc).__name__}: {exc}")
        say(f"bench: logs kept in {tmp}")
        return 1
    finally:
        Process.stop_all()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    say("")
    say(report.table(result))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        say(f"bench: logs kept in {tmp}")
    return 0 if result["summary"]["integrity"]["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
