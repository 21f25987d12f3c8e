"""Tokens for token mode (TradingView cannot sign): issued, verified, revoked, listed.

A token is ``secrets.token_urlsafe(32)`` (256 random bits, URL-safe). Only its SHA-256
is stored; the token itself is shown once, when it is issued. Verification hashes the
presented value and does one indexed lookup, whatever the value is, so unknown, revoked
and expired tokens cost the same; an expired token is deleted when it is presented.
Nothing is cached: a revocation applies to the next request of a running server.

**Scope.** A token trades only on the accounts it was issued for (``issue --account NAME``,
repeatable; ``*`` for every account); a token issued without one trades only the default
account. Its principal (``token:<label or id>``) also namespaces its alert ids: two
tokens may use the same id, and ``GET /alerts/<id>`` shows a token only its own alerts.

**Scopes.** What a token may do beyond sending alerts: ``issue --control`` gives it the
``control`` scope, the kill switch (``POST /control/halt|flatten|resume|status``) for the
accounts it is scoped to. ``KNOWN_SCOPES`` lists the scopes there are; any other is refused
when issuing. A token stored before scopes existed has none.

``SqliteTokenStore`` keeps the hashes in ``DATA_DIR/tokens.sqlite3``, shared by the
server's processes and ``manage_tokens.py``; a Redis implementation of ``TokenStore``
serves several machines.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core.store.sqlite.database import SqliteDatabase, transaction

TOKEN_BYTES = 32  # 256 bits; the issue asks for at least 128
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
ID_LENGTH = 12  # hex characters of the token's hash shown as its id
ACCOUNT_PATTERN = re.compile(
    r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$"
)  # an account name (core.pipeline.models), or * for all
ALL_ACCOUNTS = "*"
CONTROL_SCOPE = "control"  # POST /control/*: the kill switch (core.pipeline.router.Router.control)
KNOWN_SCOPES = frozenset({CONTROL_SCOPE})

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_hash   TEXT PRIMARY KEY,  -- sha256 hex of the token; the token is never stored
    label        TEXT,
    created_at   REAL NOT NULL,
    expires_at   REAL NOT NULL,
    last_used_at REAL,
    accounts     TEXT,  -- comma-separated account names it may trade on; NULL: the default account
    scopes       TEXT   -- comma-separated scopes (KNOWN_SCOPES) beyond sending alerts; NULL: none
) WITHOUT ROWID;
"""


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
    """What is known of a token without the token: for listings and principals."""

    id: str  # the first hex characters of its hash
    label: str | None
    created_at: float
    expires_at: float
    last_used_at: float | None
    accounts: tuple[str, ...] = ()  # what it may trade on; () the default account, ("*",) every one
    scopes: tuple[str, ...] = ()  # what else it may do (KNOWN_SCOPES): ("control",) the kill switch

    @property
    def principal(self) -> str:
        """Who authenticated, for the journal and per-principal rate limits."""
        return f"token:{self.label or self.id}"

    @property
    def scope(self) -> frozenset[str] | None:
        """``AuthResult.accounts``: None for every account, else the names (empty: the default)."""
        return None if ALL_ACCOUNTS in self.accounts else frozenset(self.accounts)


class TokenStore(Protocol):
    async def issue(
        self,
        *,
        ttl: float,
        label: str | None = None,
        token: str | None = None,
        accounts: tuple[str, ...] = (),
        scopes: tuple[str, ...] = (),
    ) -> tuple[str, TokenInfo]:
        """Store a new token (``token`` imports a given one) valid for ``ttl`` seconds and
        for ``accounts`` (none: the default account; ``*``: every one), with ``scopes``
        (``KNOWN_SCOPES``; an unknown one is a ``ValueError``); the token and its info."""

    async def verify(self, token: str) -> TokenInfo | None:
        """The token's info if it is known and not expired (its last use recorded);
        ``None`` otherwise. An expired token is deleted."""

    async def revoke(self, token: str) -> bool:
        """Delete the token; whether it existed."""

    async def revoke_id(self, token_id: str) -> bool:
        """Delete the token with this id (as listed); whether one existed."""

    async def list(self) -> list[TokenInfo]:
        """Every stored token, oldest first (expired ones not yet removed included)."""

    async def close(self) -> None:
        """Release the store's resources."""


def _info(row) -> TokenInfo:
    return TokenInfo(
        id=row["token_hash"][:ID_LENGTH],
        label=row["label"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        accounts=split_accounts(row["accounts"]),
        scopes=split_accounts(row["scopes"]),
    )


def _add_accounts_column(conn) -> None:
    """Token files from before accounts or scopes: their tokens keep NULL (the default
    account only; no scopes)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(tokens)")}
    for column in ("accounts", "scopes"):
        if column not in columns:
            conn.execute(f"ALTER TABLE tokens ADD COLUMN {column} TEXT")


class SqliteTokenStore:
    """A ``TokenStore`` in one SQLite file.

    ``synchronous``: the server verifies with NORMAL (a last-use time lost to a power cut
    does not matter); ``manage_tokens.py`` issues and revokes with FULL, which makes its
    commit durable the moment it returns.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time, synchronous: str = "FULL"):
        self.db = SqliteDatabase(path, synchronous=synchronous, schema=SCHEMA)
        self._clock = clock
        self._migrated = False

    async def _migrate(self) -> None:
        if not self._migrated:
            await self.db.run(_add_accounts_column)
            self._migrated = True

    async def issue(
        self,
        *,
        ttl: float,
        label: str | None = None,
        token: str | None = None,
        accounts: tuple[str, ...] = (),
        scopes: tuple[str, ...] = (),
    ) -> tuple[str, TokenInfo]:
        accounts = check_issue(ttl, label, accounts)
        scopes = check_scopes(scopes)
        token = token or new_token()
        now = self._clock()
        await self._migrate()

        def insert(conn) -> TokenInfo:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO tokens (token_hash, label, created_at, expires_at, accounts, scopes) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (hash_token(token), label, now, now + ttl, join_accounts(accounts), join_accounts(scopes)),
                )
                return _info(conn.execute("SELECT * FROM tokens WHERE token_hash = ?", (hash_token(token),)).fetchone())

        return token, await self.db.run(insert)

    async def verify(self, token: str) -> TokenInfo | None:
        digest = hash_token(token)  # always hashed: every presented value costs the same
        await self._migrate()

        def check(conn) -> TokenInfo | None:
            now = self._clock()
            with transaction(conn):
                row = conn.execute("SELECT * FROM tokens WHERE token_hash = ?", (digest,)).fetchone()
                if row is None:
                    return None
                if row["expires_at"] <= now:
                    conn.execute("DELETE FROM tokens WHERE token_hash = ?", (digest,))
                    return None
                conn.execute("UPDATE tokens SET last_used_at = ? WHERE token_hash = ?", (now, digest))
                return _info({**dict(row), "last_used_at": now})

        return await self.db.run(check)

    async def revoke(self, token: str) -> bool:
        digest = hash_token(token)

        def delete(conn) -> bool:
            with transaction(conn):
                return conn.execute("DELETE FROM tokens WHERE token_hash = ?", (digest,)).rowcount > 0

        return await self.db.run(delete)

    async def revoke_id(self, token_id: str) -> bool:
        if not re.fullmatch(r"[0-9a-f]{%d}" % ID_LENGTH, token_id):
            return False

        def delete(conn) -> bool:
            with transaction(conn):
                rows = conn.execute(
                    "SELECT token_hash FROM tokens WHERE substr(token_hash, 1, ?) = ?", (ID_LENGTH, token_id)
                ).fetchall()
                if len(rows) != 1:  # 48 bits make a clash unlikely; never revoke a guess
                    return False
                conn.execute("DELETE FROM tokens WHERE token_hash = ?", (rows[0][0],))
                return True

        return await self.db.run(delete)

    async def list(self) -> list[TokenInfo]:
        await self._migrate()
        rows = await self.db.run(
            lambda conn: conn.execute("SELECT * FROM tokens ORDER BY created_at, token_hash").fetchall()
        )
        return [_info(row) for row in rows]

    async def close(self) -> None:
        self.db.close()
