"""The kill switch (halt, resume, status), through the state store every server of this
deployment reads (a running server applies a halt or a flatten within seconds)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from core.cli.common import PROG, load_settings

if TYPE_CHECKING:
    from core.config import Settings


async def risk_command(args: argparse.Namespace, settings: Settings) -> int:
    from core.store.factory import StateBackend
    from core.store.risk import ALL, new_flatten_record

    backend = StateBackend.from_settings(settings)
    store = backend.risk_store()
    try:
        if args.risk_action == "halt":
            account = (args.account or ALL).lower()
            await store.set_halt(
                account,
                {
                    "reason": args.reason or ("flatten" if args.flatten else "halted from the command line"),
                    "by": "cli",
                    "since": time.time(),
                    "until": None,
                },
            )
            print(f"halted {'every account' if account == ALL else account}")
            if args.flatten:
                record = new_flatten_record(args.account, by="cli")
                await store.save_flatten(record)
                print(
                    f"flatten {record['flatten_id']} requested: a running server cancels every open order and closes "
                    f"every position; see `{PROG} risk status`"
                )
        elif args.risk_action == "resume":
            cleared = await store.clear_halt(args.account.lower() if args.account else None)
            print(f"resumed {', '.join(cleared)}" if cleared else "nothing was halted")
        else:
            print(
                json.dumps(
                    {"halts": await store.halts(), "flattens": await store.flattens(limit=10)}, indent=2, default=str
                )
            )
    finally:
        await store.aclose()
        await backend.aclose()
    return 0


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(risk_command(args, load_settings()))


def register(sub: argparse._SubParsersAction[Any]) -> None:
    risk = sub.add_parser("risk", help="the kill switch: halt, flatten, resume, status", description=__doc__)
    actions = risk.add_subparsers(dest="risk_action", required=True, metavar="ACTION")
    halt = actions.add_parser("halt", help="refuse new opening orders (every account unless --account)")
    halt.add_argument("--account", metavar="NAME", help="halt this account only")
    halt.add_argument("--flatten", action="store_true", help="also cancel every open order and close every position")
    halt.add_argument("--reason", default="", help="shown by status and on the dashboard")
    resume = actions.add_parser("resume", help="lift a halt (every halt unless --account)")
    resume.add_argument("--account", metavar="NAME", help="resume this account only")
    actions.add_parser("status", help="the halts and the last flattens, as JSON")
    for action in actions.choices.values():
        action.set_defaults(handler=_run)
