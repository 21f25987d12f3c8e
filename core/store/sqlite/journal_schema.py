"""The SQLite journal's tables, their migrations, and the SQL both share.

Tables: ``alerts`` (one row per alert; ``rowid`` is its arrival number), ``orders`` (one
row per order attempt), ``workers`` (heartbeats). A journal file written by an earlier
version is brought up to date when it is opened (``migrate``).
"""

from __future__ import annotations

import sqlite3

from core.store.states import GAVE_UP, AlertState, alert_state

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

_RECEIVED, _SUBMITTING, _UNKNOWN = AlertState.RECEIVED.value, AlertState.SUBMITTING.value, AlertState.UNKNOWN.value
# An alert that holds its lane (core.store.states.holds_lane), as SQL over the alerts table.
HOLDS_LANE_SQL = (
    f"(state IN ('{_RECEIVED}', '{_SUBMITTING}') OR (state = '{_UNKNOWN}' AND COALESCE(error_code, '') != '{GAVE_UP}'))"
)
# The same condition, written so that the (lane, state) index finds a lane's unfinished
# alerts directly: a scan of the lane's whole history cost ~1 ms per 10,000 alerts, on every alert.
EARLIER_IN_LANE_SQL = (
    f"SELECT 1 FROM alerts INDEXED BY alerts_lane WHERE lane = ? AND state IN ('{_RECEIVED}', '{_SUBMITTING}',"
    f" '{_UNKNOWN}') AND rowid < ? AND (state != '{_UNKNOWN}' OR COALESCE(error_code, '') != '{GAVE_UP}') LIMIT 1"
)


def migrate(conn: sqlite3.Connection) -> None:
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


def update_alert(
    conn: sqlite3.Connection,
    alert_id: str,
    state: str,
    now: float,
    result_json: str | None,
    error_code: str | None,
    error_message: str | None,
    http_status: int | None,
) -> None:
    """Move an alert to ``state`` (``ValueError`` if it is not an ``AlertState``): the result
    and HTTP status kept when not given, the error replaced."""
    conn.execute(
        "UPDATE alerts SET state = ?, updated_at = ?, result = COALESCE(?, result), error_code = ?,"
        " error_message = ?, http_status = COALESCE(?, http_status) WHERE alert_id = ?",
        (alert_state(state).value, now, result_json, error_code, error_message, http_status, alert_id),
    )
