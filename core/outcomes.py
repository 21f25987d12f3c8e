"""What an alert's execution came to, and how an exception maps to it.

The one rule that matters for money: once an order may have reached the exchange the
answer is never a 5xx (TradingView would resend it). A 5xx only where nothing was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ccxt

from core.errors import WebhookError
from core.journal import SUCCESS_STATES
from core.redaction import REDACTOR


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    state: str = ""
    code: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, status: int, code: str, message: str, *, state: str, alert_id: str | None = None, headers: dict | None = None) -> "Outcome":
        message = REDACTOR.redact(message)
        body: dict[str, Any] = {"error": {"code": code, "message": message}, "status": state}
        if alert_id:
            body["alert_id"] = alert_id
        return cls(status, body, state=state, code=code, message=message, headers=headers or {})

    @classmethod
    def from_journal(cls, row: dict[str, Any]) -> "Outcome":
        """The answer an alert got (or would get now), rebuilt from its journal row."""
        state = row.get("state", "unknown")
        alert_id = row.get("alert_id")
        if row.get("result") and state in SUCCESS_STATES:
            return cls(200, {"status": state, "alert_id": alert_id, "order": row["result"]}, state=state)
        if row.get("error_code"):
            return cls.error(row.get("http_status") or 422, row["error_code"], row.get("error_message") or "", state=state, alert_id=alert_id)
        return cls(202, {"status": state, "alert_id": alert_id, "message": f"execution continues; see GET /alerts/{alert_id}"}, state=state)


# Deterministic refusals: retrying cannot help, the order was not placed.
_REJECTED = (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadSymbol, ccxt.BadRequest, ccxt.OrderNotFound,
             ccxt.NotSupported, ccxt.MarginModeAlreadySet, ccxt.ExchangeError)
_AUTH = (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended, ccxt.AccountNotEnabled)
# Refused before booking: the exchange said "not now".
_BUSY = (ccxt.RateLimitExceeded, ccxt.DDoSProtection, ccxt.InvalidNonce)


def order_not_sent(exc: BaseException) -> bool:
    """Executors mark an exception ``order_not_sent = True`` when no byte of the order left
    the process (connection refused, WebSocket never opened): sending again is safe."""
    return bool(getattr(exc, "order_not_sent", False))


def classify_exception(exc: BaseException, *, sent: bool, alert_id: str | None = None) -> Outcome:
    """Map an exception to the alert's state and answer.

    ``sent`` says whether an order request may have left the process. A 5xx (with
    Retry-After) only where nothing can have been booked, so that a resend is safe.
    """
    sent = sent and not order_not_sent(exc)
    if isinstance(exc, WebhookError):
        state = "rejected" if exc.status == 422 else "failed"
        return Outcome.error(exc.status, exc.code, exc.message, state=state, alert_id=alert_id, headers=exc.headers)
    if isinstance(exc, _AUTH):
        return Outcome.error(502, "exchange_auth_failed", f"the exchange refused the account's credentials: {_reason(exc)}",
                             state="failed", alert_id=alert_id)
    if isinstance(exc, _BUSY):
        # The exchange refused to take the request; nothing was booked, a resend is safe.
        return Outcome.error(503, "exchange_busy", f"the exchange is not accepting orders now: {_reason(exc)}",
                             state="failed", alert_id=alert_id, headers={"Retry-After": "5"})
    if isinstance(exc, ccxt.NetworkError) or (sent and not isinstance(exc, _REJECTED)):
        if not sent:
            return Outcome.error(503, "exchange_unreachable", f"the exchange could not be reached; nothing was sent: {_reason(exc)}",
                                 state="failed", alert_id=alert_id, headers={"Retry-After": "5"})
        # The order may exist: never 5xx, never resend blindly. Reconciliation decides.
        return Outcome.error(202, "outcome_unknown", f"the order's outcome is unknown and is being reconciled: {_reason(exc)}",
                             state="unknown", alert_id=alert_id)
    if isinstance(exc, _REJECTED):
        return Outcome.error(422, "exchange_rejected", f"the exchange refused the order: {_reason(exc)}",
                             state="rejected", alert_id=alert_id)
    return Outcome.error(500, "internal_error", "internal error; nothing was sent to the exchange", state="failed", alert_id=alert_id)


def _reason(exc: BaseException) -> str:
    """ccxt messages start with the exchange id and often carry the raw JSON; keep them short."""
    text = str(exc) or type(exc).__name__
    return REDACTOR.redact(text[:300])
