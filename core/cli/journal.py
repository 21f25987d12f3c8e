"""The journal of alerts and orders of this deployment's state backend (SQLite under
DATA_DIR, or Redis with STATE_URL): list, show, stats; read while the server runs.
upgrade: bring an earlier version's SQLite journal fully up to date, the server stopped."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.cli.common import load_settings

if TYPE_CHECKING:
    from core.config import Settings


def _when(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        return "-"


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return number


async def journal_command(args: argparse.Namespace, settings: Settings) -> int:
    from core.store.factory import StateBackend

    backend = StateBackend.from_settings(settings)
    if not backend.is_redis and not (settings.data_path / "journal.sqlite3").exists():
        print(f"no journal at {settings.data_path / 'journal.sqlite3'} (DATA_DIR={settings.data_dir})", file=sys.stderr)
        return 1
    journal = backend.journal()
    try:
        if args.journal_action == "list":
            rows = await journal.list(limit=args.limit, state=args.state)
            if args.json:
                for row in rows:
                    row.pop("body_hash", None)
                    print(json.dumps(row, default=str))
            else:
                print(
                    f"{'ALERT':<48} {'STATE':<10} {'ACCOUNT':<10} {'SYMBOL':<16} {'SIDE':<6} {'AMOUNT':<12} "
                    f"{'RECEIVED':<20} ERROR"
                )
                for row in rows:
                    print(
                        f"{row['alert_id']:<48} {row['state']:<10} {row['account'] or '-':<10} {row['symbol']:<16} "
                        f"{row['side']:<6} {row['amount'] or '':<12} {_when(row.get('received_at')):<20} "
                        f"{row['error_code'] or ''}"
                    )
        elif args.journal_action == "show":
            alert = await journal.get(args.alert_id)
            if alert is None:
                print(f"no alert {args.alert_id}", file=sys.stderr)
                return 1
            alert.pop("body_hash", None)
            print(json.dumps(alert, indent=2, default=str))
        elif args.journal_action == "upgrade":
            return await _upgrade(journal, force=args.force)
        else:
            print(json.dumps(await journal.stats(), indent=2))
    finally:
        await journal.aclose()
        await backend.aclose()
    return 0


# A worker that heartbeat this recently may still be running (a stopped one removes its row).
RUNNING_WITHIN = 120.0


async def _upgrade(journal: Any, *, force: bool) -> int:
    """Rebuild the orders table of a SQLite journal made before it lost AUTOINCREMENT (one
    page fewer written per alert). It holds the journal's write lock throughout, so it is
    refused while a worker heartbeats, unless ``force``."""
    from core.store.sqlite.journal import SqliteJournal

    if not isinstance(journal, SqliteJournal):
        print("nothing to upgrade: the journal is on Redis")
        return 0
    running = await journal.workers_seen_since(time.time() - RUNNING_WITHIN)
    if running and not force:
        print(
            f"error: {running} worker(s) heartbeat in the last {RUNNING_WITHIN:.0f} s: stop the server first"
            " (the rebuild holds the journal's write lock; --force to go on anyway)",
            file=sys.stderr,
        )
        return 1
    started = time.monotonic()
    if await journal.rebuild_orders():
        print(f"orders table rebuilt without AUTOINCREMENT in {time.monotonic() - started:.1f} s")
    else:
        print("the journal is up to date")
    return 0


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(journal_command(args, load_settings()))


def register(sub: argparse._SubParsersAction[Any]) -> None:
    journal = sub.add_parser("journal", help="inspect the journal of alerts and orders", description=__doc__)
    actions = journal.add_subparsers(dest="journal_action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the newest alerts, newest first")
    listing.add_argument("--state", help="only alerts in this state (filled, rejected, unknown, ...)")
    listing.add_argument("--limit", type=_positive, default=50, metavar="N", help="at most N alerts (default 50)")
    listing.add_argument("--json", action="store_true", help="one JSON object per alert and line")
    show = actions.add_parser("show", help="one alert with its orders, as JSON")
    show.add_argument("alert_id", help="the alert's id as listed (the journal's, principal-scoped for tokens)")
    actions.add_parser("stats", help="counts of alerts and orders by state, duplicates and unfinished, as JSON")
    upgrade = actions.add_parser(
        "upgrade",
        help="rebuild an earlier version's SQLite orders table (the server stopped)",
        description="Rebuild the orders table of a SQLite journal made by an earlier version without"
        " AUTOINCREMENT, every attempt kept with its id: one page fewer written per alert. It holds the"
        " journal's write lock throughout (about 20 s per million attempts) and needs as much free disk"
        " as the table takes; refused while a worker heartbeats.",
    )
    upgrade.add_argument("--force", action="store_true", help="go on although a worker heartbeat recently")
    for action in actions.choices.values():
        action.set_defaults(handler=_run)
