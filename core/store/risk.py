"""Where the kill switch and the risk limits keep their shared state: SQLite or Redis.

Chosen by the state backend (``StateBackend.risk_store()``), like the journal:

* **halts** — account (or ``*`` for every account) → who halted it, why, since when and,
  for a daily-loss halt, until when. Read on every opening order (one indexed read on
  SQLite, one ``HGETALL`` of a small hash on Redis), so a halt set by any worker, the
  CLI or another machine on the same Redis is obeyed by the next order everywhere, and
  survives restarts.
* **flattens** — each flatten's request and progress, claimed by one worker at a time
  through a lease (owner + heartbeat), so an unfinished flatten is completed by another
  worker or by the next start after a crash.
* **order counts** — a sliding one-minute window per account, checked and counted in one
  atomic step (a transaction / a Lua script), so ``max_orders_per_minute`` holds across
  workers.
* **day baselines** — an account's equity when first read in a UTC day (set once).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from core.store.sqlite.database import SqliteDatabase, transaction

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

OPEN_FLATTEN_STATES = ("pending", "running")
ALL = "*"  # the halt of every account


def new_flatten_record(account: str | None, *, by: str) -> dict[str, Any]:
    """A flatten request: run by the worker that claims it (``claim_flatten``)."""
    return {
        "flatten_id": uuid.uuid4().hex[:12],
        "account": (account or ALL).lower(),
        "by": by,
        "state": "pending",
        "requested_at": time.time(),
        "owner": None,
        "heartbeat_at": 0,
        "steps": {},
    }


class RiskStore(Protocol):
    async def halts(self) -> dict[str, dict[str, Any]]: ...
    async def set_halt(self, account: str, record: dict[str, Any]) -> None: ...
    async def clear_halt(self, account: str | None) -> list[str]: ...
    async def save_flatten(self, record: dict[str, Any]) -> None: ...
    async def flattens(self, *, open_only: bool = False, limit: int = 20) -> list[dict[str, Any]]: ...
    async def claim_flatten(self, flatten_id: str, owner: str, stale_after: float) -> dict[str, Any] | None: ...
    async def count_order(self, key: str, limit: int, window: float) -> tuple[bool, int]: ...
    async def recent_orders(self, key: str, window: float) -> int: ...
    async def baseline(self, account: str, day: str, equity: Decimal) -> Decimal: ...
    async def aclose(self) -> None: ...


class SqliteRiskStore:
    def __init__(self, path: str | Path):
        path = Path(path)
        self.db = SqliteDatabase(path, schema=SCHEMA)
        # Order counts change on every opening order and matter for a minute: committed
        # without an fsync (WAL, synchronous NORMAL survives a crash of the process).
        self.counts = SqliteDatabase(path.with_name(path.stem + "-counts.sqlite3"), schema=SCHEMA, synchronous="NORMAL")

    async def aclose(self) -> None:
        self.db.close()
        self.counts.close()

    async def halts(self) -> dict[str, dict[str, Any]]:
        rows = await self.db.run(
            lambda conn: conn.execute("SELECT account, record FROM halts").fetchall(), read_only=True
        )
        return {r["account"]: json.loads(r["record"]) for r in rows}

    async def set_halt(self, account: str, record: dict[str, Any]) -> None:
        text = json.dumps(record)
        await self.db.run(
            lambda conn: conn.execute(
                "INSERT INTO halts (account, record) VALUES (?, ?) ON CONFLICT(account) DO UPDATE SET record = excluded.record",
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

    async def save_flatten(self, record: dict[str, Any]) -> None:
        text = json.dumps(record)
        await self.db.run(
            lambda conn: conn.execute(
                "INSERT INTO flattens (flatten_id, record, state, owner, heartbeat_at, created_at) VALUES (?,?,?,?,?,?) "
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

    async def flattens(self, *, open_only: bool = False, limit: int = 20) -> list[dict[str, Any]]:
        where = f"WHERE state IN {OPEN_FLATTEN_STATES}" if open_only else ""
        rows = await self.db.run(
            lambda conn: conn.execute(
                f"SELECT record FROM flattens {where} ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall(),
            read_only=True,
        )
        return [json.loads(r["record"]) for r in rows]

    async def claim_flatten(self, flatten_id: str, owner: str, stale_after: float) -> dict[str, Any] | None:
        """Take (or renew) the lease of an open flatten: when nobody holds it, we hold it, or
        its holder stopped heartbeating. Atomic across processes."""
        now = time.time()

        def claim(conn: sqlite3.Connection) -> dict[str, Any] | None:
            with transaction(conn):
                row = conn.execute(
                    "SELECT record, state, owner, heartbeat_at FROM flattens WHERE flatten_id = ?", (flatten_id,)
                ).fetchone()
                if row is None or row["state"] not in OPEN_FLATTEN_STATES:
                    return None
                if row["owner"] not in (None, owner) and row["heartbeat_at"] >= now - stale_after:
                    return None
                record = json.loads(row["record"]) | {"owner": owner, "heartbeat_at": now}
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
                return conn.execute(
                    "SELECT equity FROM baselines WHERE account = ? AND day = ?", (account, day)
                ).fetchone()[0]

        return Decimal(await self.db.run(once))


_CLAIM = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return nil end
local record = cjson.decode(raw)
if record['state'] ~= 'pending' and record['state'] ~= 'running' then return nil end
local now, stale = tonumber(ARGV[3]), tonumber(ARGV[4])
local owner = record['owner']
if owner and owner ~= cjson.null and owner ~= ARGV[2] and tonumber(record['heartbeat_at'] or 0) >= now - stale then
  return nil
end
record['owner'] = ARGV[2]
record['heartbeat_at'] = now
raw = cjson.encode(record)
redis.call('HSET', KEYS[1], ARGV[1], raw)
return raw
"""

_COUNT = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local seen = redis.call('ZCARD', KEYS[1])
if seen >= limit then return {0, seen} end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
return {1, seen}
"""


class RedisRiskStore:
    """Keys: ``{p}:risk:halts`` (hash account → JSON), ``{p}:risk:flattens`` (hash id →
    JSON), ``{p}:risk:n:{key}`` (sorted set of order times), ``{p}:risk:b:{account}:{day}``."""

    def __init__(self, client: Any, prefix: str):
        self.client = client
        self.prefix = prefix
        self._claim = client.register_script(_CLAIM)
        self._count = client.register_script(_COUNT)

    async def aclose(self) -> None:
        pass  # the backend owns the client

    async def halts(self) -> dict[str, dict[str, Any]]:
        from core.store.redis.state import guarded

        raw = await guarded(self.client.hgetall(f"{self.prefix}:risk:halts"))
        return {k: json.loads(v) for k, v in raw.items()}

    async def set_halt(self, account: str, record: dict[str, Any]) -> None:
        from core.store.redis.state import guarded

        await guarded(self.client.hset(f"{self.prefix}:risk:halts", account, json.dumps(record)))

    async def clear_halt(self, account: str | None) -> list[str]:
        from core.store.redis.state import guarded

        key = f"{self.prefix}:risk:halts"
        if account is None:
            async with self.client.pipeline(transaction=True) as pipe:
                names, _ = await guarded(pipe.hkeys(key).delete(key).execute())
            return list(names)
        return [account] if await guarded(self.client.hdel(key, account)) else []

    async def save_flatten(self, record: dict[str, Any]) -> None:
        from core.store.redis.state import guarded

        await guarded(self.client.hset(f"{self.prefix}:risk:flattens", record["flatten_id"], json.dumps(record)))

    async def flattens(self, *, open_only: bool = False, limit: int = 20) -> list[dict[str, Any]]:
        from core.store.redis.state import guarded

        records = [json.loads(v) for v in (await guarded(self.client.hvals(f"{self.prefix}:risk:flattens")))]
        if open_only:
            records = [r for r in records if r["state"] in OPEN_FLATTEN_STATES]
        return sorted(records, key=lambda r: r["requested_at"], reverse=True)[:limit]

    async def claim_flatten(self, flatten_id: str, owner: str, stale_after: float) -> dict[str, Any] | None:
        from core.store.redis.state import guarded

        raw = await guarded(
            self._claim(keys=[f"{self.prefix}:risk:flattens"], args=[flatten_id, owner, time.time(), stale_after])
        )
        return json.loads(raw) if raw else None

    async def count_order(self, key: str, limit: int, window: float) -> tuple[bool, int]:
        from core.store.redis.state import guarded

        counted, seen = await guarded(
            self._count(keys=[f"{self.prefix}:risk:n:{key}"], args=[time.time(), window, limit, uuid.uuid4().hex])
        )
        return bool(counted), int(seen)

    async def recent_orders(self, key: str, window: float) -> int:
        from core.store.redis.state import guarded

        return int(await guarded(self.client.zcount(f"{self.prefix}:risk:n:{key}", f"({time.time() - window}", "+inf")))

    async def baseline(self, account: str, day: str, equity: Decimal) -> Decimal:
        from core.store.redis.state import guarded

        key = f"{self.prefix}:risk:b:{account}:{day}"
        await guarded(self.client.set(key, str(equity), nx=True, ex=3 * 86400))
        return Decimal(await guarded(self.client.get(key)))
