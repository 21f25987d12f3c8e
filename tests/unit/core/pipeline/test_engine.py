"""The engine's rules, with a scripted executor: dedup, ordering, retries, reconciliation,
the answer budget and recovery. End-to-end versions run against the emulator."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from core.errors import OrderRejected, OutcomeUnknown, VenueBusy
from core.pipeline.models import InboundRequest
from core.web.app import read_signature_message
from tests.conftest import STATE_BACKENDS
from tests.scripted_executor import ScriptedExecutor, ScriptedPlugin
from tests.support import alert_body, signed_headers

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)

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


async def test_resend_without_id_within_window_is_deduplicated_later_one_is_new(
    app_client, scripted, write_plugins_yaml
):
    write_plugins_yaml(FAST.format(budget=1.0, resubmit_after=0.2) + "  dedup_window: 60\n")
    body = alert_body(account="script")
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        first = await client.post("/webhook", data=body, headers=signed_headers(body))
        again = await client.post("/webhook", data=body, headers=signed_headers(body))
        # The same static message fired two minutes later (its real arrival time) is a new alert.
        router = app.extensions["router"]
        later_at = time.time() + 120
        headers = {k.lower(): v for k, v in signed_headers(body, timestamp=int(later_at)).items()}
        later = await router.receive(
            InboundRequest(
                body=body,
                headers=headers,
                remote_addr="127.0.0.1",
                scheme="http",
                payload=json.loads(body),
                received_at=later_at,
            )
        )
    assert [first.status_code, again.status_code, later.status] == [200, 200, 200]
    assert (await again.get_json())["duplicate"] is True
    assert "duplicate" not in later.body
    assert len(scripted.calls) == 2


async def test_alerts_for_one_symbol_execute_in_arrival_order(app_client, scripted):
    release = asyncio.Event()
    scripted.script = [("wait", release)]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        sends = [
            asyncio.create_task(post(client, id=f"seq-{i:02d}", side="sell" if i % 2 else "buy")) for i in range(20)
        ]
        await scripted.call_started.wait()
        release.set()
        answers = await asyncio.gather(*sends)
        # Under load the last ones may be answered 202 (past the 1 s budget): let them finish.
        await asyncio.gather(*list(app.extensions["router"].engine.inflight.values()))
        rows = [await app.extensions["router"].journal.get(f"seq-{i:02d}") for i in range(20)]
    assert all(status in (200, 202) for status, _ in answers)
    arrival = [row["orders"][0]["client_order_id"] for row in sorted(rows, key=lambda r: r["seq"])]
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
        try:
            status, answer = await post(client, id="slow-1")
        finally:
            release.set()  # a failed request must not leave the order hanging at shutdown
        assert status == 202 and answer["alert_id"] == "slow-1" and answer["phase"] in ("executing", "submitting")
        task = app.extensions["router"].engine.inflight.get("slow-1")
        if task is not None:
            await task
        status_body = await (
            await client.get("/alerts/slow-1", headers=signed_headers(read_signature_message("slow-1")))
        ).get_json()
    assert status_body["state"] == "filled" and len(status_body["orders"]) == 1
    assert "payload" in status_body and "body_hash" not in status_body


async def test_client_going_away_never_cancels_the_order(app_client, scripted):
    release = asyncio.Event()
    scripted.script = [("wait", release)]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        request = asyncio.create_task(post(client, id="gone-1"))
        await scripted.call_started.wait()
        request.cancel()
        task = app.extensions["router"].engine.inflight["gone-1"]
        release.set()
        await task
        row = await app.extensions["router"].journal.get("gone-1")
    assert len(scripted.calls) == 1 and len(scripted.orders_for(scripted.calls[0].client_order_id)) == 1
    assert row["state"] == "filled" and [o["state"] for o in row["orders"]] == ["filled"]


async def test_rate_limited_attempts_are_retried_then_filled_once(app_client, scripted):
    scripted.script = [VenueBusy("binance 429"), VenueBusy("binance 418"), "ok"]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        status, answer = await post(client, id="rl-1")
        row = await app.extensions["router"].journal.get("rl-1")
    assert status == 200 and answer["status"] == "filled"
    assert len(scripted.calls) == 3 and len(scripted.booked) == 1
    assert [o["state"] for o in row["orders"]] == ["failed", "failed", "filled"]


async def test_rate_limit_outlasting_the_budget_is_503_with_nothing_sent(app_client, scripted, write_plugins_yaml):
    write_plugins_yaml(FAST.format(budget=0.3, resubmit_after=0.2))
    scripted.script = [VenueBusy("429")] * 100
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        status, answer = await post(client, id="rl-2")
    assert status == 503 and answer["error"]["code"] == "exchange_busy"
    assert not scripted.booked and 1 < len(scripted.calls) < 100


async def test_deterministic_refusal_is_422_and_never_retried(app_client, scripted):
    scripted.script = [OrderRejected("binance Account has insufficient balance for requested action.")]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        status, answer = await post(client, id="nf-1")
    assert status == 422 and "insufficient balance" in answer["error"]["message"]
    assert len(scripted.calls) == 1


async def test_timeout_after_booking_is_reconciled_not_resent(app_client, scripted):
    scripted.script = [("book_then_raise", OutcomeUnknown("binance POST /api/v3/order timed out"))]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        status, answer = await post(client, id="to-1")
        task = app.extensions["router"].engine.inflight.get("to-1")
        if task:
            await task
        again_status, again = await post(client, id="to-1")
        row = await app.extensions["router"].journal.get("to-1")
    assert status in (200, 202)
    assert again_status == 200 and again["duplicate"] is True and again["status"] == "reconciled"
    assert len(scripted.calls) == 1 and len(scripted.booked) == 1
    assert [(o["state"], o["route"]) for o in row["orders"]] == [("unknown", "rest"), ("filled", "lookup")]


async def test_lost_request_proven_absent_is_sent_again_once(app_client, scripted):
    scripted.script = [OutcomeUnknown("connection reset")]  # sent, never booked
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        await post(client, id="lost-1")
        task = app.extensions["router"].engine.inflight.get("lost-1")
        if task:
            await task
        row = await app.extensions["router"].journal.get("lost-1")
    assert len(scripted.calls) == 2 and len(scripted.booked) == 1
    assert scripted.lookups >= 1
    assert row["state"] == "filled"


async def test_recovery_executes_unsent_alerts_and_expires_old_ones(app_client, scripted):
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        router = app.extensions["router"]
        # Journaled by a worker that died (it never heartbeated) before executing them.
        for alert_id, age in (("orphan-fresh", 5), ("orphan-old", 3600)):
            received_at = time.time() - age
            payload = {
                "alert_id": alert_id,
                "account": "script",
                "symbol": "BTCUSDT",
                "side": "buy",
                "amount": "0.001",
                "price": "50000",
                "order_type": "market",
                "params": {},
                "raw": {},
                "received_at": received_at,
            }
            await router.journal.admit(
                explicit_id=alert_id,
                body_hash=alert_id * 4,
                received_at=received_at,
                dedup_window=60,
                principal="hmac",
                account="script",
                symbol="BTCUSDT",
                side="buy",
                amount="0.001",
                payload=payload,
                owner="dead-worker",
                lane="script|BTC/USDT",
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            fresh, old = await router.journal.get("orphan-fresh"), await router.journal.get("orphan-old")
            if fresh["state"] == "filled" and old["state"] == "expired":
                break
            await asyncio.sleep(0.02)  # polling the journal for the recovery's result, bounded
    assert fresh["state"] == "filled" and old["state"] == "expired", (fresh["state"], old["state"])
    assert len(scripted.calls) == 1 and scripted.calls[0].client_order_id == fresh["orders"][0]["client_order_id"]


async def test_resend_of_an_alert_that_failed_before_sending_executes_it(app_client, scripted, write_plugins_yaml):
    write_plugins_yaml(FAST.format(budget=0.3, resubmit_after=0.2))
    scripted.script = [VenueBusy("429")] * 100
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        status, answer = await post(client, id="busy-1")
        assert status == 503 and not scripted.booked  # nothing sent: TradingView resends
        scripted.script = []
        resends = await asyncio.gather(*(post(client, id="busy-1") for _ in range(3)))
    assert sorted(s for s, _ in resends) == [200, 200, 200]
    assert len(scripted.booked) == 1
    assert sorted(bool(a.get("duplicate")) for _, a in resends) == [False, True, True]


async def test_duplicate_of_a_refused_alert_is_200_with_the_original_outcome(app_client, scripted):
    scripted.script = [OrderRejected("binance Filter failure: LOT_SIZE")]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        first = await post(client, id="bad-1")
        again = await post(client, id="bad-1")
    assert first[0] == 422
    assert again[0] == 200 and again[1]["duplicate"] is True and again[1]["error"]["code"] == "exchange_rejected"
    assert len(scripted.calls) == 1
