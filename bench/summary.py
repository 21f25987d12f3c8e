"""What a benchmark run adds up to: the medians and ratios of every target, every 2xx answer
against the orders booked at the emulator, the dashboard target over the plain server, the
logs' warnings."""

from __future__ import annotations

import collections
import math
import time
from typing import Any

from bench import original, report
from bench.targets import API_KEY, CLASSIC, Deadline

# The loads of the table: (summary key, concurrency, route).
SECTIONS = (("c1", 1, "rest"), ("c32", 32, "rest"), ("c32_one_market", 32, "one-market"))
# The ratios reported in every section: the server over each reference, and Redis over the durable limit.
RATIOS = (
    ("server", "durable"),
    ("server", "quart"),
    ("server", "limit"),
    ("server", "original"),
    ("redis", "durable"),
)


# The targets that are one target's figure over another's in one load (bench.report.TARGETS):
# (numerator, denominator, summary key, figure).
RATIO_TARGETS = {
    "c1_p50_vs_durable": ("server", "durable", "c1", "p50_ms"),
    "c1_p50_vs_original": ("server", "original", "c1", "p50_ms"),
    "c32_rps_vs_durable": ("server", "durable", "c32", "rps"),
    "c32_rps_vs_original": ("server", "original", "c32", "rps"),
    "c32_p99_vs_durable": ("server", "durable", "c32", "p99_ms"),
    "cpu_per_alert_vs_durable": ("server", "durable", "c32", "cpu_ms_per_alert"),
    "redis_c32_rps_vs_durable": ("redis", "durable", "c32", "rps"),
}


def round_ratios(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each ratio target's value in each round (``RATIO_TARGETS``): the two targets ran in
    the same round, minutes apart, so each round is a comparison of its own. A target whose
    two sides did not both run in a round has no value for it; one never run, none."""
    where = {key: (concurrency, route) for key, concurrency, route in SECTIONS}
    figures: dict[tuple[int, str, int, str], dict[str, Any]] = {}
    for run in runs:
        figures[(run["round"], run["target"], run["concurrency"], run["route"])] = run
    out: dict[str, list[float]] = {}
    for name, (mine, theirs, key, figure) in RATIO_TARGETS.items():
        concurrency, route = where[key]
        values = []
        for r in sorted({run["round"] for run in runs}):
            a, b = figures.get((r, mine, concurrency, route)), figures.get((r, theirs, concurrency, route))
            if a is not None and b is not None and figure in a and figure in b and b[figure]:
                values.append(a[figure] / b[figure])
        if values:
            out[name] = values
    return out


def load_summary(runs: list[dict[str, Any]], kinds: list[str]) -> dict[str, Any]:
    """Per section: each target's medians across rounds (``None`` for a target not run) and
    ``ratios``: ``"server/durable"`` etc., each figure's ratio of the medians."""
    out: dict[str, Any] = {}
    for key, concurrency, route in SECTIONS:
        section: dict[str, Any] = {}
        for kind in kinds:
            picked = [x for x in runs if (x["target"], x["concurrency"], x["route"]) == (kind, concurrency, route)]
            section[kind] = report.median_of(picked) if picked else None
        ratios: dict[str, Any] = {}
        for a, b in RATIOS:
            if a == "server" or a in kinds:  # server/original is None when the original was not measured
                mine, theirs = section.get(a), section.get(b)
                ratios[f"{a}/{b}"] = report.ratios(mine, theirs) if mine and theirs else None
        section["ratios"] = ratios
        out[key] = section
    return out


def durability_cost(loads: dict[str, Any]) -> dict[str, float]:
    """What the durable limit's one fsynced row per alert costs over the bare limit."""
    c1, c32 = loads["c1"], loads["c32"]
    durable, bare = c1["durable"], c1["limit"]
    return {
        "c1_p50_added_ms": durable["p50_ms"] - bare["p50_ms"],
        "c1_p50_ratio": durable["p50_ms"] / bare["p50_ms"] if bare["p50_ms"] else math.nan,
        "c32_rps_ratio": c32["durable"]["rps"] / c32["limit"]["rps"] if c32["limit"]["rps"] else math.nan,
        "c32_p99_ratio": c32["durable"]["p99_ms"] / c32["limit"]["p99_ms"] if c32["limit"]["p99_ms"] else math.nan,
        "c32_cpu_added_ms": c32["durable"]["cpu_ms_per_alert"] - c32["limit"]["cpu_ms_per_alert"],
    }


def framework_cost(loads: dict[str, Any]) -> dict[str, float] | None:
    """What serving the durable limit's work from a plain Quart route costs over the raw ASGI
    app (the quart target over the durable limit): the floor under the project's fixed
    choice of framework. ``None`` when the quart target was not run."""
    c1, c32 = loads["c1"], loads["c32"]
    if not c1.get("quart") or not c32.get("quart"):
        return None
    durable, quart = c32["durable"], c32["quart"]
    return {
        "c1_p50_ratio": c1["quart"]["p50_ms"] / c1["durable"]["p50_ms"] if c1["durable"]["p50_ms"] else math.nan,
        "c32_rps_ratio": quart["rps"] / durable["rps"] if durable["rps"] else math.nan,
        "c32_p99_ratio": quart["p99_ms"] / durable["p99_ms"] if durable["p99_ms"] else math.nan,
        "c32_cpu_added_ms": quart["cpu_ms_per_alert"] - durable["cpu_ms_per_alert"],
        "c32_cpu_ratio": (
            quart["cpu_ms_per_alert"] / durable["cpu_ms_per_alert"] if durable["cpu_ms_per_alert"] else math.nan
        ),
    }


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
    """Every 2xx answer ↔ exactly one order booked at the emulator, matched by client order id;
    the original implementation's (account ``CLASSIC``: it sends no client order id of its
    own) by count on its emulator account."""
    from core.trading.execution import client_order_id
    from emulator.control import EmulatorControl

    control = EmulatorControl(emulator_url, timeout=30)
    expected = {client_order_id(alert_id, account) for account, alert_id in answered if account != CLASSIC}
    classic = [alert_id for account, alert_id in answered if account == CLASSIC]
    booked: collections.Counter = collections.Counter()
    # An answer 202 leaves the order executing: wait (bounded) until the book stops growing.
    previous, orders = -1, []
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
    by_original = len(control.orders(account_key=original.API_KEY))
    original_ok = by_original == len(classic) == len(set(classic))
    return {
        "ok": not (missing or doubled or unanswered) and original_ok,
        "answered_2xx": len(answered) - len(classic),
        "distinct_2xx": len(expected),
        "booked": sum(booked.values()),
        "missing": len(missing),
        "doubled": len(doubled),
        "unanswered_booked": len(unanswered),
        "examples": (missing + doubled + unanswered)[:5],
        "original": {"answered_2xx": len(classic), "booked": by_original, "ok": original_ok},
    }
