"""How an alert's execution ends: its final journal state, the ``after_execute`` / ``on_error``
hooks (notifiers, metrics, risk bookkeeping) and the answer (``Outcome``).

Every ending goes through ``Settlement``, so each is journaled before the hooks hear of
it and the hooks hear of every one: filled / submitted / canceled / reconciled
(``succeeded``), rejected / failed (``failed``), refused by a risk limit (``refused``),
skipped (``skipped``), expired (``expired``) and unknown after reconciliation gave up
(``gave_up``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from core.errors import RiskLimitExceeded, WebhookError
from core.hooks.manager import call_hook_safely
from core.pipeline.host import HookHost
from core.pipeline.models import Alert, OrderRequest, OrderResult
from core.pipeline.outcomes import AlertExpired, Outcome, OutcomeStillUnknown, classify_exception, done_state
from core.store.journal import OrderAttempt
from core.store.states import GAVE_UP

log = logging.getLogger(__name__)


class Settlement:
    """Journal an alert's ending, tell the hooks, and give the answer.

    ``journal`` returns the journal to write to (the engine's, whose writes wait out a
    state-store outage); ``host`` is the ``router`` the hooks receive."""

    def __init__(self, host: HookHost, journal: Callable[[], Any]):
        self._host = host
        self._journal = journal

    async def succeeded(
        self, alert: Alert, order: OrderRequest, row: OrderAttempt, result: OrderResult, *, state: str | None = None
    ) -> Outcome:
        """The order was placed (or found, ``state="reconciled"``): attempt ``row`` is closed."""
        done = done_state(order, result)
        state = state or done
        answer = result.model_dump(mode="json")
        await self._journal().order_finished(
            row, done, response=answer, alert_id=alert.alert_id, alert_state=state, http_status=200
        )
        await call_hook_safely(
            self._host.hook.after_execute, alert=alert, order=order, result=result, state=state, router=self._host
        )
        return Outcome(200, {"status": state, "alert_id": alert.alert_id, "order": answer}, state=state)

    async def failed(
        self, alert: Alert, order: OrderRequest | None, row: OrderAttempt | None, exc: BaseException, *, sent: bool
    ) -> Outcome:
        """``exc`` ended the alert (``core.pipeline.outcomes.classify_exception`` says how);
        ``row`` is the order attempt it ended, None when none was started."""
        outcome = classify_exception(exc, sent=sent, alert_id=alert.alert_id)
        journal = self._journal()
        if row is not None:
            await journal.order_finished(
                row,
                outcome.state,
                error=outcome.message,
                alert_id=alert.alert_id,
                alert_state=outcome.state,
                error_code=outcome.code,
                http_status=outcome.status,
            )
        else:
            await journal.set_state(
                alert.alert_id,
                outcome.state,
                error_code=outcome.code,
                error_message=outcome.message,
                http_status=outcome.status,
            )
        if outcome.status >= 500 and not isinstance(exc, WebhookError):
            log.error("alert %s failed", alert.alert_id, exc_info=exc)
        await self._on_error(alert, order, exc, outcome.state)
        return outcome

    async def refused(self, alert: Alert, order: OrderRequest, exc: RiskLimitExceeded) -> Outcome:
        """A risk limit or a halt refused the order: journaled ``refused``, reported, nothing sent."""
        await self._journal().set_state(
            alert.alert_id, "refused", error_code=exc.code, error_message=exc.message, http_status=exc.status
        )
        log.warning("alert %s refused: %s", alert.alert_id, exc.message)
        await self._on_error(alert, order, exc, "refused")
        outcome = Outcome.error(exc.status, exc.code, exc.message, state="refused", alert_id=alert.alert_id)
        outcome.body["error"]["limit"] = exc.limit
        return outcome

    async def skipped(self, alert: Alert, reason: str) -> Outcome:
        """The executor found nothing to do (``NothingToDo``: e.g. closing a flat position)."""
        alert_id = alert.alert_id or ""
        await self._journal().set_state(
            alert_id, "skipped", result={"status": "nothing_to_do", "message": reason}, http_status=200
        )
        return Outcome(200, {"status": "nothing_to_do", "alert_id": alert_id, "message": reason}, state="skipped")

    async def expired(self, alert: Alert, order: OrderRequest | None, why: str) -> Outcome:
        """Too old to send now (``router.recovery_max_age``): journaled ``expired``, reported."""
        await self._journal().set_state(
            alert.alert_id, "expired", error_code="expired", error_message=why, http_status=422
        )
        log.warning("alert %s expired: %s", alert.alert_id, why)
        await self._on_error(alert, order, AlertExpired(why), "expired")
        return Outcome.error(422, "expired", why, state="expired", alert_id=alert.alert_id)

    async def gave_up(self, alert: Alert, order: OrderRequest, why: str) -> Outcome:
        """Reconciliation could not tell what became of the order: ``unknown`` for good, reported."""
        alert_id = alert.alert_id or ""
        exc = OutcomeStillUnknown(f"order {order.client_order_id}: {why}; check the exchange")
        await self._journal().set_state(
            alert_id, "unknown", error_code=GAVE_UP, error_message=str(exc), http_status=202
        )
        log.error("alert %s: %s", alert_id, exc)
        await self._on_error(alert, order, exc, "unknown")
        return Outcome.error(202, "outcome_unknown", str(exc), state="unknown", alert_id=alert_id)

    async def _on_error(self, alert: Alert, order: OrderRequest | None, exc: BaseException, state: str) -> None:
        await call_hook_safely(
            self._host.hook.on_error, alert=alert, order=order, error=exc, state=state, router=self._host
        )
