"""``python -m bench``: the router against the durable limit (raw and as a Quart route), the bare limit and the
original, in one run.

Everything runs on 127.0.0.1, each part in its own process (group), on free ports:

1. the project's exchange emulator (``bench.emulator``: ``emulator.Emulator`` with
   32 extra spot markets, one per alert in flight at concurrency 32), with a benchmark
   API key holding ample balances (and one for the original implementation);
2. the targets, each under test in turn:

   * **server**: hypercorn ``core.web.app:app``;
   * **durable**: the durable limit (``bench.limit_app`` with ``BENCH_DURABLE_DIR``): the
     bare limit + one group-committed, fsynced SQLite row per alert before the order;
   * **limit**: the bare limit (``bench.limit_app``): raw ASGI, HMAC, one warm ccxt client;
   * **quart**: the durable limit as a Quart route (``bench.quart_limit_app``): the same
     work served by a plain ``quart.Quart`` — the floor under the project's fixed choice of
     framework, reported as information (no target uses it);
   * **original**: the implementation this project replaces (``bench.original``), run
     unchanged from a checkout given with ``--original PATH`` (or ``BENCH_ORIGINAL``) in a
     venv of its own; without one the report says it was not measured;
   * **redis** (``--redis URL``): the server with ``STATE_URL`` (shared state on Redis);
   * **dashboard** (``--dashboard``): the server with its dashboard on and a browser
     (``bench.dashclient``) polling the live feed during its runs;

3. start-up: each target started cold ``--startup-samples`` times, timed from the spawn
   to the first answer 200 with a filled order;
4. load: every target started once more and driven by the load generator
   (``bench.loadgen``, its own process per run) in ``--rounds`` rounds, the targets
   interleaved (the order rotating each round): N alerts at concurrency 1, at
   concurrency 32 over 32 markets (many strategies on one candle close) and at
   concurrency 32 on one market (the router's in-order lane, its worst case); the
   server's WebSocket account at concurrency 1 too. The CPU time (user + system) of each
   target's process tree is read before and after each run: CPU per alert;
5. ``--profile``: py-spy on the server's worker during an extra c=32 run (``bench.pyspy``);
6. RSS of each worker after its first order and after the load, then the check that every
   2xx answer corresponds to exactly one order booked at the emulator (by client order
   id; the original's, which has none, by count on its own account);
7. the pipeline alone, in process (``bench.pipeline``); with ``--instructions``, the
   instructions per alert at c=32 of the server, the quart target and the durable limit
   (``--instructions-targets``) under callgrind (``bench.instructions``), which do not
   drift with the machine as CPU seconds do;
8. the table (medians of the rounds, ratios of the server to each reference, the targets
   met or not) and ``bench/results/latest.json``.

Every target: one worker, no access log, ccxt's throttle (``enableRateLimit``) off, since
the emulator does not ban. The router with LOG_LEVEL=WARNING, its journal at the default
synchronous=FULL, and RATE_LIMIT high enough never to refuse (the limiter still runs).
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
from bench.instructions import TARGETS as INSTRUCTION_TARGETS
from bench.original import OriginalUnavailable
from bench.processes import Process
from bench.runner import RESULTS, run
from bench.summary import dashboard_summary
from bench.targets import say

__all__ = ["DEFAULTS", "QUICK", "dashboard_summary", "main", "parse_args", "run"]
DEFAULTS = {
    "rounds": 5,
    "n1": 500,
    "n32": 1000,
    "n_ws": 300,
    "n_same": 500,
    "warmup": 300,
    "startup_samples": 3,
    "pipeline_n": 3000,
    "instructions_n": 600,
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
    "instructions_n": 32,
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
    parser.add_argument(
        "--original",
        type=Path,
        metavar="PATH",
        help="a checkout of samkomo/ccxt-trading-webhook at commit 4c888e79 (default: $BENCH_ORIGINAL): adds the "
        "original implementation as a target, run unchanged in a venv of its own (made once under bench/results/)",
    )
    parser.add_argument(
        "--original-venv",
        type=Path,
        metavar="DIR",
        help="an existing venv with the original's requirements, instead of the benchmark's own",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        default="",
        help="add the server with STATE_URL=URL (shared state on Redis, its own key prefix, removed after) as a target",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on the server's worker during an extra c=32 run: folded stacks in bench/results/profile-*.txt "
        "and the top 15 self-time functions in the table",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count the instructions per alert at c=32 of the server, the quart target and the durable limit "
        "under callgrind (bench.instructions; valgrind; a few minutes more), beside their CPU per alert",
    )
    parser.add_argument(
        "--instructions-n",
        type=int,
        help=f"alerts per target counted by --instructions (default {DEFAULTS['instructions_n']})",
    )
    parser.add_argument(
        "--instructions-targets",
        default=",".join(INSTRUCTION_TARGETS),
        metavar="NAMES",
        help="the targets --instructions counts, comma-separated, of "
        f"{', '.join(INSTRUCTION_TARGETS)} (default all three; the server alone takes about a third of the time)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--timeout", type=float, default=1800.0, help="abort after this many seconds (default 1800)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, journals)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.instructions_targets.split(",") if name.strip()]
    unknown = sorted(set(names) - set(INSTRUCTION_TARGETS))
    if unknown or not names:
        choices = ", ".join(INSTRUCTION_TARGETS)
        parser.error(f"--instructions-targets: {', '.join(unknown) or 'none given'}; choose from {choices}")
    args.instructions_targets = ",".join(dict.fromkeys(names))
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
    except OriginalUnavailable as exc:
        Process.stop_all()
        say(f"bench: the original implementation cannot be run: {exc}")
        return 2
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
