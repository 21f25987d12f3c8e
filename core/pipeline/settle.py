"""How an alert's execution ends: its final journal state, the ``after_execute`` / ``on_error``
hooks (notifiers, metrics, risk bookkeeping) and the answer (``Outcome``).

Every ending goes through ``Settlement``, so each is journaled and the hooks hear of every
one: filled / submitted / canceled / reconciled (``succeeded``), rejected / failed
(``failed``), refused by a risk limit (``refused``), skipped (``skipped``), expired
(``expired``) and unknown after reconciliation gave up (``gave_up``). The journal write —
the order attempts not yet written and the alert's final state, in one step — is queued
(``core.pipeline.writes``), not awaited: the answer goes out as soon as it is known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from core.errors import RiskLimitExceeded, WebhookError
from core.hooks.manager import call_hook_safely
from core.observability.redaction import REDACTOR
from core.pipeline.host import HookHost
from core.pipeline.models import Alert, OrderRequest, OrderResult
from core.pipeline.outcomes import AlertExpired, Outcome, OutcomeStillUnknown, classify_exception, done_state
from core.pipeline.writes import PendingWrites
from core.store.journal import AttemptRecord
from core.store.states import GAVE_UP

log = logging.getLogger(__name__)


def attempt(
    order: OrderRequest,
    route: str,
    started_at: float,
    state: str,
    *,
    response: dict[str, Any] | None = None,
    error: str | None = None,
    request: dict[str, Any] | None = None,
) -> AttemptRecord:
    """One order attempt of ``order`` through ``route``, started at ``started_at``, ended now."""
    return AttemptRecord(
        client_order_id=order.client_order_id,
        account=order.account,
        exchange=order.exchange,
        route=route,
        request=order.model_dump(mode="json") if request is None else request,
        state=state,
        started_at=started_at,
        finished_at=time.time(),
        response=response,
        error=REDACTOR.redact(error) if error else None,
    )


class Settlement:
    """Journal an alert's ending, tell the hooks, and give the answer.

    ``writes`` queues the journal writes; ``host`` is the ``router`` the hooks receive."""

    def __init__(self, host: HookHost, writes: PendingWrites):
        self._host = host
        self._writes = writes

    async def succeeded(
        self,
        alert: Alert,
        order: OrderRequest,
        result: OrderResult,
        *,
        route: str,
        started_at: float,
        earlier: Sequence[AttemptRecord] = (),
        state: str | None = None,
        request: dict[str, Any] | None = None,
    ) -> Outcome:
        """The order was placed through ``route`` (or found, ``state="reconciled"``, by a
        lookup: ``request`` says what was asked); ``earlier``: attempts not yet journaled."""
        done = done_state(order, result)
        state = state or done
        answer = result.model_dump(mode="json")
        alert_id = alert.alert_id or ""
        outcome = Outcome(200, {"status": state, "alert_id": alert_id, "order": answer}, state=state)
        last = attempt(order, route, started_at, done, response=answer, request=request)
        self._writes.record(alert_id, [*earlier, last], outcome=outcome, state=state, result=answer, http_status=200)
        await call_hook_safely(
            self._host.hook.after_execute, alert=alert, order=order, result=result, state=state, router=self._host
        )
        return outcome

    async def failed(
        self,
        alert: Alert,
        order: OrderRequest | None,
        exc: BaseException,
        *,
        sent: bool,
        route: str | None = None,
        started_at: float = 0.0,
        earlier: Sequence[AttemptRecord] = (),
    ) -> Outcome:
        """``exc`` ended the alert (``core.pipeline.outcomes.classify_exception`` says how);
        with ``route``, it ended the attempt of ``order`` started at ``started_at``."""
        outcome = classify_exception(exc, sent=sent, alert_id=alert.alert_id)
        attempts = list(earlier)
        if route is not None and order is not None:
            attempts.append(attempt(order, route, started_at, outcome.state, error=outcome.message))
        self._end(alert, outcome, attempts)
        if outcome.status >= 500 and not isinstance(exc, WebhookError):
            log.error("alert %s failed", alert.alert_id, exc_info=exc)
        await self._on_error(alert, order, exc, outcome.state)
        return outcome

    async def refused(
        self, alert: Alert, order: OrderRequest, exc: RiskLimitExceeded, earlier: Sequence[AttemptRecord] = ()
    ) -> Outcome:
        """A risk limit or a halt refused the order: journaled ``refused``, reported, nothing sent."""
        log.warning("alert %s refused: %s", alert.alert_id, exc.message)
        outcome = Outcome.error(exc.status, exc.code, exc.message, state="refused", alert_id=alert.alert_id)
        outcome.body["error"]["limit"] = exc.limit
        self._end(alert, outcome, earlier)
        await self._on_error(alert, order, exc, "refused")
        return outcome

    async def skipped(self, alert: Alert, reason: str) -> Outcome:
        """The executor found nothing to do (``NothingToDo``: e.g. closing a flat position)."""
        alert_id = alert.alert_id or ""
        result = {"status": "nothing_to_do", "message": reason}
        outcome = Outcome(200, {"status": "nothing_to_do", "alert_id": alert_id, "message": reason}, state="skipped")
        self._writes.record(alert_id, outcome=outcome, state="skipped", result=result, http_status=200)
        return outcome

    async def expired(
        self, alert: Alert, order: OrderRequest | None, why: str, earlier: Sequence[AttemptRecord] = ()
    ) -> Outcome:
        """Too old to send now (``router.recovery_max_age``): journaled ``expired``, reported."""
        log.warning("alert %s expired: %s", alert.alert_id, why)
        outcome = Outcome.error(422, "expired", why, state="expired", alert_id=alert.alert_id)
        self._end(alert, outcome, earlier)
        await self._on_error(alert, order, AlertExpired(why), "expired")
        return outcome

    async def gave_up(self, alert: Alert, order: OrderRequest | None, client_order_id: str, why: str) -> Outcome:
        """Reconciliation could not tell what became of the order: ``unknown`` for good, reported."""
        alert_id = alert.alert_id or ""
        exc = OutcomeStillUnknown(f"order {client_order_id}: {why}; check the exchange")
        log.error("alert %s: %s", alert_id, exc)
        outcome = Outcome.error(202, "outcome_unknown", str(exc), state="unknown", alert_id=alert_id)
        self._writes.record(
            alert_id, outcome=outcome, state="unknown", error_code=GAVE_UP, error_message=str(exc), http_status=202
        )
        await self._on_error(alert, order, exc, "unknown")
        return outcome

    def _end(self, alert: Alert, outcome: Outcome, attempts: Sequence[AttemptRecord]) -> None:
        self._writes.record(
            alert.alert_id or "",
            attempts,
            outcome=outcome,
            state=outcome.state,
            error_code=outcome.code,
            error_message=outcome.message,
            http_status=outcome.status,
        )

    async def _on_error(self, alert: Alert, order: OrderRequest | None, exc: BaseException, state: str) -> None:
        await call_hook_safely(
            self._host.hook.on_error, alert=alert, order=order, error=exc, state=state, router=self._host
        )
