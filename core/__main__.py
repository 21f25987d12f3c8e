"""Command line: ``python -m core <command>``.

    init-env                 write .env from .env.example with a random WEBHOOK_SECRET and
                             METRICS_TOKEN and DASHBOARD_PASSWORD (the password printed once;
                             only when .env does not exist)
    journal list [--state S] [--limit N]
    journal show <alert_id>
    journal stats
    risk halt [--account NAME] [--flatten] [--reason TEXT]
                             refuse new opening orders on one account (or all); with
                             --flatten also cancel every open order and close every
                             position (a running server does it within seconds)
    risk resume [--account NAME]
    risk status
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from pathlib import Path

from core.config import Settings
from core.errors import ConfigError
from core.state import StateBackend


def init_env(path: Path = Path(".env"), example: Path = Path(".env.example")) -> str | None:
    """Create ``.env`` with a fresh WEBHOOK_SECRET, METRICS_TOKEN and DASHBOARD_PASSWORD; leave
    an existing one alone. The dashboard password written, or None when ``.env`` existed.

    The file is 0600 from its first byte: written whole to a temporary file created 0600,
    then linked into place, which fails rather than replace a ``.env`` made meanwhile."""
    if path.exists():
        return None
    lines = example.read_text(encoding="utf-8").splitlines() if example.exists() else ["WEBHOOK_SECRET=", "DEFAULT_EXCHANGE=paper"]
    fresh = {"WEBHOOK_SECRET": secrets.token_hex(32), "METRICS_TOKEN": secrets.token_urlsafe(32),
             "DASHBOARD_PASSWORD": secrets.token_urlsafe(18)}
    out = [f"{line.split('=', 1)[0]}={fresh[line.split('=', 1)[0]]}" if line.split("=", 1)[0] in fresh and "=" in line else line
           for line in lines]
    out += [f"{name}={value}" for name, value in fresh.items() if not any(line.startswith(name + "=") for line in lines)]
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(out) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return None
    finally:
        temporary.unlink(missing_ok=True)
    return fresh["DASHBOARD_PASSWORD"]


async def journal_command(args: argparse.Namespace, settings: Settings) -> int:
    """The journal of this deployment's state backend (SQLite under DATA_DIR, or Redis)."""
    backend = StateBackend.from_settings(settings)
    if not backend.is_redis and not (settings.data_path / "journal.sqlite3").exists():
        print(f"no journal at {settings.data_path / 'journal.sqlite3'} (DATA_DIR={settings.data_dir})", file=sys.stderr)
        return 1
    journal = backend.journal()
    try:
        if args.action == "list":
            for row in await journal.list(limit=args.limit, state=args.state):
                print(f"{row['alert_id']:<48} {row['state']:<10} {row['account'] or '-':<10} {row['symbol']:<16} "
                      f"{row['side']:<6} {row['amount'] or '':<12} {row['error_code'] or ''}")
        elif args.action == "show":
            alert = await journal.get(args.alert_id)
            if alert is None:
                print(f"no alert {args.alert_id}", file=sys.stderr)
                return 1
            alert.pop("body_hash", None)
            print(json.dumps(alert, indent=2, default=str))
        else:
            print(json.dumps(await journal.stats(), indent=2))
    finally:
        await journal.aclose()
        await backend.aclose()
    return 0


async def risk_command(args: argparse.Namespace, settings: Settings) -> int:
    """The kill switch, through the state store every server of this deployment reads."""
    from core.risk_store import ALL, new_flatten_record

    backend = StateBackend.from_settings(settings)
    store = backend.risk_store()
    try:
        if args.action == "halt":
            import time

            account = (args.account or ALL).lower()
            await store.set_halt(account, {"reason": args.reason or ("flatten" if args.flatten else "halted from the command line"),
                                           "by": "cli", "since": time.time(), "until": None})
            print(f"halted {'every account' if account == ALL else account}")
            if args.flatten:
                record = new_flatten_record(args.account, by="cli")
                await store.save_flatten(record)
                print(f"flatten {record['flatten_id']} requested: a running server cancels every open order and closes "
                      f"every position; see `python -m core risk status`")
        elif args.action == "resume":
            cleared = await store.clear_halt(args.account.lower() if args.account else None)
            print(f"resumed {', '.join(cleared)}" if cleared else "nothing was halted")
        else:
            print(json.dumps({"halts": await store.halts(), "flattens": await store.flattens(limit=10)}, indent=2, default=str))
    finally:
        await store.aclose()
        await backend.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="ccxt-trading-webhook tools")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init-env", help="write .env with a random WEBHOOK_SECRET, METRICS_TOKEN and DASHBOARD_PASSWORD "
                                     "if it does not exist")
    journal = sub.add_parser("journal", help="inspect the journal of alerts and orders")
    jsub = journal.add_subparsers(dest="action", required=True)
    listing = jsub.add_parser("list")
    listing.add_argument("--state")
    listing.add_argument("--limit", type=int, default=50)
    show = jsub.add_parser("show")
    show.add_argument("alert_id")
    jsub.add_parser("stats")
    risk = sub.add_parser("risk", help="the kill switch: halt, flatten, resume, status")
    rsub = risk.add_subparsers(dest="action", required=True)
    halt = rsub.add_parser("halt", help="refuse new opening orders (all accounts unless --account)")
    halt.add_argument("--account")
    halt.add_argument("--flatten", action="store_true", help="also cancel every open order and close every position")
    halt.add_argument("--reason", default="")
    resume = rsub.add_parser("resume", help="lift a halt (every halt unless --account)")
    resume.add_argument("--account")
    rsub.add_parser("status")
    args = parser.parse_args(argv)

    if args.command == "init-env":
        password = init_env()
        if password is None:
            print(".env exists; left as it is")
        else:
            print("wrote .env with a new WEBHOOK_SECRET and METRICS_TOKEN")
            print(f"dashboard: /dashboard on this server, password {password} (shown once; it is DASHBOARD_PASSWORD in .env)")
        return 0
    command = risk_command if args.command == "risk" else journal_command
    try:
        return asyncio.run(command(args, Settings.from_env()))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
