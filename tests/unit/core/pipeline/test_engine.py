"""The engine's rules, with a scripted executor: dedup, ordering, retries, reconciliation,
the answer budget and recovery. End-to-end versions run against the emulator."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from core.errors import OrderRejected, OutcomeUnknown, VenueBusy
from core.pipeline.models import Alert, InboundRequest
from core.store.journal import AdmissionRequest
from core.store.states import GAVE_UP
from core.trading.execution import LookupResult, client_order_id
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
        # Every answer waited on the alert's own task, which woke them as it ended: none is left behind.
        assert app.extensions["router"].engine._answer_waiters == {}
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


@pytest.mark.parametrize(("behind", "workers", "patient"), [(8, 1, True), (0, 1, False), (8, 2, False)])
async def test_alerts_behind_a_queue_of_their_market_are_admitted_patiently_and_keep_their_order(
    app_client, scripted, write_plugins_yaml, state_url, monkeypatch, behind, workers, patient
):
    # With several workers every admission commits at once: alerts of one market arriving
    # at different workers are ordered by their commits.
    monkeypatch.setattr("core.pipeline.router.hypercorn_workers", lambda: workers)
    write_plugins_yaml(FAST.format(budget=2.0, resubmit_after=0.2) + f"  group_admissions_behind: {behind}\n")
    release = asyncio.Event()
    scripted.script = [("wait", release)]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        router = app.extensions["router"]
        journal = router.journal
        patience: list[tuple[str, bool]] = []
        in_lane = {8: asyncio.Event(), 12: asyncio.Event()}  # set once that many took their places
        admit = journal.admit

        def noting_admit(request, *, then=None, patient=False):
            patience.append((request.explicit_id, patient))

            def continuation(admission) -> None:
                then(admission)  # committed: the alert takes its place in its lane
                committed = sum(len(lane.queue) for lane in router.engine._lanes._lanes.values())
                if committed in in_lane:
                    in_lane[committed].set()

            return admit(request, then=continuation, patient=patient)

        journal.admit = noting_admit
        ids = [f"queue-{i:02d}" for i in range(12)]
        first = [asyncio.create_task(post(client, id=alert_id)) for alert_id in ids[:8]]
        await in_lane[8].wait()  # the first holds the lane, the others wait behind it
        assert [patient for _, patient in patience] == [False] * 8  # each arrived with fewer than 8 ahead
        rest = [asyncio.create_task(post(client, id=alert_id)) for alert_id in ids[8:]]
        await in_lane[12].wait()  # committed (within the journal's deferral) and in the lane
        release.set()
        answers = await asyncio.gather(*first, *rest)
        rows = [await journal.get(alert_id) for alert_id in ids]
    assert dict(patience[8:]) == {alert_id: patient for alert_id in ids[8:]}
    assert [status for status, _ in answers] == [200] * 12, answers
    arrival = [row["orders"][0]["client_order_id"] for row in sorted(rows, key=lambda r: r["seq"])]
    assert scripted.started_calls == arrival  # in arrival order, the patient ones after the rest
    assert {row["alert_id"] for row in rows[8:]} == set(ids[8:])


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
        assert "slow-1" not in app.extensions["router"].engine._answer_waiters  # the 202 stopped waiting
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


async def test_an_alert_task_cancelled_mid_send_leaves_the_engine_and_its_lane(app_client, scripted):
    # Only shutdown cancels an alert's task; as it ends it still leaves ``inflight``, its
    # phase and its lane, and a request waiting for its answer is woken.
    release = asyncio.Event()
    scripted.script = [("wait", release)]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        engine = app.extensions["router"].engine
        request = asyncio.create_task(post(client, id="cut-1"))
        await scripted.call_started.wait()
        task = engine.inflight["cut-1"]
        assert engine.phase["cut-1"] == "submitting" and len(engine._lanes) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "cut-1" not in engine.inflight and "cut-1" not in engine.phase and len(engine._lanes) == 0
        assert not engine._answer_waiters
        await asyncio.wait([request], timeout=5)
        assert request.done()
        release.set()


def hold_admissions(journal, gate: asyncio.Event, admitting: asyncio.Event) -> list[asyncio.Task]:
    """Hold the journal's admissions until ``gate`` is set (``admitting`` set as one is queued)."""
    held: list[asyncio.Task] = []
    if hasattr(journal, "db"):  # SQLite: the job waits on the writer thread
        submit = journal.db.submit
        ready = threading.Event()
        held_gate = asyncio.create_task(gate.wait())
        held_gate.add_done_callback(lambda _: ready.set())
        held.append(held_gate)

        def gated_submit(fn, then=None, *, quick=False, patient=False):
            admitting.set()
            # The gated job blocks until the gate opens: on the thread, never quick (on the loop).
            return submit(lambda conn: (ready.wait(10), fn(conn))[1], then)

        journal.db.submit = gated_submit
    else:  # Redis: the admission script is sent once the gate opens
        pipelines = journal._pipelines
        call = pipelines.call

        def gated_call(script, args, keys=(), **options):
            if script is not journal._admit:
                return call(script, args, keys, **options)
            admitting.set()
            reply = asyncio.get_running_loop().create_future()

            async def send() -> None:
                await gate.wait()
                try:
                    reply.set_result(await call(script, args, keys, **options))
                except Exception as exc:
                    reply.set_exception(exc)

            held.append(asyncio.create_task(send()))
            return reply

        pipelines.call = gated_call
    return held


async def test_a_request_cancelled_during_its_admission_still_executes_its_alert_once(app_client, scripted):
    # A graceful shutdown's end cancels the requests still running: one cancelled while its
    # admission commits must leave no journaled alert unexecuted (and execute it once).
    gate, admitting, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    scripted.script = [("wait", release)]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        router = app.extensions["router"]
        held = hold_admissions(router.journal, gate, admitting)
        delivered = asyncio.Event()
        admit = router.journal.admit

        def admit_then_tell(request, *, then=None):  # tells when the admission's continuation ran
            def continuation(admission) -> None:
                if then is not None:
                    then(admission)
                delivered.set()

            return admit(request, then=continuation)

        router.journal.admit = admit_then_tell
        request = asyncio.create_task(post(client, id="cut-1"))
        await admitting.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert "cut-1" not in router.engine.inflight and not scripted.calls  # still being admitted
        gate.set()
        await asyncio.gather(*held)
        await delivered.wait()
        assert "cut-1" in router.engine.inflight  # its execution started as the admission committed
        await scripted.call_started.wait()
        task = router.engine.inflight["cut-1"]
        release.set()
        await task
        assert await router.engine.writes.flush(timeout=5)
        row = await router.journal.get("cut-1")
    assert len(scripted.calls) == 1 and len(scripted.orders_for(scripted.calls[0].client_order_id)) == 1
    assert row["state"] == "filled" and [o["state"] for o in row["orders"]] == ["filled"]


async def test_an_alert_whose_execution_cannot_start_is_a_5xx_and_the_resend_executes_it_once(app_client, scripted):
    # Journaled, then its task cannot be made: it must not wait unexecuted (holding its lane)
    # until the next start's recovery. It ends as failed with nothing sent; the resend runs it.
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        router = app.extensions["router"]
        engine = router.engine
        spawn = engine._spawn
        refused: list[str] = []

        def spawn_refusing_once(alert_id, coro):
            if not refused:
                refused.append(alert_id)
                raise RuntimeError("no task can be made now")
            return spawn(alert_id, coro)

        engine._spawn = spawn_refusing_once
        status, answer = await post(client, id="ns-1")
        assert refused == ["ns-1"]
        assert status == 500 and answer["error"]["code"] == "internal_error"
        assert "nothing was sent" in answer["error"]["message"]
        assert not scripted.calls and len(engine._lanes) == 0  # its place in the lane was given up
        assert await engine.writes.flush(timeout=5)
        row = await router.journal.get("ns-1")
        assert row["state"] == "failed" and row["http_status"] == 500
        again_status, again = await post(client, id="ns-1")  # the sender resends on a 5xx
        assert await engine.writes.flush(timeout=5)
        row = await router.journal.get("ns-1")
    assert again_status == 200 and again["status"] == "filled"
    assert len(scripted.calls) == 1 and len(scripted.booked) == 1
    assert row["state"] == "filled"


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
            await admit_orphan(router, alert_id, intent=False, age=age)
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


# ---------------------------------------------------------------- one durable write; outcomes after the answer


async def admit_orphan(router, alert_id: str, *, intent: bool = True, age: float = 0) -> None:
    """Journal ``alert_id``, received ``age`` seconds ago, as a worker that died after
    admitting it (with ``intent``, its client order id recorded: sent or not, nobody can
    tell; without, it died before executing it)."""
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
        AdmissionRequest(
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
            client_order_id=client_order_id(alert_id, "script") if intent else None,
        )
    )


async def settled_row(router, alert_id: str, states: tuple[str, ...]) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = await router.journal.get(alert_id)
        if row["state"] in states and alert_id not in router.engine.inflight:
            return row
        await asyncio.sleep(0.02)  # polling the journal for the recovery's result, bounded
    raise AssertionError(f"{alert_id} is {row['state']}, not one of {states}")


async def test_an_alert_recovered_from_its_intent_that_was_sent_is_found_not_sent_again(app_client, scripted):
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        router = app.extensions["router"]
        # The dead worker had sent it: the exchange booked it, the journal never heard.
        prepared = await scripted.prepare(
            Alert(symbol="BTCUSDT", side="buy", amount="0.001", price="50000"), client_order_id("sent-1", "script")
        )
        scripted._book(prepared)
        await admit_orphan(router, "sent-1")
        row = await settled_row(router, "sent-1", ("reconciled",))
    assert scripted.calls == [] and len(scripted.orders_for(client_order_id("sent-1", "script"))) == 1
    assert [(o["state"], o["route"]) for o in row["orders"]] == [("filled", "lookup")]


async def test_an_alert_recovered_from_its_intent_and_absent_is_sent_once_after_resubmit_after(app_client, scripted):
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        router = app.extensions["router"]
        await admit_orphan(router, "unsent-1")
        claimed_by = time.time()
        row = await settled_row(router, "unsent-1", ("filled",))
    assert len(scripted.calls) == 1 and len(scripted.booked) == 1 and scripted.lookups >= 1
    # Never sooner than resubmit_after (0.2 s) after this worker claimed it: the lost request
    # could have been sent until the moment its worker died.
    assert row["orders"][-1]["started_at"] >= claimed_by + 0.2 - 0.05
    assert row["orders"][-1]["client_order_id"] == client_order_id("unsent-1", "script")


async def test_an_alert_recovered_from_its_intent_that_cannot_be_told_is_never_sent(app_client, scripted, monkeypatch):
    async def cannot_tell(order):
        scripted.lookups += 1
        return LookupResult.cannot_tell("the venue has no lookup by client id", ask_again=False)

    monkeypatch.setattr(scripted, "lookup", cannot_tell)
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        router = app.extensions["router"]
        await admit_orphan(router, "unknowable-1")
        row = await settled_row(router, "unknowable-1", ("unknown",))
        assert row["error_code"] == GAVE_UP and alert_not_in_lane(row)
    assert scripted.calls == [] and scripted.lookups >= 1


def alert_not_in_lane(row: dict) -> bool:
    return row["state"] == "unknown" and row["error_code"] == GAVE_UP


async def test_the_answer_does_not_wait_for_the_outcome_write_and_a_duplicate_meanwhile_gets_it(
    app_client, scripted, monkeypatch
):
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        router = app.extensions["router"]
        journal = router.journal
        release = asyncio.Event()
        held: list[asyncio.Task] = []
        record = journal.record

        def record_later(alert_id, attempts=(), **fields):
            done = asyncio.get_running_loop().create_future()

            async def write() -> None:
                await release.wait()
                await record(alert_id, attempts, **fields)
                done.set_result(None)

            held.append(asyncio.create_task(write()))
            return done

        monkeypatch.setattr(journal, "record", record_later)
        status, answer = await post(client, id="quick-1")
        assert status == 200 and answer["status"] == "filled"
        assert (await journal.get("quick-1"))["state"] == "received"  # the outcome is not journaled yet
        again_status, again = await post(client, id="quick-1")
        assert again_status == 200 and again["duplicate"] is True
        assert again["order"]["order_id"] == answer["order"]["order_id"] and len(scripted.calls) == 1
        release.set()
        assert await router.engine.writes.flush(timeout=5)
        row = await journal.get("quick-1")
    assert row["state"] == "filled" and [o["state"] for o in row["orders"]] == ["filled"]
    assert row["duplicates"] == 1 and row["client_order_id"] == client_order_id("quick-1", "script")


async def test_an_alert_waits_for_one_durable_write_its_admission(app_client, scripted, write_plugins_yaml, state_url):
    if state_url != "sqlite":
        pytest.skip("counts the SQLite writer's jobs")
    write_plugins_yaml(
        FAST.format(budget=1.0, resubmit_after=0.2).replace("worker_heartbeat: 0.05", "worker_heartbeat: 60")
    )
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        router = app.extensions["router"]
        db = router.journal.db
        awaited: list[str] = []
        queued: list[str] = []
        run, submit, later = db.run, db.submit, db.later

        slow: list[str] = []  # the writes of the alerts not marked quick (statements on the thread)

        async def counting_run(fn, *, read_only=False, fresh=True, quick=False):
            if not read_only:
                awaited.append(getattr(fn, "__qualname__", "?"))
            return await run(fn, read_only=read_only, fresh=fresh, quick=quick)

        def counting_submit(fn, then=None, *, quick=False, patient=False):  # a write waited for without a coroutine
            awaited.append(getattr(fn, "__qualname__", "?"))
            slow.extend([] if quick else awaited[-1:])
            return submit(fn, then, quick=quick, patient=patient)

        def counting_later(fn, *, quick=False):
            queued.append(getattr(fn, "__qualname__", "?"))
            slow.extend([] if quick else queued[-1:])
            return later(fn, quick=quick)

        db.run, db.submit, db.later = counting_run, counting_submit, counting_later
        for i in range(5):
            status, _ = await post(client, id=f"one-write-{i}")
            assert status == 200
        await router.engine.writes.flush(timeout=5)
        during, queued_during = list(awaited), len(queued)
    alerts = [name for name in during if not name.startswith(("SqliteJournal.heartbeat", "SqliteJournal.claim"))]
    assert alerts == ["SqliteJournal.admit.<locals>.admit"] * 5, during  # awaited: the admission only
    assert queued_during == 5  # and one queued write each: its attempt and its ending
    assert slow == []  # both quick: their statements run on the loop, only the COMMIT on the thread
