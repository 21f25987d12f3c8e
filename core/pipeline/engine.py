"""App-owned execution: alerts run in tasks the engine owns, in their lanes, with retries.

* **Lanes** (``core.pipeline.lanes``). Alerts for one (account, symbol) execute one at a
  time, in arrival order; other symbols run in parallel. Only the order's preparation, the
  risk gate and the send (with its retries, and a reconciliation) hold the lane.
* **Journal writes** (``core.pipeline.writes``). The admission (with the order's intent)
  is the one durable write before the send; the attempts and the final state are queued
  after the exchange answered, and the answer does not wait for them.
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
* **Endings** (``core.pipeline.settle``): journaled (queued), then told to the hooks.

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

from core.errors import RiskLimitExceeded, ServiceUnavailable, StoreUnavailable, WebhookError
from core.pipeline.host import EngineHost
from core.pipeline.lanes import Lane, Lanes, Ticket
from core.pipeline.models import Alert, NothingToDo, OrderRequest, OrderResult
from core.pipeline.outcomes import Outcome, as_order_error, describe, may_be_booked, retries
from core.pipeline.periodic import every
from core.pipeline.placement import place_order
from core.pipeline.reconcile import Reconciler
from core.pipeline.recovery import maintain, plan_recovery
from core.pipeline.settle import Settlement, attempt
from core.pipeline.writes import PendingWrites
from core.store.journal import AttemptRecord
from core.trading.execution import Executor, client_order_id

log = logging.getLogger(__name__)

# The gate every order passes before it is sent (``core.pipeline.killswitch.KillSwitch.check``):
# returns to let it go, raises ``RiskLimitExceeded`` to refuse it.
RiskGate = Callable[[Alert, Executor, OrderRequest], Awaitable[None]]
# What ends an alert once its lane is released: its settlement (``Settlement``), or its outcome.
Ending = Callable[[], Awaitable[Outcome]]


class ExecutionEngine:
    def __init__(self, router: EngineHost, *, risk_gate: RiskGate, patience: int = 0):
        """``patience``: how many alerts ahead in its lane make an alert's admission patient
        (``core.pipeline.lanes``, "Patient admissions"); 0, none is."""
        self.router = router
        self.options = router.options
        self.worker_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.inflight: dict[str, asyncio.Task[Outcome]] = {}
        self.phase: dict[str, str] = {}  # alert_id → what it is doing now (for 202 answers)
        self._answer_waiters: dict[str, list[asyncio.Future[None]]] = {}  # woken as the alert's task ends
        self._risk_gate = risk_gate
        self.writes = PendingWrites(lambda: self.router.journal)
        self._lanes = Lanes(self._earlier_unfinished, patience=patience, hurry=self.writes.expedite)
        self._settle = Settlement(router, self.writes)
        self._reconciler = Reconciler(
            router, self.options, writes=self.writes, place=self._place, settle=self._settle, phase=self.phase
        )
        self._background: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

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
        self.writes.expedite()  # patient admissions too: their alerts are waited for below
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
                # A task cancelled before its first step never ran its own ``_forget``.
                for alert_id in [a for a, t in self.inflight.items() if t.done()]:
                    self._forget(alert_id)
                await self.writes.flush(timeout=5)
                return  # keep our heartbeat row: it goes stale and the alerts are claimed
        if not await self.writes.flush(timeout=max(grace, 5)):
            log.warning(
                "%d alert(s) ended but their outcome is not journaled (the state store is unavailable); "
                "the next start reconciles them by client order id",
                len(self.writes),
            )
            return  # keep our heartbeat row: they are claimed and reconciled
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

    def submit(
        self, alert: Alert, executor: Executor, *, lane: str, seq: int, check_others: bool = True
    ) -> asyncio.Task[Outcome]:
        """Start executing a freshly journaled alert; the task belongs to the engine. Call it
        as the admission returns (no await in between): the alert takes its place in its
        lane now. ``check_others``: the journal is asked, when its turn comes, whether
        another worker's earlier alert still holds the lane (``Admission.behind_others``)."""
        alert_id = alert.alert_id or ""
        ticket = self._lanes.join(lane, seq)
        work = lambda: self._execute(alert, executor)  # noqa: E731
        coro = self._in_lane(alert_id, ticket, work, check_others)
        try:
            return self._spawn(alert_id, coro)
        except BaseException:
            coro.close()
            self._lanes.leave(ticket)  # never run: the alerts behind it must not wait for it
            raise

    def patient_lane(self, lane: str) -> Lane | None:
        """``lane`` when an alert admitted into it now may be admitted patiently
        (``core.pipeline.lanes``, "Patient admissions"), else None."""
        return self._lanes.patient(lane)

    def not_started(self, alert: Alert, error: BaseException) -> asyncio.Task[Outcome]:
        """A freshly journaled alert whose execution could not start (``submit`` raised):
        ended as failed with nothing sent, a 5xx, so that the sender's resend executes it
        (``Journal.reopen``) instead of it waiting unexecuted for the next start's recovery."""
        alert_id = alert.alert_id or ""
        log.error("alert %s was journaled but its execution could not start", alert_id, exc_info=error)
        ending = self._settle.failed(alert, None, error, sent=False)
        owned = self._owned(alert_id, ending)
        try:
            return self._spawn(alert_id, owned)
        except BaseException:  # nor can this task be made: the next start's recovery takes it up
            owned.close()
            ending.close()
            raise

    async def _in_lane(
        self, alert_id: str, ticket: Ticket, work: Callable[[], Awaitable[Ending]], check_others: bool
    ) -> Outcome:
        """The alert's task: ``work`` in its lane; then, the lane released, how it ends. As
        it ends (in the task's last step, no callback in between) the alert leaves
        ``inflight`` and its answer's waiters are woken."""
        try:
            ending = await self._lanes.run(ticket, work, check_others=check_others)
            return await ending()
        finally:
            self._forget(alert_id)

    async def _owned(self, alert_id: str, coro: Coroutine[Any, Any, Outcome]) -> Outcome:
        """``coro`` as the alert's task, ended as ``_in_lane`` ends (for an alert that needs no lane)."""
        try:
            return await coro
        finally:
            self._forget(alert_id)

    def _spawn(self, alert_id: str, coro: Coroutine[Any, Any, Outcome]) -> asyncio.Task[Outcome]:
        """Run ``coro`` (``_in_lane`` or ``_owned``: it forgets the alert as it ends) as the
        alert's task, owned by the engine. (One coroutine per alert, not a wrapper around
        another: every step of the task resumes each of them.)"""
        task = asyncio.create_task(coro, name=f"alert-{alert_id}")
        self.inflight[alert_id] = task
        return task

    def _forget(self, alert_id: str) -> None:
        self.inflight.pop(alert_id, None)
        self.phase.pop(alert_id, None)
        for waiter in self._answer_waiters.pop(alert_id, ()):
            _wake(waiter)

    # ------------------------------------------------------------ answers

    async def answer_within_budget(self, alert_id: str, task: asyncio.Task[Outcome], received_at: float) -> Outcome:
        """The alert's outcome if ``task`` ends within the answer budget, else 202 naming its phase."""
        if not task.done():
            # Wait on a future of the request's own: cancelling the request (client gone)
            # cancels it, never the order's task. (One future and one timer: cheaper than
            # wait_for(shield(task)).)
            # The engine's own tasks (``_owned``) wake it as they end, in their last step;
            # any other task through a done callback.
            remaining = max(0.05, self.options.response_budget - (time.time() - received_at))
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            owned = self.inflight.get(alert_id) is task
            wake = None
            if owned:
                self._answer_waiters.setdefault(alert_id, []).append(waiter)
            else:
                wake = _waker(waiter)
                task.add_done_callback(wake)
            timer = loop.call_later(remaining, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                if wake is not None:
                    task.remove_done_callback(wake)
                else:
                    waiters = self._answer_waiters.get(alert_id)
                    if waiters is not None and waiter in waiters:
                        waiters.remove(waiter)
                        if not waiters:
                            del self._answer_waiters[alert_id]
        if task.done():
            return task.result()
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
            known = self.writes.outcome(alert_id)  # ended here; its journal write is on its way
            if known is not None:
                outcome = known
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
        journal = self.router.journal
        if journal is None:
            raise StoreUnavailable("the journal is closed")
        while True:  # the cross-process half of a lane: waits out an outage of the state store
            try:
                return bool(await journal.earlier_unfinished(lane, seq, owner=self.worker_id))
            except StoreUnavailable as exc:
                log.error("lane %s waits for the state store: %s", lane, exc.message)
                await asyncio.sleep(0.5)

    async def _execute(self, alert: Alert, executor: Executor) -> Ending:
        """In the lane: prepare, pass the risk gate, send. How the alert ends, to run once
        the lane is released."""
        alert_id = alert.alert_id or ""
        try:
            order = await executor.prepare(alert, client_order_id(alert_id, executor.account))
        except NothingToDo as reason:
            return self._skipped(alert, reason)
        except Exception as exc:
            return self._failed(alert, None, exc)
        try:
            await self._risk_gate(alert, executor, order)
        except RiskLimitExceeded as refusal:
            return self._refused(alert, order, refusal)
        except Exception as exc:
            return self._failed(alert, order, exc)
        return await self._send(alert, executor, order, self._deadline(alert))

    # The endings of an alert refused before anything was sent.

    def _skipped(self, alert: Alert, reason: NothingToDo) -> Ending:
        return lambda: self._settle.skipped(alert, str(reason))

    def _failed(self, alert: Alert, order: OrderRequest | None, exc: BaseException) -> Ending:
        return lambda: self._settle.failed(alert, order, exc, sent=False)

    def _refused(self, alert: Alert, order: OrderRequest, refusal: RiskLimitExceeded) -> Ending:
        return lambda: self._settle.refused(alert, order, refusal)

    def _deadline(self, alert: Alert) -> float:
        # Retries must end before the answer is due (TradingView waits 3 s at most).
        remaining = self.options.response_budget - (time.time() - alert.received_at) - 0.1
        return time.monotonic() + max(0.0, remaining)

    async def _send(self, alert: Alert, executor: Executor, order: OrderRequest, deadline: float) -> Ending:
        alert_id = alert.alert_id or ""
        delay = self.options.retry_base_delay
        route = executor.route
        earlier: list[AttemptRecord] = []  # attempts refused before booking: journaled with the ending
        while True:
            self.phase[alert_id] = "submitting"
            if time.time() - alert.received_at > self.options.recovery_max_age:
                # Held up (e.g. waiting for its lane) past the age an order may be sent at.
                return lambda: self._settle.expired(alert, order, "the alert is too old to send now", earlier)
            sent_at = time.time()
            placer: list[str] = []
            try:
                result = await self._place(alert, executor, order, placer)
            except Exception as raised:
                exc = as_order_error(raised, sent=True)
                pause = delay * (0.5 + random.random())
                if retries(exc) and time.monotonic() + pause < deadline:
                    earlier.append(attempt(order, route, sent_at, "failed", error=describe(exc)))
                    log.warning("alert %s: %s; retrying in %.2fs", alert_id, describe(exc), pause)
                    await asyncio.sleep(pause)
                    delay = min(delay * 2, self.options.retry_max_delay)
                    continue
                if may_be_booked(exc):
                    placed_by = placer[-1] if placer else None
                    unknown = attempt(
                        order, route, sent_at, "unknown", error=describe(exc), response={"placed_by": placed_by}
                    )
                    self.writes.record(
                        alert_id,
                        [*earlier, unknown],
                        state="unknown",
                        error_code="outcome_unknown",
                        error_message=describe(exc),
                        http_status=202,
                    )
                    log.warning(
                        "alert %s: outcome unknown after %s; reconciling by client order id %s",
                        alert_id,
                        describe(exc),
                        order.client_order_id,
                    )
                    return _ended(await self._reconciler.reconcile(alert, executor, order, sent_at, placed_by))
                failure = exc
                return lambda: self._settle.failed(
                    alert, order, failure, sent=True, route=route, started_at=sent_at, earlier=earlier
                )
            return lambda: self._settle.succeeded(
                alert, order, result, route=route, started_at=sent_at, earlier=earlier
            )

    async def _recover_intent(self, alert: Alert, executor: Executor, sent_at: float) -> Ending:
        """In the lane: an alert recovered from its intent — its order may have been sent
        before the crash. Prepared again and looked up; sent only once proven absent, and
        after the risk gate."""
        alert_id = alert.alert_id or ""
        cid = client_order_id(alert_id, executor.account)
        try:
            order = await executor.prepare(alert, cid)
        except NothingToDo as reason:
            return self._skipped(alert, reason)
        except Exception as exc:
            if isinstance(exc, WebhookError) and exc.status < 500:
                return self._failed(alert, None, exc)  # it can never be prepared: it never was, nor sent
            why = f"its order cannot be prepared to be looked up ({describe(exc)})"
            return _ended(await self._settle.gave_up(alert, None, cid, why))

        async def gate(order: OrderRequest) -> None:
            await self._risk_gate(alert, executor, order)

        return _ended(await self._reconciler.reconcile(alert, executor, order, sent_at, None, gate=gate))

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
            self._spawn(alert_id, self._owned(alert_id, self._settle.expired(alert, None, plan.expire)))
            return
        if executor is None:
            raise TypeError(f"alert {alert_id}: a recovery without an executor must expire")
        sent_at, placed_by = plan.sent_at, plan.placed_by
        work: Callable[[], Awaitable[Ending]]
        if plan.intent is not None:
            work = lambda: self._recover_intent(alert, executor, sent_at)  # noqa: E731
        elif order is None:
            work = lambda: self._execute(alert, executor)  # noqa: E731
        else:

            async def work() -> Ending:
                return _ended(await self._reconciler.reconcile(alert, executor, order, sent_at, placed_by))

        # Its place in its lane now (recovered alerts are earlier than any admitted since).
        self._spawn(alert_id, self._in_lane(alert_id, self._lanes.join(plan.lane, plan.seq), work, True))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _waker(waiter: asyncio.Future[None]) -> Callable[[object], None]:
    return lambda _: _wake(waiter)


def _ended(outcome: Outcome) -> Ending:
    """An ending already settled (in the lane: a reconciliation holds it)."""

    async def ending() -> Outcome:
        return outcome

    return ending
