"""The journal of record in ``DATA_DIR/journal.sqlite3``: the ``Journal`` protocol on SQLite.

Shared by the workers of one machine (``hypercorn --workers N``): every read-then-write
step is one ``BEGIN IMMEDIATE`` transaction, so admission, deduplication, claims and
reopening are atomic across processes. What is stored and why is ``core.store.journal``;
the tables are ``core.store.sqlite.journal_schema``.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.observability.redaction import REDACTOR
from core.store.journal import (
    Admission,
    AdmissionRequest,
    AlertRow,
    AttemptRecord,
    JournalStats,
    OrderAttempt,
    decode_json_fields,
    dumps,
    log_quarantined,
    new_alert_id,
    quarantine_reason,
)
from core.store.sqlite.database import SqliteDatabase, transaction
from core.store.sqlite.journal_schema import (
    ALERT_REPLAY_SQL,
    EARLIER_IN_LANE_SQL,
    EARLIER_OF_OTHERS_SQL,
    HOLDS_LANE_SQL,
    RESEND_SQL,
    SCHEMA,
    import_replay_file,
    migrate,
    rebuild_orders,
    update_alert,
)
from core.store.states import SUCCESS_STATES, AlertState, alert_state

_QUARANTINED = AlertState.QUARANTINED.value
# Columns of an alert's row that are the journal's own business, not the alert's (``get``).
_INTERNAL_COLUMNS = ("replay_key", "replay_expires_at")
REPLAY_PRUNE_INTERVAL = 60.0  # seconds between two deletions of expired replay keys
# A replay key remembered unless it is there and live: no row changed when it is (a replay).
# An expired one is replaced; NULL (remembered for ever) is never "< now".
_CLAIM_SQL = (
    "INSERT INTO replay (key, expires_at) VALUES (?, ?)"
    " ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at WHERE replay.expires_at < ?"
)


def _duplicate(conn: sqlite3.Connection, row: sqlite3.Row) -> Admission:
    """The admission of a duplicate of the alert ``row``: counted on that alert's row."""
    conn.execute("UPDATE alerts SET duplicates = duplicates + 1 WHERE alert_id = ?", (row["alert_id"],))
    return Admission(row["alert_id"], True, state=row["state"], http_status=row["http_status"])


class SqliteJournal:
    """The journal in one SQLite file (WAL). ``synchronous``: FULL survives a power loss,
    NORMAL a crash of the process (``router.journal_synchronous``). ``replay_file``: the
    ``replay.sqlite3`` of earlier versions, whose keys are moved in when it exists."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", replay_file: Path | None = None):
        self.db = SqliteDatabase(path, synchronous=synchronous, schema=SCHEMA)
        self.db.run_sync(migrate)
        if replay_file is not None:
            self.db.run_sync(lambda conn: import_replay_file(conn, replay_file, time.time()))
        self._next_prune = 0.0

    def close(self) -> None:
        """Close the file now, from synchronous code (tests, tools)."""
        self.db.close()

    async def aclose(self) -> None:
        self.close()

    async def ping(self) -> None:
        await self.db.run(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- admission -------------------------------------------------------------

    def admit(
        self, request: AdmissionRequest, *, then: Callable[[Admission], None] | None = None, patient: bool = False
    ) -> asyncio.Future[Admission]:
        def admit(conn: sqlite3.Connection) -> Admission:
            journaled_at = time.time()
            with transaction(conn):
                key, expires_at = request.replay_key, request.replay_expires_at
                if key is not None and self._remembers(conn, key, journaled_at):
                    return Admission("", False, replayed=True)
                if key is not None and expires_at is not None and expires_at <= journaled_at:
                    key = None  # already expired: nothing to remember

                def duplicate(row: sqlite3.Row) -> Admission:
                    if key is not None:  # a duplicate keeps no row of its own: its key goes to the replay table
                        self._claim(conn, key, expires_at, journaled_at)
                    return _duplicate(conn, row)

                if request.explicit_id is None:  # an alert with an id of its own is found by the INSERT
                    row = conn.execute(
                        RESEND_SQL, (request.body_hash, request.received_at - request.dedup_window)
                    ).fetchone()
                    if row is not None:
                        return duplicate(row)
                alert_id = new_alert_id(request.explicit_id, request.body_hash, request.received_at)
                # A new alert keeps its request's replay key on its row (journal_schema).
                cur = conn.execute(
                    "INSERT INTO alerts (alert_id, explicit_id, body_hash, received_at, updated_at, principal, account,"
                    " symbol, side, amount, state, payload, owner, lane, authenticated_at, journaled_at,"
                    " client_order_id, replay_key, replay_expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(alert_id) DO NOTHING",
                    (
                        alert_id,
                        int(request.explicit_id is not None),
                        request.body_hash,
                        request.received_at,
                        request.received_at,
                        request.principal,
                        request.account,
                        request.symbol,
                        request.side,
                        request.amount,
                        AlertState.RECEIVED.value,
                        dumps(request.payload),
                        request.owner,
                        request.lane,
                        request.authenticated_at,
                        journaled_at,
                        request.client_order_id,
                        key,
                        expires_at if key is not None else None,
                    ),
                )
                if cur.rowcount == 0:  # admitted before under this id: a duplicate
                    row = conn.execute(
                        "SELECT alert_id, state, http_status FROM alerts WHERE alert_id = ?", (alert_id,)
                    ).fetchone()
                    return duplicate(row)
                seq = int(cur.lastrowid or 0)
                behind = (
                    conn.execute(EARLIER_OF_OTHERS_SQL, (request.lane, seq, request.owner or "")).fetchone() is not None
                )
                return Admission(alert_id, False, seq=seq, behind_others=behind)

        return self.db.submit(admit, then, quick=True, patient=patient)  # a few lookups by index and one INSERT

    # -- replay keys -----------------------------------------------------------

    @staticmethod
    def _remembers(conn: sqlite3.Connection, key: str, now: float) -> bool:
        """Whether ``key`` is remembered and live at ``now``: in the replay table, or as the
        replay key of an admitted alert (two reads by index)."""
        row = conn.execute("SELECT expires_at FROM replay WHERE key = ?", (key,)).fetchone()
        if row is not None and (row[0] is None or row[0] >= now):
            return True
        return conn.execute(ALERT_REPLAY_SQL, (key, now)).fetchone() is not None

    def _claim(self, conn: sqlite3.Connection, key: str, expires_at: float | None, now: float) -> bool:
        """Remember ``key`` until ``expires_at`` (None: for ever) in the replay table unless it
        is remembered there and has not expired: whether it was new (False: a replay), in one
        statement. The keys on alert rows are the caller's to check (``_remembers``)."""
        if expires_at is not None and expires_at <= now:  # already expired: nothing to remember
            row = conn.execute("SELECT expires_at FROM replay WHERE key = ?", (key,)).fetchone()
            return row is None or (row[0] is not None and row[0] < now)
        claimed = conn.execute(_CLAIM_SQL, (key, expires_at, now)).rowcount == 1
        if claimed and now >= self._next_prune:
            conn.execute("DELETE FROM replay WHERE expires_at IS NOT NULL AND expires_at < ?", (now,))
            self._next_prune = now + REPLAY_PRUNE_INTERVAL
        return claimed

    async def remember_replay(self, key: str, expires_at: float | None) -> bool:
        def remember(conn: sqlite3.Connection) -> bool:
            now = time.time()
            with transaction(conn):
                if conn.execute(ALERT_REPLAY_SQL, (key, now)).fetchone() is not None:
                    return False  # an alert's admission remembers it
                return self._claim(conn, key, expires_at, now)

        return await self.db.run(remember)

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
        alert_state(state)
        result_json = dumps(result) if result is not None else None
        message = REDACTOR.redact(error_message) if error_message else None
        now = time.time()
        await self.db.run(
            lambda conn: update_alert(conn, alert_id, state, now, result_json, error_code, message, http_status)
        )

    def record(
        self,
        alert_id: str,
        attempts: Sequence[AttemptRecord] = (),
        *,
        state: str | None = None,
        result: dict[str, Any] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        http_status: int | None = None,
    ) -> asyncio.Future[None]:
        if state is not None:
            alert_state(state)
        message = REDACTOR.redact(error_message) if error_message else None

        def write(conn: sqlite3.Connection) -> None:
            now = time.time()
            # The alert's result is usually its last attempt's response, the same object: one JSON.
            result_json = dumps(result) if result is not None and state is not None else None

            def response_json(response: dict[str, Any] | None) -> str | None:
                if response is None:
                    return None
                return result_json if response is result and result_json is not None else dumps(response)

            with transaction(conn):
                if attempts:
                    # Each attempt numbered after those already written (the earlier ones
                    # of this write included) in its own INSERT: no separate count query.
                    conn.executemany(
                        "INSERT INTO orders (alert_id, attempt, client_order_id, account, exchange, route, request,"
                        " state, response, error, started_at, finished_at)"
                        " VALUES (?1, (SELECT COUNT(*) FROM orders WHERE alert_id = ?1) + 1,"
                        " ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                        [
                            (
                                alert_id,
                                a.client_order_id,
                                a.account,
                                a.exchange,
                                a.route,
                                dumps(a.request),
                                a.state,
                                response_json(a.response),
                                a.error,
                                a.started_at,
                                a.finished_at,
                            )
                            for a in attempts
                        ],
                    )
                if state is not None:
                    update_alert(conn, alert_id, state, now, result_json, error_code, message, http_status)

        return self.db.later(write, quick=True)  # a fresh read (``get``) waits behind it

    def expedite(self) -> None:
        self.db.expedite()

    async def order_started(
        self, alert_id: str, *, client_order_id: str, account: str, exchange: str, route: str, request: dict[str, Any]
    ) -> OrderAttempt:
        now = time.time()
        request_json = dumps(request)
        submitting = AlertState.SUBMITTING.value

        def insert(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                number = int(conn.execute("SELECT COUNT(*) FROM orders WHERE alert_id = ?", (alert_id,)).fetchone()[0])
                conn.execute(
                    "INSERT INTO orders (alert_id, attempt, client_order_id, account, exchange, route, request, state,"
                    " started_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (alert_id, number + 1, client_order_id, account, exchange, route, request_json, submitting, now),
                )
                conn.execute(
                    "UPDATE alerts SET state = ?, updated_at = ? WHERE alert_id = ?", (submitting, now, alert_id)
                )
                return number + 1

        number = await self.db.run(insert)
        return OrderAttempt(
            alert_id, number, client_order_id, account, exchange, route, json.loads(request_json), started_at=now
        )

    async def order_finished(
        self,
        attempt: OrderAttempt,
        state: str,
        *,
        response: dict[str, Any] | None = None,
        error: str | None = None,
        alert_id: str | None = None,
        alert_state: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        now = time.time()
        response_json = dumps(response) if response is not None else None
        error_text = REDACTOR.redact(error) if error else None
        for_alert = alert_id or attempt.alert_id

        def update(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "UPDATE orders SET state = ?, response = ?, error = ?, finished_at = ? WHERE alert_id = ?"
                    " AND attempt = ?",
                    (state, response_json, error_text, now, attempt.alert_id, attempt.number),
                )
                if alert_state is not None:
                    update_alert(
                        conn,
                        for_alert,
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
        await self.db.run(lambda conn: conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,)))

    async def claim_orphans(self, worker_id: str, stale_after: float) -> builtins.list[AlertRow]:
        alive_since = time.time() - stale_after

        def claim(conn: sqlite3.Connection) -> tuple[list[AlertRow], list[tuple[str, str]]]:
            with transaction(conn):
                rows = conn.execute(
                    f"SELECT alert_id FROM alerts WHERE {HOLDS_LANE_SQL} AND "
                    "(owner IS NULL OR owner NOT IN (SELECT worker_id FROM workers WHERE heartbeat_at >= ?)) "
                    "ORDER BY rowid",
                    (alive_since,),
                ).fetchall()
                claimed: list[AlertRow] = []
                quarantined: list[tuple[str, str]] = []
                for row in rows:
                    conn.execute("UPDATE alerts SET owner = ? WHERE alert_id = ?", (worker_id, row["alert_id"]))
                    alert = _get(conn, row["alert_id"])
                    if alert is not None and alert.get("unreadable"):
                        reason = quarantine_reason(alert["unreadable"])
                        now = time.time()
                        update_alert(conn, alert["alert_id"], _QUARANTINED, now, None, _QUARANTINED, reason, None)
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
        await self.set_state(alert_id, _QUARANTINED, error_code=_QUARANTINED, error_message=reason[:500])
        log_quarantined(alert_id, reason)

    # -- upkeep (``python -m core journal upgrade``) ------------------------------

    async def workers_seen_since(self, since: float) -> int:
        """How many workers heartbeat at or after ``since`` (unix seconds)."""
        return await self.db.run(
            lambda conn: int(
                conn.execute("SELECT COUNT(*) FROM workers WHERE heartbeat_at >= ?", (since,)).fetchone()[0]
            ),
            read_only=True,
        )

    async def rebuild_orders(self) -> bool:
        """The orders table of an earlier version's journal rebuilt without AUTOINCREMENT
        (``journal_schema.rebuild_orders``): whether there was one to rebuild."""
        return await self.db.run(rebuild_orders)

    async def quarantined_count(self) -> int:
        return await self.db.run(
            lambda conn: int(
                conn.execute("SELECT COUNT(*) FROM alerts WHERE state = ?", (_QUARANTINED,)).fetchone()[0]
            ),
            read_only=True,
        )

    async def reopen(self, alert_id: str, owner: str) -> AlertRow | None:
        def reopen(conn: sqlite3.Connection) -> AlertRow | None:
            with transaction(conn):
                changed = conn.execute(
                    "UPDATE alerts SET state = ?, owner = ?, updated_at = ?, error_code = NULL, error_message = NULL,"
                    " http_status = NULL WHERE alert_id = ? AND state = ? AND http_status >= 500",
                    (AlertState.RECEIVED.value, owner, time.time(), alert_id, AlertState.FAILED.value),
                ).rowcount
                return _get(conn, alert_id) if changed else None

        return await self.db.run(reopen)

    async def earlier_unfinished(self, lane: str, seq: int, owner: str | None = None) -> bool:
        query = EARLIER_IN_LANE_SQL if owner is None else EARLIER_OF_OTHERS_SQL
        args: tuple[Any, ...] = (lane, seq) if owner is None else (lane, seq, owner)
        # Inline, on the reader connection, even while writes are queued: no thread hop.
        return await self.db.run(
            lambda conn: conn.execute(query, args).fetchone() is not None, read_only=True, fresh=False
        )

    # -- reading ---------------------------------------------------------------

    def get_sync(self, alert_id: str) -> AlertRow | None:
        """``get`` from synchronous code (tests, tools)."""
        return self.db.run_sync(lambda conn: _get(conn, alert_id))

    # ``get`` runs inline when no record() write is queued; else (and the larger reads always)
    # on the thread, whose batches run the deferred writes first: every read sees the writes
    # this journal queued before it.

    async def get(self, alert_id: str) -> AlertRow | None:
        return await self.db.run(lambda conn: _get(conn, alert_id), read_only=True)

    async def list(self, limit: int = 50, state: str | None = None) -> builtins.list[AlertRow]:
        return await self.db.run(lambda conn: _list(conn, limit, state))

    async def timings(self, since: float, limit: int = 5000) -> builtins.list[dict[str, Any]]:
        return await self.db.run(lambda conn: _timings(conn, since, limit))

    async def stats(self) -> JournalStats:
        return await self.db.run(_stats)


def _alert_dict(conn: sqlite3.Connection, row: sqlite3.Row) -> AlertRow:
    """The row with its JSON decoded. A column that cannot be decoded is None and the row
    carries ``unreadable`` (a list of what is wrong) instead of raising."""
    data = dict(row)
    for column in _INTERNAL_COLUMNS:
        data.pop(column, None)
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


def _get(conn: sqlite3.Connection, alert_id: str) -> AlertRow | None:
    row = conn.execute("SELECT rowid AS seq, * FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
    return _alert_dict(conn, row) if row else None


def _list(conn: sqlite3.Connection, limit: int, state: str | None) -> list[AlertRow]:
    query = (
        "SELECT alert_id, received_at, updated_at, principal, account, symbol, side, amount, state, error_code,"
        " duplicates, payload FROM alerts"
    )
    args: tuple[Any, ...] = ()
    if state:
        query += " WHERE state = ?"
        args = (state,)
    query += " ORDER BY received_at DESC LIMIT ?"
    rows = []
    for r in conn.execute(query, (*args, limit)):
        row = dict(r)
        decode_json_fields(row, ("payload",), "", [])  # an unreadable payload lists as None (see quarantine)
        rows.append(row)
    return rows


def _timings(conn: sqlite3.Connection, since: float, limit: int) -> list[dict[str, Any]]:
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


def _stats(conn: sqlite3.Connection) -> JournalStats:
    by_state = {r[0]: r[1] for r in conn.execute("SELECT state, COUNT(*) FROM alerts GROUP BY state")}
    orders = {r[0]: r[1] for r in conn.execute("SELECT state, COUNT(*) FROM orders GROUP BY state")}
    dups = conn.execute("SELECT COALESCE(SUM(duplicates), 0) FROM alerts").fetchone()[0]
    unfinished = conn.execute(f"SELECT COUNT(*) FROM alerts WHERE {HOLDS_LANE_SQL}").fetchone()[0]
    return {"alerts": by_state, "orders": orders, "duplicates": dups, "unfinished": unfinished}
