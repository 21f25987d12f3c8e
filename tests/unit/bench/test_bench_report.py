"""The benchmark's summary and printed table from made-up runs: each target's medians, the
server's ratios to every reference (the Quart route's among them), what the durable write
and the Quart route cost, and the table's columns and lines. No timing is measured."""

from __future__ import annotations

import pytest

from bench import report
from bench.summary import durability_cost, framework_cost, load_summary

KINDS = ["server", "durable", "limit", "quart"]
# target → (requests/s, p50 ms, p99 ms, CPU ms per alert) in every section and round
FIGURES = {
    "server": (400.0, 2.6, 9.0, 1.6),
    "durable": (800.0, 2.0, 6.0, 0.8),
    "limit": (1000.0, 1.5, 4.0, 0.6),
    "quart": (640.0, 2.2, 7.5, 1.0),
}


def made_up_runs(kinds: list[str]) -> list[dict]:
    runs = []
    for r in range(3):
        noise = (0.9, 1.0, 1.1)[r]  # the medians are the middle round's
        for kind in kinds:
            rps, p50, p99, cpu = FIGURES[kind]
            for concurrency, route in ((1, "rest"), (32, "rest"), (32, "one-market")):
                runs.append(
                    {
                        "round": r,
                        "target": kind,
                        "concurrency": concurrency,
                        "route": route,
                        "rps": rps * noise,
                        "p50_ms": p50 * noise,
                        "p90_ms": p50 * noise,
                        "p99_ms": p99 * noise,
                        "cpu_ms_per_alert": cpu * noise,
                    }
                )
    return runs


def made_up_result(kinds: list[str]) -> dict:
    summary = load_summary(made_up_runs(kinds), kinds)
    summary["durability_cost"] = durability_cost(summary)
    summary["framework_cost"] = framework_cost(summary)
    summary["routes"] = {"rest_p50_ms": 2.6, "ws_p50_ms": 2.4, "ws_over_rest": 2.4 / 2.6}
    summary["startup"] = {f"{k}_s": 1.0 for k in kinds}
    summary["rss_mib"] = {"after_first_order": dict.fromkeys(kinds, 80.0), "after_run": dict.fromkeys(kinds, 90.0)}
    summary["pipeline"] = {"p50_us": 120.0, "p99_us": 300.0, "cpu_us_per_alert": 150.0}
    summary["integrity"] = {
        "ok": True,
        "answered_2xx": 10,
        "booked": 10,
        "missing": 0,
        "doubled": 0,
        "unanswered_booked": 0,
        "original": {"answered_2xx": 0, "booked": 0, "ok": True},
    }
    summary["statuses"] = {"200": 10}
    summary["original"] = {"measured": False, "reason": "no checkout"}
    config = {
        "rounds": 3,
        "n1": 10,
        "n32": 64,
        "n_same": 32,
        "markets": 32,
        "cpus": 2,
        "hypercorn_args": ["--workers", "1"],
        "server_env_note": "LOG_LEVEL=WARNING",
        "journal_synchronous": "FULL",
        "targets": kinds,
    }
    targets = report.check_targets({"c32_rps_vs_durable": summary["c32"]["ratios"]["server/durable"]["rps"]})
    return {"summary": summary, "targets": targets, "config": config, "wall_s": 1.0, "json_path": "latest.json"}


def test_the_quart_route_is_a_column_with_the_servers_ratio_to_it_and_its_cost_over_the_durable_limit():
    result = made_up_result(KINDS)
    c32 = result["summary"]["c32"]
    assert c32["quart"]["rps"] == 640.0  # the median round's
    assert c32["ratios"]["server/quart"] == pytest.approx(
        {"rps": 0.625, "p50_ms": 2.6 / 2.2, "p90_ms": 2.6 / 2.2, "p99_ms": 1.2, "cpu_ms_per_alert": 1.6}
    )
    assert c32["ratios"]["server/durable"]["cpu_ms_per_alert"] == pytest.approx(2.0)
    cost = result["summary"]["framework_cost"]
    assert cost == pytest.approx(
        {
            "c1_p50_ratio": 1.1,
            "c32_rps_ratio": 0.8,
            "c32_p99_ratio": 1.25,
            "c32_cpu_added_ms": 0.2,
            "c32_cpu_ratio": 1.25,
        }
    )
    table = report.table(result).splitlines()
    header = next(line for line in table if "srv/dur" in line)
    assert header.split() == ["server", "durable", "limit", "quart", "srv/dur", "srv/quart", "srv/lim"]
    cpu = next(line for line in table if line.strip().startswith("server CPU ms per alert, c=32"))
    assert cpu.split()[-7:] == ["1.60", "0.80", "0.60", "1.00", "2.00×", "1.60×", "2.67×"]
    assert any(line.startswith("  quart:    the durable limit as a Quart route") for line in table)
    assert (
        "  what the Quart route costs (quart over durable limit): c=1 p50 1.10×, c=32 requests/s 0.80×, p99 1.25×, "
        "CPU +0.20 ms per alert (1.25×)"
    ) in table
    # information only: no target of issue 14 is a ratio to the Quart route
    assert not any("quart" in name or "Quart" in x["what"] for name, x in result["targets"].items())


def test_a_run_without_the_quart_route_has_no_quart_column_ratio_or_line():
    result = made_up_result(["server", "durable", "limit"])
    assert result["summary"]["c32"]["ratios"]["server/quart"] is None
    assert result["summary"]["framework_cost"] is None
    text = report.table(result)
    assert "srv/dur" in text and "srv/lim" in text
    assert "quart" not in text.lower()
    assert "what one durable write per alert costs" in text


def test_the_cpu_of_the_event_loop_and_of_the_other_threads_are_rows_of_their_own_with_the_servers_ratios():
    kinds = ["server", "durable", "limit"]
    runs = made_up_runs(kinds)
    loop_share = {"server": 0.85, "durable": 0.9, "limit": 0.95}  # of each target's CPU per alert
    for run in runs:
        cpu, share = run["cpu_ms_per_alert"], loop_share[run["target"]]
        run.update(
            report.thread_stats(
                {
                    "loop_user": cpu * share * 0.9 / 1000,
                    "loop_system": cpu * share * 0.1 / 1000,
                    "threads_user": cpu * (1 - share) / 1000,
                    "threads_system": 0.0,
                },
                alerts=1,
            )
        )
    summary = load_summary(runs, kinds)
    c32 = summary["c32"]
    assert c32["server"]["loop_ms_per_alert"] == pytest.approx(1.6 * 0.85)
    assert c32["server"]["loop_system_ms_per_alert"] == pytest.approx(1.6 * 0.85 * 0.1)
    assert c32["server"]["threads_ms_per_alert"] == pytest.approx(1.6 * 0.15)
    assert c32["ratios"]["server/durable"]["threads_ms_per_alert"] == pytest.approx((1.6 * 0.15) / (0.8 * 0.1))
    result = made_up_result(kinds)
    result["summary"]["c1"], result["summary"]["c32"] = summary["c1"], summary["c32"]
    table = report.table(result).splitlines()
    loop = next(line for line in table if line.strip().startswith("its event loop (main thread), c=32"))
    assert loop.split()[-5:] == ["1.36", "0.72", "0.57", "1.89×", "2.39×"]
    others = next(line for line in table if line.strip().startswith("its other threads, c=1"))
    assert others.split()[-5:] == ["0.24", "0.08", "0.03", "3.00×", "8.00×"]


def test_a_result_from_before_the_thread_split_shows_no_thread_rows():
    text = report.table(made_up_result(KINDS))
    assert "server CPU ms per alert, c=32" in text
    assert "its event loop" not in text and "its other threads" not in text


def counted(per_alert: float, loop: float) -> dict:
    return {"per_alert": per_alert, "main_thread_per_alert": loop, "other_threads_per_alert": per_alert - loop}


def test_the_instructions_per_alert_are_a_line_with_the_servers_ratios():
    result = made_up_result(KINDS)
    targets = {"server": counted(4.94e6, 4.48e6), "quart": counted(3.98e6, 3.95e6), "durable": counted(3.15e6, 3.12e6)}
    result["summary"]["instructions"] = {"n": 600, "concurrency": 32, "targets": targets}
    (line,) = [x for x in report.table(result).splitlines() if "instructions per alert" in x]
    assert "at c=32 (callgrind, 600 alerts per target" in line
    assert "server 4,940k, quart 3,980k, durable 3,150k" in line
    assert "the server's event loop 4,480k, its other threads 460k" in line
    assert "server / durable 1.57×; server / quart 1.24×" in line


def test_instructions_not_counted_say_why_and_a_run_without_them_has_no_line():
    result = made_up_result(KINDS)
    assert "instructions per alert" not in report.table(result)
    result["summary"]["instructions"] = {"skipped": "valgrind not found (Debian: apt-get install valgrind)"}
    assert "  instructions per alert: skipped — valgrind not found" in report.table(result)


def test_each_ratio_target_has_its_rounds_own_ratios_and_how_many_of_them_meet_it():
    from bench.summary import RATIO_TARGETS, round_ratios

    assert set(RATIO_TARGETS) == {name for name in report.TARGETS if "_vs_" in name}  # every ratio target
    runs = made_up_runs(KINDS)
    for run in runs:  # the server's p99 at c=32: 1.2×, 1.5× and 1.8× the durable limit's, round by round
        if run["target"] == "server" and (run["concurrency"], run["route"]) == (32, "rest"):
            run["p99_ms"] = FIGURES["durable"][2] * (0.9, 1.0, 1.1)[run["round"]] * (1.2, 1.5, 1.8)[run["round"]]
    missing = ("durable", 2, 1)  # the durable limit's run at c=1 in round 2
    rounds = round_ratios([r for r in runs if (r["target"], r["round"], r["concurrency"]) != missing])
    assert rounds["c32_p99_vs_durable"] == pytest.approx([1.2, 1.5, 1.8])
    assert rounds["c32_rps_vs_durable"] == pytest.approx([0.5, 0.5, 0.5])
    assert rounds["c1_p50_vs_durable"] == pytest.approx([1.3, 1.3])  # round 2's durable limit did not run at c=1
    assert "c1_p50_vs_original" not in rounds and "redis_c32_rps_vs_durable" not in rounds  # never run

    values = {"c32_p99_vs_durable": 1.5, "c32_rps_vs_durable": 0.5, "c1_p50_vs_durable": 1.3}
    targets = report.check_targets(values, rounds=rounds)
    assert targets["c32_p99_vs_durable"]["met"] and targets["c32_p99_vs_durable"]["met_rounds"] == 2
    assert targets["c32_rps_vs_durable"]["met_rounds"] == 0 and "rounds" not in targets["rss_mib"]
    result = made_up_result(KINDS)
    result["targets"] = targets
    [line] = [line for line in report.table(result).splitlines() if line.startswith("    p99 latency at c=32")]
    assert line.endswith("1.50×    <= 1.5  met     rounds 1.20–1.80×, met in 2 of 3")
