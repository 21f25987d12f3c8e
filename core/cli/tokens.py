"""The tokens of token mode (TradingView's authentication): issue, revoke, list.

A token trades only on the accounts it is issued for: --account NAME, repeatable (--account
'*' for every account). A token issued without --account trades only the default account.
A token sees only its own alerts (GET /alerts/<id>), and its alert ids are its own.

--control also lets the token use the kill switch, POST /control/halt|flatten|resume|status
(the token in the JSON body: {"token": ..., "account": NAME}), on its accounts only: a token
scoped to some accounts names one; only a '*' token may halt every account. Without
--control a token gets 403 there.

Tokens are stored hashed (DATA_DIR/tokens.sqlite3, or Redis with STATE_URL); TOKEN_TTL is
the default lifetime. DATA_DIR, STATE_URL and TOKEN_TTL come from the environment and .env,
as for the server. It works while the server runs, and a running server honours a
revocation at its next request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.cli.common import PROG, load_settings

if TYPE_CHECKING:
    from core.config import Settings
    from core.store.protocols import TokenStore
    from core.store.tokens import TokenInfo

REVOKE_USAGE = f"usage: {PROG} tokens revoke <token> | - (read it from stdin) | --id <id>"


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label(value: str) -> str:
    from core.store.tokens import LABEL_PATTERN

    if not LABEL_PATTERN.match(value):
        raise argparse.ArgumentTypeError("1-64 letters, digits or _ . : @ -, starting with a letter or digit")
    return value


def _account(value: str) -> str:
    from core.store.tokens import ACCOUNT_PATTERN

    if not ACCOUNT_PATTERN.match(value):
        raise argparse.ArgumentTypeError("an account name (1-64 letters, digits or _ . -) or * for every account")
    return value


def _ttl(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a whole number of seconds") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be at least 1 second")
    return seconds


def _accounts(info: TokenInfo) -> str:
    return ",".join(info.accounts) or "(default)"


def _scopes(info: TokenInfo) -> str:
    return ",".join(getattr(info, "scopes", ())) or "-"


def _store(settings: Settings) -> TokenStore:
    """The deployment's token store: SQLite under DATA_DIR, or Redis with STATE_URL."""
    from core.store.factory import StateBackend

    store: TokenStore = StateBackend.from_settings(settings).token_store()
    return store


async def issue(
    settings: Settings, ttl: int | None, label: str | None, accounts: list[str] | None = None, control: bool = False
) -> int:
    from core.store.tokens import CONTROL_SCOPE

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
        f"expires {_when(info.expires_at)}; shown once: only its hash is stored",
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
        tokens = await store.list()
    finally:
        await store.close()
    now = time.time()
    print(f"{'ID':<14}{'LABEL':<24}{'ACCOUNTS':<24}{'SCOPES':<10}{'CREATED':<22}{'EXPIRES':<22}{'LAST USE':<22}")
    for info in tokens:
        expires = _when(info.expires_at) + (" (expired)" if info.expires_at <= now else "")
        print(
            f"{info.id:<14}{info.label or '-':<24}{_accounts(info):<24}{_scopes(info):<10}{_when(info.created_at):<22}"
            f"{expires:<22}{_when(info.last_used_at):<22}"
        )
    return 0


def parse_revoke(argv: list[str]) -> tuple[str | None, str | None]:
    """``revoke`` takes its one argument literally, so a token beginning with '-' works as
    printed (argparse would read it as an option); ``--`` before it is allowed too.
    (token, None), or (None, id) for ``--id ID``; '-' reads the token from stdin."""
    args = argv[1:] if argv[:1] == ["--"] else argv
    if len(args) == 2 and args[0] == "--id":
        return None, args[1]
    if len(args) != 1 or args[0] in ("-h", "--help", "--id"):
        raise SystemExit(REVOKE_USAGE)
    if args[0] == "-":
        return sys.stdin.readline().strip(), None
    return args[0], None


def revoke_literally(argv: list[str]) -> int:
    """``tokens revoke ...`` before argparse sees it (``-h``/``--help`` alone go to argparse)."""
    token, token_id = parse_revoke(argv)
    return asyncio.run(revoke(load_settings(), token, token_id))


def _issue(args: argparse.Namespace) -> int:
    return asyncio.run(issue(load_settings(), args.ttl, args.label, args.account, args.control))


def _revoke(args: argparse.Namespace) -> int:  # only reached for a lone -h (argparse exits) or no argument
    return revoke_literally(list(args.rest))


def _list(args: argparse.Namespace) -> int:
    return asyncio.run(list_tokens(load_settings()))


def register(sub: argparse._SubParsersAction[Any]) -> None:
    tokens = sub.add_parser(
        "tokens",
        help="issue, revoke and list the tokens of token mode",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = tokens.add_subparsers(dest="tokens_action", required=True, metavar="ACTION")
    issuing = actions.add_parser("issue", help="print a new token, once")
    issuing.add_argument("--ttl", type=_ttl, metavar="SECONDS", help="lifetime in seconds (default: TOKEN_TTL)")
    issuing.add_argument(
        "--label", type=_label, metavar="NAME", help="a name for the token, shown by list and in the journal"
    )
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
    issuing.set_defaults(handler=_issue)
    revoking = actions.add_parser(
        "revoke",
        help="revoke a token: <token>, - (read from stdin) or --id <id>",
        description="Revoke a token. The argument is taken literally, so a token beginning with '-' works "
        "as printed; '-' reads the token from stdin (kept out of shell history); --id ID revokes by the id "
        "that list shows.",
        usage=REVOKE_USAGE.removeprefix("usage: "),
    )
    revoking.add_argument("rest", nargs="*", metavar="TOKEN | - | --id ID", help="what to revoke")
    revoking.set_defaults(handler=_revoke)
    listing = actions.add_parser(
        "list", help="id, label, accounts, scopes, created, expires and last use of every token (never the token)"
    )
    listing.set_defaults(handler=_list)
