"""The ``Journal`` protocol, held to the same behaviour on SQLite and Redis: admission and
duplicates, arrival order and lanes, order attempts, outcomes, recovery of orphans,
reopening, quarantine, and the reads (get, list, timings, stats)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from core.store.journal import Admission, AdmissionRequest, AttemptRecord, OrderAttempt, new_alert_id
from core.store.protocols import Journal
from core.store.sqlite.journal import SqliteJournal
from core.store.states import GAVE_UP, AlertState
from tests.conftest import STATE_BACKENDS

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)

LANE = "acct|BTC/USDT"


@pytest.fixture
async def journal(backend) -> AsyncIterator[Journal]:
    journal = backend.journal()
    yield journal
    await journal.aclose()


def admit(
    journal: Journal,
    alert_id: str | None = None,
    *,
    body_hash: str = "b" * 64,
    at: float | None = None,
    lane: str = LANE,
    owner: str | None = "w1",
    window: float = 60.0,
    payload: dict[str, Any] | None = None,
    then: Callable[[Admission], None] | None = None,
    **more: Any,
):
    return journal.admit(
        AdmissionRequest(
            explicit_id=alert_id,
            body_hash=body_hash,
            received_at=at or time.time(),
            dedup_window=window,
            principal="hmac",
            account="acct",
            symbol="BTCUSDT",
            side="buy",
            amount="1",
            payload=payload if payload is not None else {"symbol": "BTCUSDT", "side": "buy"},
            owner=owner,
            lane=lane,
            **more,
        ),
        then=then,
    )


def start(journal: Journal, alert_id: str, request: dict[str, Any] | None = None):
    return journal.order_started(
        alert_id,
        client_order_id=f"tv-{alert_id}",
        account="acct",
        exchange="binance",
        route="rest",
        request=request or {"amount": "1"},
    )


async def corrupt(journal: Any, alert_id: str, field: str, text: str) -> None:
    """Damage one stored field of an alert, as a bad file or a bad write would."""
    if isinstance(journal, SqliteJournal):
        with sqlite3.connect(journal.db.path) as conn:
            conn.execute(f"UPDATE alerts SET {field} = ? WHERE alert_id = ?", (text, alert_id))
    else:
        await journal.client.hset(f"{journal.prefix}:a:{alert_id}", field, text)


# ---------------------------------------------------------------- admission


async def test_an_explicit_id_is_admitted_once_even_concurrently(journal):
    results = await asyncio.gather(*(admit(journal, "same-id") for _ in range(8)))
    assert sorted(r.duplicate for r in results) == [False] + [True] * 7
    assert {r.alert_id for r in results} == {"same-id"}
    assert [r.seq > 0 for r in results if not r.duplicate] == [True]
    row = await journal.get("same-id")
    assert row["duplicates"] == 7 and row["state"] == AlertState.RECEIVED


async def test_an_alert_without_id_is_a_duplicate_within_the_window_only(journal):
    t = time.time()
    first = await admit(journal, body_hash="c" * 64, at=t)
    resend = await admit(journal, body_hash="c" * 64, at=t + 5)
    later = await admit(journal, body_hash="c" * 64, at=t + 120)
    other = await admit(journal, body_hash="d" * 64, at=t + 5)
    assert not first.duplicate and resend.duplicate and resend.alert_id == first.alert_id
    assert first.alert_id == f"{'c' * 20}-{int(t * 1000)}"
    assert not later.duplicate and later.alert_id != first.alert_id
    assert not other.duplicate
    assert first.seq < later.seq and first.seq < other.seq
    assert (await journal.get(first.alert_id))["duplicates"] == 1


async def test_an_explicit_id_is_never_matched_by_its_body(journal):
    explicit = await admit(journal, "with-id", body_hash="e" * 64)
    anonymous = await admit(journal, body_hash="e" * 64)
    assert not explicit.duplicate and not anonymous.duplicate and anonymous.alert_id != "with-id"


async def test_arrival_numbers_grow_across_journals_of_one_deployment(backend, journal):
    second = backend.journal()  # another worker's journal on the same store
    try:
        numbers = [(await admit(j, f"seq-{i}")).seq for i, j in enumerate([journal, second] * 3)]
    finally:
        await second.aclose()
    assert numbers == sorted(numbers) and len(set(numbers)) == 6


async def test_the_row_keeps_what_was_admitted_without_secrets(journal):
    await admit(journal, "fields", payload={"symbol": "BTCUSDT", "apiKey": "k-123", "secret": "s-456", "amount": 2})
    row = await journal.get("fields")
    assert (row["principal"], row["account"], row["symbol"], row["side"], row["amount"], row["lane"]) == (
        "hmac",
        "acct",
        "BTCUSDT",
        "buy",
        "1",
        LANE,
    )
    assert row["payload"] == {"symbol": "BTCUSDT", "amount": 2}
    assert row["owner"] == "w1" and row["orders"] == [] and row["result"] is None and row["error_code"] is None
    assert "k-123" not in json.dumps(row, default=str) and "s-456" not in json.dumps(row, default=str)
    assert await journal.get("never-admitted") is None


# ---------------------------------------------------------------- orders and outcomes


async def test_order_attempts_are_numbered_and_finished_with_the_alert(journal):
    await admit(journal, "orders-1")
    first = await start(journal, "orders-1", {"amount": "1", "secret": "never-stored"})
    assert isinstance(first, OrderAttempt) and (first.alert_id, first.number) == ("orders-1", 1)
    assert first.request == {"amount": "1"}
    assert (await journal.get("orders-1"))["state"] == AlertState.SUBMITTING
    await journal.order_finished(first, "failed", error="rate limited")
    second = await start(journal, "orders-1")
    assert second.number == 2
    await journal.order_finished(
        second,
        "filled",
        response={"order_id": "42"},
        alert_id="orders-1",
        alert_state=AlertState.FILLED,
        http_status=200,
    )
    row = await journal.get("orders-1")
    assert (row["state"], row["result"], row["http_status"]) == ("filled", {"order_id": "42"}, 200)
    orders = row["orders"]
    assert [(o["attempt"], o["state"], o["client_order_id"]) for o in orders] == [
        (1, "failed", "tv-orders-1"),
        (2, "filled", "tv-orders-1"),
    ]
    assert orders[0]["error"] == "rate limited" and orders[1]["response"] == {"order_id": "42"}
    assert orders[0]["request"] == {"amount": "1"} and "never-stored" not in json.dumps(row, default=str)
    assert all(o["finished_at"] >= o["started_at"] for o in orders)


def attempt(state: str, **more: Any) -> AttemptRecord:
    now = time.time()
    return AttemptRecord(
        **{
            "client_order_id": "tv-rec",
            "account": "acct",
            "exchange": "binance",
            "route": "rest",
            "request": {"amount": "1", "apiKey": "never-stored"},
            "state": state,
            "started_at": now,
            "finished_at": now + 0.01,
        }
        | more
    )


async def test_an_admission_keeps_the_intent_of_its_order(journal):
    admitted = await admit(journal, "intent-1", client_order_id="tv-intent-1")
    assert not admitted.duplicate
    row = await journal.get("intent-1")
    assert row["client_order_id"] == "tv-intent-1" and row["orders"] == [] and row["state"] == "received"
    at = time.time()
    anonymous = await admit(journal, body_hash="f" * 64, at=at, client_order_id="tv-anon")
    assert anonymous.alert_id == new_alert_id(None, "f" * 64, at)  # known before admission: its intent too
    assert (await journal.get(anonymous.alert_id))["client_order_id"] == "tv-anon"


async def test_record_appends_attempts_and_ends_the_alert_in_one_step(journal):
    await admit(journal, "rec-1")
    attempted = await start(journal, "rec-1")  # an attempt recorded before (an earlier version's)
    await journal.order_finished(attempted, "unknown", error="timed out")
    busy = attempt("failed", error="rate limited", response=None)
    filled = attempt("filled", response={"order_id": "9", "secret": "never-stored"})
    written = journal.record(
        "rec-1",
        [busy, filled],
        state=AlertState.FILLED,
        result={"order_id": "9"},
        http_status=200,
    )
    journal.expedite()
    await asyncio.wait_for(written, 5)
    row = await journal.get("rec-1")
    assert (row["state"], row["result"], row["http_status"], row["error_code"]) == (
        "filled",
        {"order_id": "9"},
        200,
        None,
    )
    orders = row["orders"]
    assert [(o["attempt"], o["state"]) for o in orders] == [(1, "unknown"), (2, "failed"), (3, "filled")]
    assert orders[1]["error"] == "rate limited" and orders[2]["response"] == {"order_id": "9"}
    assert orders[2]["request"] == {"amount": "1"} and orders[2]["client_order_id"] == "tv-rec"
    assert orders[2]["finished_at"] > orders[2]["started_at"] and orders[2]["alert_id"] == "rec-1"
    assert "never-stored" not in json.dumps(row, default=str)
    assert await journal.earlier_unfinished(LANE, row["seq"] + 1) is False  # final: the lane moves on


async def test_record_stores_the_result_that_is_also_the_last_response_twice_without_secrets(journal):
    await admit(journal, "rec-same")
    answer = {"order_id": "7", "info": {"apiKey": "never-stored", "fills": [{"price": "1"}]}}
    written = journal.record(
        "rec-same", [attempt("filled", response=answer)], state=AlertState.FILLED, result=answer, http_status=200
    )
    journal.expedite()
    await asyncio.wait_for(written, 5)
    row = await journal.get("rec-same")
    stored = {"order_id": "7", "info": {"fills": [{"price": "1"}]}}
    assert row["result"] == stored and row["orders"][-1]["response"] == stored
    assert "never-stored" not in json.dumps(row, default=str)


async def test_record_without_a_state_keeps_the_alert_unfinished(journal):
    admitted = await admit(journal, "rec-2")
    await journal.record("rec-2", [attempt("unknown", error="timed out")])
    await journal.record(
        "rec-2", state=AlertState.UNKNOWN, error_code="outcome_unknown", error_message="lost", http_status=202
    )
    row = await journal.get("rec-2")
    assert (row["state"], row["error_code"], row["error_message"], row["http_status"]) == (
        "unknown",
        "outcome_unknown",
        "lost",
        202,
    )
    assert [o["state"] for o in row["orders"]] == ["unknown"]
    assert await journal.earlier_unfinished(LANE, admitted.seq + 1) is True  # unknown holds its lane
    with pytest.raises(ValueError, match="not an alert state"):
        journal.record("rec-2", state="sideways")


async def test_a_failed_attempt_keeps_its_error_only_with_a_code(journal):
    await admit(journal, "orders-2")
    attempt = await start(journal, "orders-2")
    await journal.order_finished(
        attempt,
        "rejected",
        response={"ignored": True},
        error="insufficient balance",
        alert_state=AlertState.REJECTED,
        error_code="insufficient_funds",
        http_status=422,
    )
    row = await journal.get("orders-2")
    assert (row["state"], row["error_code"], row["error_message"], row["http_status"]) == (
        "rejected",
        "insufficient_funds",
        "insufficient balance",
        422,
    )
    assert row["result"] is None  # not a success state: the response is the attempt's only


async def test_set_state_keeps_result_and_status_and_replaces_the_error(journal):
    await admit(journal, "states-1")
    await journal.set_state("states-1", "unknown", error_code="outcome_unknown", error_message="lost", http_status=202)
    await journal.set_state("states-1", AlertState.RECONCILED, result={"order_id": "7"})
    row = await journal.get("states-1")
    assert (row["state"], row["result"], row["http_status"], row["error_code"], row["error_message"]) == (
        "reconciled",
        {"order_id": "7"},
        202,
        None,
        None,
    )
    with pytest.raises(ValueError, match="not an alert state: 'sideways'"):
        await journal.set_state("states-1", "sideways")
    assert (await journal.get("states-1"))["state"] == "reconciled"


# ---------------------------------------------------------------- lanes, workers, recovery


async def test_an_alert_holds_its_lane_until_it_is_final(journal):
    a = await admit(journal, "lane-a")
    b = await admit(journal, "lane-b")
    other = await admit(journal, "lane-other", lane="acct|ETH/USDT")
    assert await journal.earlier_unfinished(LANE, b.seq) is True
    assert await journal.earlier_unfinished(LANE, a.seq) is False
    assert await journal.earlier_unfinished("acct|ETH/USDT", other.seq) is False
    await journal.set_state("lane-a", AlertState.UNKNOWN, error_code="outcome_unknown")
    assert await journal.earlier_unfinished(LANE, b.seq) is True  # unknown still holds it
    await journal.set_state("lane-a", AlertState.UNKNOWN, error_code=GAVE_UP)
    assert await journal.earlier_unfinished(LANE, b.seq) is False  # given up: the lane moves on


async def test_an_admission_tells_whether_another_worker_holds_the_lane(journal):
    mine = await admit(journal, "own-1", owner="w1")
    also_mine = await admit(journal, "own-2", owner="w1")
    theirs = await admit(journal, "their-1", owner="w2")
    mine_again = await admit(journal, "own-3", owner="w1")
    elsewhere = await admit(journal, "own-4", owner="w2", lane="acct|ETH/USDT")
    assert (mine.behind_others, also_mine.behind_others) == (False, False)
    assert theirs.behind_others and mine_again.behind_others and not elsewhere.behind_others
    # The journal answers for other workers' alerts only when asked with an owner.
    assert await journal.earlier_unfinished(LANE, also_mine.seq, owner="w1") is False
    assert await journal.earlier_unfinished(LANE, also_mine.seq) is True
    assert await journal.earlier_unfinished(LANE, mine_again.seq, owner="w1") is True
    await journal.set_state("their-1", AlertState.FILLED)
    assert await journal.earlier_unfinished(LANE, mine_again.seq, owner="w1") is False
    assert await journal.earlier_unfinished(LANE, mine_again.seq, owner="w2") is True


async def test_orphans_of_a_dead_worker_are_claimed_by_exactly_one_worker(journal):
    await journal.heartbeat("alive")
    await admit(journal, "of-alive", owner="alive")
    await admit(journal, "of-dead", owner="dead")
    await admit(journal, "of-nobody", owner=None)
    done = await admit(journal, "finished", owner="dead")
    await journal.set_state(done.alert_id, AlertState.FILLED)
    gave_up = await admit(journal, "gave-up", owner="dead")
    await journal.set_state(gave_up.alert_id, AlertState.UNKNOWN, error_code=GAVE_UP)
    for worker in ("w-a", "w-b", "w-c"):  # claimers heartbeat first, as the engine does
        await journal.heartbeat(worker)
    claims = await asyncio.gather(journal.claim_orphans("w-a", 0.5), journal.claim_orphans("w-b", 0.5))
    claimed = sorted(row["alert_id"] for rows in claims for row in rows)
    assert claimed == ["of-dead", "of-nobody"]
    assert all(len(rows) in (0, 2) for rows in claims), "one claim takes every orphan it sees"
    winner = "w-a" if claims[0] else "w-b"
    row = await journal.get("of-dead")
    assert row["owner"] == winner and row["seq"] > 0 and row["payload"] == {"symbol": "BTCUSDT", "side": "buy"}
    assert await journal.claim_orphans("w-c", 0.5) == []  # the winner is alive
    await journal.retire("alive")  # a clean stop hands its alerts over at once
    assert [r["alert_id"] for r in await journal.claim_orphans("w-c", 0.5)] == ["of-alive"]


async def test_a_resend_reopens_an_alert_that_failed_with_nothing_sent_once(journal):
    await admit(journal, "reopen-1")
    await journal.set_state("reopen-1", AlertState.FAILED, error_code="exchange_down", http_status=503)
    await admit(journal, "reopen-2")
    await journal.set_state("reopen-2", AlertState.FAILED, error_code="bad_symbol", http_status=422)
    reopened = await asyncio.gather(*(journal.reopen("reopen-1", f"w{i}") for i in range(5)))
    rows = [r for r in reopened if r is not None]
    assert len(rows) == 1
    assert (rows[0]["state"], rows[0]["error_code"], rows[0]["http_status"]) == ("received", None, None)
    assert rows[0]["owner"].startswith("w") and rows[0]["lane"] == LANE and rows[0]["seq"] > 0
    assert await journal.earlier_unfinished(LANE, rows[0]["seq"] + 1000) is True  # it holds its lane again
    assert await journal.reopen("reopen-2", "w0") is None  # a 4xx is final
    assert await journal.reopen("never-admitted", "w0") is None


async def test_quarantine_sets_an_alert_aside_and_counts_it(journal, caplog):
    assert await journal.quarantined_count() == 0
    a = await admit(journal, "q-1")
    await journal.quarantine("q-1", "the journal row cannot be recovered: bad side")
    row = await journal.get("q-1")
    assert (row["state"], row["error_code"]) == ("quarantined", "quarantined") and "bad side" in row["error_message"]
    assert await journal.quarantined_count() == 1
    assert await journal.earlier_unfinished(LANE, a.seq + 1) is False
    assert "alert q-1 quarantined" in caplog.text


async def test_an_unreadable_orphan_is_quarantined_and_the_others_claimed(journal, caplog):
    await admit(journal, "bad-json", owner="dead")
    await admit(journal, "good", owner="dead")
    await corrupt(journal, "bad-json", "payload", '{"symbol":"BTCUSDT",***')
    row = await journal.get("bad-json")  # reading never raises: the row says what is wrong
    assert row["payload"] is None and row["unreadable"] == ["payload is not valid JSON (JSONDecodeError)"]
    await journal.heartbeat("w-a")
    assert [r["alert_id"] for r in await journal.claim_orphans("w-a", 0.5)] == ["good"]
    row = await journal.get("bad-json")
    assert (row["state"], row["error_code"]) == ("quarantined", "quarantined")
    assert "payload is not valid JSON" in row["error_message"]
    assert await journal.quarantined_count() == 1
    assert "alert bad-json quarantined" in caplog.text
    assert [r["alert_id"] for r in await journal.list(state="quarantined")] == ["bad-json"]


# ---------------------------------------------------------------- reads


async def test_list_is_newest_first_filtered_and_limited(journal):
    t = time.time()
    for i in range(5):
        await admit(journal, f"list-{i}", at=t + i)
    await journal.set_state("list-1", AlertState.REJECTED, error_code="too_small", http_status=422)
    await journal.set_state("list-3", AlertState.REJECTED, error_code="too_small", http_status=422)
    assert [r["alert_id"] for r in await journal.list(limit=10)] == [f"list-{i}" for i in (4, 3, 2, 1, 0)]
    assert [r["alert_id"] for r in await journal.list(limit=2)] == ["list-4", "list-3"]
    rejected = await journal.list(limit=10, state="rejected")
    assert [r["alert_id"] for r in rejected] == ["list-3", "list-1"]
    assert {(r["state"], r["error_code"], r["account"], r["symbol"]) for r in rejected} == {
        ("rejected", "too_small", "acct", "BTCUSDT")
    }
    assert rejected[0]["payload"] == {"symbol": "BTCUSDT", "side": "buy"}


async def test_timings_are_oldest_first_with_their_attempts(journal):
    t = time.time()
    await admit(journal, "old", at=t - 3600)
    await admit(journal, "t-1", at=t)
    await admit(journal, "t-2", at=t + 1)
    attempt = await start(journal, "t-1")
    await journal.order_finished(attempt, "filled", alert_state=AlertState.FILLED, response={"id": 1})
    rows = await journal.timings(t - 1)
    assert [r["alert_id"] for r in rows] == ["t-1", "t-2"]
    assert (rows[0]["account"], rows[0]["state"], rows[0]["received_at"]) == ("acct", "filled", pytest.approx(t))
    assert rows[0]["updated_at"] >= rows[0]["received_at"]
    assert [(o["alert_id"], o["account"], o["state"]) for o in rows[0]["orders"]] == [("t-1", "acct", "filled")]
    assert rows[0]["orders"][0]["finished_at"] >= rows[0]["orders"][0]["started_at"] and rows[1]["orders"] == []
    assert [r["alert_id"] for r in await journal.timings(t - 1, limit=1)] == ["t-2"]  # the newest ones


async def test_stats_count_alerts_per_state_and_the_unfinished(journal):
    for alert_id in ("s-1", "s-2", "s-3", "s-4"):
        await admit(journal, alert_id)
    attempt = await start(journal, "s-1")
    await journal.order_finished(attempt, "filled", alert_state=AlertState.FILLED)
    await journal.set_state("s-2", AlertState.REJECTED)
    await journal.set_state("s-3", AlertState.UNKNOWN, error_code=GAVE_UP)
    stats = await journal.stats()
    assert stats["alerts"] == {"filled": 1, "rejected": 1, "unknown": 1, "received": 1}
    assert stats["unfinished"] == 1


async def test_ping_answers(journal):
    await journal.ping()
