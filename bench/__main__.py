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
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from bench import report
from bench.processes import ROOT, Process
from bench.runner import run
from bench.summary import dashboard_summary
from bench.targets import say

__all__ = ["DEFAULTS", "QUICK", "dashboard_summary", "main", "parse_args", "run"]

RESULTS = ROOT / "bench" / "results"
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
