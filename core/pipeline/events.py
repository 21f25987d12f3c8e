"""An alert's outcome as ``after_execute`` / ``on_error`` report it, for notifiers and metrics.

The hooks receive the alert, the order and either the exchange's ``OrderResult`` or the
exception. ``event_from_result`` and ``event_from_error`` turn them into one flat,
secret-free ``AlertEvent`` whose ``state`` is the alert's journal state (filled,
submitted, canceled, reconciled, rejected, failed, unknown, expired), as the engine
passes it to the hooks. Building an event is cheap and synchronous: hooks call it on the answer path.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from core.errors import OrderError
from core.observability.redaction import REDACTOR
from core.pipeline.models import Alert, OrderRequest, OrderResult
from core.pipeline.outcomes import AlertExpired, OutcomeStillUnknown, classify_exception
from core.store.states import GAVE_UP, REPORTED_STATES
from core.trading.execution import ExecutorRegistry


class _Routes(Protocol):
    """What ``event_from_error`` reads of the ``router`` a hook receives: the accounts."""

    @property
    def executors(self) -> ExecutorRegistry: ...


# The states an event can carry, in the order the docs list them: the alert states the engine
# reports (core.store.states.REPORTED_STATES), and a strategy's position differing from the exchange's.
EVENT_STATES: tuple[str, ...] = (*(s.value for s in REPORTED_STATES), "mismatch")


@dataclass(frozen=True)
class AlertEvent:
    """What happened to one alert. Never holds a secret (messages pass the redactor)."""

    state: str
    alert_id: str
    account: str | None
    exchange: str | None
    symbol: str
    side: str
    amount: str
    order_type: str
    price: str | None = None
    route: str | None = None
    order_id: str | None = None
    client_order_id: str | None = None
    order_status: str | None = (
        None  # in the router's words (core.trading.venue.OrderStatus): open | filled | canceled | ...
    )
    filled: str | None = None
    average: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_type: str | None = None  # the exception's class name (the venue client's, for an order error it translated)
    exchange_error: bool = False  # the exchange answered with an error (one of core.errors' order errors)
    at: float = field(default_factory=time.time)

    @property
    def failed(self) -> bool:
        return self.error_code is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _base(alert: Alert, order: OrderRequest | None) -> dict[str, Any]:
    if order is not None:
        return {
            "alert_id": alert.alert_id or "",
            "account": order.account,
            "exchange": order.exchange,
            "symbol": order.symbol,
            "side": order.side or "",
            "amount": order.amount or "",
            "order_type": order.order_type,
            "price": order.price,
            "client_order_id": order.client_order_id,
        }
    return {
        "alert_id": alert.alert_id or "",
        "account": alert.accounts[0] if alert.accounts else None,
        "exchange": alert.exchange,
        "symbol": alert.symbol,
        "side": alert.side or "",
        "amount": format(alert.amount, "f") if alert.amount is not None else "",
        "order_type": alert.order_type,
        "price": format(alert.price, "f") if alert.price is not None else None,
    }


def event_from_result(alert: Alert, order: OrderRequest, result: OrderResult, state: str) -> AlertEvent:
    """The event of an ``after_execute`` call, in the alert's journal ``state``: filled,
    submitted, canceled, or reconciled (an unknown outcome found at the exchange)."""
    fields = _base(alert, order)
    fields.update(
        account=result.account,
        exchange=result.exchange,
        symbol=result.symbol,
        side=result.side or "",
        amount=result.amount or "",
        order_type=result.order_type,
        price=result.price or order.price,
        client_order_id=result.client_order_id,
    )
    return AlertEvent(
        state=state,
        route=result.route,
        order_id=result.order_id,
        order_status=result.status,
        filled=result.filled,
        average=result.average,
        **fields,
    )


def event_from_error(
    alert: Alert, order: OrderRequest | None, error: BaseException, state: str, router: _Routes
) -> AlertEvent:
    """The event of an ``on_error`` call, in the alert's journal ``state``: rejected,
    failed, expired, or unknown (reconciliation gave up)."""
    if isinstance(error, AlertExpired):
        code, message = "expired", REDACTOR.redact(str(error))
    elif isinstance(error, OutcomeStillUnknown):
        code, message = GAVE_UP, REDACTOR.redact(str(error))
    else:
        outcome = classify_exception(error, sent=order is not None, alert_id=alert.alert_id)
        code, message = outcome.code, outcome.message
    fields = _base(alert, order)
    if order is None and not fields["account"] and alert.credentials is None:
        fields.update(_routed_account(alert, router))
    return AlertEvent(
        state=state,
        error_code=code,
        error_message=message[:500],
        error_type=error_type(error),
        exchange_error=isinstance(error, OrderError),
        **fields,
    )


def error_type(error: BaseException) -> str:
    """The class name to report: the venue client's exception an order error translated
    (ccxt's InsufficientFunds), else the error's own."""
    cause = error.__cause__ if isinstance(error, OrderError) else None
    return type(cause or error).__name__


def _routed_account(alert: Alert, router: _Routes) -> dict[str, Any]:
    """The account an alert without one went to (the default), for the message; best effort."""
    try:
        executor = router.executors.resolve(alert)
    except Exception:
        return {}
    return {"account": executor.account, "exchange": executor.exchange}
