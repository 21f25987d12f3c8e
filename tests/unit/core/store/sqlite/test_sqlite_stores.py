"""What only the SQLite stores promise beyond the contract suite: token files hold hashes
only and every verification does the same indexed lookup; files written by earlier versions
keep working (a journal gets the indexes of now); the journal's replay keys survive
reopening, are pruned once expired, are atomic across connections (processes), and those of
an earlier version's replay.sqlite3 are moved in."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core.store.journal import AdmissionRequest, AttemptRecord
from core.store.sqlite.journal import SqliteJournal
from core.store.sqlite.journal_schema import EARLIER_IN_LANE_SQL, EARLIER_OF_OTHERS_SQL, RESEND_SQL
from core.store.sqlite.tokens import SqliteTokenStore
from core.store.tokens import hash_token, new_token


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def tokens(tmp_path):
    clock = FakeClock()
    store = SqliteTokenStore(tmp_path / "tokens.sqlite3", clock=clock)
    store.clock = clock  # type: ignore[attr-defined]
    yield store
    await store.close()


async def test_only_the_hash_is_stored(tokens, tmp_path):
    token, info = await tokens.issue(ttl=60, label="tv")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("tokens.sqlite3"))
    assert token.encode() not in raw
    assert hash_token(token).encode() in raw


async def test_every_verification_does_the_same_lookup(tokens):
    """Unknown, revoked, expired and valid tokens each cost one hash and one lookup by
    primary key (no early return before the database, no scan)."""
    valid, _ = await tokens.issue(ttl=600)
    revoked, _ = await tokens.issue(ttl=600)
    await tokens.revoke(revoked)
    expired, _ = await tokens.issue(ttl=1)
    tokens.clock.now += 5
    statements: list[str] = []
    await tokens.db.run(lambda c: c.set_trace_callback(statements.append))
    for token in ("unknown-" + "x" * 40, revoked, expired, valid, ""):
        statements.clear()
        await tokens.verify(token)
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 1 and "WHERE token_hash = " in selects[0], statements
        assert statements[0].startswith("BEGIN IMMEDIATE")


async def test_a_token_file_from_before_accounts_keeps_working_for_the_default_account(tmp_path):
    token = new_token()
    with sqlite3.connect(tmp_path / "tokens.sqlite3") as conn:
        conn.execute(
            "CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, label TEXT, created_at REAL NOT NULL,"
            " expires_at REAL NOT NULL, last_used_at REAL) WITHOUT ROWID"
        )
        conn.execute(
            "INSERT INTO tokens VALUES (?, 'old', ?, ?, NULL)", (hash_token(token), time.time(), time.time() + 60)
        )
    store = SqliteTokenStore(tmp_path / "tokens.sqlite3")
    try:
        info = await store.verify(token)
        assert info is not None and info.label == "old" and info.accounts == () and info.scopes == ()
        _, scoped = await store.issue(ttl=60, accounts=("bob",))
        assert scoped.accounts == ("bob",)
    finally:
        await store.close()


async def test_a_token_file_from_before_token_scopes_reads_as_no_scopes(tmp_path):
    token = new_token()
    with sqlite3.connect(tmp_path / "tokens.sqlite3") as conn:  # the file as the account-scoped version left it
        conn.execute(
            "CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, label TEXT, created_at REAL NOT NULL,"
            " expires_at REAL NOT NULL, last_used_at REAL, accounts TEXT) WITHOUT ROWID"
        )
        conn.execute(
            "INSERT INTO tokens VALUES (?, 'old', ?, ?, NULL, 'bob')",
            (hash_token(token), time.time(), time.time() + 60),
        )
    store = SqliteTokenStore(tmp_path / "tokens.sqlite3")
    try:
        info = await store.verify(token)
        assert info is not None and info.accounts == ("bob",) and info.scopes == ()
        await store.issue(ttl=60, label="ops", scopes=("control",))
        assert {i.label: i.scopes for i in await store.list()} == {"old": (), "ops": ("control",)}
    finally:
        await store.close()


def replay_rows(journal: SqliteJournal) -> dict[str, float | None]:
    return dict(journal.db.run_sync(lambda c: c.execute("SELECT key, expires_at FROM replay").fetchall()))


async def test_expired_replay_keys_are_pruned_and_permanent_ones_stay(tmp_path):
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    try:
        now = time.time()
        assert await journal.remember_replay("bound", now + 0.05)
        assert await journal.remember_replay("body", None)
        await asyncio.sleep(0.1)
        journal._next_prune = 0.0  # the next record prunes (at most once a minute otherwise)
        assert await journal.remember_replay("other", None)
        assert replay_rows(journal) == {"body": None, "other": None}, "a body-only signature is kept for ever"
        assert await journal.remember_replay("bound", time.time() + 10), "an expired key may be recorded again"
    finally:
        journal.close()


async def test_a_stored_key_is_taken_over_once_expired_and_left_alone_while_live(tmp_path):
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    try:
        now = time.time()
        journal.db.run_sync(
            lambda c: c.executemany(
                "INSERT INTO replay VALUES (?, ?)", [("expired", now - 5), ("live", now + 60), ("ever", None)]
            )
        )
        journal._next_prune = now + 3600  # not pruned meanwhile: the expired key is still stored
        assert await journal.remember_replay("expired", now + 30)
        assert not await journal.remember_replay("live", now + 999)
        assert not await journal.remember_replay("ever", now + 999)
        replayed = await journal.admit(replace(new_alert("r-1"), replay_key="live", replay_expires_at=now + 999))
        assert replayed.replayed and journal.get_sync("r-1") is None, "a replay admits nothing"
        assert replay_rows(journal) == {"expired": now + 30, "live": now + 60, "ever": None}
    finally:
        journal.close()


def alert_replay_keys(journal: SqliteJournal) -> dict[str, tuple[str, float | None]]:
    rows = journal.db.run_sync(
        lambda c: c.execute(
            "SELECT alert_id, replay_key, replay_expires_at FROM alerts WHERE replay_key IS NOT NULL"
        ).fetchall()
    )
    return {alert_id: (key, expires_at) for alert_id, key, expires_at in rows}


async def test_an_admission_keeps_its_replay_key_on_its_alert_and_a_duplicate_in_the_replay_table(tmp_path):
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal(path)
    now = time.time()
    try:
        admitted = await journal.admit(replace(new_alert("k-1"), replay_key="sig-1", replay_expires_at=now + 60))
        assert not admitted.replayed and not admitted.duplicate
        assert alert_replay_keys(journal) == {"k-1": ("sig-1", now + 60)} and replay_rows(journal) == {}
        assert "replay_key" not in journal.get_sync("k-1") and "replay_expires_at" not in journal.get_sync("k-1")
        duplicate = await journal.admit(replace(new_alert("k-1"), replay_key="sig-2", replay_expires_at=None))
        assert duplicate.duplicate and replay_rows(journal) == {"sig-2": None}
        stale = await journal.admit(replace(new_alert("k-2"), replay_key="sig-3", replay_expires_at=now - 1))
        assert not stale.replayed and "k-2" not in alert_replay_keys(journal), "already expired: not kept"
        assert not await journal.remember_replay("sig-1", None), "a key on an alert is a replay for every path"
    finally:
        journal.close()
    journal = SqliteJournal(path)
    try:
        assert (await journal.admit(replace(new_alert("k-9"), replay_key="sig-1"))).replayed
        assert (await journal.admit(replace(new_alert("k-9"), replay_key="sig-2"))).replayed
        assert journal.get_sync("k-9") is None
    finally:
        journal.close()


def query_plan(path: Path, sql: str, args: tuple[object, ...]) -> list[str]:
    """The steps of SQLite's plan for ``sql`` in a new journal at ``path``."""
    journal = SqliteJournal(path)
    try:
        return [
            row[3] for row in journal.db.run_sync(lambda c: c.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall())
        ]
    finally:
        journal.close()


def test_a_key_on_an_alert_is_looked_up_in_its_partial_index(tmp_path):
    from core.store.sqlite.journal_schema import ALERT_REPLAY_SQL

    (step,) = query_plan(tmp_path / "journal.sqlite3", ALERT_REPLAY_SQL, ("k", 0.0))
    assert step.startswith("SEARCH") and "INDEX alerts_replay (replay_key=?)" in step, step


def wal_btrees(path: Path) -> list[list[str]]:
    """The b-trees whose pages each commit in ``path``'s WAL wrote, in order (by SQLite's
    dbstat table: page number -> name)."""
    import struct

    wal = Path(f"{path}-wal").read_bytes()
    page_size, salts = struct.unpack(">I", wal[8:12])[0], wal[16:24]
    with sqlite3.connect(path) as conn:
        names = {page: name for name, page in conn.execute("SELECT name, pageno FROM dbstat")}
    conn.close()
    commits: list[list[str]] = []
    current: list[str] = []
    for offset in range(32, len(wal) - 24 - page_size + 1, 24 + page_size):
        page, commit = struct.unpack(">II", wal[offset : offset + 8])
        if wal[offset + 8 : offset + 16] != salts:
            break
        current.append(names.get(page, "(file header)" if page == 1 else f"page {page}"))
        if commit:
            commits.append(current)
            current = []
    return commits


async def test_an_alerts_way_through_the_journal_writes_no_page_of_the_replay_tables_or_sqlite_sequence(tmp_path):
    """Each b-tree a commit touches is one WAL page written and fsynced: the admission and
    the outcome of an alert touch the alerts table and its indexes and the orders table and
    its index, and nothing else."""
    try:
        sqlite3.connect(":memory:").execute("SELECT * FROM dbstat").fetchall()
    except sqlite3.Error:
        pytest.skip("this SQLite has no dbstat table")
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal(path)
    now = time.time()
    try:
        for i in range(3):  # past the first pages of each b-tree
            await journal.admit(replace(new_alert(f"warm-{i}"), replay_key=f"w-{i}", replay_expires_at=now + 60))
        journal.db.run_sync(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        await journal.admit(replace(new_alert("a-1"), replay_key="sig-a", replay_expires_at=now + 60))
        attempt = AttemptRecord("tv-a-1", "acct", "binance", "rest", {"amount": "1"}, "filled", now, now, {"id": "1"})
        await journal.record("a-1", [attempt], state="filled", result={"id": "1"}, http_status=200)
        journal.expedite()
        await journal.get("a-1")  # waits behind the outcome's commit
        admission, outcome = wal_btrees(path)
    finally:
        journal.close()
    grown = {"(file header)"}  # page 1 is written when a commit makes the file longer
    assert set(admission) - grown == {
        "alerts",
        "sqlite_autoindex_alerts_1",
        "alerts_state",
        "alerts_unfinished_in_lane",
        "alerts_replay",
    }, admission
    assert set(outcome) - grown <= {"alerts", "alerts_state", "alerts_unfinished_in_lane", "orders", "orders_alert"}, (
        outcome
    )
    assert {"orders", "orders_alert"} <= set(outcome)


async def test_replay_keys_survive_reopening(tmp_path):
    first = SqliteJournal(tmp_path / "journal.sqlite3")
    assert await first.remember_replay("k", None)
    first.close()
    second = SqliteJournal(tmp_path / "journal.sqlite3")
    try:
        assert not await second.remember_replay("k", None)
    finally:
        second.close()


@pytest.mark.parametrize("how", ["remember", "admit", "both"])
def test_remembering_a_key_is_atomic_across_connections(tmp_path, how):
    # Eight journals (eight connections, as eight workers would have) race for the same keys:
    # remembered on their own, by admissions (the key kept on the alert's row), or half each.
    path = tmp_path / "journal.sqlite3"
    SqliteJournal(path).close()  # the schema exists before the race
    wins: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)
    workers = iter(range(8))

    def worker() -> None:
        number = next(workers)
        admits = how == "admit" or (how == "both" and number % 2 == 1)

        async def claim(journal: SqliteJournal, i: int) -> bool:
            if not admits:
                return await journal.remember_replay(f"key-{i}", None)
            admission = await journal.admit(replace(new_alert(f"w{number}-{i}"), replay_key=f"key-{i}"))
            return not admission.replayed

        async def run() -> list[bool]:
            journal = SqliteJournal(path)
            try:
                barrier.wait()
                return [await claim(journal, i) for i in range(20)]
            finally:
                journal.close()

        results = asyncio.run(run())
        with lock:
            wins.extend(results)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(wins) == 160 and sum(wins) == 20, "each key is accepted exactly once"
    if how != "remember":
        with sqlite3.connect(path) as conn:
            admitted = conn.execute("SELECT COUNT(*), COUNT(DISTINCT replay_key) FROM alerts").fetchone()
        conn.close()
        assert admitted[0] == admitted[1], "no key admitted two alerts"


def test_the_replay_keys_of_an_earlier_version_are_moved_into_the_journal(tmp_path):
    former = tmp_path / "replay.sqlite3"
    now = time.time()
    with sqlite3.connect(former) as conn:  # as the replay cache of earlier versions left it
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE seen_signatures (key TEXT PRIMARY KEY, expires_at REAL) WITHOUT ROWID")
        conn.executemany(
            "INSERT INTO seen_signatures VALUES (?, ?)",
            [("bound", now + 3600), ("body-only", None), ("expired", now - 1)],
        )
    conn.close()
    journal = SqliteJournal(tmp_path / "journal.sqlite3", replay_file=former)
    try:
        assert replay_rows(journal) == {"bound": now + 3600, "body-only": None}
        assert not former.exists() and not Path(f"{former}-wal").exists()
        assert not asyncio.run(journal.remember_replay("body-only", None)), "accepted before: still a replay"
    finally:
        journal.close()
    SqliteJournal(tmp_path / "journal.sqlite3", replay_file=former).close()  # no file: nothing to move


def journal_indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    conn.close()
    return names


def new_alert(alert_id: str | None, body_hash: str = "b" * 64) -> AdmissionRequest:
    return AdmissionRequest(
        explicit_id=alert_id,
        body_hash=body_hash,
        received_at=time.time(),
        dedup_window=3600.0,
        principal="hmac",
        account="acct",
        symbol="BTCUSDT",
        side="buy",
        amount="1",
        payload={"symbol": "BTCUSDT"},
        lane="acct|BTCUSDT",
    )


async def test_a_journal_from_before_gets_the_indexes_of_now_and_keeps_its_alerts(tmp_path):
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal(path)
    await journal.admit(new_alert("old-1"))
    resent = await journal.admit(new_alert(None, body_hash="c" * 64))
    now = time.time()
    attempt = AttemptRecord("tv-old-1", "acct", "binance", "rest", {"amount": "1"}, "filled", now, now, {"id": "7"})
    await journal.record("old-1", [attempt], state="filled", result={"id": "7"}, http_status=200)
    await journal.admit(new_alert("old-2"))  # unfinished across the upgrade: it still holds its lane
    journal.close()
    former = {"orders_client_id", "alerts_body_hash", "alerts_lane", "alerts_unfinished_by_lane"}
    assert not former & journal_indexes(path), "a new journal never has them"
    with sqlite3.connect(path) as conn:  # as earlier versions made it
        conn.execute("CREATE INDEX orders_client_id ON orders(client_order_id)")
        conn.execute("CREATE INDEX alerts_body_hash ON alerts(body_hash, received_at)")
        conn.execute("CREATE INDEX alerts_lane ON alerts(lane, state)")
        conn.execute("DROP INDEX alerts_body_hash_without_id")
        conn.execute("DROP INDEX alerts_unfinished_in_lane")
        conn.execute(
            "CREATE INDEX alerts_unfinished_by_lane ON alerts(lane)"
            " WHERE state IN ('received', 'submitting', 'unknown')"
        )
        conn.execute("DROP INDEX alerts_replay")  # alerts kept no replay key
        conn.execute("ALTER TABLE alerts DROP COLUMN replay_key")
        conn.execute("ALTER TABLE alerts DROP COLUMN replay_expires_at")
    conn.close()

    journal = SqliteJournal(path)
    try:
        indexes = journal_indexes(path)
        assert not former & indexes
        assert {
            "alerts_unfinished_in_lane",
            "alerts_body_hash_without_id",
            "alerts_state",
            "orders_alert",
            "replay_expiry",
            "alerts_replay",
        } <= indexes
        row = journal.get_sync("old-1")
        assert row is not None and row["state"] == "filled"
        assert [(o["attempt"], o["client_order_id"], o["response"]) for o in row["orders"]] == [
            (1, "tv-old-1", {"id": "7"})
        ]
        assert (await journal.admit(new_alert("old-1"))).duplicate
        again = await journal.admit(new_alert(None, body_hash="c" * 64))
        assert again.duplicate and again.alert_id == resent.alert_id, "a resend from before the upgrade is found"
        later = await journal.admit(replace(new_alert("new-1"), replay_key="sig-new", replay_expires_at=None))
        assert (await journal.admit(replace(new_alert("new-2"), replay_key="sig-new"))).replayed
        assert await journal.earlier_unfinished("acct|BTCUSDT", later.seq), "behind old-2 (and the resent one)"
        for alert_id in ("old-2", resent.alert_id):
            await journal.record(alert_id, state="failed", http_status=503)
        assert not await journal.earlier_unfinished("acct|BTCUSDT", later.seq)
    finally:
        journal.close()


def orders_table_sql(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'orders'").fetchone()[0]
    conn.close()
    return str(sql)


def make_orders_table_autoincrement(path: Path) -> list[tuple]:
    """Give the journal at ``path`` the orders table of earlier versions (AUTOINCREMENT),
    its rows kept; the rows, by id."""
    with sqlite3.connect(path) as conn:
        old_sql = orders_table_sql(path).replace("INTEGER PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT", 1)
        conn.execute("ALTER TABLE orders RENAME TO orders_now")
        conn.execute(old_sql)
        conn.execute("INSERT INTO orders SELECT * FROM orders_now")
        conn.execute("DROP TABLE orders_now")
        conn.execute("CREATE INDEX orders_alert ON orders(alert_id)")
        rows = conn.execute("SELECT * FROM orders ORDER BY id").fetchall()
    conn.close()
    return rows


async def journal_with_orders(path: Path, alerts: int = 2) -> None:
    journal = SqliteJournal(path)
    now = time.time()
    for i in range(1, alerts + 1):
        await journal.admit(new_alert(f"old-{i}"))
        attempt = AttemptRecord(f"tv-old-{i}", "acct", "binance", "rest", {"amount": "1"}, "filled", now, now, {})
        await journal.record(f"old-{i}", [attempt, attempt], state="filled", http_status=200)
    journal.close()


async def test_an_orders_table_with_autoincrement_is_rebuilt_on_request_keeping_every_order(tmp_path):
    """AUTOINCREMENT makes SQLite write sqlite_sequence on every INSERT: one page more per
    commit that records an attempt. Journals of earlier versions have it and keep it when
    opened (a rebuild holds the write lock for a while); ``rebuild_orders`` (``python -m
    core journal upgrade``) rebuilds the table, each row with its id."""
    path = tmp_path / "journal.sqlite3"
    await journal_with_orders(path)
    assert "AUTOINCREMENT" not in orders_table_sql(path).upper(), "a new journal's table never has it"
    before = make_orders_table_autoincrement(path)
    assert len(before) == 4

    journal = SqliteJournal(path)
    try:
        assert "AUTOINCREMENT" in orders_table_sql(path).upper(), "opening a journal does not rebuild it"
        assert await journal.rebuild_orders() is True
        assert "AUTOINCREMENT" not in orders_table_sql(path).upper()
        assert "orders_alert" in journal_indexes(path)
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT * FROM orders ORDER BY id").fetchall() == before
        conn.close()
        row = journal.get_sync("old-2")
        assert row is not None and [(o["id"], o["attempt"]) for o in row["orders"]] == [(3, 1), (4, 2)]
        await journal.admit(new_alert("new-1"))
        now = time.time()
        attempt = AttemptRecord("tv-new-1", "acct", "binance", "rest", {}, "filled", now, now, {})
        await journal.record("new-1", [attempt], state="filled", http_status=200)
        assert [o["id"] for o in journal.get_sync("new-1")["orders"]] == [5]  # type: ignore[index]
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'orders'").fetchone() == (0,)
        conn.close()
        assert await journal.rebuild_orders() is False, "nothing left to rebuild"
    finally:
        journal.close()


def test_no_statement_of_an_alerts_way_through_the_journal_builds_a_temporary_b_tree(tmp_path):
    """A partial index's condition is evaluated for each row written: an IN list of three
    constants there costs a temporary b-tree per INSERT and UPDATE (SQLite's OpenEphemeral)."""
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    statements = [
        (
            "INSERT INTO alerts (alert_id, explicit_id, body_hash, received_at, updated_at, state, payload)"
            " VALUES ('a', 1, 'h', 0, 0, 'received', '{}')",
            (),
        ),
        ("UPDATE alerts SET state = ?, updated_at = ? WHERE alert_id = ?", ("filled", 1.0, "a")),
        (EARLIER_IN_LANE_SQL, ("l", 5)),
        (EARLIER_OF_OTHERS_SQL, ("l", 5, "w1")),
    ]
    try:
        for sql, args in statements:
            program = journal.db.run_sync(
                lambda conn, sql=sql, args=args: conn.execute("EXPLAIN " + sql, args).fetchall()
            )
            assert "OpenEphemeral" not in {row[1] for row in program}, sql
    finally:
        journal.close()


def test_a_resend_is_looked_up_in_the_index_of_alerts_without_an_id(tmp_path):
    # One search, no scan, no sort (wording varies by SQLite version).
    (step,) = query_plan(tmp_path / "journal.sqlite3", RESEND_SQL, ("c", 0.0))
    assert step.startswith("SEARCH") and "INDEX alerts_body_hash_without_id (body_hash=? AND received_at>?)" in step


def test_the_earlier_alerts_of_a_lane_are_looked_up_among_its_unfinished_ones(tmp_path):
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    try:
        for sql, args in ((EARLIER_IN_LANE_SQL, ("l", 5)), (EARLIER_OF_OTHERS_SQL, ("l", 5, "w1"))):
            plan = journal.db.run_sync(
                lambda conn, sql=sql, args=args: conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
            )
            (step,) = [row[3] for row in plan]
            assert step.startswith("SEARCH") and "INDEX alerts_unfinished_in_lane (lane=? AND rowid<?)" in step
    finally:
        journal.close()
