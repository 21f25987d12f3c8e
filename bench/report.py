"""Statistics over the load generator's runs, the targets, the printed table and the JSON."""

from __future__ import annotations

import math
import statistics
from typing import Any

# name → (what is compared, comparison, bound)
TARGETS: dict[str, tuple[str, str, float]] = {
    "c1_p50_ratio": ("p50 latency at concurrency 1, server/limit", "<=", 1.25),
    "c32_rps_ratio": ("throughput at concurrency 32, server/limit", ">=", 0.8),
    "c32_p99_ratio": ("p99 latency at concurrency 32, server/limit", "<=", 1.5),
    "pipeline_p50_us": ("pipeline alone (auth + transform + journal), p50 µs per alert", "<=", 300.0),
    "start_to_first_order_s": ("process start to first filled order, s", "<=", 2.0),
    "rss_mb": ("RSS of the server worker after the run, MB", "<=", 160.0),
}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def run_stats(run: dict[str, Any]) -> dict[str, float]:
    """One load-generator run: requests/s and latency percentiles (ms)."""
    latencies = run["latencies_ms"]
    return {
        "rps": run["requests_per_s"],
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "ok": sum(v for k, v in run["statuses"].items() if k.startswith("2")),
        "n": run["n"],
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure across rounds."""
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def ratios(server: dict[str, float], limit: dict[str, float]) -> dict[str, float]:
    return {k: (server[k] / limit[k] if limit[k] else math.nan) for k in server}


def check_targets(values: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (what, op, bound) in TARGETS.items():
        value = values.get(name)
        met = (
            None
            if value is None or (isinstance(value, float) and math.isnan(value))
            else (value <= bound if op == "<=" else value >= bound)
        )
        out[name] = {"what": what, "value": value, "target": f"{op} {bound:g}", "met": met}
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _mark(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[met]


def table(result: dict[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    s = result["summary"]
    t = result["targets"]
    cfg = result["config"]
    lines = [
        f"ccxt-trading-webhook benchmark: {cfg['rounds']} rounds, per round {cfg['n1']} alerts at concurrency 1 "
        f"and {cfg['n32']} at concurrency 32 over {cfg['markets']} markets (server and limit interleaved); "
        "medians of the rounds",
        f"  machine: {cfg['cpus']} CPUs; everything on 127.0.0.1, each part its own process",
        "  exchange: the project's emulator; ccxt's throttle (enableRateLimit) OFF for both — "
        "the emulator does not ban",
        f"  server: hypercorn {' '.join(cfg['hypercorn_args'])} core.web.app:app, {cfg['server_env_note']}, "
        f"journal synchronous={cfg['journal_synchronous']}",
        "  limit: bench/limit_app.py, raw ASGI (HMAC check + create_order on one warm ccxt client), "
        "same hypercorn options",
        "",
        f"  {'':34}{'server':>12}{'limit':>12}{'server/limit':>14}  target",
    ]

    def row(label: str, key: str, section: str, digits: int = 2, target: str = "") -> None:
        server = s[section]["server"][key]
        limit = s[section]["limit"][key]
        ratio = s[section]["ratio"][key]
        lines.append(
            f"  {label:34}{_fmt(server, digits):>12}{_fmt(limit, digits):>12}{_fmt(ratio, 2) + '×':>14}  {target}"
        )

    c1, c32 = t["c1_p50_ratio"], t["c32_rps_ratio"]
    p99 = t["c32_p99_ratio"]
    row("c=1   requests/s", "rps", "c1", 1)
    row("c=1   p50 ms", "p50_ms", "c1", 2, f"≤ 1.25×  {_mark(c1['met'])}")
    row("c=1   p90 ms", "p90_ms", "c1")
    row("c=1   p99 ms", "p99_ms", "c1")
    row("c=32  requests/s", "rps", "c32", 1, f"≥ 0.8×   {_mark(c32['met'])}")
    row("c=32  p50 ms", "p50_ms", "c32")
    row("c=32  p90 ms", "p90_ms", "c32")
    row("c=32  p99 ms", "p99_ms", "c32", 2, f"≤ 1.5×   {_mark(p99['met'])}")
    row("c=32, one market: requests/s", "rps", "c32_one_market", 1, "(in order)")
    row("c=32, one market: p50 ms", "p50_ms", "c32_one_market")
    st = s["startup"]
    lines.append(
        f"  {'start → first filled order, s':34}{_fmt(st['server_s']):>12}{_fmt(st['limit_s']):>12}{'':>14}  "
        f"≤ 2 s    {_mark(t['start_to_first_order_s']['met'])}"
    )
    rss = s["rss_mb"]
    lines.append(
        f"  {'RSS after the run, MB (worker)':34}{_fmt(rss['server'], 1):>12}{_fmt(rss['limit'], 1):>12}{'':>14}  "
        f"≤ 160 MB {_mark(t['rss_mb']['met'])}"
    )
    ws = s["routes"]
    lines.append(
        f"  {'route p50 ms at c=1 (server)':34}"
        f"{'REST ' + _fmt(ws['rest_p50_ms']):>12}{'WS ' + _fmt(ws['ws_p50_ms']):>12}"
        f"{_fmt(ws['ws_over_rest'], 2) + '×':>14}  (WS/REST)"
    )
    pipe = s["pipeline"]
    lines.append(
        f"  {'pipeline alone, µs per alert':34}"
        f"{'p50 ' + _fmt(pipe['p50_us'], 0):>12}{'p99 ' + _fmt(pipe['p99_us'], 0):>12}"
        f"{'':>14}  ≤ 300 µs {_mark(t['pipeline_p50_us']['met'])}"
    )
    lines.append(
        f"  {'  of which: event-loop CPU':34}{_fmt(pipe.get('loop_cpu_us_per_alert'), 0):>12}"
        f"{'':>12}{'':>14}  (all threads: {_fmt(pipe['cpu_us_per_alert'], 0)} µs)"
    )
    commits, fsync = pipe.get("durable_commits_per_alert"), pipe.get("fsync_commit_us")
    if commits is not None and fsync is not None:
        lines.append(
            f"  {'  durable commits waited for':34}{_fmt(commits, 1):>12}{'× ' + _fmt(fsync, 0) + ' µs':>12}"
            f"{'= ' + _fmt(commits * fsync, 0) + ' µs':>14}  (synchronous=FULL; one commit alone on this disk)"
        )
    if "dashboard" in s:
        lines.extend(dashboard_rows(s["dashboard"]))
    integrity = s["integrity"]
    verdict = "OK" if integrity["ok"] else "FAILED"
    lines.append("")
    lines.append(
        f"  every 2xx ↔ exactly one booked order: {verdict} — {integrity['answered_2xx']} answers 2xx, "
        f"{integrity['booked']} orders booked, {integrity['missing']} 2xx without an order, "
        f"{integrity['doubled']} doubled, {integrity['unanswered_booked']} booked without a 2xx"
    )
    non_2xx = {k: v for k, v in s["statuses"].items() if not k.startswith("2")}
    if non_2xx:
        lines.append(f"  answers other than 2xx: {non_2xx}")
    met = sum(1 for x in t.values() if x["met"])
    lines.append(f"  targets met: {met}/{len(t)}; wall time {result['wall_s']:.0f} s; JSON: {result['json_path']}")
    return "\n".join(lines)


def dashboard_rows(d: dict[str, Any]) -> list[str]:
    """``--dashboard``: the server with a browser on its dashboard, over the plain server."""
    lines = [
        "",
        (
            f"  dashboard on + a browser polling the live feed every {d['interval_s']:g} s during its runs "
            f"({d['polls']} polls, {d['polls_during_load']} of them while its {d['runs']} measured runs loaded it; "
            f"statuses {d['poll_statuses']}, poll p50 {_fmt(d['poll_p50_ms'])} ms)"
        ),
        f"  {'':34}{'server':>12}{'dashboard':>12}{'dash/server':>14}  {'per round':>13}  {'server across rounds':>20}",
    ]
    for label, section, key, digits in (
        ("c=1   p50 ms", "c1", "p50_ms", 2),
        ("c=32  requests/s", "c32", "rps", 1),
        ("c=32  p99 ms", "c32", "p99_ms", 2),
    ):
        x = d[section]
        per_round = x["round_ratios"][key]
        rounds = f"{min(per_round):.2f}–{max(per_round):.2f}×" if per_round else "-"
        spread = x["server_spread"].get(key)
        own = f"{spread[0]:.2f}–{spread[1]:.2f}× median" if spread else "-"
        lines.append(
            f"  {label:34}{_fmt(x['server'][key], digits):>12}{_fmt(x['dashboard'][key], digits):>12}"
            f"{_fmt(x['ratio'][key]) + '×':>14}  {rounds:>13}  {own:>20}"
        )
    return lines
