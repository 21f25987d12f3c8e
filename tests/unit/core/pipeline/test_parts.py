"""The engine's and the router's parts on their own, without a server: the answer to a
fanned-out alert (``fanout.combined``), alert ids (``ids``), what recovery does with an
orphaned journal row (``recovery.plan_recovery``) and the arrival order of a lane
(``lanes.Lanes``). The same rules run end to end in test_engine, test_fan_out, test_scopes."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from core.pipeline.admission import journal_payload
from core.pipeline.fanout import combined
from core.pipeline.ids import body_hash, fan_out_id, id_namespace, journal_key, shown_id, shown_outcome
from core.pipeline.lanes import Lanes
from core.pipeline.models import OWNER_PRINCIPAL, Alert, OrderRequest
from core.pipeline.outcomes import Outcome
from core.pipeline.recovery import plan_recovery
from core.trading.execution import Executor, ExecutorRegistry

# ---------------------------------------------------------------- fan-out: one status for every leg


def _legs(*statuses: int) -> list[Outcome]:
    return [Outcome(s, {"status": str(s)}) for s in statuses]


@pytest.mark.parametrize(
    ("statuses", "status"),
    [
        ((200, 202), 202),  # one leg still executing: never a 5xx (something may have been sent)
        ((503, 202), 202),
        ((200, 503), 200),  # one leg traded
        ((422, 200), 200),
        ((503, 422), 503),  # nothing was sent anywhere: a resend retries the failed leg
        ((502, 503), 503),
        ((422, 403), 422),  # refused everywhere: the highest refusal
    ],
)
def test_a_fanned_out_alert_is_answered_with_one_status(statuses, status):
    outcome = combined("p-1", ["a", "b"], _legs(*statuses))
    assert outcome.status == status
    assert outcome.headers == ({"Retry-After": "5"} if status == 503 else {})
    assert outcome.body == {
        "status": "fanout",
        "alert_id": "p-1",
        "accounts": {"a": {"status": str(statuses[0])}, "b": {"status": str(statuses[1])}},
    }


# ---------------------------------------------------------------- ids


def test_each_principal_has_its_own_namespace_and_sees_its_ids_as_sent():
    assert id_namespace(OWNER_PRINCIPAL) == id_namespace(None) == ""
    assert journal_key("", "a-1") == "a-1"
    key = journal_key("token:bob", "a-1")
    assert key == "token:bob\u203aa-1" and shown_id("token:bob", key) == "a-1"
    assert shown_id("token:eve", key) == key  # another namespace's key is not shortened
    assert fan_out_id("a-1", "alice") == "a-1\u2192alice"


def test_the_same_body_from_two_principals_is_two_alerts():
    body = b'{"symbol": "BTCUSDT"}'
    assert body_hash("", body) != body_hash("token:bob", body) != body_hash("token:eve", body)
    assert body_hash("token:bob", body) == body_hash("token:bob", body)


def test_an_answer_shows_the_sender_its_ids_in_every_leg():
    key = journal_key("token:bob", "p")
    outcome = Outcome(
        202,
        {
            "alert_id": key,
            "message": f"see GET /alerts/{key}",
            "accounts": {"a": {"alert_id": fan_out_id(key, "a")}},
        },
    )
    shown = shown_outcome("token:bob", outcome)
    assert shown.body == {"alert_id": "p", "message": "see GET /alerts/p", "accounts": {"a": {"alert_id": "p\u2192a"}}}
    assert shown_outcome("", outcome) is outcome


# ---------------------------------------------------------------- recovery


class _Account(Executor):
    route = "rest"

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        raise NotImplementedError

    async def submit(self, order: OrderRequest) -> Any:
        raise NotImplementedError


def _registry(ready: bool = True) -> ExecutorRegistry:
    registry = ExecutorRegistry(default_account="main")
    executor = _Account(account="main", exchange="paper")
    executor.ready = ready
    registry.register_for("test")("main", executor)
    return registry


def _row(**fields: Any) -> dict[str, Any]:
    row = {
        "alert_id": "a-1",
        "payload": {"symbol": "BTC/USDT", "side": "buy", "amount": "0.01"},
        "received_at": time.time(),
        "account": "main",
        "state": "received",
        "lane": "main|BTC/USDT",
        "seq": 7,
        "orders": [],
    }
    row.update(fields)
    return row


def _attempt(route: str = "rest", placed_by: str | None = None, started_at: float = 100.0) -> dict[str, Any]:
    request = {"account": "main", "exchange": "paper", "symbol": "BTC/USDT", "market_type": "spot"}
    return {
        "route": route,
        "request": {**request, "client_order_id": "tv1"} if route != "lookup" else {"lookup": "tv1"},
        "response": {"placed_by": placed_by} if placed_by else None,
        "started_at": started_at,
    }


def test_an_alert_with_an_intent_and_no_outcome_is_reconciled_as_if_sent_at_its_claim():
    # Its admission recorded the client order id; the worker died before journaling an outcome.
    before = time.time()
    for age in (0, 3600):  # even too old to send: it may have been sent (reconciliation expires it if absent)
        plan = plan_recovery(_row(client_order_id="tv1", received_at=time.time() - age), _registry(), max_age=60)
        assert plan is not None and plan.expire is None and plan.order is None and plan.intent == "tv1"
        assert (plan.lane, plan.seq) == ("main|BTC/USDT", 7) and plan.sent_at >= before


def test_an_alert_never_sent_is_executed_in_its_lane():
    # An earlier version's row: no intent, no attempt: it was never sent.
    plan = plan_recovery(_row(), _registry(), max_age=60)
    assert plan is not None and plan.expire is None and plan.order is None and plan.intent is None
    assert (plan.alert.alert_id, plan.alert.amount, plan.lane, plan.seq) == ("a-1", Decimal("0.01"), "main|BTC/USDT", 7)
    assert plan.executor is not None and plan.executor.account == "main"


def test_an_alert_never_sent_and_too_old_expires():
    plan = plan_recovery(_row(received_at=time.time() - 120), _registry(), max_age=60)
    assert plan is not None and plan.expire == "it was never sent and is too old to send now"


def test_an_alert_with_an_attempt_is_reconciled_asking_the_plugin_that_placed_it():
    row = _row(state="unknown", orders=[_attempt(placed_by="other"), _attempt(started_at=200.0)])
    plan = plan_recovery(row, _registry(), max_age=60)
    assert plan is not None and plan.order is not None and plan.expire is None
    assert (plan.order.client_order_id, plan.sent_at, plan.placed_by) == ("tv1", 200.0, "other")


def test_after_a_crash_mid_send_every_plugin_is_asked_and_a_lookup_row_is_not_the_order():
    row = _row(state="submitting", orders=[_attempt(), _attempt(route="lookup", started_at=300.0)])
    plan = plan_recovery(row, _registry(), max_age=60)
    assert plan is not None and plan.order is not None
    assert (plan.order.client_order_id, plan.placed_by, plan.sent_at) == ("tv1", None, 300.0)


def test_an_account_gone_expires_the_alert_and_one_not_ready_waits():
    plan = plan_recovery(_row(account="gone"), _registry(), max_age=60)
    assert plan is not None and plan.executor is None
    assert plan.expire == "account 'gone' is not configured (credentials from an alert are never stored)"
    assert plan_recovery(_row(), _registry(ready=False), max_age=60) is None


def test_an_unreadable_row_raises_for_the_caller_to_quarantine():
    with pytest.raises(ValueError, match="symbol"):
        plan_recovery(_row(payload={"side": "buy"}), _registry(), max_age=60)


# ---------------------------------------------------------------- lanes


async def test_a_lane_serves_the_lowest_arrival_first_and_others_in_parallel():
    earlier_elsewhere = {"x": True}
    asked: list[tuple[str, int]] = []

    async def earlier(key: str, seq: int) -> bool:
        asked.append((key, seq))
        return earlier_elsewhere.get(key, False)

    lanes = Lanes(earlier, poll_max=0.01)
    ran: list[str] = []
    release = asyncio.Event()

    async def work(name: str) -> str:
        ran.append(name)
        if name == "a3":
            await release.wait()
        return name

    def run(key: str, seq: int, *, check_others: bool = False) -> asyncio.Task[str]:
        ticket = lanes.join(key, seq)  # its place now, as the admission returns
        return asyncio.create_task(lanes.run(ticket, lambda: work(f"{key}{seq}"), check_others=check_others))

    first = run("a", 3)
    await asyncio.sleep(0)  # a3 runs and holds lane a
    later = [run("a", seq) for seq in (9, 5)]  # 9's admission returned first; 5 arrived before it
    other = run("b", 1)
    assert await other == "b1"  # another lane does not wait for lane a
    held = run("x", 1, check_others=True)
    release.set()
    assert [await first, *[await t for t in later]] == ["a3", "a9", "a5"]
    assert ran[:1] == ["a3"] and ran.index("a5") < ran.index("a9")  # 5 arrived before 9
    assert "x1" not in ran  # an earlier alert of lane x is unfinished in another worker
    earlier_elsewhere["x"] = False
    assert await held == "x1"
    assert {key for key, _ in asked} == {"x"}  # only the alert told to check asked the journal
    assert len(lanes) == 0


async def test_a_lane_is_handed_to_the_next_alert_only():
    lanes = Lanes(lambda key, seq: _answer(False))
    releases = [asyncio.Event() for _ in range(6)]
    started: list[int] = []

    async def work(seq: int) -> int:
        started.append(seq)
        await releases[seq].wait()
        return seq

    tickets = [lanes.join("a", seq) for seq in range(6)]
    tasks = [asyncio.create_task(lanes.run(t, lambda s=t.seq: work(s))) for t in tickets]
    for _ in range(3):
        await asyncio.sleep(0)
    assert started == [0]
    waiting = [t.waiter for t in tickets[1:]]
    assert all(w is not None and not w.done() for w in waiting)
    releases[0].set()
    await tasks[0]
    # Alert 0 is done: the lane went to alert 1 alone (its waiter settled), nobody else was woken.
    assert [w.done() for w in waiting if w is not None] == [True, False, False, False, False]
    for release in releases:
        release.set()
    assert await asyncio.gather(*tasks) == list(range(6)) and started == list(range(6))


async def test_a_cancelled_waiter_hands_its_place_on():
    lanes = Lanes(lambda key, seq: _answer(False))
    release = asyncio.Event()

    async def work(seq: int) -> int:
        if seq == 1:
            await release.wait()
        return seq

    tickets = [lanes.join("a", seq) for seq in (1, 2, 3)]
    tasks = [asyncio.create_task(lanes.run(t, lambda s=t.seq: work(s))) for t in tickets]
    await asyncio.sleep(0)
    tasks[1].cancel()  # alert 2 goes away while it waits its turn
    release.set()
    assert await tasks[0] == 1 and await tasks[2] == 3
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert len(lanes) == 0


async def test_a_place_left_before_its_run_started_holds_no_one_up():
    lanes = Lanes(lambda key, seq: _answer(False))
    first, never_run, third = (lanes.join("a", seq) for seq in (1, 2, 3))
    running = asyncio.create_task(lanes.run(first, lambda: _answer(True)))
    lanes.leave(never_run)  # its task could not be made
    lanes.leave(never_run)  # twice: nothing more
    assert await asyncio.wait_for(lanes.run(third, lambda: _answer(True)), 5) is True
    assert await running is True and len(lanes) == 0
    alone = lanes.join("b", 1)
    lanes.leave(alone)
    assert len(lanes) == 0  # an emptied lane is dropped


async def test_an_earlier_alert_that_joins_while_a_later_one_asks_the_journal_goes_first():
    # Alert 7 holds the lane while it asks whether another worker still has an earlier alert
    # unfinished. Meanwhile this process claims that alert (3, recovered from a dead worker)
    # and the journal's answer no longer counts it (it is ours now): 7 must not go first.
    lanes: Lanes
    ran: list[int] = []
    claimed = asyncio.Event()
    recovered: list[asyncio.Task[int]] = []

    async def earlier(key: str, seq: int) -> bool:
        if seq == 7 and not claimed.is_set():
            claimed.set()
            recovered.append(asyncio.create_task(lanes.run(lanes.join(key, 3), lambda: work(3), check_others=True)))
            await asyncio.sleep(0)  # the claim commits while the question is on its way
        return False  # nothing of another worker's: the recovered alert is this process's now

    async def work(seq: int) -> int:
        ran.append(seq)
        return seq

    lanes = Lanes(earlier, poll_max=0.01)
    later = asyncio.create_task(lanes.run(lanes.join("a", 7), lambda: work(7), check_others=True))
    assert await asyncio.wait_for(later, 5) == 7
    assert await recovered[0] == 3
    assert ran == [3, 7] and len(lanes) == 0


async def test_an_admission_behind_a_queue_is_patient_and_hurried_as_the_queue_runs_short():
    hurried: list[int] = []
    lanes = Lanes(lambda key, seq: _answer(False), patience=4, hurry=lambda: hurried.append(len(lanes_queue())))
    releases = {seq: asyncio.Event() for seq in range(5)}

    def lanes_queue() -> list:
        return lanes._lanes["a"].queue if "a" in lanes._lanes else []

    async def work(seq: int) -> int:
        await releases[seq].wait()
        return seq

    assert lanes.patient("a") is None  # nothing ahead
    tickets = [lanes.join("a", seq) for seq in range(3)]
    assert lanes.patient("a") is None  # three ahead: fewer than the patience
    tickets.append(lanes.join("a", 3))
    lane = lanes.patient("a")
    assert lane is not None and lanes.patient("b") is None  # four ahead in lane a; lane b is empty
    tasks = [asyncio.create_task(lanes.run(t, lambda s=t.seq: work(s))) for t in tickets]
    lane.patient += 1  # a patient admission of lane a is on its way (core.pipeline.admission)
    for seq in range(2):
        releases[seq].set()
        assert await tasks[seq] == seq
    assert hurried == []  # two left ahead: not short yet (half the patience)
    releases[2].set()
    await tasks[2]
    assert hurried == [1]  # one left: the patient admission is to commit now, while the lane has work
    tickets.append(lanes.join("a", 4))  # it committed and took its place
    lane.patient -= 1
    tasks.append(asyncio.create_task(lanes.run(tickets[-1], lambda: work(4))))
    releases[3].set()
    releases[4].set()
    assert await asyncio.gather(*tasks[3:]) == [3, 4]
    assert hurried == [1] and len(lanes) == 0  # none waiting any more: never hurried again


async def test_no_admission_is_patient_without_a_patience_or_a_way_to_hurry_it():
    for lanes in (Lanes(lambda key, seq: _answer(False)), Lanes(lambda key, seq: _answer(False), patience=2)):
        for seq in range(5):
            lanes.join("a", seq)
        assert lanes.patient("a") is None


async def _answer(value: bool) -> bool:
    return value


def test_the_journaled_payload_is_the_alert_in_json_without_its_id_and_credentials():
    alert = Alert.model_validate(
        {
            "alert_id": "a-1",
            "symbol": "BTC/USDT",
            "side": "buy",
            "amount": "1e-3",
            "price": 50000,
            "account": ["x", "y"],
            "params": {"n": Decimal("1.50"), "list": [1, "a"]},
            "raw": {"note": "hi"},
            "credentials": {"api_key": "key-0123456789", "secret": "secret-0123456789"},
            "received_at": 1.5,
        }
    )
    payload = journal_payload(alert)
    assert payload == alert.model_dump(mode="json", exclude={"credentials", "alert_id"})
    assert list(payload) == [f for f in Alert.model_fields if f not in ("alert_id", "credentials")]
    assert payload["amount"] == "0.001" and payload["params"]["n"] == "1.50"
