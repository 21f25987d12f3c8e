#!/usr/bin/env python3
"""Issue, revoke and list the tokens of token mode (TradingView's authentication).

    python manage_tokens.py issue [--ttl SECONDS] [--label NAME] [--account NAME ...] [--control]
                                                                   prints a new token, once
    python manage_tokens.py revoke <token>                         also one beginning with '-'
    python manage_tokens.py revoke -                               reads the token from stdin
    python manage_tokens.py revoke --id <id>                       by the id shown by list
    python manage_tokens.py list                                   id, label, accounts, scopes, created, expires, last use

A token trades only on the accounts it is issued for: --account NAME, repeatable (--account
'*' for every account). A token issued without --account trades only the default account.
A token sees only its own alerts (GET /alerts/<id>), and its alert ids are its own: another
sender using the same id does not touch them.

--control also lets the token use the kill switch, POST /control/halt|flatten|resume|status
(the token in the JSON body: {"token": ..., "account": NAME}), on its accounts only: a token
scoped to some accounts names one ("account": NAME); only a '*' token may halt every account.
For a TradingView alert or a chat-bot relay that halts trading. Without --control a token
gets 403 there.

Tokens are stored hashed in DATA_DIR/tokens.sqlite3; TOKEN_TTL is the default lifetime.
DATA_DIR and TOKEN_TTL come from the environment and .env, as for the server. It works
while the server runs, and a running server honours a revocation at its next request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime

from core.config import Settings
from core.errors import ConfigError
from core.store.factory import StateBackend
from core.store.protocols import TokenStore
from core.store.tokens import ACCOUNT_PATTERN, CONTROL_SCOPE, LABEL_PATTERN, TokenInfo

USAGE = __doc__


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label(value: str) -> str:
    if not LABEL_PATTERN.match(value):
        raise argparse.ArgumentTypeError("1-64 letters, digits or _ . : @ -, starting with a letter or digit")
    return value


def _account(value: str) -> str:
    if not ACCOUNT_PATTERN.match(value):
        raise argparse.ArgumentTypeError("an account name (1-64 letters, digits or _ . -) or * for every account")
    return value


def _accounts(info: TokenInfo) -> str:
    return ",".join(info.accounts) or "(default)"


def _scopes(info: TokenInfo) -> str:
    return ",".join(getattr(info, "scopes", ())) or "-"


def _ttl(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a whole number of seconds") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be at least 1 second")
    return seconds


def _store(settings: Settings) -> TokenStore:
    """The deployment's token store: SQLite under DATA_DIR, or Redis with STATE_URL."""
    return StateBackend.from_settings(settings).token_store()


async def issue(
    settings: Settings, ttl: int | None, label: str | None, accounts: list[str] | None = None, control: bool = False
) -> int:
    store = _store(settings)
    try:
        token, info = await store.issue(
            ttl=ttl or settings.token_ttl,
            label=label,
            accounts=tuple(accounts or ()),
            scopes=(CONTROL_SCOPE,) if control else (),
        )
    finally:
        await store.close()
    print(token)
    print(
        f"id {info.id}, label {info.label or '-'}, accounts {_accounts(info)}, scopes {_scopes(info)}, "
        f"expires {_when(info.expires_at)}; "
        "shown once: only its hash is stored",
        file=sys.stderr,
    )
    return 0


async def revoke(settings: Settings, token: str | None, token_id: str | None) -> int:
    store = _store(settings)
    try:
        done = await store.revoke_id(token_id) if token_id is not None else await store.revoke(token or "")
    finally:
        await store.close()
    if not done:
        print("no such token (already revoked, expired and removed, or never issued here)", file=sys.stderr)
        return 1
    print("revoked")
    return 0


async def list_tokens(settings: Settings) -> int:
    store = _store(settings)
    try:
        tokens: list[TokenInfo] = await store.list()
    finally:
        await store.close()
    now = time.time()
    print(f"{'ID':<14}{'LABEL':<24}{'ACCOUNTS':<24}{'SCOPES':<10}{'CREATED':<22}{'EXPIRES':<22}{'LAST USE':<22}")
    for info in tokens:
        expires = _when(info.expires_at) + (" (expired)" if info.expires_at <= now else "")
        print(
            f"{info.id:<14}{info.label or '-':<24}{_accounts(info):<24}{_scopes(info):<10}{_when(info.created_at):<22}"
            f"{expires:<22}"
            f"{_when(info.last_used_at):<22}"
        )
    return 0


def parse_revoke(argv: list[str]) -> tuple[str | None, str | None]:
    """``revoke`` takes its one argument literally, so a token beginning with '-' works as
    printed (argparse would read it as an option); ``--`` before it is allowed too."""
    args = argv[1:] if argv[:1] == ["--"] else argv
    if len(args) == 2 and args[0] == "--id":
        return None, args[1]
    if len(args) != 1 or args[0] in ("-h", "--help", "--id"):
        raise SystemExit("usage: python manage_tokens.py revoke <token> | - (read it from stdin) | --id <id>")
    if args[0] == "-":
        return sys.stdin.readline().strip(), None
    return args[0], None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python manage_tokens.py", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    issuing = sub.add_parser("issue", help="print a new token")
    issuing.add_argument("--ttl", type=_ttl, help="lifetime in seconds (default: TOKEN_TTL)")
    issuing.add_argument("--label", type=_label, help="a name for the token, shown by list and in the journal")
    issuing.add_argument(
        "--account",
        type=_account,
        action="append",
        metavar="NAME",
        help="an account the token may trade on (repeatable; '*' for every account); "
        "without it: the default account only",
    )
    issuing.add_argument(
        "--control",
        action="store_true",
        help="the token may also use the kill switch (POST /control/*) on its accounts",
    )
    sub.add_parser("revoke", help="revoke a token: <token>, - (stdin) or --id <id>")
    sub.add_parser(
        "list", help="show label, accounts, scopes, created, expires and last use of every token (never the token)"
    )
    if argv[:1] == ["revoke"]:
        command, rest = "revoke", argv[1:]
    else:
        args = parser.parse_args(argv)
        command, rest = args.command, []
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if command == "issue":
        return asyncio.run(issue(settings, args.ttl, args.label, args.account, args.control))
    if command == "revoke":
        token, token_id = parse_revoke(rest)
        return asyncio.run(revoke(settings, token, token_id))
    return asyncio.run(list_tokens(settings))


if __name__ == "__main__":
    raise SystemExit(main())
