"""Tokens for token mode (TradingView cannot sign), whatever store holds them.

A token is ``secrets.token_urlsafe(32)`` (256 random bits, URL-safe). Only its SHA-256
is stored; the token itself is shown once, when it is issued. Verification hashes the
presented value and does one lookup by that hash, whatever the value is, so unknown,
revoked and expired tokens cost the same; an expired token is deleted when it is
presented. Nothing is cached: a revocation applies to the next request of a running server.

**Accounts.** A token trades only on the accounts it was issued for (``issue --account NAME``,
repeatable; ``*`` for every account); a token issued without one trades only the default
account. What that means for a request is the token plugin's (``plugins.auth.token_auth``).

**Scopes.** What a token may do beyond sending alerts: ``issue --control`` gives it the
``control`` scope, the kill switch (``POST /control/halt|flatten|resume|status``) for the
accounts it is scoped to. ``KNOWN_SCOPES`` lists the scopes there are; any other is refused
when issuing. A token stored before scopes existed has none.

This module holds what every ``TokenStore`` (``core.store.protocols``) shares: the token
format, the checks made when issuing, and ``TokenInfo``. The stores are
``core.store.sqlite.tokens`` (``DATA_DIR/tokens.sqlite3``, shared by the server's
processes and ``manage_tokens.py``) and ``core.store.redis.tokens`` (several machines).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

TOKEN_BYTES = 32  # 256 bits; the issue asks for at least 128
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
ID_LENGTH = 12  # hex characters of the token's hash shown as its id
ACCOUNT_PATTERN = re.compile(
    r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$"
)  # an account name (core.pipeline.models), or * for all
ALL_ACCOUNTS = "*"
CONTROL_SCOPE = "control"  # POST /control/*: the kill switch (core.pipeline.router.Router.control)
KNOWN_SCOPES = frozenset({CONTROL_SCOPE})

TOKEN_ID = re.compile(rf"[0-9a-f]{{{ID_LENGTH}}}")  # an id as listed


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    """A fresh URL-safe token. Never one beginning with '-', which shells and argument
    parsers take for an option (``manage_tokens.py revoke`` accepts one all the same)."""
    while True:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if not token.startswith("-"):
            return token


def check_issue(ttl: float, label: str | None, accounts: tuple[str, ...] = ()) -> tuple[str, ...]:
    """What every store refuses to issue: a lifetime not above 0, a label or an account off
    the pattern. The accounts as stored: lower-cased, sorted, once each."""
    if ttl <= 0:
        raise ValueError("ttl must be a positive number of seconds")
    if label is not None and not LABEL_PATTERN.match(label):
        raise ValueError("label must be 1-64 letters, digits or _ . : @ - (starting with a letter or digit)")
    for account in accounts:
        if not ACCOUNT_PATTERN.match(account):
            raise ValueError(f"account {account!r}: 1-64 letters, digits or _ . - (or * for every account)")
    return tuple(sorted({a.lower() for a in accounts}))


def check_scopes(scopes: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The scopes as stored (sorted, once each); ``ValueError`` naming an unknown one."""
    unknown = sorted({s for s in scopes if s not in KNOWN_SCOPES})
    if unknown:
        raise ValueError(
            f"unknown scope(s) {', '.join(repr(u[:32]) for u in unknown)}: "
            f"known scopes are {', '.join(sorted(KNOWN_SCOPES))}"
        )
    return tuple(sorted(set(scopes)))


def join_accounts(accounts: tuple[str, ...]) -> str | None:
    return ",".join(accounts) or None


def split_accounts(stored: str | None) -> tuple[str, ...]:
    return tuple(a for a in (stored or "").split(",") if a)


@dataclass(frozen=True)
class TokenInfo:
    """What is known of a token without the token: for listings and authentication."""

    id: str  # the first hex characters of its hash
    label: str | None
    created_at: float
    expires_at: float
    last_used_at: float | None
    accounts: tuple[str, ...] = ()  # what it may trade on; () the default account, ("*",) every one
    scopes: tuple[str, ...] = ()  # what else it may do (KNOWN_SCOPES): ("control",) the kill switch


def is_token_id(token_id: str) -> bool:
    """Whether ``token_id`` has the form of an id as listed (``revoke_id`` never revokes a guess)."""
    return TOKEN_ID.fullmatch(token_id) is not None
