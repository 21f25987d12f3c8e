"""App-owned execution: ordering lanes, retries, reconciliation and crash recovery.

* **Lanes.** Alerts for one (account, symbol) execute one at a time, in arrival order
  (asyncio.Lock wakes its waiters first-in first-out); other symbols run in parallel.
* **Retries.** The order errors of ``core.errors`` say what may be retried: ``VenueBusy``
  (rate limits) and ``OrderNotSent`` (a request that provably never left) are retried
  with capped exponential backoff and jitter while the alert's answer budget lasts;
  ``OrderRejected`` and ``CredentialsRefused`` never are.
* **Outcome unknown.** ``OutcomeUnknown`` — or any exception that is not an order error,
  a plain ``ConnectionResetError`` included — means the order may exist. The engine asks
  the plugin that placed it (``lookup_order``; the built-in asks ``Executor.lookup``) with
  backoff: *found* settles it; *cannot tell* leaves the alert ``unknown`` (reported, never
  resent); only when the venue has said *absent for sure* for longer than
  ``resubmit_after`` (beyond the exchange's receive window, after which the lost request
  can no longer execute) does it send again, with the same client order id.
* **Recovery.** Every worker heartbeats into the journal. Unfinished alerts whose owner
  stopped heartbeating (a crash, kill -9) are claimed — atomically, by exactly one
  worker — and reconciled or executed; those never sent and older than
  ``recovery_max_age`` are marked expired and reported instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import OrderError, RiskLimitExceeded, StoreUnavailable, WebhookError
from core.hooks.manager import call_hook_safely, call_implementation, hook_implementations
from core.pipeline.models import Alert, NothingToDo, OrderRequest, OrderResult
from core.pipeline.outcomes import Outcome, as_order_error, classify_exception
from core.store.journal import OrderAttempt
from core.store.retrying import RetryingJournal
from core.store.states import GAVE_UP
from core.trading.execution import Executor, LookupResult, client_order_id

if TYPE_CHECKING:
    from core.pipeline.router import Router

log = logging.getLogger(__name__)


class AlertExpired(Exception):
    """An alert left unexecuted by a crash was too old to execute on recovery."""


class OutcomeStillUnknown(Exception):
    """Reconciliation gave up: the order's fate must be checked on the exchange by hand."""


@dataclass
class Lane:
    """This process's alerts of one (account, market), served lowest arrival number first."""

    turn: asyncio.Condition = field(default_factory=asyncio.Condition)
    waiting: list[int] = field(default_factory=list)  # a heap of arrival numbers (seq)
    running: bool = False

    def is_next(self, seq: int) -> bool:
        return not self.running and self.waiting[0] == seq


class ExecutionEngine:
    def __init__(self, router: Router):
        self.router = router
        self.options = router.options
        self.worker_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.inflight: dict[str, asyncio.Task] = {}
        self.phase: dict[str, str] = {}  # alert_id → what it is doing now (for 202 answers)
        self._lanes: dict[tuple[str, str], Lane] = {}
        self._background: list[asyncio.Task] = []
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
                for task in still:
                    task.cancel()
                await asyncio.gather(*still, return_exceptions=True)
                return  # keep our heartbeat row: it goes stale and the alerts are claimed
        try:
            await self.router.journal.retire(self.worker_id)
        except StoreUnavailable:
            pass  # our heartbeat goes stale by itself

    async def _maintenance_loop(self) -> None:
        await every(self.options.worker_heartbeat, self._stopping, self._maintain, "journal maintenance")

    async def _maintain(self) -> None:
        journal = self.router.journal
        await journal.heartbeat(self.worker_id)
        for row in await journal.claim_orphans(self.worker_id, self.options.worker_stale_after):
            try:
                self._recover(row)
            except Exception as exc:  # a row with bad fields: set aside, the others go on
                await journal.quarantine(
                    row.get("alert_id", ""),
                    f"the journal row cannot be recovered: {type(exc).__name__}: {str(exc)[:300]}",
                )

    # ------------------------------------------------------------ entry points

    def submit(self, alert: Alert, executor: Executor, *, lane: str, seq: int) -> asyncio.Task:
        """Start executing a freshly journaled alert; the task belongs to the engine."""
        return self._spawn(alert.alert_id or "", self._in_lane(lane, seq, lambda: self._execute(alert, executor)))

    def _spawn(self, alert_id: str, coro) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"alert-{alert_id}")
        self.inflight[alert_id] = task

        def done(t: asyncio.Task) -> None:
            self.inflight.pop(alert_id, None)
            self.phase.pop(alert_id, None)

        task.add_done_callback(done)
        return task

    async def _in_lane(self, key: str, seq: int, work: Callable[[], Awaitable[Outcome]]) -> Outcome:
        """Run ``work`` once every alert that arrived earlier in the lane has finished.

        Arrival order is the journal's ``seq``. Within this process the lane serves the
        lowest ``seq`` first (admissions may complete out of order); across processes the
        journal is asked whether an earlier alert of the lane is still unfinished.
        """
        lane = self._lanes.setdefault(key, Lane())
        heapq.heappush(lane.waiting, seq)
        try:
            while True:
                async with lane.turn:
                    await lane.turn.wait_for(lambda: lane.is_next(seq))
                delay = 0.005
                while await self.journal.earlier_unfinished(key, seq):
                    await asyncio.sleep(delay)  # an earlier alert of this lane is still executing elsewhere
                    delay = min(delay * 2, 0.1)
                async with lane.turn:
                    if lane.is_next(seq):  # no earlier alert of this process arrived meanwhile
                        lane.running = True
                        break
            try:
                return await work()
            finally:
                lane.running = False
        finally:
            async with lane.turn:
                lane.waiting.remove(seq)
                heapq.heapify(lane.waiting)
                lane.turn.notify_all()
            if not lane.waiting:
                self._lanes.pop(key, None)

    # ------------------------------------------------------------ execution

    async def _execute(self, alert: Alert, executor: Executor) -> Outcome:
        alert_id = alert.alert_id or ""
        try:
            order = await executor.prepare(alert, client_order_id(alert_id, executor.account))
        except NothingToDo as reason:
            await self.journal.set_state(
                alert_id, "skipped", result={"status": "nothing_to_do", "message": str(reason)}, http_status=200
            )
            return Outcome(
                200, {"status": "nothing_to_do", "alert_id": alert_id, "message": str(reason)}, state="skipped"
            )
        except Exception as exc:
            return await self._failed(alert, None, None, exc, sent=False)
        try:
            await self.router.kill_switch.check(alert, executor, order)
        except RiskLimitExceeded as exc:
            return await self._refused(alert, order, exc)
        except Exception as exc:
            return await self._failed(alert, order, None, exc, sent=False)
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
                return await self._expire(alert, order, "the alert is too old to send now")
            placer: list[str] = []
            try:
                result = await self._place(alert, executor, order, placer)
            except Exception as raised:
                exc = as_order_error(raised, sent=True)
                pause = delay * (0.5 + random.random())
                if _retries(exc) and time.monotonic() + pause < deadline:
                    await self.journal.order_finished(row, "failed", error=_describe(exc))
                    log.warning("alert %s: %s; retrying in %.2fs", alert.alert_id, _describe(exc), pause)
                    await asyncio.sleep(pause)
                    delay = min(delay * 2, self.options.retry_max_delay)
                    continue
                if _may_be_booked(exc):
                    placed_by = placer[-1] if placer else None
                    await self.journal.order_finished(
                        row,
                        "unknown",
                        error=_describe(exc),
                        alert_id=alert.alert_id,
                        alert_state="unknown",
                        error_code="outcome_unknown",
                        http_status=202,
                        response={"placed_by": placed_by},
                    )
                    log.warning(
                        "alert %s: outcome unknown after %s; reconciling by client order id %s",
                        alert.alert_id,
                        _describe(exc),
                        order.client_order_id,
                    )
                    return await self._reconcile(alert, executor, order, sent_at, placed_by)
                return await self._failed(alert, order, row, exc, sent=True)
            return await self._succeeded(alert, order, row, result, state=None)

    async def _place(self, alert: Alert, executor: Executor, order: OrderRequest, placer: list[str]) -> OrderResult:
        """``execute_order`` until a plugin claims the order; ``placer`` gets the name of the
        plugin that claimed it, or raised (reconciliation asks that one)."""
        kwargs = {"order": order, "executor": executor, "alert": alert, "router": self.router}
        result = None
        for impl in hook_implementations(self.router.hook.execute_order):
            placer[:] = [impl.plugin_name]
            result = await call_implementation(impl, kwargs)
            if result is not None:
                break
        if not isinstance(result, OrderResult):
            raise TypeError(f"execute_order returned {type(result).__name__}, not an OrderResult")
        return result

    async def _lookup(
        self, alert: Alert, executor: Executor, order: OrderRequest, placed_by: str | None
    ) -> LookupResult:
        """Ask the plugin that placed ``order`` what became of it. ``placed_by`` None (a crash
        before it was journaled): every ``lookup_order`` in order, the first answer wins."""
        kwargs = {"order": order, "executor": executor, "alert": alert, "router": self.router}
        impls = [
            i
            for i in hook_implementations(self.router.hook.lookup_order)
            if placed_by is None or i.plugin_name == placed_by
        ]
        if not impls:
            return LookupResult.cannot_tell(
                f"plugin '{placed_by}' placed the order and implements no lookup_order", ask_again=False
            )
        for impl in impls:
            answer = await call_implementation(impl, kwargs)
            if answer is None:
                continue
            if isinstance(answer, OrderResult):  # an executor written before LookupResult
                return LookupResult.found(answer)
            if not isinstance(answer, LookupResult):
                raise TypeError(
                    f"lookup_order of plugin '{impl.plugin_name}' returned {type(answer).__name__}, not a LookupResult"
                )
            if answer.is_absent and placed_by is None and self._unlookable_placers():
                # Who placed it is unknown (a crash mid-send) and a plugin that may claim
                # orders cannot look them up: "absent" from the executor proves nothing.
                return LookupResult.cannot_tell(
                    f"the order may have been placed by plugin(s) {', '.join(self._unlookable_placers())}, which "
                    "implement execute_order but no lookup_order",
                    ask_again=False,
                )
            return answer
        return LookupResult.cannot_tell("no plugin could tell", ask_again=False)

    def _unlookable_placers(self) -> list[str]:
        """Plugins that may claim orders (``execute_order`` not marked ``observes_only``) but
        implement no ``lookup_order``."""
        hook = self.router.hook
        lookers = {i.plugin_name for i in hook.lookup_order.get_hookimpls()}
        return sorted(
            {
                i.plugin_name
                for i in hook.execute_order.get_hookimpls()
                if i.plugin_name not in lookers and not getattr(i.function, "observes_only", False)
            }
        )

    async def _succeeded(
        self, alert: Alert, order: OrderRequest, row: OrderAttempt, result: OrderResult, state: str | None
    ) -> Outcome:
        done = _done_state(order, result)
        state = state or done
        answer = result.model_dump(mode="json")
        await self.journal.order_finished(
            row, done, response=answer, alert_id=alert.alert_id, alert_state=state, http_status=200
        )
        await call_hook_safely(
            self.router.hook.after_execute, alert=alert, order=order, result=result, state=state, router=self.router
        )
        return Outcome(200, {"status": state, "alert_id": alert.alert_id, "order": answer}, state=state)

    async def _failed(
        self, alert: Alert, order: OrderRequest | None, row: OrderAttempt | None, exc: BaseException, *, sent: bool
    ) -> Outcome:
        outcome = classify_exception(exc, sent=sent, alert_id=alert.alert_id)
        if row is not None:
            await self.journal.order_finished(
                row,
                outcome.state,
                error=outcome.message,
                alert_id=alert.alert_id,
                alert_state=outcome.state,
                error_code=outcome.code,
                http_status=outcome.status,
            )
        else:
            await self.journal.set_state(
                alert.alert_id,
                outcome.state,
                error_code=outcome.code,
                error_message=outcome.message,
                http_status=outcome.status,
            )
        if outcome.status >= 500 and not isinstance(exc, WebhookError):
            log.error("alert %s failed", alert.alert_id, exc_info=exc)
        await call_hook_safely(
            self.router.hook.on_error, alert=alert, order=order, error=exc, state=outcome.state, router=self.router
        )
        return outcome

    async def _refused(self, alert: Alert, order: OrderRequest, exc: RiskLimitExceeded) -> Outcome:
        """A risk limit or a halt refused the order: journaled ``refused``, reported, nothing sent."""
        await self.journal.set_state(
            alert.alert_id, "refused", error_code=exc.code, error_message=exc.message, http_status=exc.status
        )
        log.warning("alert %s refused: %s", alert.alert_id, exc.message)
        await call_hook_safely(
            self.router.hook.on_error, alert=alert, order=order, error=exc, state="refused", router=self.router
        )
        outcome = Outcome.error(exc.status, exc.code, exc.message, state="refused", alert_id=alert.alert_id)
        outcome.body["error"]["limit"] = exc.limit
        return outcome

    # ------------------------------------------------------------ reconciliation

    async def _reconcile(
        self, alert: Alert, executor: Executor, order: OrderRequest, sent_at: float, placed_by: str | None
    ) -> Outcome:
        """Find the order by client order id; resend only once it is proven absent."""
        alert_id = alert.alert_id or ""
        self.phase[alert_id] = "reconciling"
        give_up = time.monotonic() + self.options.reconcile_timeout
        delay = self.options.reconcile_interval
        why = f"not found at the exchange after {self.options.reconcile_timeout:.0f}s"
        while time.monotonic() < give_up:
            await asyncio.sleep(delay * (0.75 + random.random() / 2))
            delay = min(delay * 2, self.options.reconcile_max_delay)
            try:
                answer = await self._lookup(alert, executor, order, placed_by)
            except Exception as exc:
                log.warning("alert %s: looking up %s failed: %s", alert_id, order.client_order_id, _describe(exc))
                continue
            if answer.is_found:
                assert answer.result is not None
                row = await self.journal.order_started(
                    alert_id,
                    client_order_id=order.client_order_id,
                    account=order.account,
                    exchange=order.exchange,
                    route="lookup",
                    request={"lookup": order.client_order_id},
                )
                log.info(
                    "alert %s: reconciled: %s is %s at the exchange",
                    alert_id,
                    order.client_order_id,
                    answer.result.status,
                )
                return await self._succeeded(alert, order, row, answer.result, state="reconciled")
            if not answer.is_absent:
                if answer.ask_again:
                    continue
                why = f"the exchange cannot tell what became of it ({answer.reason})"
                break
            if time.time() - sent_at < self.options.resubmit_after:
                continue
            if time.time() - alert.received_at > self.options.recovery_max_age:
                return await self._expire(
                    alert, order, "the order was never booked and the alert is too old to send now"
                )
            # Proven absent past the window in which the lost request could still execute.
            log.warning("alert %s: %s is not at the exchange; sending it again", alert_id, order.client_order_id)
            self.phase[alert_id] = "submitting"
            sent_at = time.time()
            row = await self.journal.order_started(
                alert_id,
                client_order_id=order.client_order_id,
                account=order.account,
                exchange=order.exchange,
                route=executor.route,
                request=order.model_dump(mode="json"),
            )
            placer: list[str] = []
            try:
                result = await self._place(alert, executor, order, placer)
            except Exception as raised:
                exc = as_order_error(raised, sent=True)
                if _retries(exc):
                    await self.journal.order_finished(row, "failed", error=_describe(exc))
                    sent_at = 0.0  # nothing was sent: may try again after the next lookup
                    continue
                if _may_be_booked(exc):
                    placed_by = placer[-1] if placer else placed_by
                    await self.journal.order_finished(
                        row, "unknown", error=_describe(exc), response={"placed_by": placed_by}
                    )
                    self.phase[alert_id] = "reconciling"
                    continue
                return await self._failed(alert, order, row, exc, sent=True)
            return await self._succeeded(alert, order, row, result, state=None)
        exc = OutcomeStillUnknown(f"order {order.client_order_id}: {why}; check the exchange")
        await self.journal.set_state(alert_id, "unknown", error_code=GAVE_UP, error_message=str(exc), http_status=202)
        log.error("alert %s: %s", alert_id, exc)
        await call_hook_safely(
            self.router.hook.on_error, alert=alert, order=order, error=exc, state="unknown", router=self.router
        )
        return Outcome.error(202, "outcome_unknown", str(exc), state="unknown", alert_id=alert_id)

    async def _expire(self, alert: Alert, order: OrderRequest | None, why: str) -> Outcome:
        exc = AlertExpired(why)
        await self.journal.set_state(
            alert.alert_id, "expired", error_code="expired", error_message=why, http_status=422
        )
        log.warning("alert %s expired: %s", alert.alert_id, why)
        await call_hook_safely(
            self.router.hook.on_error, alert=alert, order=order, error=exc, state="expired", router=self.router
        )
        return Outcome.error(422, "expired", why, state="expired", alert_id=alert.alert_id)

    # ------------------------------------------------------------ recovery

    def _recover(self, row: dict[str, Any]) -> None:
        alert_id = row["alert_id"]
        if alert_id in self.inflight:
            return
        alert = Alert.model_validate(row["payload"])  # invalid: raises, and the row is quarantined
        alert.alert_id = alert_id
        alert.received_at = row["received_at"]
        executor = self.router.executors.get(row["account"] or "")
        if executor is None or not executor.ready:
            why = (
                f"account '{row['account']}' is not configured (credentials from an alert are never stored)"
                if executor is None
                else f"account '{row['account']}' is not ready"
            )
            log.error("alert %s cannot be recovered now: %s", alert_id, why)
            if executor is None:
                self._spawn(alert_id, self._expire(alert, None, why))
            return
        orders = row.get("orders") or []
        log.warning("recovering alert %s (%s, %d attempt(s))", alert_id, row["state"], len(orders))
        if not orders:
            if time.time() - row["received_at"] > self.options.recovery_max_age:
                self._spawn(alert_id, self._expire(alert, None, "it was never sent and is too old to send now"))
            else:
                self._spawn(alert_id, self._in_lane(row["lane"], row["seq"], lambda: self._execute(alert, executor)))
            return
        last = orders[-1]
        request = dict(last["request"]) if last.get("route") != "lookup" else dict(orders[0]["request"])
        order = OrderRequest.model_validate(request)
        # The plugin that placed it, when its attempt ended "unknown"; None after a crash
        # mid-send (every lookup_order is asked then).
        placed_by = next(
            (
                o["response"].get("placed_by")
                for o in reversed(orders)
                if isinstance(o.get("response"), dict) and o["response"].get("placed_by")
            ),
            None,
        )
        self._spawn(
            alert_id,
            self._in_lane(
                row["lane"], row["seq"], lambda: self._reconcile(alert, executor, order, last["started_at"], placed_by)
            ),
        )


def _done_state(order: OrderRequest, result: OrderResult) -> str:
    """What a successful answer means: canceled (a cancel), filled, or submitted (resting)."""
    if order.action != "create":
        return "canceled"
    return "filled" if result.status == "filled" else "submitted"


def _retries(exc: BaseException) -> bool:
    """Refused before anything was booked, and worth sending again (rate limits, never sent)."""
    return isinstance(exc, OrderError) and exc.retry and not exc.may_be_booked


def _may_be_booked(exc: BaseException) -> bool:
    return isinstance(exc, OrderError) and exc.may_be_booked


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


async def every(interval: float, stopping: asyncio.Event, step: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``step`` now and then every ``interval`` seconds until ``stopping`` is set.

    A state-store outage is logged and waited out, any other error logged and retried;
    only a cancellation ends it early. The wait ends on ``stopping`` (redis-py can swallow
    a cancellation delivered mid-call, so shutdown does not rely on cancelling)."""
    while not stopping.is_set():
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            log.error("%s waits for the state store: %s", what, exc.message)
        except Exception:
            log.exception("%s failed; retrying", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=interval)
