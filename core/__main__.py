"""Command line: ``python -m core <command>``.

    init-env                 write .env from .env.example with a random WEBHOOK_SECRET and
                             METRICS_TOKEN (only when .env does not exist)
    journal list [--state S] [--limit N]
    journal show <alert_id>
    journal stats
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


def init_env(path: Path = Path(".env"), example: Path = Path(".env.example")) -> bool:
    """Create ``.env`` with a fresh WEBHOOK_SECRET and METRICS_TOKEN; leave an existing one alone.

    The file is 0600 from its first byte: written whole to a temporary file created 0600,
    then linked into place, which fails rather than replace a ``.env`` made meanwhile."""
    if path.exists():
        return False
    lines = example.read_text(encoding="utf-8").splitlines() if example.exists() else ["WEBHOOK_SECRET=", "DEFAULT_EXCHANGE=paper"]
    fresh = {"WEBHOOK_SECRET": secrets.token_hex(32), "METRICS_TOKEN": secrets.token_urlsafe(32)}
    out = [f"{line.split('=', 1)[0]}={fresh[line.split('=', 1)[0]]}" if line.split("=", 1)[0] in fresh and "=" in line else line
           for line in lines]
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
            return False
    finally:
        temporary.unlink(missing_ok=True)
    return True


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="ccxt-trading-webhook tools")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init-env", help="write .env with a random WEBHOOK_SECRET and METRICS_TOKEN if it does not exist")
    journal = sub.add_parser("journal", help="inspect the journal of alerts and orders")
    jsub = journal.add_subparsers(dest="action", required=True)
    listing = jsub.add_parser("list")
    listing.add_argument("--state")
    listing.add_argument("--limit", type=int, default=50)
    show = jsub.add_parser("show")
    show.add_argument("alert_id")
    jsub.add_parser("stats")
    args = parser.parse_args(argv)

    if args.command == "init-env":
        print("wrote .env with a new WEBHOOK_SECRET and METRICS_TOKEN" if init_env() else ".env exists; left as it is")
        return 0
    try:
        return asyncio.run(journal_command(args, Settings.from_env()))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
