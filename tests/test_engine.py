"""The engine's rules, with a scripted executor: dedup, ordering, retries, reconciliation,
the answer budget and recovery. End-to-end versions run against the emulator."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import ccxt
import pytest

from core.journal import Journal
from tests.scripted_executor import ScriptedExecutor, ScriptedPlugin
from tests.support import alert_body, signed_headers

FAST = """
router:
  response_budget: {budget}
  retry_base_delay: 0.01
  retry_max_delay: 0.05
  reconcile_interval: 0.01
  reconcile_max_delay: 0.05
  resubmit_after: {resubmit_after}
  worker_heartbeat: 0.05
  worker_stale_after: 0.3
"""


@pytest.fixture
def scripted(write_plugins_yaml):
    write_plugins_yaml(FAST.format(budget=1.0, resubmit_after=0.2))
    return ScriptedExecutor()


async def post(client, **fields):
    body = alert_body(account="script", **fields)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    return response.status_code, await response.get_json()


async def test_same_alert_five_times_concurrently_is_one_order_with_consistent_answers(app_client, scripted):
    release = asyncio.Event()
    scripted.script = [("wait", release)]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        sends = [asyncio.create_task(post(client, id="same-1")) for _ in range(5)]
        await scripted.call_started.wait()
        release.set()
        answers = await asyncio.gather(*sends)
    assert len(scripted.calls) == 1
    assert all(status == 200 for status, _ in answers), answers
    order_ids = {a["order"]["order_id"] for _, a in answers}
    assert len(order_ids) == 1
    assert sorted(bool(a.get("duplicate")) for _, a in answers) == [False, True, True, True, True]


async def test_resend_without_id_within_window_is_deduplicated_later_one_is_new(app_client, scripted, write_plugins_yaml):
    write_plugins_yaml(FAST.format(budget=1.0, resubmit_after=0.2) + "  dedup_window: 60\n")
    body = alert_body(account="script")
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        first = await client.post("/webhook", data=body, headers=signed_headers(body))
        again = await client.post("/webhook", data=body, headers=signed_headers(body))
        router = app.extensions["router"]
        # The same static message fired minutes later is a new alert.
        await router.journal.db.run(lambda c: c.execute("UPDATE alerts SET received_at = received_at - 120"))
        later = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert [first.status_code, again.status_code, later.status_code] == [200, 200, 200]
    assert (await again.get_json())["duplicate"] is True
    assert "duplicate" not in await later.get_json()
    assert len(scripted.calls) == 2


async def test_alerts_for_one_symbol_execute_in_arrival_order(app_client, scripted, data_dir):
    release = asyncio.Event()
    scripted.script = [("wait", release)]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        sends = [asyncio.create_task(post(client, id=f"seq-{i:02d}", side="sell" if i % 2 else "buy")) for i in range(20)]
        await scripted.call_started.wait()
        release.set()
        answers = await asyncio.gather(*sends)
    assert all(status == 200 for status, _ in answers)
    journal = sqlite3.connect(data_dir / "journal.sqlite3")
    arrival = [r[0] for r in journal.execute("SELECT o.client_order_id FROM alerts a JOIN orders o USING (alert_id) ORDER BY a.rowid")]
    assert scripted.started_calls == arrival


async def test_other_symbols_are_not_blocked_by_a_slow_one(app_client, scripted):
    release = asyncio.Event()
    scripted.script = [("wait", release)]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        slow = asyncio.create_task(post(client, id="btc-slow", symbol="BTCUSDT"))
        await scripted.call_started.wait()
        status, answer = await post(client, id="eth-fast", symbol="ETHUSDT", amount="0.01", price="3000")
        assert status == 200 and not slow.done()
        release.set()
        assert (await slow)[0] == 200


async def test_answer_is_202_past_the_budget_and_execution_goes_on(app_client, scripted, write_plugins_yaml):
    write_plugins_yaml(FAST.format(budget=0.2, resubmit_after=0.2))
    release = asyncio.Event()
    scripted.script = [("wait", release)]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        status, answer = await post(client, id="slow-1")
        assert status == 202 and answer["alert_id"] == "slow-1" and answer["phase"] == "submitting"
        release.set()
        await app.extensions["router"].engine.inflight["slow-1"]
        status_body = await (await client.get("/alerts/slow-1", headers=signed_headers(b""))).get_json()
    assert status_body["state"] == "filled" and len(status_body["orders"]) == 1
    assert "payload" in status_body and "body_hash" not in status_body


async def test_client_going_away_never_cancels_the_order(app_client, scripted, data_dir):
    release = asyncio.Event()
    scripted.script = [("wait", release)]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        request = asyncio.create_task(post(client, id="gone-1"))
        await scripted.call_started.wait()
        request.cancel()
        task = app.extensions["router"].engine.inflight["gone-1"]
        release.set()
        await task
    assert len(scripted.calls) == 1 and len(scripted.orders_for(scripted.calls[0].client_order_id)) == 1
    state = sqlite3.connect(data_dir / "journal.sqlite3").execute("SELECT state FROM alerts WHERE alert_id='gone-1'").fetchone()
    assert state == ("filled",)


async def test_rate_limited_attempts_are_retried_then_filled_once(app_client, scripted, data_dir):
    scripted.script = [ccxt.RateLimitExceeded("binance 429"), ccxt.DDoSProtection("binance 418"), "ok"]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        status, answer = await post(client, id="rl-1")
    assert status == 200 and answer["status"] == "filled"
    assert len(scripted.calls) == 3 and len(scripted.booked) == 1
    attempts = sqlite3.connect(data_dir / "journal.sqlite3").execute(
        "SELECT state FROM orders WHERE alert_id='rl-1' ORDER BY attempt").fetchall()
    assert attempts == [("failed",), ("failed",), ("filled",)]


async def test_rate_limit_outlasting_the_budget_is_503_with_nothing_sent(app_client, scripted, write_plugins_yaml):
    write_plugins_yaml(FAST.format(budget=0.3, resubmit_after=0.2))
    scripted.script = [ccxt.RateLimitExceeded("429")] * 100
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        status, answer = await post(client, id="rl-2")
    assert status == 503 and answer["error"]["code"] == "exchange_busy"
    assert not scripted.booked and 1 < len(scripted.calls) < 100


async def test_deterministic_refusal_is_422_and_never_retried(app_client, scripted):
    scripted.script = [ccxt.InsufficientFunds("binance Account has insufficient balance for requested action.")]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        status, answer = await post(client, id="nf-1")
    assert status == 422 and "insufficient balance" in answer["error"]["message"]
    assert len(scripted.calls) == 1


async def test_timeout_after_booking_is_reconciled_not_resent(app_client, scripted, data_dir):
    scripted.script = [("book_then_raise", ccxt.RequestTimeout("binance POST /api/v3/order timed out"))]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        status, answer = await post(client, id="to-1")
        task = app.extensions["router"].engine.inflight.get("to-1")
        if task:
            await task
        again_status, again = await post(client, id="to-1")
    assert status in (200, 202)
    assert again_status == 200 and again["duplicate"] is True and again["status"] == "reconciled"
    assert len(scripted.calls) == 1 and len(scripted.booked) == 1
    states = sqlite3.connect(data_dir / "journal.sqlite3").execute(
        "SELECT state, route FROM orders WHERE alert_id='to-1' ORDER BY id").fetchall()
    assert states == [("unknown", "rest"), ("filled", "lookup")]


async def test_lost_request_proven_absent_is_sent_again_once(app_client, scripted):
    scripted.script = [ccxt.NetworkError("connection reset")]  # sent, never booked
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        await post(client, id="lost-1")
        task = app.extensions["router"].engine.inflight.get("lost-1")
        if task:
            await task
        row = await app.extensions["router"].journal.get("lost-1")
    assert len(scripted.calls) == 2 and len(scripted.booked) == 1
    assert scripted.lookups >= 1
    assert row["state"] == "filled"


async def write_orphan(data_dir, alert_id: str, *, age: float) -> None:
    """Journal an alert as a worker that died before executing it would have left it."""
    journal = Journal(data_dir / "journal.sqlite3")
    received_at = time.time() - age
    payload = {"alert_id": alert_id, "account": "script", "symbol": "BTCUSDT", "side": "buy", "amount": "0.001",
               "price": "50000", "order_type": "market", "params": {}, "raw": {}, "received_at": received_at}
    try:
        await journal.admit(explicit_id=alert_id, body_hash="x" * 64, received_at=received_at, dedup_window=60,
                            principal="hmac", account="script", symbol="BTCUSDT", side="buy", amount="0.001",
                            payload=payload, owner="dead-worker")
        await journal.heartbeat("dead-worker")
        await journal.db.run(lambda c: c.execute("UPDATE workers SET heartbeat_at = heartbeat_at - 3600"))
    finally:
        journal.close()


async def test_recovery_executes_unsent_alerts_and_expires_old_ones(app_client, scripted, data_dir):
    for alert_id, age in (("orphan-fresh", 5), ("orphan-old", 3600)):
        await write_orphan(data_dir, alert_id, age=age)
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        router = app.extensions["router"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            fresh, old = await router.journal.get("orphan-fresh"), await router.journal.get("orphan-old")
            if fresh["state"] == "filled" and old["state"] == "expired":
                break
            await asyncio.sleep(0.02)  # polling the journal for the recovery's result, bounded
    assert fresh["state"] == "filled" and old["state"] == "expired", (fresh["state"], old["state"])
    assert len(scripted.calls) == 1 and scripted.calls[0].client_order_id == fresh["orders"][0]["client_order_id"]
