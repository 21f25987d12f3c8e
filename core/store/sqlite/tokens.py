"""The ``TokenStore`` in ``DATA_DIR/tokens.sqlite3``: shared by the server's processes and
``manage_tokens.py`` on the same DATA_DIR (``core.store.tokens`` says what a token is)."""

from __future__ import annotations

import builtins
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.store.sqlite.database import SqliteDatabase, transaction
from core.store.tokens import (
    ID_LENGTH,
    TokenInfo,
    check_issue,
    check_scopes,
    hash_token,
    is_token_id,
    join_accounts,
    new_token,
    split_accounts,
)

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


def _info(row: Mapping[str, Any]) -> TokenInfo:
    return TokenInfo(
        id=row["token_hash"][:ID_LENGTH],
        label=row["label"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        accounts=split_accounts(row["accounts"]),
        scopes=split_accounts(row["scopes"]),
    )


def _add_accounts_column(conn: sqlite3.Connection) -> None:
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
        digest, now = hash_token(token), self._clock()
        await self._migrate()

        def insert(conn: sqlite3.Connection) -> TokenInfo:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO tokens (token_hash, label, created_at, expires_at, accounts, scopes) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (digest, label, now, now + ttl, join_accounts(accounts), join_accounts(scopes)),
                )
                return _info(conn.execute("SELECT * FROM tokens WHERE token_hash = ?", (digest,)).fetchone())

        return token, await self.db.run(insert)

    async def verify(self, token: str) -> TokenInfo | None:
        digest = hash_token(token)  # always hashed: every presented value costs the same
        await self._migrate()

        def check(conn: sqlite3.Connection) -> TokenInfo | None:
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

        def delete(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                return conn.execute("DELETE FROM tokens WHERE token_hash = ?", (digest,)).rowcount > 0

        return await self.db.run(delete)

    async def revoke_id(self, token_id: str) -> bool:
        if not is_token_id(token_id):
            return False

        def delete(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                rows = conn.execute(
                    "SELECT token_hash FROM tokens WHERE substr(token_hash, 1, ?) = ?", (ID_LENGTH, token_id)
                ).fetchall()
                if len(rows) != 1:  # 48 bits make a clash unlikely; never revoke a guess
                    return False
                conn.execute("DELETE FROM tokens WHERE token_hash = ?", (rows[0][0],))
                return True

        return await self.db.run(delete)

    async def close(self) -> None:
        self.db.close()

    async def list(self) -> builtins.list[TokenInfo]:
        await self._migrate()
        rows = await self.db.run(
            lambda conn: conn.execute("SELECT * FROM tokens ORDER BY created_at, token_hash").fetchall()
        )
        return [_info(row) for row in rows]
