"""Reconciliation: what became of an order whose outcome is unknown.

``OutcomeUnknown`` — or any exception that is not an order error, a plain
``ConnectionResetError`` included — means the order may exist. The plugin that placed it
is asked (``lookup_order``; the built-in asks ``Executor.lookup``) with backoff: *found*
settles it (``reconciled``); *cannot tell* leaves the alert ``unknown`` (reported, never
resent); only when the venue has said *absent for sure* for longer than
``resubmit_after`` (beyond the exchange's receive window, after which the lost request
can no longer execute) is it sent again, with the same client order id — after the risk
gate, when the order may never have been gated (an alert recovered from its intent).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from core.config import RouterOptions
from core.errors import RiskLimitExceeded
from core.pipeline.host import HookHost
from core.pipeline.models import Alert, OrderRequest, OrderResult
from core.pipeline.outcomes import Outcome, as_order_error, describe, may_be_booked, retries
from core.pipeline.placement import lookup_order
from core.pipeline.settle import Settlement, attempt
from core.pipeline.writes import PendingWrites
from core.trading.execution import Executor

log = logging.getLogger(__name__)

# Places an order through the plugins (``core.pipeline.placement.place_order`` bound to the host).
PlaceOrder = Callable[[Alert, Executor, OrderRequest, list[str]], Awaitable[OrderResult]]
# The risk gate (``core.pipeline.engine.RiskGate``) bound to the alert and its executor.
Gate = Callable[[OrderRequest], Awaitable[None]]


class Reconciler:
    """Finds orders by client order id and resends them only once proven absent.

    ``phase`` is the engine's map of what each alert is doing (the 202 answer shows it);
    ``writes`` queues the journal writes; ``place`` sends an order; ``settle`` ends the
    alert."""

    def __init__(
        self,
        host: HookHost,
        options: RouterOptions,
        *,
        writes: PendingWrites,
        place: PlaceOrder,
        settle: Settlement,
        phase: dict[str, str],
    ):
        self._host = host
        self._options = options
        self._writes = writes
        self._place = place
        self._settle = settle
        self._phase = phase

    async def reconcile(
        self,
        alert: Alert,
        executor: Executor,
        order: OrderRequest,
        sent_at: float,
        placed_by: str | None,
        *,
        gate: Gate | None = None,
    ) -> Outcome:
        """Find ``order`` (sent at ``sent_at`` through plugin ``placed_by``, None when unknown);
        ``gate``: what a resend must pass first (``RiskLimitExceeded`` refuses it)."""
        options = self._options
        alert_id = alert.alert_id or ""
        self._phase[alert_id] = "reconciling"
        give_up = time.monotonic() + options.reconcile_timeout
        delay = options.reconcile_interval
        why = f"not found at the exchange after {options.reconcile_timeout:.0f}s"
        while time.monotonic() < give_up:
            await asyncio.sleep(delay * (0.75 + random.random() / 2))
            delay = min(delay * 2, options.reconcile_max_delay)
            try:
                answer = await lookup_order(self._host, alert, executor, order, placed_by)
            except Exception as exc:
                log.warning("alert %s: looking up %s failed: %s", alert_id, order.client_order_id, describe(exc))
                continue
            if answer.is_found:
                return await self._found(alert, order, answer.result)
            if not answer.is_absent:
                if answer.ask_again:
                    continue
                why = f"the exchange cannot tell what became of it ({answer.reason})"
                break
            if time.time() - sent_at < options.resubmit_after:
                continue
            if time.time() - alert.received_at > options.recovery_max_age:
                return await self._settle.expired(
                    alert, order, "the order was never booked and the alert is too old to send now"
                )
            # Proven absent past the window in which the lost request could still execute.
            if gate is not None:
                try:
                    await gate(order)
                except RiskLimitExceeded as exc:
                    return await self._settle.refused(alert, order, exc)
                gate = None  # passed: a later resend of this order is not a new one
            log.warning("alert %s: %s is not at the exchange; sending it again", alert_id, order.client_order_id)
            self._phase[alert_id] = "submitting"
            sent_at = time.time()
            placer: list[str] = []
            try:
                result = await self._place(alert, executor, order, placer)
            except Exception as raised:
                error = as_order_error(raised, sent=True)
                if retries(error):
                    self._writes.record(
                        alert_id, [attempt(order, executor.route, sent_at, "failed", error=describe(error))]
                    )
                    sent_at = 0.0  # nothing was sent: may try again after the next lookup
                    continue
                if may_be_booked(error):
                    placed_by = placer[-1] if placer else placed_by
                    unknown = attempt(
                        order,
                        executor.route,
                        sent_at,
                        "unknown",
                        error=describe(error),
                        response={"placed_by": placed_by},
                    )
                    self._writes.record(alert_id, [unknown])
                    self._phase[alert_id] = "reconciling"
                    continue
                return await self._settle.failed(
                    alert, order, error, sent=True, route=executor.route, started_at=sent_at
                )
            return await self._settle.succeeded(alert, order, result, route=executor.route, started_at=sent_at)
        return await self._settle.gave_up(alert, order, order.client_order_id, why)

    async def _found(self, alert: Alert, order: OrderRequest, result: OrderResult | None) -> Outcome:
        """The exchange has the order: journal the lookup as an attempt, and settle it ``reconciled``."""
        if result is None:
            raise TypeError(f"lookup_order found {order.client_order_id} but returned no OrderResult")
        log.info("alert %s: reconciled: %s is %s at the exchange", alert.alert_id, order.client_order_id, result.status)
        return await self._settle.succeeded(
            alert,
            order,
            result,
            route="lookup",
            started_at=time.time(),
            request={"lookup": order.client_order_id},
            state="reconciled",
        )
