"""App-owned execution: alerts run in tasks the engine owns, in their lanes, with retries.

* **Lanes** (``core.pipeline.lanes``). Alerts for one (account, symbol) execute one at a
  time, in arrival order; other symbols run in parallel.
* **Retries.** The order errors of ``core.errors`` say what may be retried: ``VenueBusy``
  (rate limits) and ``OrderNotSent`` (a request that provably never left) are retried
  with capped exponential backoff and jitter while the alert's answer budget lasts;
  ``OrderRejected`` and ``CredentialsRefused`` never are.
* **Outcome unknown** (``core.pipeline.reconcile``). ``OutcomeUnknown`` — or any exception
  that is not an order error — means the order may exist: it is looked up by client
  order id, and sent again only once proven absent.
* **Recovery** (``core.pipeline.recovery``). Every worker heartbeats into the journal; the
  unfinished alerts of a worker that stopped heartbeating are claimed and reconciled or
  executed.
* **Endings** (``core.pipeline.settle``): journaled, then told to the hooks.

The engine is given what it needs: the router as an ``EngineHost`` (the journal, the
accounts, the hooks; it is the ``router`` the hooks receive) and the risk gate every
order passes before it is sent. It never imports the router.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from core.errors import RiskLimitExceeded, ServiceUnavailable, StoreUnavailable
from core.pipeline.host import EngineHost
from core.pipeline.lanes import Lanes
from core.pipeline.models import Alert, NothingToDo, OrderRequest, OrderResult
from core.pipeline.outcomes import Outcome, as_order_error, describe, may_be_booked, retries
from core.pipeline.periodic import every
from core.pipeline.placement import place_order
from core.pipeline.reconcile import Reconciler
from core.pipeline.recovery import maintain, plan_recovery
from core.pipeline.settle import Settlement
from core.store.retrying import RetryingJournal
from core.trading.execution import Executor, client_order_id

log = logging.getLogger(__name__)

# The gate every order passes before it is sent (``core.pipeline.killswitch.KillSwitch.check``):
# returns to let it go, raises ``RiskLimitExceeded`` to refuse it.
RiskGate = Callable[[Alert, Executor, OrderRequest], Awaitable[None]]


class ExecutionEngine:
    def __init__(self, router: EngineHost, *, risk_gate: RiskGate):
        self.router = router
        self.options = router.options
        self.worker_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.inflight: dict[str, asyncio.Task[Outcome]] = {}
        self.phase: dict[str, str] = {}  # alert_id → what it is doing now (for 202 answers)
        self._risk_gate = risk_gate
        self._lanes = Lanes(self._earlier_unfinished)
        self._settle = Settlement(router, lambda: self.journal)
        self._reconciler = Reconciler(
            router, self.options, journal=lambda: self.journal, place=self._place, settle=self._settle, phase=self.phase
        )
        self._background: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._patient: RetryingJournal | None = None

    @property
    def journal(self) -> RetryingJournal:
        """The journal, for execution: its writes wait out a state-store outage, because an
        alert already accepted must have every step recorded before it goes on."""
        if self._patient is None or self._patient.journal is not self.router.journal:
            self._patient = RetryingJournal(self.router.journal)
        return self._patient

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        try:
            await self.router.journal.heartbeat(self.worker_id)
        except StoreUnavailable as exc:  # start anyway: health says why, alerts get 503
            log.error("state store unavailable at startup: %s", exc.message)
        self._background.append(asyncio.create_task(self._maintenance_loop(), name="journal-maintenance"))

    async def stop(self, grace: float) -> None:
        # The loop ends on this event rather than on cancellation alone: a store client
        # may swallow a CancelledError delivered in the middle of its call.
        self._stopping.set()
        if self._background:
            _, stuck = await asyncio.wait(self._background, timeout=5)
            for task in stuck:
                task.cancel()
        pending = [t for t in self.inflight.values() if not t.done()]
        if pending:
            log.info("waiting up to %.0fs for %d order(s) in flight", grace, len(pending))
            done, still = await asyncio.wait(pending, timeout=grace)
            if still:
                log.warning(
                    "%d alert(s) still executing at shutdown; another worker or the next start recovers them",
                    len(still),
                )
                for alert_task in still:
                    alert_task.cancel()
                await asyncio.gather(*still, return_exceptions=True)
                return  # keep our heartbeat row: it goes stale and the alerts are claimed
        try:
            await self.router.journal.retire(self.worker_id)
        except StoreUnavailable:
            pass  # our heartbeat goes stale by itself

    async def _maintenance_loop(self) -> None:
        await every(self.options.worker_heartbeat, self._stopping, self._maintain, "journal maintenance")

    async def _maintain(self) -> None:
        # The journal itself, not the patient one: an outage is waited out by ``every``.
        await maintain(self.router.journal, self.worker_id, self.options.worker_stale_after, self._recover)

    # ------------------------------------------------------------ entry points

    def submit(self, alert: Alert, executor: Executor, *, lane: str, seq: int) -> asyncio.Task[Outcome]:
        """Start executing a freshly journaled alert; the task belongs to the engine."""
        return self._spawn(alert.alert_id or "", self._lanes.run(lane, seq, lambda: self._execute(alert, executor)))

    def _spawn(self, alert_id: str, coro: Coroutine[Any, Any, Outcome]) -> asyncio.Task[Outcome]:
        task = asyncio.create_task(coro, name=f"alert-{alert_id}")
        self.inflight[alert_id] = task

        def done(t: asyncio.Task[Outcome]) -> None:
            self.inflight.pop(alert_id, None)
            self.phase.pop(alert_id, None)

        task.add_done_callback(done)
        return task

    # ------------------------------------------------------------ answers

    async def answer_within_budget(self, alert_id: str, task: asyncio.Task[Outcome], received_at: float) -> Outcome:
        """The alert's outcome if ``task`` ends within the answer budget, else 202 naming its phase."""
        # shield: the request may be cancelled (client gone); the order must not be.
        remaining = max(0.05, self.options.response_budget - (time.time() - received_at))
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout=remaining)
        except TimeoutError:
            phase = self.phase.get(alert_id, "executing")
            return Outcome(
                202,
                {
                    "status": "accepted",
                    "phase": phase,
                    "alert_id": alert_id,
                    "message": f"journaled; {phase} continues; see GET /alerts/{alert_id}",
                },
            )

    async def duplicate_outcome(self, alert_id: str, received_at: float) -> Outcome:
        """The answer to a duplicate: the original alert's outcome, waited for within the budget.

        The original may be executing in this process (await its task), or its task may
        not be registered yet, or it runs in another worker: then the journal tells when
        it is done. Past the budget the duplicate gets 202 like the original did. The
        journal is read directly: during an outage the duplicate is answered 503 at once.
        """
        journal = self.router.journal
        if journal is None:
            raise ServiceUnavailable("the router is starting or stopping; nothing was sent", code="not_ready")
        deadline = received_at + self.options.response_budget
        delay = 0.01
        while True:
            task = self.inflight.get(alert_id)
            if task is not None:
                outcome = await self.answer_within_budget(alert_id, task, received_at)
                break
            row = await journal.get(alert_id) or {}
            outcome = Outcome.from_journal(row)
            if outcome.status != 202 or row.get("error_code") or time.time() + delay >= deadline:
                break
            await asyncio.sleep(delay)  # the original is still executing somewhere: poll its journal row
            delay = min(delay * 2, 0.1)
        body = dict(outcome.body)
        body["duplicate"] = True
        # Seen before: 200 with the original outcome in the body, 202 while it executes.
        return Outcome(202 if outcome.status == 202 else 200, body, state=outcome.state)

    # ------------------------------------------------------------ execution

    async def _earlier_unfinished(self, lane: str, seq: int) -> bool:
        return bool(await self.journal.earlier_unfinished(lane, seq))

    async def _execute(self, alert: Alert, executor: Executor) -> Outcome:
        alert_id = alert.alert_id or ""
        try:
            order = await executor.prepare(alert, client_order_id(alert_id, executor.account))
        except NothingToDo as reason:
            return await self._settle.skipped(alert, str(reason))
        except Exception as exc:
            return await self._settle.failed(alert, None, None, exc, sent=False)
        try:
            await self._risk_gate(alert, executor, order)
        except RiskLimitExceeded as exc:
            return await self._settle.refused(alert, order, exc)
        except Exception as exc:
            return await self._settle.failed(alert, order, None, exc, sent=False)
        # Retries must end before the answer is due (TradingView waits 3 s at most).
        remaining = self.options.response_budget - (time.time() - alert.received_at) - 0.1
        return await self._send(alert, executor, order, time.monotonic() + max(0.0, remaining))

    async def _send(self, alert: Alert, executor: Executor, order: OrderRequest, deadline: float) -> Outcome:
        delay = self.options.retry_base_delay
        while True:
            self.phase[alert.alert_id or ""] = "submitting"
            sent_at = time.time()
            row = await self.journal.order_started(
                alert.alert_id,
                client_order_id=order.client_order_id,
                account=order.account,
                exchange=order.exchange,
                route=executor.route,
                request=order.model_dump(mode="json"),
            )
            if time.time() - alert.received_at > self.options.recovery_max_age:
                # Held up (e.g. waiting for the state store) past the age an order may be sent at.
                await self.journal.order_finished(row, "failed", error="not sent: the alert expired")
                return await self._settle.expired(alert, order, "the alert is too old to send now")
            placer: list[str] = []
            try:
                result = await self._place(alert, executor, order, placer)
            except Exception as raised:
                exc = as_order_error(raised, sent=True)
                pause = delay * (0.5 + random.random())
                if retries(exc) and time.monotonic() + pause < deadline:
                    await self.journal.order_finished(row, "failed", error=describe(exc))
                    log.warning("alert %s: %s; retrying in %.2fs", alert.alert_id, describe(exc), pause)
                    await asyncio.sleep(pause)
                    delay = min(delay * 2, self.options.retry_max_delay)
                    continue
                if may_be_booked(exc):
                    placed_by = placer[-1] if placer else None
                    await self.journal.order_finished(
                        row,
                        "unknown",
                        error=describe(exc),
                        alert_id=alert.alert_id,
                        alert_state="unknown",
                        error_code="outcome_unknown",
                        http_status=202,
                        response={"placed_by": placed_by},
                    )
                    log.warning(
                        "alert %s: outcome unknown after %s; reconciling by client order id %s",
                        alert.alert_id,
                        describe(exc),
                        order.client_order_id,
                    )
                    return await self._reconciler.reconcile(alert, executor, order, sent_at, placed_by)
                return await self._settle.failed(alert, order, row, exc, sent=True)
            return await self._settle.succeeded(alert, order, row, result)

    async def _place(self, alert: Alert, executor: Executor, order: OrderRequest, placer: list[str]) -> OrderResult:
        return await place_order(self.router, alert, executor, order, placer)

    # ------------------------------------------------------------ recovery

    def _recover(self, row: dict[str, Any]) -> None:
        """Take up an alert claimed from a dead worker (``core.pipeline.recovery``)."""
        alert_id = row["alert_id"]
        if alert_id in self.inflight:
            return
        plan = plan_recovery(row, self.router.executors, max_age=self.options.recovery_max_age)
        if plan is None:
            return  # its account is not ready: claimed again on a later round
        alert, executor, order = plan.alert, plan.executor, plan.order
        if plan.expire is not None:
            self._spawn(alert_id, self._settle.expired(alert, None, plan.expire))
        elif executor is None:
            raise TypeError(f"alert {alert_id}: a recovery without an executor must expire")
        elif order is None:
            self._spawn(alert_id, self._lanes.run(plan.lane, plan.seq, lambda: self._execute(alert, executor)))
        else:
            sent_at, placed_by = plan.sent_at, plan.placed_by
            self._spawn(
                alert_id,
                self._lanes.run(
                    plan.lane,
                    plan.seq,
                    lambda: self._reconciler.reconcile(alert, executor, order, sent_at, placed_by),
                ),
            )
