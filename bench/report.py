"""Statistics over the load generator's runs, the targets, the printed table and the JSON."""

from __future__ import annotations

import math
import statistics
from typing import Any

# name → (what is compared, comparison, bound): the targets of issue 14, each a ratio within
# one run where it can be (the machine's speed cancels out), plus the pipeline's own.
TARGETS: dict[str, tuple[str, str, float]] = {
    "c1_p50_vs_durable": ("p50 latency at c=1, server / durable limit", "<=", 1.25),
    "c1_p50_vs_original": ("p50 latency at c=1, server / original (below it)", "<", 1.0),
    "c32_rps_vs_durable": ("requests/s at c=32 (32 markets), server / durable limit", ">=", 0.8),
    "c32_rps_vs_original": ("requests/s at c=32 (32 markets), server / original", ">=", 5.0),
    "c32_p99_vs_durable": ("p99 latency at c=32 (32 markets), server / durable limit", "<=", 1.5),
    "cpu_per_alert_vs_durable": ("server CPU per alert at c=32 (32 markets), server / durable limit", "<=", 1.5),
    "start_to_first_order_s": ("process start → first filled order, s (server, median)", "<=", 1.5),
    "rss_mib": ("RSS of the server worker after its first order, MiB", "<=", 150.0),
    "redis_c32_rps_vs_durable": ("requests/s at c=32 (32 markets), server on Redis / durable limit", ">=", 0.5),
    "integrity_mismatches": ("answers 2xx without exactly one booked order, or booked without a 2xx", "<=", 0.0),
    "pipeline_p50_us": ("pipeline alone (in process, null exchange), p50 µs per alert", "<=", 300.0),
}
# The table's columns: the targets (those run), then the server's ratios to each reference.
# The quart target is information, not a target: no bound of issue 14 uses it.
COLUMNS = ("server", "durable", "limit", "quart", "original", "redis")
RATIO_COLUMNS = (
    ("server/durable", "srv/dur"),
    ("server/quart", "srv/quart"),
    ("server/limit", "srv/lim"),
    ("server/original", "srv/orig"),
)


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


# The worker's CPU per alert by thread (``thread_stats``): its event loop and its other
# threads, each in all and the system (kernel) part of it.
THREAD_KEYS = (
    "loop_ms_per_alert",
    "loop_system_ms_per_alert",
    "threads_ms_per_alert",
    "threads_system_ms_per_alert",
)


def thread_stats(split: dict[str, float], alerts: int) -> dict[str, float]:
    """``bench.processes.thread_cpu_split`` of one run as ms per alert (``THREAD_KEYS``)."""
    per = 1000 / max(1, alerts)
    return {
        "loop_ms_per_alert": (split["loop_user"] + split["loop_system"]) * per,
        "loop_system_ms_per_alert": split["loop_system"] * per,
        "threads_ms_per_alert": (split["threads_user"] + split["threads_system"]) * per,
        "threads_system_ms_per_alert": split["threads_system"] * per,
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure across rounds (the CPU figures where every run has them)."""
    keys = ["rps", "p50_ms", "p90_ms", "p99_ms"]
    for key in ("cpu_ms_per_alert", *THREAD_KEYS):
        if runs and all(key in r for r in runs):
            keys.append(key)
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def ratios(server: dict[str, float], limit: dict[str, float]) -> dict[str, float]:
    return {k: (server[k] / limit[k] if limit[k] else math.nan) for k in server}


def check_targets(
    values: dict[str, float | None],
    why_not: dict[str, str] | None = None,
    rounds: dict[str, list[float]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each target: its value, bound, met (None when not measured, with ``why`` from
    ``why_not``). ``rounds``: a ratio target's value in each round
    (``bench.summary.round_ratios``), kept with how many of them meet the bound: a median
    that meets it in one round of three is a verdict the next run may reverse."""
    out: dict[str, dict[str, Any]] = {}
    compare = {"<=": float.__le__, "<": float.__lt__, ">=": float.__ge__}
    for name, (what, op, bound) in TARGETS.items():
        value = values.get(name)
        met = None if value is None or math.isnan(value) else compare[op](float(value), bound)
        out[name] = {"what": what, "value": value, "target": f"{op} {bound:g}", "met": met}
        if met is None:
            out[name]["why"] = (why_not or {}).get(name, "not measured")
        elif rounds and rounds.get(name):
            out[name]["rounds"] = rounds[name]
            out[name]["met_rounds"] = sum(compare[op](float(v), bound) for v in rounds[name])
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _mark(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[met]


def _ratio(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.2f}×"


def _value(value: float | None, what: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if what.startswith("answers 2xx"):
        return f"{value:.0f}"
    return _ratio(value) if "/" in what else _fmt(value)


def table(result: dict[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    s, t, cfg = result["summary"], result["targets"], result["config"]
    kinds = [k for k in COLUMNS if k in cfg["targets"]]
    ratio_columns = [(key, label) for key, label in RATIO_COLUMNS if key.partition("/")[2] in kinds]
    orig = s["original"]
    lines = [
        f"ccxt-trading-webhook benchmark: {cfg['rounds']} rounds, per round and target {cfg['n1']} alerts at c=1, "
        f"{cfg['n32']} at c=32 over {cfg['markets']} markets and {cfg['n_same']} at c=32 on one market "
        "(targets interleaved, the order rotating each round); medians of the rounds",
        f"  machine: {cfg['cpus']} CPUs; everything on 127.0.0.1, each part its own process; exchange: the project's "
        "emulator, ccxt's throttle (enableRateLimit) OFF for every target — the emulator does not ban",
        f"  server:   hypercorn {' '.join(cfg['hypercorn_args'])} core.web.app:app, {cfg['server_env_note']}, "
        f"journal synchronous={cfg['journal_synchronous']}",
        "  durable:  the durable limit — the bare limit + one SQLite row per alert, group-committed and fsynced "
        "(WAL, synchronous=FULL) before the order is sent; same hypercorn options",
        "  limit:    the bare limit — bench/limit_app.py, raw ASGI: HMAC check + create_order on one warm ccxt client",
    ]
    if "quart" in kinds:
        lines.append(
            "  quart:    the durable limit as a Quart route — bench/quart_limit_app.py: plain quart.Quart, one "
            "@app.post route, the same checks, row, order and answers; same hypercorn options (information: the "
            "framework's floor, no target)"
        )
    if orig["measured"]:
        lines.append(
            f"  original: {orig['repository']}@{orig['commit'][:8]} (FastAPI; uvicorn main:app --no-access-log; "
            f"classic payload, no journal) — {orig['verified']}; {orig['venv']}"
        )
    else:
        lines.append(f"  original: NOT MEASURED — {orig['reason']}")
    if "redis" in kinds:
        lines.append(f"  redis:    the server with STATE_URL={cfg['redis_url']} (its own key prefix, removed after)")
    header = "".join(f"{k:>10}" for k in kinds) + "".join(f"{label:>10}" for _, label in ratio_columns)
    lines += ["", f"  {'':38}{header}"]

    def row(label: str, section: str, key: str, digits: int = 2) -> None:
        x = s[section]
        if key in THREAD_KEYS and not any(key in (x.get(k) or {}) for k in kinds):
            return  # a result from before the thread split
        cells = "".join(f"{_fmt((x.get(k) or {}).get(key), digits):>10}" for k in kinds)
        cells += "".join(f"{_ratio((x['ratios'].get(r) or {}).get(key)):>10}" for r, _ in ratio_columns)
        lines.append(f"  {label:38}{cells}")

    row("c=1   requests/s", "c1", "rps", 1)
    row("c=1   p50 ms", "c1", "p50_ms")
    row("c=1   p99 ms", "c1", "p99_ms")
    row("c=32  requests/s, 32 markets", "c32", "rps", 1)
    row("c=32  p50 ms, 32 markets", "c32", "p50_ms")
    row("c=32  p99 ms, 32 markets", "c32", "p99_ms")
    row("c=32  requests/s, one market", "c32_one_market", "rps", 1)
    row("c=32  p99 ms, one market", "c32_one_market", "p99_ms")
    row("server CPU ms per alert, c=1", "c1", "cpu_ms_per_alert")
    row("server CPU ms per alert, c=32", "c32", "cpu_ms_per_alert")
    row("  its event loop (main thread), c=1", "c1", "loop_ms_per_alert")
    row("  its other threads, c=1", "c1", "threads_ms_per_alert")
    row("  its event loop (main thread), c=32", "c32", "loop_ms_per_alert")
    row("  its other threads, c=32", "c32", "threads_ms_per_alert")
    for label, values, digits in (
        ("start → first filled order, s", {k: s["startup"].get(f"{k}_s") for k in kinds}, 2),
        ("RSS MiB after the first order", s["rss_mib"]["after_first_order"], 1),
        ("RSS MiB after the run", s["rss_mib"]["after_run"], 1),
    ):
        lines.append(f"  {label:38}" + "".join(f"{_fmt(values.get(k), digits):>10}" for k in kinds))
    cost = s["durability_cost"]
    lines += [
        "",
        f"  what one durable write per alert costs (durable limit over bare limit): c=1 p50 "
        f"{cost['c1_p50_added_ms']:+.2f} ms ({_ratio(cost['c1_p50_ratio'])}); c=32 requests/s "
        f"{_ratio(cost['c32_rps_ratio'])}, p99 {_ratio(cost['c32_p99_ratio'])}, CPU "
        f"{cost['c32_cpu_added_ms']:+.2f} ms per alert",
    ]
    quart = s.get("framework_cost")
    if quart:
        lines.append(
            f"  what the Quart route costs (quart over durable limit): c=1 p50 {_ratio(quart['c1_p50_ratio'])}, "
            f"c=32 requests/s {_ratio(quart['c32_rps_ratio'])}, p99 {_ratio(quart['c32_p99_ratio'])}, CPU "
            f"{quart['c32_cpu_added_ms']:+.2f} ms per alert ({_ratio(quart['c32_cpu_ratio'])})"
        )
    ws = s["routes"]
    lines.append(
        f"  server's WebSocket account at c=1: p50 {_fmt(ws['ws_p50_ms'])} ms, REST {_fmt(ws['rest_p50_ms'])} ms "
        f"({_ratio(ws['ws_over_rest'])} WS/REST)"
    )
    pipe = s["pipeline"]
    line = (
        f"  pipeline alone (in process, null exchange): p50 {_fmt(pipe['p50_us'], 0)} µs, p99 "
        f"{_fmt(pipe['p99_us'], 0)} µs per alert; event-loop CPU {_fmt(pipe.get('loop_cpu_us_per_alert'), 0)} µs "
        f"(all threads {_fmt(pipe['cpu_us_per_alert'], 0)} µs)"
    )
    commits, fsync = pipe.get("durable_commits_per_alert"), pipe.get("fsync_commit_us")
    if commits is not None and fsync is not None:
        line += f"; {_fmt(commits, 1)} durable commits waited for × {_fmt(fsync, 0)} µs each"
    lines.append(line)
    if "instructions" in s:
        lines.extend(instruction_rows(s["instructions"]))
    if "dashboard" in s:
        lines.extend(dashboard_rows(s["dashboard"]))
    lines += ["", "  targets (issue 14; ratios within this run, and the range of the rounds' own ratios):"]
    for x in t.values():
        mark = _mark(x["met"]) + ("" if x["met"] is not None else f" ({x['why']})")
        line = f"    {x['what']:76}{_value(x['value'], x['what']):>10}  {x['target']:>8}  {mark:6}"
        per_round = x.get("rounds") or []
        if len(per_round) > 1:
            line += f"  rounds {min(per_round):.2f}–{max(per_round):.2f}×, met in {x['met_rounds']} of {len(per_round)}"
        lines.append(line.rstrip())
    prof = s.get("profile")
    if prof:
        lines.extend(profile_rows(prof))
    integrity = s["integrity"]
    o = integrity["original"]
    lines += [
        "",
        f"  every 2xx ↔ exactly one booked order: {'OK' if integrity['ok'] else 'FAILED'} — "
        f"{integrity['answered_2xx']} answers 2xx, {integrity['booked']} orders booked (by client order id), "
        f"{integrity['missing']} 2xx without an order, {integrity['doubled']} doubled, "
        f"{integrity['unanswered_booked']} booked without a 2xx",
    ]
    if orig["measured"]:
        lines.append(
            f"    original (no client order id: counted on its own account): {o['answered_2xx']} answers 2xx, "
            f"{o['booked']} orders booked — {'OK' if o['ok'] else 'MISMATCH'}"
        )
    non_2xx = {k: v for k, v in s["statuses"].items() if not k.startswith("2")}
    if non_2xx:
        lines.append(f"  answers other than 2xx: {non_2xx}")
    met = sum(1 for x in t.values() if x["met"])
    measured = sum(1 for x in t.values() if x["met"] is not None)
    lines.append(
        f"  targets met: {met}/{measured} measured ({len(t) - measured} not measured); wall time "
        f"{result['wall_s']:.0f} s; JSON: {result['json_path']}"
    )
    return "\n".join(lines)


def instruction_rows(counted: dict[str, Any]) -> list[str]:
    """``--instructions``: instructions per alert at c=32 under callgrind, and the server's ratios."""
    if "skipped" in counted:
        return [f"  instructions per alert: skipped — {counted['skipped']}"]
    by = counted["targets"]
    shown = ", ".join(f"{name} {r['per_alert'] / 1e3:,.0f}k" for name, r in by.items())
    line = (
        f"  instructions per alert at c=32 (callgrind, {counted['n']} alerts per target; the same code counts "
        f"the same within ~1 %): {shown}"
    )
    server = by.get("server")
    if server is not None:
        line += (
            f"; the server's event loop {server['main_thread_per_alert'] / 1e3:,.0f}k, "
            f"its other threads {server['other_threads_per_alert'] / 1e3:,.0f}k"
        )
        for reference in ("durable", "quart"):
            if reference in by:
                line += f"; server / {reference} {_ratio(server['per_alert'] / by[reference]['per_alert'])}"
    return [line]


def profile_rows(prof: dict[str, Any]) -> list[str]:
    """``--profile``: the top self-time functions of the server's worker during a c=32 run."""
    if "skipped" in prof:
        return ["", f"  profile: skipped — {prof['skipped']}"]
    cpu = prof.get("cpu_ms_per_alert")
    lines = [
        "",
        f"  profile of the server's worker during an extra c=32 run of {prof['alerts']} alerts "
        f"(py-spy --gil --nonblocking, {prof['rate_hz']} Hz, {prof['samples']} samples; not a measured run): "
        "self time by function; "
        f"µs/alert = its share of the worker's {_fmt(cpu)} ms CPU per alert in that run",
        f"    {'function':44}{'file':52}{'samples':>8}{'share':>8}{'µs/alert':>10}",
    ]
    for x in prof["top_self"]:
        lines.append(
            f"    {x['function'][:43]:44}{x['file'][-51:]:52}{x['samples']:>8}{x['share'] * 100:>7.1f}%"
            f"{x['us_per_alert']:>10.0f}"
        )
    packages = " · ".join(
        f"{x['package']} {x['share'] * 100:.0f}% ({x['us_per_alert']:.0f})" for x in prof.get("by_package", [])[:12]
    )
    lines.append(f"    by package (share, µs/alert): {packages}")
    threads = " · ".join(f"{x['thread']} {x['cpu_ms_per_alert']:.2f}" for x in prof.get("threads", [])[:8])
    lines.append(f"    the worker's threads, CPU ms per alert over the same run: {threads}")
    lines.append(f"    folded stacks: {prof['path']}")
    return lines


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
