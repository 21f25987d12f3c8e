"""The SQLite journal's tables, their migrations, and the SQL both share.

Tables: ``alerts`` (one row per alert; ``rowid`` is its arrival number; ``client_order_id``
its order's intent; ``replay_key`` the replay key of the request that admitted it),
``orders`` (one row per order attempt), ``workers`` (heartbeats), ``replay`` (the other
replay keys of accepted requests — a duplicate's, one remembered on its own — until they
expire). A journal file written by an earlier version is brought up to date when it is
opened (``migrate``), and the replay keys of the former ``replay.sqlite3`` are moved in
(``import_replay_file``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from core.store.sqlite.database import transaction
from core.store.states import GAVE_UP, AlertState, alert_state

_RECEIVED, _SUBMITTING, _UNKNOWN = AlertState.RECEIVED.value, AlertState.SUBMITTING.value, AlertState.UNKNOWN.value
# An alert that holds its lane (core.store.states.holds_lane), as SQL over the alerts table.
HOLDS_LANE_SQL = (
    f"(state IN ('{_RECEIVED}', '{_SUBMITTING}') OR (state = '{_UNKNOWN}' AND COALESCE(error_code, '') != '{GAVE_UP}'))"
)
# The states of an alert that may hold its lane (an unknown one unless it gave up): the
# alerts the index by lane holds, and the same text in the query that uses it (SQLite uses
# a partial index only for a query whose WHERE has its condition). Written as ORs, not as
# ``state IN (...)``: SQLite evaluates an IN list of three constants or more through a
# temporary b-tree built on each evaluation, and a partial index's condition is evaluated
# for every row inserted or updated (three such b-trees per alert, ~12 % of the writer
# thread's instructions, by ``bench.instructions``).
_UNFINISHED = f"(state = '{_RECEIVED}' OR state = '{_SUBMITTING}' OR state = '{_UNKNOWN}')"

# One row per order attempt. ``id`` is a plain rowid, not AUTOINCREMENT: that keyword makes
# SQLite write its ``sqlite_sequence`` table on every INSERT, one page more in every commit
# that records an attempt (about one WAL page in eleven per alert). Order rows are never
# deleted, so the ids are the same either way: the next is the largest plus one.
ORDERS_TABLE = """CREATE TABLE IF NOT EXISTS orders (
    id              INTEGER PRIMARY KEY,
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
);"""
ORDERS_INDEX = "CREATE INDEX IF NOT EXISTS orders_alert ON orders(alert_id);"

SCHEMA = f"""
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
    journaled_at  REAL,
    client_order_id TEXT,
    replay_key    TEXT,  -- the admitting request's replay key, while live (ALERT_REPLAY_SQL)
    replay_expires_at REAL  -- unix seconds; NULL: for ever
);
-- Only the unfinished alerts, by lane (EARLIER_IN_LANE_SQL): a few rows, written as an
-- alert arrives and ends, instead of every alert's (lane, state) moved between regions
-- of a big index.
CREATE INDEX IF NOT EXISTS alerts_unfinished_in_lane ON alerts(lane) WHERE {_UNFINISHED};
-- Only an alert without an id of its own is looked up by its body (RESEND_SQL): the others
-- are left out, and their random hashes cost no page written.
CREATE INDEX IF NOT EXISTS alerts_body_hash_without_id ON alerts(body_hash, received_at) WHERE explicit_id = 0;
CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state);
{ORDERS_TABLE}
{ORDERS_INDEX}
CREATE TABLE IF NOT EXISTS workers (
    worker_id    TEXT PRIMARY KEY,
    heartbeat_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS replay (
    key        TEXT PRIMARY KEY,
    expires_at REAL            -- unix seconds; NULL: remembered for ever
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replay_expiry ON replay(expires_at) WHERE expires_at IS NOT NULL;
"""

# The same condition, written so that alerts_unfinished_in_lane finds a lane's unfinished
# alerts directly: a scan of the lane's whole history cost ~1 ms per 10,000 alerts, on every alert.
EARLIER_IN_LANE_SQL = (
    f"SELECT 1 FROM alerts INDEXED BY alerts_unfinished_in_lane WHERE lane = ? AND {_UNFINISHED} AND rowid < ?"
    f" AND (state != '{_UNKNOWN}' OR COALESCE(error_code, '') != '{GAVE_UP}') LIMIT 1"
)


# An earlier alert of the lane that holds it and belongs to another worker (or to none).
EARLIER_OF_OTHERS_SQL = EARLIER_IN_LANE_SQL.replace(" LIMIT 1", " AND COALESCE(owner, '') != ? LIMIT 1")


# The replay key of an admission is kept on its alert's row, not in the replay table: the
# admission writes one index page for it (alerts_replay) instead of two (the replay table
# and its expiry index), about one WAL page in eleven per alert. Such a key is never
# pruned; once expired it is ignored, as an expired row of the replay table is replaced.
# The index is made by ``migrate``, after the columns exist in a journal of before.
ALERTS_REPLAY_INDEX = "CREATE INDEX IF NOT EXISTS alerts_replay ON alerts(replay_key) WHERE replay_key IS NOT NULL"
# An alert admitted by a request with this replay key, the key still live at this time.
ALERT_REPLAY_SQL = (
    "SELECT 1 FROM alerts INDEXED BY alerts_replay WHERE replay_key = ?"
    " AND (replay_expires_at IS NULL OR replay_expires_at >= ?) LIMIT 1"
)

# The latest alert without an id of its own with this body, within the window: a resend.
RESEND_SQL = (
    "SELECT alert_id, state, http_status FROM alerts WHERE body_hash = ? AND explicit_id = 0"
    " AND received_at >= ? ORDER BY received_at DESC LIMIT 1"
)

# Indexes of earlier versions, dropped when a journal is opened (all of a machine's workers
# restart together: one of the version before would not find alerts_lane): no query reads
# orders by client order id; alerts_body_hash_without_id and alerts_unfinished_by_lane
# replaced alerts_body_hash and alerts_lane, which held every alert (each cost a page
# written per alert or so); alerts_unfinished_in_lane replaces alerts_unfinished_by_lane,
# the same rows under a condition written without IN.
FORMER_INDEXES = ("orders_client_id", "alerts_body_hash", "alerts_lane", "alerts_unfinished_by_lane")


def migrate(conn: sqlite3.Connection) -> None:
    """A journal written before alerts recorded when they were authenticated and journaled,
    their order's intent and their replay key gets the columns (empty for its old rows: an
    old unfinished alert without an order attempt was never sent; its replay key is in the
    replay table) and the index of replay keys, and loses the indexes of earlier versions
    (``FORMER_INDEXES``; ``SCHEMA`` made their replacements). Its orders table keeps
    AUTOINCREMENT: rebuilding it takes a while on a large journal (``rebuild_orders``, run
    by ``python -m core journal upgrade`` with the server stopped)."""
    for index in FORMER_INDEXES:
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(alerts)")}
    for column, kind in (
        ("authenticated_at", "REAL"),
        ("journaled_at", "REAL"),
        ("client_order_id", "TEXT"),
        ("replay_key", "TEXT"),
        ("replay_expires_at", "REAL"),
    ):
        if column not in columns:
            try:
                conn.execute(f"ALTER TABLE alerts ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as exc:  # another process added it meanwhile
                if "duplicate column" not in str(exc):
                    raise
    conn.execute(ALERTS_REPLAY_INDEX)


def rebuild_orders(conn: sqlite3.Connection) -> bool:
    """Rebuild the orders table of a journal that earlier versions made with ``id INTEGER
    PRIMARY KEY AUTOINCREMENT`` as ``ORDERS_TABLE``: every row copied with its id, in one
    transaction that holds the write lock throughout (about 20 s per million attempts on
    this project's CI machine, with as much free disk as the table takes). Whether it was
    rebuilt; False when there was nothing to do."""

    def made_with_autoincrement() -> bool:
        row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'orders'").fetchone()
        return row is not None and "AUTOINCREMENT" in row[0].upper()

    if not made_with_autoincrement():
        return False
    with transaction(conn):
        if not made_with_autoincrement():  # another process rebuilt it meanwhile
            return False
        conn.execute("DROP TABLE IF EXISTS orders_rebuilt")
        conn.execute(ORDERS_TABLE.replace("orders (", "orders_rebuilt (", 1))
        columns = ", ".join(row[1] for row in conn.execute("PRAGMA table_info(orders)"))
        conn.execute(f"INSERT INTO orders_rebuilt ({columns}) SELECT {columns} FROM orders")
        conn.execute("DROP TABLE orders")
        conn.execute("ALTER TABLE orders_rebuilt RENAME TO orders")
        conn.execute(ORDERS_INDEX)
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'orders'")
    return True


def import_replay_file(conn: sqlite3.Connection, path: Path, now: float) -> int:
    """Move the replay keys of ``path`` (the ``replay.sqlite3`` of earlier versions) that
    have not expired into the ``replay`` table, then delete the file: a request accepted
    before the upgrade stays refused after it. How many keys were moved."""
    if not path.exists():
        return 0
    conn.execute("ATTACH DATABASE ? AS former", (str(path),))
    try:
        found = conn.execute("SELECT 1 FROM former.sqlite_master WHERE name = 'seen_signatures'").fetchone()
        moved = 0
        if found is not None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                moved = conn.execute(
                    "INSERT OR IGNORE INTO main.replay (key, expires_at) SELECT key, expires_at FROM"
                    " former.seen_signatures WHERE expires_at IS NULL OR expires_at >= ?",
                    (now,),
                ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    finally:
        conn.execute("DETACH DATABASE former")
    for suffix in ("", "-wal", "-shm"):  # moved: only now may the file go
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
    return moved


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
