"""The executor conformance kit: does an execution plugin keep the router's promises?

Every case drives the whole pipeline — a real router (its engine, its SQLite journal,
its hooks) in this process, with the plugin's executor registered as account
``conformance`` — through one misfortune, then asks the venue itself how many orders it
booked. A case passes when it ends with **exactly one order, or a visible refusal** (the
alert journaled as rejected / failed / expired / unknown *and* ``on_error`` called), and
never answers a 5xx once an order exists (TradingView would resend it).

Cases (``CASES``):

* ``lost_reply_after_booking`` — the venue books the order, the reply is lost;
* ``timeout_before_sending`` — the order never reaches the venue (a timeout, a refused
  connection) — or, with a venue adapter, whatever the venue's "not taken" looks like;
* ``rejection`` — the venue refuses the order for good: 422, nothing booked, no retry;
* ``rate_limited`` — the venue answers "slow down" once: retried, booked once;
* ``crash_between_send_and_journal`` — a worker sent the order and died before its
  answer was journaled; another worker recovers the alert;
* ``crash_before_send`` — a worker journaled the attempt and died before the order left;
* ``cancel_of_unknown_order`` — a cancel alert naming an order the venue never had;
* ``resend_of_the_same_alert`` — the same alert three times (two at once, one later);
* ``duplicate_client_order_id`` — the executor is asked to submit a resting order whose
  client order id the venue already has open: the venue must end with one order. This one
  checks the plugin passes the client order id to the venue (most venues refuse a
  duplicate only while the first order is open — binance accepts the id of a filled
  order again — which is why the engine itself never resends unless a lookup proved the
  order absent). The other cases (``NEVER_DOUBLES``) hold for *any* executor, even one
  implementing only ``prepare`` and ``submit``.

A plugin author provides a ``VenueAdapter`` (``core.testing.adapter``): how to build the executor, an alert it can
trade, how many orders the venue holds, and — optionally — how to make the venue itself
misbehave (an emulator's fault API). Faults the adapter does not inject are injected
in-process around ``submit`` as the contract describes them (a plain
``ConnectionResetError`` after booking, a ``TimeoutError`` before sending,
``OrderRejected``, ``VenueBusy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from core.pipeline.models import Alert
from core.store.journal import AdmissionRequest
from core.store.states import SUCCESS_STATES, AlertState, is_final
from core.testing.adapter import (
    ACCOUNT,
    FAULTS,
    CaseReport,
    ConformanceFailure,
    FaultInjector,
    Harness,
    VenueAdapter,
)
from core.trading.execution import client_order_id

__all__ = [
    "ACCOUNT",
    "CASES",
    "FAULTS",
    "NEVER_DOUBLES",
    "CaseReport",
    "ConformanceFailure",
    "ConformanceKit",
    "FaultInjector",
    "VenueAdapter",
]

CASES = (
    "lost_reply_after_booking",
    "timeout_before_sending",
    "rejection",
    "rate_limited",
    "crash_between_send_and_journal",
    "crash_before_send",
    "cancel_of_unknown_order",
    "resend_of_the_same_alert",
    "duplicate_client_order_id",
)
NEVER_DOUBLES = tuple(c for c in CASES if c != "duplicate_client_order_id")

SUCCESS = SUCCESS_STATES - {AlertState.SKIPPED}  # an order placed or canceled (not "nothing to do")
REFUSED = frozenset({AlertState.REJECTED, AlertState.FAILED, AlertState.EXPIRED, AlertState.UNKNOWN})

# Fast clocks so a case takes about a second: resends after 0.3 s of "absent", a dead
# worker is noticed after 0.3 s, reconciliation gives up after 5 s.
ROUTER_OPTIONS = """
router:
  response_budget: 1.0
  retry_base_delay: 0.01
  retry_max_delay: 0.05
  reconcile_interval: 0.02
  reconcile_max_delay: 0.1
  resubmit_after: 0.3
  reconcile_timeout: 5
  worker_heartbeat: 0.05
  worker_stale_after: 0.3
"""


# ---------------------------------------------------------------- the kit


class ConformanceKit:
    """Runs the cases against one adapter; each case in a fresh router under ``workdir``."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self._runs = 0

    async def check(self, case: str, adapter: VenueAdapter) -> CaseReport:
        """Run ``case``; its report, or ``ConformanceFailure`` saying what went wrong."""
        if case not in CASES:
            raise ValueError(f"unknown case {case!r}; the cases are {', '.join(CASES)}")
        try:
            return await asyncio.wait_for(getattr(self, f"_{case}")(adapter), adapter.timeout)
        except TimeoutError:
            raise ConformanceFailure(f"{case}: did not finish within {adapter.timeout:g}s") from None
        finally:
            await adapter.close()

    async def check_all(self, adapter: VenueAdapter, cases: tuple[str, ...] = CASES) -> list[CaseReport]:
        return [await self.check(case, adapter) for case in cases]

    # -- running a router

    @contextlib.asynccontextmanager
    async def _router(self, adapter: VenueAdapter) -> AsyncIterator[tuple[Any, Any, FaultInjector, Harness]]:
        from core.config import Settings
        from core.web.app import create_app  # the app pulls in the server stack: only when a case runs

        self._runs += 1
        data = self.workdir / f"conformance-{self._runs}"
        data.mkdir(parents=True, exist_ok=True)
        (data / "plugins.yaml").write_text(ROUTER_OPTIONS)
        settings = Settings.from_env(
            env_file=None,
            environ={
                "WEBHOOK_SECRET": "conformance-" + secrets.token_hex(16),
                "DEFAULT_EXCHANGE": "paper",
                "DATA_DIR": str(data),
                "PLUGINS_FILE": str(data / "plugins.yaml"),
                "RATE_LIMIT": "10000/second",
                "AUTH_FAILURE_LIMIT": "10000/second",
                "STATE_URL": "",
            },
        )
        injector = FaultInjector(await adapter.make_executor(data))
        harness = Harness(injector)
        app = create_app(settings, extra_plugins=[("conformance", harness)])
        async with app.test_app() as test_app:
            router = app.extensions["router"]
            if not injector.ready:
                raise ConformanceFailure(f"the executor did not start: {injector.error}")
            yield test_app.test_client(), router, injector, harness

    async def _fault(self, adapter: VenueAdapter, injector: FaultInjector, fault: str) -> None:
        if not await adapter.inject(fault):
            injector.pending.append(fault)

    async def _post(self, client: Any, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = json.dumps({k: v for k, v in payload.items() if v is not None}).encode()
        response = await client.post("/webhook", data=body, headers={"Content-Type": "application/json"})
        return response.status_code, await response.get_json()

    async def _settled(self, router: Any, alert_id: str, timeout: float) -> dict[str, Any]:
        """The alert's journal row once nothing more will happen to it."""
        task = router.engine.inflight.get(alert_id)
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            row = await router.journal.get(alert_id) or {}
            state = row.get("state")
            if is_final(state, row.get("error_code")):
                if alert_id not in router.engine.inflight:
                    return row
            if time.monotonic() > deadline:
                return row
            await asyncio.sleep(delay)  # the engine works in the background: poll its journal row, bounded
            delay = min(delay * 2, 0.1)

    async def _verdict(
        self,
        case: str,
        adapter: VenueAdapter,
        router: Any,
        harness: Harness,
        alert_id: str,
        answers: list[int],
        *,
        expect: frozenset[str] | None = None,
    ) -> CaseReport:
        row = await self._settled(router, alert_id, adapter.timeout / 2)
        state = row.get("state", "missing")
        coids = {o["client_order_id"] for o in row.get("orders") or [] if o.get("route") != "lookup"}
        booked = sum([await adapter.booked(c) for c in coids])
        report = CaseReport(case, alert_id, state, booked, answers, row)

        def fail(why: str) -> ConformanceFailure:
            return ConformanceFailure(
                f"{case}: {why} (alert {alert_id}: state {state}, {booked} order(s) at the venue, "
                f"answers {answers}; journal attempts "
                f"{[(o.get('state'), o.get('error')) for o in row.get('orders') or []]})"
            )

        if len(coids) > 1:
            raise fail("the alert was sent under several client order ids")
        if booked > 1:
            raise fail("the order was placed more than once")
        if booked and any(a >= 500 for a in answers):
            raise fail("an answer was a 5xx although the order exists (TradingView would resend it)")
        if state in SUCCESS:
            if booked != 1 and state != "canceled":
                raise fail("the alert reports success but the venue holds no order")
        elif state in REFUSED:
            if booked and state != "unknown":
                raise fail("the alert reports a refusal but the venue holds the order")
            if state not in harness.errors.get(alert_id, []):
                raise fail("the refusal was not reported (on_error was not called)")
        else:
            raise fail("the alert did not settle")
        if expect is not None and state not in expect:
            raise fail(f"expected the alert to end {' or '.join(sorted(expect))}")
        return report

    def _alert(self, adapter: VenueAdapter, alert_id: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**(payload or adapter.alert(alert_id)), "id": alert_id, "account": ACCOUNT}

    # -- the cases

    async def _one_fault(
        self, case: str, adapter: VenueAdapter, fault: str, expect: frozenset[str] | None = None
    ) -> CaseReport:
        async with self._router(adapter) as (client, router, injector, harness):
            alert_id = f"{case}-{secrets.token_hex(4)}"
            await self._fault(adapter, injector, fault)
            status, _ = await self._post(client, self._alert(adapter, alert_id))
            return await self._verdict(case, adapter, router, harness, alert_id, [status], expect=expect)

    async def _lost_reply_after_booking(self, adapter: VenueAdapter) -> CaseReport:
        report = await self._one_fault("lost_reply_after_booking", adapter, "lose_reply")
        if report.booked != 1 and report.state != "unknown":
            raise ConformanceFailure(
                f"lost_reply_after_booking: the order was booked before the reply was lost, but "
                f"the alert ended {report.state} with {report.booked} order(s)"
            )
        return report

    async def _timeout_before_sending(self, adapter: VenueAdapter) -> CaseReport:
        return await self._one_fault("timeout_before_sending", adapter, "not_sent")

    async def _rate_limited(self, adapter: VenueAdapter) -> CaseReport:
        return await self._one_fault("rate_limited", adapter, "rate_limit")

    async def _rejection(self, adapter: VenueAdapter) -> CaseReport:
        async with self._router(adapter) as (client, router, injector, harness):
            alert_id = f"rejection-{secrets.token_hex(4)}"
            payload = adapter.refused_alert(alert_id)
            if payload is None:
                await self._fault(adapter, injector, "reject")
            status, body = await self._post(client, self._alert(adapter, alert_id, payload))
            report = await self._verdict(
                "rejection", adapter, router, harness, alert_id, [status], expect=frozenset({"rejected"})
            )
            if status != 422:
                raise ConformanceFailure(f"rejection: answered {status}, not 422: {body}")
            if injector.submits != 1:
                raise ConformanceFailure(
                    f"rejection: submit was called {injector.submits} times; a refusal is never retried"
                )
            return report

    async def _cancel_of_unknown_order(self, adapter: VenueAdapter) -> CaseReport:
        async with self._router(adapter) as (client, router, injector, harness):
            alert_id = f"cancel-{secrets.token_hex(4)}"
            status, body = await self._post(client, self._alert(adapter, alert_id, adapter.cancel_alert(alert_id)))
            report = await self._verdict(
                "cancel_of_unknown_order",
                adapter,
                router,
                harness,
                alert_id,
                [status],
                expect=frozenset({"rejected", "failed", "unknown"}),
            )
            if status < 400 and status != 202:
                raise ConformanceFailure(f"cancel_of_unknown_order: answered {status}: {body}")
            return report

    async def _resend_of_the_same_alert(self, adapter: VenueAdapter) -> CaseReport:
        async with self._router(adapter) as (client, router, injector, harness):
            alert_id = f"resend-{secrets.token_hex(4)}"
            payload = self._alert(adapter, alert_id)
            first = await asyncio.gather(self._post(client, payload), self._post(client, payload))
            await self._settled(router, alert_id, adapter.timeout / 2)
            later = await self._post(client, payload)
            answers = [s for s, _ in (*first, later)]
            report = await self._verdict(
                "resend_of_the_same_alert", adapter, router, harness, alert_id, answers, expect=SUCCESS
            )
            if report.booked != 1:
                raise ConformanceFailure(f"resend_of_the_same_alert: {report.booked} orders for one alert")
            return report

    async def _crash(self, case: str, adapter: VenueAdapter, *, sent: bool) -> CaseReport:
        async with self._router(adapter) as (client, router, injector, harness):
            alert_id = f"{case}-{secrets.token_hex(4)}"
            now = time.time()
            alert = Alert.model_validate(
                {k: v for k, v in adapter.alert(alert_id).items() if v is not None}
                | {"alert_id": alert_id, "account": ACCOUNT, "received_at": now}
            )
            order = await injector.inner.prepare(alert, client_order_id(alert_id, ACCOUNT))
            journal, dead = router.journal, "crashed-worker-" + secrets.token_hex(4)
            await journal.heartbeat(dead)  # alive while it journals, then never again
            await journal.admit(
                AdmissionRequest(
                    explicit_id=alert_id,
                    body_hash=hashlib.sha256(alert_id.encode()).hexdigest(),
                    received_at=now,
                    dedup_window=60,
                    principal="conformance",
                    account=ACCOUNT,
                    symbol=alert.symbol,
                    side=alert.side or alert.action,
                    amount=str(alert.amount or ""),
                    payload=alert.model_dump(mode="json", exclude={"credentials"}),
                    owner=dead,
                    lane=f"{ACCOUNT}|{injector.lane_key(alert)}",
                )
            )
            await journal.order_started(
                alert_id,
                client_order_id=order.client_order_id,
                account=order.account,
                exchange=order.exchange,
                route=injector.route,
                request=order.model_dump(mode="json"),
            )
            if sent:
                await injector.inner.submit(order)  # it reached the venue; the worker died before journaling the answer
            report = await self._verdict(case, adapter, router, harness, alert_id, [])
            if sent and report.booked != 1:
                raise ConformanceFailure(
                    f"{case}: the order was at the venue before the crash; it ended with {report.booked}"
                )
            return report

    async def _crash_between_send_and_journal(self, adapter: VenueAdapter) -> CaseReport:
        return await self._crash("crash_between_send_and_journal", adapter, sent=True)

    async def _crash_before_send(self, adapter: VenueAdapter) -> CaseReport:
        return await self._crash("crash_before_send", adapter, sent=False)

    async def _duplicate_client_order_id(self, adapter: VenueAdapter) -> CaseReport:
        async with self._router(adapter) as (client, router, injector, harness):
            alert_id = f"duplicate-{secrets.token_hex(4)}"
            alert = Alert.model_validate(
                {k: v for k, v in adapter.resting_alert(alert_id).items() if v is not None}
                | {"alert_id": alert_id, "account": ACCOUNT, "received_at": time.time()}
            )
            order = await injector.inner.prepare(alert, client_order_id(alert_id, ACCOUNT))
            await injector.inner.submit(order)
            try:
                await injector.inner.submit(order)
            except Exception:
                pass
            booked = await adapter.booked(order.client_order_id)
            if booked != 1:
                raise ConformanceFailure(
                    f"duplicate_client_order_id: the venue holds {booked} orders with client order id "
                    f"{order.client_order_id}; pass the client order id to the venue (it refuses "
                    f"or returns a duplicate) so that a resend can never become a second order"
                )
            return CaseReport("duplicate_client_order_id", alert_id, "filled", booked)
