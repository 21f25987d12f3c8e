"""Where one alert's time goes at concurrency 1, stage by stage: the server beside the
durable limit (the target its c=1 p50 is measured against), in one run.

    python -m bench.timeline [--n 1000] [--rounds 3] [--out timeline.json]

Both run on 127.0.0.1 against the project's exchange emulator, as in ``python -m bench``
(same hypercorn options and environment), but served through ``bench.timeline_app``,
which marks a few of their functions as they are called and return. Each round drives
``--n`` alerts at concurrency 1 through each target in turn (the order rotating), then
reads the marks back (``GET /__timeline``) and splits them into requests. Per stage the
table gives the median over the round medians, in µs, and the server's excess:

    request → journal         the ASGI app called (the body is read in it) → the journal write
    journal → committed       → its COMMIT returned (on the writer thread)
    committed → on the loop   → the loop has the result
    on the loop → fetch       → ccxt's HTTP request starts (engine, then ccxt builds the order)
    fetch → fetched           → ccxt has the exchange's answer (the round trip)
    fetched → answer          → the HTTP answer starts
    answer → done             → the answer sent, the ASGI call returned
    done → next request       → the next request's ASGI call (hypercorn, the load generator)

and, for the server, the stages within them (Quart and the route; authentication,
parsing, transforms and the limits; the statements on the loop; the alert's task).
Stage medians do not add up to the median of a whole request, which is given too.

A wrapped call costs about a microsecond, a wrapped coroutine about two: some 10 µs per
request for the server, 5 for the durable limit. The stages are for comparing, not for
quoting as the benchmark's latencies (``python -m bench`` measures those, without marks).
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.processes import Process
from bench.targets import (
    Deadline,
    Target,
    first_filled_order,
    limit_process,
    load_run,
    say,
    server_process,
    start_emulator,
)

APP = "bench.timeline_app:app"
# Each target's marks in the order one request at concurrency 1 passes them.
ORDER = {
    "server": [
        "request",
        "pipeline",
        "journal",
        "statements",
        "statements ran",
        "commit",
        "committed",
        "delivered",
        "execute",
        "fetch",
        "fetched",
        "answer",
        "done",
    ],
    "durable": ["request", "journal", "committed", "delivered", "fetch", "fetched", "answer", "done"],
}
# The stages both targets have: (from, to, what happens in between).
COMMON = [
    ("request", "journal", "request → journal: the work before the journal write"),
    ("journal", "committed", "journal → committed: the write, to its COMMIT on the thread"),
    ("committed", "delivered", "committed → on the loop"),
    ("delivered", "fetch", "on the loop → fetch: the engine, then ccxt builds the order"),
    ("fetch", "fetched", "fetch → fetched: ccxt's round trip to the exchange"),
    ("fetched", "answer", "fetched → answer: the result, to the HTTP answer"),
    ("answer", "done", "answer → done: the answer sent"),
    ("done", "next request", "done → next request: hypercorn and the load generator"),
]
# The server's stages within the common ones, by the common stage's first mark.
SERVER_DETAIL = {
    "request": [
        ("request", "pipeline", "intake, Quart, the route"),
        ("pipeline", "journal", "authentication, parsing, limits, transforms, the executor"),
    ],
    "journal": [
        ("journal", "statements", "the batch starts (the end of the loop's turn)"),
        ("statements", "statements ran", "the statements on the loop (the last outcome's, this admission's)"),
        ("statements ran", "commit", "the thread wakes"),
        ("commit", "committed", "COMMIT (the fsync)"),
    ],
    "delivered": [
        ("delivered", "execute", "the alert's task starts"),
        ("execute", "fetch", "prepare, the risk gate, ccxt builds the order"),
    ],
}


def split(marks: Sequence[Sequence[Any]], order: list[str]) -> tuple[list[dict[str, int]], int]:
    """The requests in ``marks`` ([label, thread, ns], any order): for each, the time of each
    label of ``order`` (the first of it after the one before), plus ``next request``: when
    the next one came. Requests missing a mark (refused, or cut off by the read) are left
    out; how many, second."""
    timed = sorted(marks, key=lambda m: m[2])
    starts = [i for i, m in enumerate(timed) if m[0] == order[0]]
    found: list[dict[str, int]] = []
    incomplete = 0
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(timed)
        times: dict[str, int] = {}
        i = start
        for label in order:
            while i < end and timed[i][0] != label:
                i += 1
            if i == end:
                break
            times[label] = timed[i][2]
        if len(times) < len(order):
            incomplete += 1
            continue
        if end < len(timed):
            times["next request"] = timed[end][2]
        found.append(times)
    return found, incomplete


def stage_medians(requests: list[dict[str, int]], order: list[str]) -> dict[str, float]:
    """µs: the median of every pair of marks in ``order`` (``"a→b"``), ``next request`` included."""
    labels = [*order, "next request"]
    pairs = {f"{a}→{b}" for i, a in enumerate(labels) for b in labels[i + 1 :]}
    medians: dict[str, float] = {}
    for pair in sorted(pairs):
        a, b = pair.split("→")
        spans = [(r[b] - r[a]) / 1000 for r in requests if a in r and b in r]
        if spans:
            medians[pair] = statistics.median(spans)
    return medians


def read_marks(port: int) -> list[list[Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/__timeline")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET /__timeline answered {response.status}: {body[:200]!r}")
    marks: list[list[Any]] = json.loads(body)["marks"]
    return marks


def marked(process: Process, target: str) -> Process:
    """``process`` (a target's, not started) served through ``bench.timeline_app``."""
    process.cmd = [APP if arg in ("core.web.app:app", "bench.limit_app:app") else arg for arg in process.cmd]
    process.env["BENCH_TIMELINE_TARGET"] = target
    return process


def run(n: int, rounds: int, warmup: int, tmp: Path) -> dict[str, Any]:
    deadline = Deadline(600 + rounds * n * 0.05)
    secret = secrets.token_hex(32)
    _, url = start_emulator(tmp, deadline)

    def server(name: str) -> tuple[Process, int]:
        process, port = server_process(name, tmp, secret, url, [])
        return marked(process, "server"), port

    def durable(name: str) -> tuple[Process, int]:
        process, port = limit_process(name, tmp, secret, url, [], durable=True)
        return marked(process, "durable"), port

    targets = {"server": Target("server", server), "durable": Target("durable", durable)}
    for target in targets.values():
        target.launch(target.name)
        first_filled_order(target, secret, [], min(60, deadline.left()))
        load_run(f"warm-{target.name}", target.port, warmup, 1, target.account, secret, tmp, deadline)
        read_marks(target.port)  # the warm-up's marks go
    per_round: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    counts: dict[str, dict[str, int]] = {name: {"requests": 0, "incomplete": 0} for name in targets}
    names = list(targets)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            target = targets[name]
            load_run(f"r{r}-{name}", target.port, n, 1, target.account, secret, tmp, deadline)
            requests, incomplete = split(read_marks(target.port), ORDER[name])
            if not requests:
                raise RuntimeError(f"{name}: no request passed every mark ({incomplete} incomplete)")
            counts[name]["requests"] += len(requests)
            counts[name]["incomplete"] += incomplete
            per_round[name].append(stage_medians(requests, ORDER[name]))
        say(f"bench.timeline: round {r + 1}/{rounds} done")
    result: dict[str, Any] = {"n": n, "rounds": rounds, "counts": counts, "stages": {}}
    for name, rounds_medians in per_round.items():
        keys = set.intersection(*(set(m) for m in rounds_medians))
        result["stages"][name] = {k: statistics.median(m[k] for m in rounds_medians) for k in sorted(keys)}
    return result


def table(result: dict[str, Any]) -> list[str]:
    server, durable = result["stages"]["server"], result["stages"]["durable"]
    lines = [
        f"bench.timeline: one alert at concurrency 1, {result['rounds']} rounds of {result['n']} alerts per target "
        "(medians of the round medians, µs)",
        f"  {'stage':<76}{'server':>9}{'durable':>9}{'excess':>9}",
    ]
    for a, b, what in COMMON:
        key = f"{a}→{b}"
        if key not in server or key not in durable:
            continue
        lines.append(f"  {what:<76}{server[key]:>9.0f}{durable[key]:>9.0f}{server[key] - durable[key]:>+9.0f}")
        for sa, sb, detail in SERVER_DETAIL.get(a, []):
            if f"{sa}→{sb}" in server:
                lines.append(f"      {detail:<72}{server[f'{sa}→{sb}']:>9.0f}")
    whole = "request→done"
    lines.append(
        f"  {'a whole request (request → done)':<76}{server[whole]:>9.0f}{durable[whole]:>9.0f}"
        f"{server[whole] - durable[whole]:>+9.0f}"
    )
    counts = result["counts"]
    lines.append(
        "  requests: "
        + ", ".join(f"{k} {v['requests']} ({v['incomplete']} without every mark)" for k, v in counts.items())
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="alerts per round and target (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the targets interleaved (default 3)")
    parser.add_argument("--warmup", type=int, default=200, help="alerts per target before the rounds (default 200)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.n < 2 or args.rounds < 1:
        parser.error("--n at least 2 and --rounds at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-timeline-") as tmp:
        try:
            result = run(args.n, args.rounds, args.warmup, Path(tmp))
        finally:
            Process.stop_all()
    print("\n".join(table(result)))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
