"""What the dashboard reads: the journal's step timestamps (both backends), the timeline,
the latency series, the feed's filters, and ``scrub``."""

from __future__ import annotations

import json
import sqlite3

import pytest

from core.dashboard import reads
from tests.conftest import STATE_BACKENDS
from tests.support import alert_body, signed_headers


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_the_journal_times_every_step_of_an_alert(app_client):
    async with app_client() as (client, app):
        body = alert_body(id="timed-1", strategy="breakout")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        journal = app.extensions["router"].journal
        row = await journal.get("timed-1")
        sent, answered = row["orders"][0]["started_at"], row["orders"][0]["finished_at"]
        assert (
            row["received_at"]
            <= row["authenticated_at"]
            <= row["journaled_at"]
            <= sent
            <= answered
            <= row["updated_at"]
        )
        steps = reads.timeline(row)
        assert [s.name for s in steps] == ["received", "authenticated", "journaled", "sent", "answered", "filled"]
        assert all(s.at is not None for s in steps)
        assert steps[0].since_previous_ms is None and all(s.since_previous_ms >= 0 for s in steps[1:])
        assert steps[-1].since_received_ms == pytest.approx((row["updated_at"] - row["received_at"]) * 1000, abs=0.1)

        timings = await journal.timings(row["received_at"] - 1)
        assert [t["alert_id"] for t in timings] == ["timed-1"]
        assert timings[0]["orders"][0]["account"] == "paper" and timings[0]["orders"][0]["finished_at"] == answered

        listed = await reads.alert_feed(journal, reads.FeedFilter(strategy="break"))
        assert [r["alert_id"] for r in listed] == ["timed-1"] and listed[0]["strategy"] == "breakout"
        assert await reads.alert_feed(journal, reads.FeedFilter(strategy="other")) == []


def test_an_older_sqlite_journal_gets_the_timing_columns(tmp_path):
    from core.store.sqlite.journal import SqliteJournal as Journal

    path = tmp_path / "journal.sqlite3"
    with sqlite3.connect(path) as conn:  # the alerts table as it was before
        conn.execute(
            "CREATE TABLE alerts (alert_id TEXT PRIMARY KEY, explicit_id INTEGER NOT NULL, body_hash TEXT NOT NULL,"
            " received_at REAL NOT NULL, updated_at REAL NOT NULL, principal TEXT, account TEXT, symbol TEXT,"
            " side TEXT, amount TEXT, state TEXT NOT NULL, payload TEXT NOT NULL, result TEXT, error_code TEXT,"
            " error_message TEXT, http_status INTEGER, duplicates INTEGER NOT NULL DEFAULT 0, owner TEXT,"
            " lane TEXT NOT NULL DEFAULT '')"
        )
        conn.execute(
            "INSERT INTO alerts (alert_id, explicit_id, body_hash, received_at, updated_at, state, payload)"
            " VALUES ('old', 1, 'h', 1.0, 2.0, 'filled', '{}')"
        )
    journal = Journal(path)
    try:
        row = journal.get_sync("old")
        assert row["authenticated_at"] is None and row["journaled_at"] is None
        steps = {s.name: s for s in reads.timeline(row)}
        assert steps["journaled"].at is None and steps["journaled"].note == "not timed separately"
        Journal(path).close()  # a second process opening it finds the columns there
    finally:
        journal.close()


def test_a_refusal_before_sending_has_no_sent_step_and_names_the_reason():
    row = {
        "received_at": 10.0,
        "authenticated_at": 10.001,
        "journaled_at": 10.002,
        "updated_at": 10.010,
        "state": "rejected",
        "error_code": "unknown_symbol",
        "error_message": "symbol 'X' is not a market",
        "orders": [],
    }
    steps = {s.name: s for s in reads.timeline(row)}
    assert steps["sent"].at is None and steps["sent"].note == "nothing was sent to the exchange"
    assert steps["rejected"].note == "unknown_symbol: symbol 'X' is not a market"
    assert steps["rejected"].since_previous_ms == pytest.approx(8.0)
    view = reads.alert_view(row)
    assert view["refused"] and view["reason"].startswith("unknown_symbol")


def test_latency_series_percentiles_per_bucket_and_account():
    rows = []
    for i, (answer_ms, trip_ms, account) in enumerate([(10, 5, "a"), (20, 6, "a"), (30, 7, "b"), (400, 300, "b")]):
        received = 120.0 + i
        rows.append(
            {
                "alert_id": str(i),
                "account": account,
                "state": "filled",
                "received_at": received,
                "orders": [
                    {
                        "account": account,
                        "started_at": received + (answer_ms - trip_ms) / 1000,
                        "finished_at": received + answer_ms / 1000,
                    }
                ],
            }
        )
    rows.append({"alert_id": "r", "account": "a", "state": "rejected", "received_at": 200.0, "orders": []})
    series = reads.latency_series(rows, bucket=60, start=0, end=240)
    assert series["x"] == [120]
    assert series["answer_p50"] == [20.0] and series["answer_p99"] == [400.0]
    assert series["round_trip_p50"] == {"a": [5.0], "b": [7.0]}
    assert series["states"] == {"filled": 4, "rejected": 1} and series["alerts"] == 5
    assert (series["from"], series["to"]) == (0, 240)


def test_feed_filters():
    row = {
        "alert_id": "x",
        "state": "failed",
        "account": "Binance",
        "symbol": "BINANCE:BTCUSDT",
        "received_at": 100.0,
        "principal": "token:bot",
        "payload": {"raw": {}},
    }
    assert reads.FeedFilter(state="problems").matches(row)
    assert reads.FeedFilter(account="binance", symbol="btcusdt", strategy="bot").matches(row)
    assert not reads.FeedFilter(account="bybit").matches(row)
    assert not reads.FeedFilter(since=101).matches(row) and reads.FeedFilter(until=101).matches(row)
    parsed = reads.FeedFilter.from_args({"state": "nonsense", "since": "1970-01-01T00:01", "limit": "9999"})
    assert parsed.state == "" and parsed.since == 60.0 and parsed.limit == 500
    assert parsed.query() == {"since": "1970-01-01T00:01"}


def test_scrub_drops_secret_keys_at_any_depth():
    value = {"apiKey": "k", "nested": [{"secret": "s", "Api-Key": "h", "symbol": "BTC/USDT"}], "token": "t", "price": 1}
    assert reads.scrub(value) == {"nested": [{"symbol": "BTC/USDT"}], "price": 1}
    assert "k" not in json.loads(reads.pretty(value)).values()


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_the_feed_lists_the_newest_first_and_filters_by_state(app_client):
    async with app_client() as (client, app):
        for i in range(4):
            body = alert_body(id=f"feed-{i}", symbol="BTCUSDT" if i != 2 else "NOPE/USDT")
            await client.post("/webhook", data=body, headers=signed_headers(body))
        journal = app.extensions["router"].journal
        newest = await reads.alert_feed(journal, reads.FeedFilter(limit=2))
        assert [r["alert_id"] for r in newest] == ["feed-3", "feed-2"]
        refused = await reads.alert_feed(journal, reads.FeedFilter(state="problems"))
        assert [r["alert_id"] for r in refused] == ["feed-2"] and refused[0]["error_code"] == "unknown_symbol"
        assert [r["alert_id"] for r in await reads.alert_feed(journal, reads.FeedFilter(state="filled", limit=2))] == [
            "feed-3",
            "feed-1",
        ]
