"""The ``RiskStore`` on SQLite: halts, flattens and day baselines in ``DATA_DIR/risk.sqlite3``,
order counts (changed on every opening order) in ``risk-counts.sqlite3`` next to it.
Every read-then-write step is one ``BEGIN IMMEDIATE`` transaction: atomic across processes."""

from __future__ import annotations

import json
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

from core.store.risk import FlattenRecord, HaltRecord
from core.store.sqlite.database import SqliteDatabase, transaction
from core.store.states import OPEN_FLATTEN_STATES

SCHEMA = """
CREATE TABLE IF NOT EXISTS halts (
    account TEXT PRIMARY KEY,
    record  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flattens (
    flatten_id   TEXT PRIMARY KEY,
    record       TEXT NOT NULL,
    state        TEXT NOT NULL,
    owner        TEXT,
    heartbeat_at REAL NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS order_counts (
    key TEXT NOT NULL,
    at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS order_counts_key ON order_counts(key, at);
CREATE TABLE IF NOT EXISTS baselines (
    account TEXT NOT NULL,
    day     TEXT NOT NULL,
    equity  TEXT NOT NULL,
    PRIMARY KEY (account, day)
);
"""


class SqliteRiskStore:
    """A ``RiskStore`` in ``DATA_DIR/risk.sqlite3`` (order counts in ``risk-counts.sqlite3``)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.db = SqliteDatabase(path, schema=SCHEMA)
        # Order counts change on every opening order and matter for a minute: committed
        # without an fsync (WAL, synchronous NORMAL survives a crash of the process).
        self.counts = SqliteDatabase(path.with_name(path.stem + "-counts.sqlite3"), schema=SCHEMA, synchronous="NORMAL")

    async def aclose(self) -> None:
        self.db.close()
        self.counts.close()

    async def halts(self) -> dict[str, HaltRecord]:
        rows = await self.db.run(
            lambda conn: conn.execute("SELECT account, record FROM halts").fetchall(), read_only=True
        )
        return {r["account"]: json.loads(r["record"]) for r in rows}

    async def set_halt(self, account: str, record: HaltRecord) -> None:
        text = json.dumps(record)
        await self.db.run(
            lambda conn: conn.execute(
                "INSERT INTO halts (account, record) VALUES (?, ?)"
                " ON CONFLICT(account) DO UPDATE SET record = excluded.record",
                (account, text),
            )
        )

    async def clear_halt(self, account: str | None) -> list[str]:
        def clear(conn: sqlite3.Connection) -> list[str]:
            with transaction(conn):
                if account is None:
                    names = [r[0] for r in conn.execute("SELECT account FROM halts")]
                    conn.execute("DELETE FROM halts")
                    return names
                return [account] if conn.execute("DELETE FROM halts WHERE account = ?", (account,)).rowcount else []

        return await self.db.run(clear)

    async def save_flatten(self, record: FlattenRecord) -> None:
        text = json.dumps(record)
        await self.db.run(
            lambda conn: conn.execute(
                "INSERT INTO flattens (flatten_id, record, state, owner, heartbeat_at, created_at)"
                " VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(flatten_id) DO UPDATE SET record = excluded.record, state = excluded.state, "
                "owner = excluded.owner, heartbeat_at = excluded.heartbeat_at",
                (
                    record["flatten_id"],
                    text,
                    record["state"],
                    record.get("owner"),
                    record.get("heartbeat_at") or 0,
                    record["requested_at"],
                ),
            )
        )

    async def flattens(self, *, open_only: bool = False, limit: int = 20) -> list[FlattenRecord]:
        states: tuple[str, ...] = OPEN_FLATTEN_STATES if open_only else ()
        where = f"WHERE state IN ({', '.join('?' * len(states))})" if states else ""
        rows = await self.db.run(
            lambda conn: conn.execute(
                f"SELECT record FROM flattens {where} ORDER BY created_at DESC LIMIT ?", (*states, limit)
            ).fetchall(),
            read_only=True,
        )
        return [json.loads(r["record"]) for r in rows]

    async def claim_flatten(self, flatten_id: str, owner: str, stale_after: float) -> FlattenRecord | None:
        """Take (or renew) the lease of an open flatten: when nobody holds it, we hold it, or
        its holder stopped heartbeating. Atomic across processes."""
        now = time.time()

        def claim(conn: sqlite3.Connection) -> FlattenRecord | None:
            with transaction(conn):
                row = conn.execute(
                    "SELECT record, state, owner, heartbeat_at FROM flattens WHERE flatten_id = ?", (flatten_id,)
                ).fetchone()
                if row is None or row["state"] not in OPEN_FLATTEN_STATES:
                    return None
                if row["owner"] not in (None, owner) and row["heartbeat_at"] >= now - stale_after:
                    return None
                record: FlattenRecord = json.loads(row["record"]) | {"owner": owner, "heartbeat_at": now}
                conn.execute(
                    "UPDATE flattens SET owner = ?, heartbeat_at = ?, record = ? WHERE flatten_id = ?",
                    (owner, now, json.dumps(record), flatten_id),
                )
                return record

        return await self.db.run(claim)

    async def count_order(self, key: str, limit: int, window: float) -> tuple[bool, int]:
        """Count one order of ``key`` if fewer than ``limit`` were counted in the last
        ``window`` seconds: (counted, how many there were before)."""
        now = time.time()

        def hit(conn: sqlite3.Connection) -> tuple[bool, int]:
            with transaction(conn):
                conn.execute("DELETE FROM order_counts WHERE key = ? AND at <= ?", (key, now - window))
                seen = conn.execute("SELECT COUNT(*) FROM order_counts WHERE key = ?", (key,)).fetchone()[0]
                if seen >= limit:
                    return False, seen
                conn.execute("INSERT INTO order_counts (key, at) VALUES (?, ?)", (key, now))
                return True, seen

        return await self.counts.run(hit)

    async def recent_orders(self, key: str, window: float) -> int:
        """How many orders of ``key`` were counted in the last ``window`` seconds (a read;
        counts nothing)."""
        since = time.time() - window
        row = await self.counts.run(
            lambda conn: conn.execute(
                "SELECT COUNT(*) FROM order_counts WHERE key = ? AND at > ?", (key, since)
            ).fetchone(),
            read_only=True,
        )
        return int(row[0])

    async def baseline(self, account: str, day: str, equity: Decimal) -> Decimal:
        def once(conn: sqlite3.Connection) -> str:
            with transaction(conn):
                conn.execute(
                    "INSERT OR IGNORE INTO baselines (account, day, equity) VALUES (?,?,?)", (account, day, str(equity))
                )
                conn.execute("DELETE FROM baselines WHERE day < ?", (day[:8] + "00",))  # keep this month's
                return str(
                    conn.execute(
                        "SELECT equity FROM baselines WHERE account = ? AND day = ?", (account, day)
                    ).fetchone()[0]
                )

        return Decimal(await self.db.run(once))
