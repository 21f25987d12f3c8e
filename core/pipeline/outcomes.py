"""What an alert's execution came to, and how an exception maps to it.

The one rule that matters for money: once an order may have reached the exchange the
answer is never a 5xx (TradingView would resend it). A 5xx only where nothing was sent.

Also here: the two ways an alert ends without an order error (``AlertExpired``,
``OutcomeStillUnknown``), what an order error lets the engine do (``retries``,
``may_be_booked``) and what a successful answer means (``done_state``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import (
    CredentialsRefused,
    OrderError,
    OrderNotSent,
    OrderRejected,
    OutcomeUnknown,
    VenueBusy,
    WebhookError,
)
from core.observability.redaction import REDACTOR
from core.pipeline.models import OrderRequest, OrderResult
from core.store.states import SUCCESS_STATES


class AlertExpired(Exception):
    """An alert was too old to send: left unexecuted by a crash, or held up past ``recovery_max_age``."""


class OutcomeStillUnknown(Exception):
    """Reconciliation gave up: the order's fate must be checked on the exchange by hand."""


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    state: str = ""
    code: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(
        cls,
        status: int,
        code: str,
        message: str,
        *,
        state: str,
        alert_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Outcome:
        message = REDACTOR.redact(message)
        body: dict[str, Any] = {"error": {"code": code, "message": message}, "status": state}
        if alert_id:
            body["alert_id"] = alert_id
        return cls(status, body, state=state, code=code, message=message, headers=headers or {})

    @classmethod
    def from_journal(cls, row: dict[str, Any]) -> Outcome:
        """The answer an alert got (or would get now), rebuilt from its journal row."""
        state = row.get("state", "unknown")
        alert_id = row.get("alert_id")
        if row.get("result") and state in SUCCESS_STATES:
            return cls(200, {"status": state, "alert_id": alert_id, "order": row["result"]}, state=state)
        if row.get("error_code"):
            return cls.error(
                row.get("http_status") or 422,
                row["error_code"],
                row.get("error_message") or "",
                state=state,
                alert_id=alert_id,
            )
        return cls(
            202,
            {"status": state, "alert_id": alert_id, "message": f"execution continues; see GET /alerts/{alert_id}"},
            state=state,
        )


def as_order_error(exc: BaseException, *, sent: bool) -> BaseException:
    """An exception from placing an order, in the router's words.

    The order errors of ``core.errors`` and other ``WebhookError``s stay as they are. Any
    other exception raised once the order may have left the process (``sent``) — a plain
    ``ConnectionResetError``, a client library's timeout, a bug — means the order may be
    booked: it becomes ``OutcomeUnknown`` (the original as its ``__cause__``)."""
    if isinstance(exc, WebhookError) or not sent:
        return exc
    unknown = OutcomeUnknown(f"{type(exc).__name__}: {_reason(exc)}")
    unknown.__cause__ = exc
    return unknown


def classify_exception(exc: BaseException, *, sent: bool, alert_id: str | None = None) -> Outcome:
    """Map an exception to the alert's state and answer.

    ``sent`` says whether an order request may have left the process. A 5xx (with
    Retry-After) only where nothing can have been booked, so that a resend is safe.
    """
    exc = as_order_error(exc, sent=sent)
    if isinstance(exc, OutcomeUnknown):
        # The order may exist: never 5xx, never resend blindly. Reconciliation decides.
        return Outcome.error(
            202,
            exc.code,
            f"the order's outcome is unknown and is being reconciled: {_reason(exc)}",
            state="unknown",
            alert_id=alert_id,
        )
    if isinstance(exc, OrderError):
        prefix = {
            OrderRejected: "the exchange refused the order",
            CredentialsRefused: "the exchange refused the account's credentials",
            VenueBusy: "the exchange is not accepting orders now",
            OrderNotSent: "the exchange could not be reached; nothing was sent",
        }
        lead = next((text for cls, text in prefix.items() if isinstance(exc, cls)), "")
        message = f"{lead}: {_reason(exc)}" if lead and not str(exc).startswith(lead) else _reason(exc)
        return Outcome.error(exc.status, exc.code, message, state=exc.state, alert_id=alert_id, headers=exc.headers)
    if isinstance(exc, WebhookError):
        state = "rejected" if exc.status == 422 else "failed"
        return Outcome.error(exc.status, exc.code, exc.message, state=state, alert_id=alert_id, headers=exc.headers)
    return Outcome.error(
        500, "internal_error", "internal error; nothing was sent to the exchange", state="failed", alert_id=alert_id
    )


def _reason(exc: BaseException) -> str:
    """Venue messages often start with the exchange id and carry raw JSON; keep them short."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return REDACTOR.redact(text[:300])


def retries(exc: BaseException) -> bool:
    """Refused before anything was booked, and worth sending again (rate limits, never sent)."""
    return isinstance(exc, OrderError) and exc.retry and not exc.may_be_booked


def may_be_booked(exc: BaseException) -> bool:
    """The order may exist at the exchange: reconcile it, never resend it blindly."""
    return isinstance(exc, OrderError) and exc.may_be_booked


def describe(exc: BaseException) -> str:
    """An exception for the journal and the log: its class and the start of its message."""
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def done_state(order: OrderRequest, result: OrderResult) -> str:
    """What a successful answer means: canceled (a cancel), filled, or submitted (resting)."""
    if order.action != "create":
        return "canceled"
    return "filled" if result.status == "filled" else "submitted"
