"""The journal of record: every accepted alert and every order attempt, durably.

An alert is written (and committed) before the webhook answers. Its state moves along

    received → submitting → submitted | filled | canceled | rejected | failed | unknown
    received → skipped (nothing to do: a target already reached, close when flat)
    received → refused (a risk limit or a halt refused it; nothing was sent)
    unknown → reconciled (found at the exchange) | failed (proven absent, not retried)
    received/submitting (left by a crash, too old) → expired
    failed with nothing sent (answered 5xx) → received again when the sender resends
    unfinished, but its row cannot be read (bad JSON, bad fields) → quarantined

and each order attempt is a row of its own with the client order id, the route, the
request, the exchange's answer or error, and its timings.

No secret is ever stored, structurally: the payload is journaled without token and
credentials, and secret-named fields are dropped (``core.observability.redaction.without_secrets``)
before the JSON is built. Stored JSON is never rewritten by text redaction (values a
request chose could otherwise corrupt it).

A row that cannot be read is *quarantined*: its state becomes ``quarantined`` (final: it
no longer holds its lane and is never recovered automatically; a human checks the
exchange), it is logged once and counted (GET / ``state.quarantined``), and the other
rows are read and recovered as usual.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.observability.redaction import REDACTOR, without_secrets
from core.store.sqlite.database import SqliteDatabase, transaction

log = logging.getLogger(__name__)

ALERT_STATES = (
    "received",
    "submitting",
    "submitted",
    "filled",
    "canceled",
    "skipped",
    "rejected",
    "failed",
    "unknown",
    "reconciled",
    "expired",
    "refused",
    "quarantined",
)
FINAL_STATES = frozenset(
    {
        "submitted",
        "filled",
        "canceled",
        "skipped",
        "rejected",
        "failed",
        "reconciled",
        "expired",
        "refused",
        "quarantined",
    }
)
QUARANTINED = "quarantined"  # the state and error code of a row that cannot be read

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id      TEXT PRIMARY KEY,
    explicit_id   INTEGER NOT NULL,
    body_hash     TEXT NOT NULL,
    received_at   REAL NOT NULL,
    updated_at    REAL NOT NULL,
    principal     TEXT,
    account       TEXT,
    symbol        TEXT,
    side          TEXT,
    amount        TEXT,
    state         TEXT NOT NULL,
    payload       TEXT NOT NULL,
    result        TEXT,
    error_code    TEXT,
    error_message TEXT,
    http_status   INTEGER,
    duplicates    INTEGER NOT NULL DEFAULT 0,
    owner         TEXT,
    lane          TEXT NOT NULL DEFAULT '',
    authenticated_at REAL,
    journaled_at  REAL
);
CREATE INDEX IF NOT EXISTS alerts_lane ON alerts(lane, state);
CREATE INDEX IF NOT EXISTS alerts_body_hash ON alerts(body_hash, received_at);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state);
CREATE TABLE IF NOT EXISTS orders (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id        TEXT NOT NULL REFERENCES alerts(alert_id),
    attempt         INTEGER NOT NULL,
    client_order_id TEXT NOT NULL,
    account         TEXT NOT NULL,
    exchange        TEXT NOT NULL,
    route           TEXT NOT NULL,
    request         TEXT NOT NULL,
    state           TEXT NOT NULL,
    response        TEXT,
    error           TEXT,
    started_at      REAL NOT NULL,
    finished_at     REAL
);
CREATE INDEX IF NOT EXISTS orders_alert ON orders(alert_id);
CREATE INDEX IF NOT EXISTS orders_client_id ON orders(client_order_id);
CREATE TABLE IF NOT EXISTS workers (
    worker_id    TEXT PRIMARY KEY,
    heartbeat_at REAL NOT NULL
);
"""
UNFINISHED = ("received", "submitting", "unknown")
SUCCESS_STATES = frozenset({"filled", "submitted", "canceled", "skipped", "reconciled"})
# Reconciliation that gave up leaves the alert "unknown" with this code: it no longer
# holds its lane, and it is not recovered again (a human must check the exchange).
GAVE_UP = "outcome_unknown_gave_up"
_UNFINISHED_SQL = (
    f"(state IN ('received', 'submitting') OR (state = 'unknown' AND COALESCE(error_code, '') != '{GAVE_UP}'))"
)


def _dumps(value: Any) -> str:
    """Stored JSON: secret-named fields dropped first; the text itself is never rewritten."""
    return json.dumps(without_secrets(value), default=str, separators=(",", ":"))


def decode_json_fields(data: dict[str, Any], keys: tuple[str, ...], where: str, problems: list[str]) -> None:
    """Decode the JSON columns ``keys`` of a stored row in place; one that is not valid JSON
    becomes None and is named in ``problems`` (the row is then quarantined, not fatal)."""
    for key in keys:
        text = data.get(key)
        if not text:
            data[key] = None if text in (None, "") else text
            continue
        try:
            data[key] = json.loads(text)
        except (TypeError, ValueError) as exc:
            data[key] = None
            problems.append(f"{where}{key} is not valid JSON ({type(exc).__name__})")


def quarantine_reason(problems: list[str]) -> str:
    return "the journal row cannot be read: " + "; ".join(problems)[:400]


def log_quarantined(alert_id: str, reason: str) -> None:
    log.error(
        "alert %s quarantined (state 'quarantined', not recovered; check the exchange by hand): %s", alert_id, reason
    )


def _update_alert(
    conn: sqlite3.Connection,
    alert_id: str | None,
    state: str,
    now: float,
    result_json: str | None,
    error_code: str | None,
    error_message: str | None,
    http_status: int | None,
) -> None:
    assert state in ALERT_STATES, state
    conn.execute(
        "UPDATE alerts SET state = ?, updated_at = ?, result = COALESCE(?, result), error_code = ?,"
        " error_message = ?, http_status = COALESCE(?, http_status) WHERE alert_id = ?",
        (state, now, result_json, error_code, error_message, http_status, alert_id),
    )


def _add_timing_columns(conn: sqlite3.Connection) -> None:
    """A journal written before alerts recorded when they were authenticated and journaled
    gets the two columns (empty for its old rows)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(alerts)")}
    for column in ("authenticated_at", "journaled_at"):
        if column not in columns:
            try:
                conn.execute(f"ALTER TABLE alerts ADD COLUMN {column} REAL")
            except sqlite3.OperationalError as exc:  # another process added it meanwhile
                if "duplicate column" not in str(exc):
                    raise


@dataclass(frozen=True)
class Admission:
    """The journal's answer to a new alert: its id, and whether it was seen before."""

    alert_id: str
    duplicate: bool
    row: dict[str, Any]
    seq: int = 0  # the alert's place in the journal: arrival order


class Journal:
    def __init__(self, path: str | Path, *, synchronous: str = "FULL"):
        self.db = SqliteDatabase(path, synchronous=synchronous, schema=SCHEMA)
        self.db.run_sync(_add_timing_columns)

    def close(self) -> None:
        self.db.close()

    async def aclose(self) -> None:
        self.close()

    async def ping(self) -> None:
        await self.db.run(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- admission -------------------------------------------------------------

    async def admit(
        self,
        *,
        explicit_id: str | None,
        body_hash: str,
        received_at: float,
        dedup_window: float,
        principal: str | None,
        account: str,
        symbol: str,
        side: str,
        amount: str,
        payload: dict[str, Any],
        owner: str | None = None,
        lane: str = "",
        authenticated_at: float | None = None,
    ) -> Admission:
        """Record a new alert, or return the one it duplicates; atomic across processes.

        An explicit id is a duplicate of the same id seen at any time (kept ≥ 24 h). An
        alert without one is a duplicate of an alert with the same body hash received
        within ``dedup_window`` seconds (TradingView's resends); later, it is new.
        """
        payload_json = _dumps(payload)

        def admit(conn: sqlite3.Connection) -> Admission:
            with transaction(conn):
                if explicit_id is not None:
                    row = conn.execute("SELECT * FROM alerts WHERE alert_id = ?", (explicit_id,)).fetchone()
                else:
                    row = conn.execute(
                        "SELECT * FROM alerts WHERE body_hash = ? AND explicit_id = 0 AND received_at >= ? "
                        "ORDER BY received_at DESC LIMIT 1",
                        (body_hash, received_at - dedup_window),
                    ).fetchone()
                if row is not None:
                    conn.execute("UPDATE alerts SET duplicates = duplicates + 1 WHERE alert_id = ?", (row["alert_id"],))
                    return Admission(row["alert_id"], True, dict(row))
                alert_id = explicit_id or f"{body_hash[:20]}-{int(received_at * 1000)}"
                cur = conn.execute(
                    "INSERT INTO alerts (alert_id, explicit_id, body_hash, received_at, updated_at, principal, account,"
                    " symbol, side, amount, state, payload, owner, lane, authenticated_at, journaled_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        alert_id,
                        int(explicit_id is not None),
                        body_hash,
                        received_at,
                        received_at,
                        principal,
                        account,
                        symbol,
                        side,
                        amount,
                        "received",
                        payload_json,
                        owner,
                        lane,
                        authenticated_at,
                        time.time(),
                    ),
                )
                return Admission(alert_id, False, {"alert_id": alert_id, "state": "received"}, seq=int(cur.lastrowid))

        return await self.db.run(admit)

    # -- state -----------------------------------------------------------------

    async def set_state(
        self,
        alert_id: str,
        state: str,
        *,
        result: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        http_status: int | None = None,
    ) -> None:
        result_json = _dumps(result) if result is not None else None
        message = REDACTOR.redact(error_message) if error_message else None
        now = time.time()
        await self.db.run(
            lambda conn: _update_alert(conn, alert_id, state, now, result_json, error_code, message, http_status)
        )

    async def order_started(
        self, alert_id: str, *, client_order_id: str, account: str, exchange: str, route: str, request: dict[str, Any]
    ) -> int:
        now = time.time()
        request_json = _dumps(request)

        def insert(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                attempt = conn.execute("SELECT COUNT(*) FROM orders WHERE alert_id = ?", (alert_id,)).fetchone()[0] + 1
                cur = conn.execute(
                    "INSERT INTO orders (alert_id, attempt, client_order_id, account, exchange, route, request, state, started_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    (alert_id, attempt, client_order_id, account, exchange, route, request_json, "submitting", now),
                )
                conn.execute(
                    "UPDATE alerts SET state = 'submitting', updated_at = ? WHERE alert_id = ?", (now, alert_id)
                )
                return int(cur.lastrowid)

        return await self.db.run(insert)

    async def order_finished(
        self,
        order_row: int,
        state: str,
        *,
        response: dict[str, Any] | None = None,
        error: str | None = None,
        alert_id: str | None = None,
        alert_state: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        """Record an attempt's end, and (with ``alert_state``) the alert's, in one commit."""
        now = time.time()
        response_json = _dumps(response) if response is not None else None
        error_text = REDACTOR.redact(error) if error else None

        def update(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "UPDATE orders SET state = ?, response = ?, error = ?, finished_at = ? WHERE id = ?",
                    (state, response_json, error_text, now, order_row),
                )
                if alert_state is not None:
                    _update_alert(
                        conn,
                        alert_id,
                        alert_state,
                        now,
                        response_json if alert_state in SUCCESS_STATES else None,
                        error_code,
                        error_text if error_code else None,
                        http_status,
                    )

        await self.db.run(update)

    # -- workers and recovery ------------------------------------------------------

    async def heartbeat(self, worker_id: str) -> None:
        now = time.time()
        await self.db.run(
            lambda conn: conn.execute(
                "INSERT INTO workers (worker_id, heartbeat_at) VALUES (?, ?) "
                "ON CONFLICT(worker_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                (worker_id, now),
            )
        )

    async def retire(self, worker_id: str) -> None:
        """A worker that stops cleanly hands its unfinished alerts over at once."""
        await self.db.run(lambda conn: conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,)))

    async def claim_orphans(self, worker_id: str, stale_after: float) -> list[dict[str, Any]]:
        """Take over unfinished alerts whose owner is gone (no heartbeat for ``stale_after`` s).

        Atomic across processes: each orphan is claimed by exactly one worker.
        """
        alive_since = time.time() - stale_after

        def claim(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            with transaction(conn):
                rows = conn.execute(
                    f"SELECT alert_id FROM alerts WHERE {_UNFINISHED_SQL} AND "
                    "(owner IS NULL OR owner NOT IN (SELECT worker_id FROM workers WHERE heartbeat_at >= ?)) "
                    "ORDER BY rowid",
                    (alive_since,),
                ).fetchall()
                claimed, quarantined = [], []
                for row in rows:
                    conn.execute("UPDATE alerts SET owner = ? WHERE alert_id = ?", (worker_id, row["alert_id"]))
                    alert = self._get(conn, row["alert_id"])
                    if alert is not None and alert.get("unreadable"):
                        reason = quarantine_reason(alert["unreadable"])
                        _update_alert(
                            conn, alert["alert_id"], QUARANTINED, time.time(), None, QUARANTINED, reason, None
                        )
                        quarantined.append((alert["alert_id"], reason))
                    elif alert is not None:
                        claimed.append(alert)
                conn.execute("DELETE FROM workers WHERE heartbeat_at < ?", (alive_since - 3600,))
                return claimed, quarantined

        claimed, quarantined = await self.db.run(claim)
        for alert_id, reason in quarantined:
            log_quarantined(alert_id, reason)
        return claimed

    async def quarantine(self, alert_id: str, reason: str) -> None:
        """Set an unfinished alert aside: it cannot be read or recovered (see the module doc)."""
        await self.set_state(alert_id, QUARANTINED, error_code=QUARANTINED, error_message=reason[:500])
        log_quarantined(alert_id, reason)

    async def quarantined_count(self) -> int:
        return await self.db.run(
            lambda conn: conn.execute("SELECT COUNT(*) FROM alerts WHERE state = ?", (QUARANTINED,)).fetchone()[0],
            read_only=True,
        )

    # -- reading ---------------------------------------------------------------

    @staticmethod
    def _alert_dict(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
        """The row with its JSON decoded. A column that cannot be decoded is None and the
        row carries ``unreadable`` (a list of what is wrong) instead of raising."""
        data = dict(row)
        problems: list[str] = []
        decode_json_fields(data, ("payload", "result"), "", problems)
        data["orders"] = []
        for order in conn.execute("SELECT * FROM orders WHERE alert_id = ? ORDER BY id", (row["alert_id"],)):
            item = dict(order)
            decode_json_fields(item, ("request", "response"), f"order attempt {item.get('attempt')}: ", problems)
            data["orders"].append(item)
        if problems:
            data["unreadable"] = problems
        return data

    def get_sync(self, alert_id: str) -> dict[str, Any] | None:
        return self.db.run_sync(lambda conn: self._get(conn, alert_id))

    async def get(self, alert_id: str) -> dict[str, Any] | None:
        return await self.db.run(lambda conn: self._get(conn, alert_id))

    async def reopen(self, alert_id: str, owner: str) -> dict[str, Any] | None:
        """A resend of an alert that failed with nothing sent (its answer was a 5xx) is
        executed again: move it back to ``received`` for ``owner``. Atomic: of several
        concurrent resends exactly one reopens it. The reopened row, or None."""

        def reopen(conn: sqlite3.Connection) -> dict[str, Any] | None:
            with transaction(conn):
                changed = conn.execute(
                    "UPDATE alerts SET state = 'received', owner = ?, updated_at = ?, error_code = NULL, "
                    "error_message = NULL, http_status = NULL WHERE alert_id = ? AND state = 'failed' AND http_status >= 500",
                    (owner, time.time(), alert_id),
                ).rowcount
                return self._get(conn, alert_id) if changed else None

        return await self.db.run(reopen)

    async def earlier_unfinished(self, lane: str, seq: int) -> bool:
        """Whether an alert that arrived before ``seq`` in the same lane is still unfinished
        (in any worker): the cross-process half of per-symbol ordering."""

        def check(conn: sqlite3.Connection) -> bool:
            # The same condition as _UNFINISHED_SQL, written so that the (lane, state) index
            # finds the lane's unfinished alerts directly: a scan of the lane's whole history
            # cost ~1 ms per 10,000 alerts, on every alert.
            return (
                conn.execute(
                    "SELECT 1 FROM alerts INDEXED BY alerts_lane WHERE lane = ? AND state IN ('received', 'submitting', 'unknown')"
                    f" AND rowid < ? AND (state != 'unknown' OR COALESCE(error_code, '') != '{GAVE_UP}') LIMIT 1",
                    (lane, seq),
                ).fetchone()
                is not None
            )

        return await self.db.run(check, read_only=True)  # inline when idle: no thread hop

    def _get(self, conn: sqlite3.Connection, alert_id: str) -> dict[str, Any] | None:
        row = conn.execute("SELECT rowid AS seq, * FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        return self._alert_dict(conn, row) if row else None

    async def list(self, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
        return await self.db.run(lambda conn: self._list(conn, limit, state))

    async def stats(self) -> dict[str, Any]:
        return await self.db.run(self._stats)

    @staticmethod
    def _list(conn: sqlite3.Connection, limit: int, state: str | None) -> list[dict[str, Any]]:
        query = (
            "SELECT alert_id, received_at, updated_at, principal, account, symbol, side, amount, state, error_code,"
            " duplicates, payload FROM alerts"
        )
        args: tuple = ()
        if state:
            query += " WHERE state = ?"
            args = (state,)
        query += " ORDER BY received_at DESC LIMIT ?"
        rows = []
        for r in conn.execute(query, args + (limit,)):
            row = dict(r)
            decode_json_fields(row, ("payload",), "", [])  # an unreadable payload lists as None (see quarantine)
            rows.append(row)
        return rows

    async def timings(self, since: float, limit: int = 5000) -> list[dict[str, Any]]:
        """The newest alerts received since ``since`` (at most ``limit``), oldest first, with
        their timestamps and their order attempts' — for the dashboard's latency plots."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = [
                dict(r) | {"orders": []}
                for r in conn.execute(
                    "SELECT alert_id, account, state, received_at, updated_at FROM alerts WHERE received_at >= ?"
                    " ORDER BY received_at DESC LIMIT ?",
                    (since, limit),
                )
            ]
            by_id = {r["alert_id"]: r for r in rows}
            if rows:
                oldest = rows[-1]["received_at"]
                for o in conn.execute(
                    "SELECT o.alert_id, o.account, o.state, o.started_at, o.finished_at FROM orders o"
                    " JOIN alerts a ON a.alert_id = o.alert_id WHERE a.received_at >= ?",
                    (oldest,),
                ):
                    if o["alert_id"] in by_id:
                        by_id[o["alert_id"]]["orders"].append(dict(o))
            return rows[::-1]

        return await self.db.run(read)

    @staticmethod
    def _stats(conn: sqlite3.Connection) -> dict[str, Any]:
        by_state = {r[0]: r[1] for r in conn.execute("SELECT state, COUNT(*) FROM alerts GROUP BY state")}
        orders = {r[0]: r[1] for r in conn.execute("SELECT state, COUNT(*) FROM orders GROUP BY state")}
        dups = conn.execute("SELECT COALESCE(SUM(duplicates), 0) FROM alerts").fetchone()[0]
        unfinished = conn.execute(f"SELECT COUNT(*) FROM alerts WHERE {_UNFINISHED_SQL}").fetchone()[0]
        return {"alerts": by_state, "orders": orders, "duplicates": dups, "unfinished": unfinished}
