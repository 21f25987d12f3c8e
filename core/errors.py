"""Typed errors of the pipeline.

Every error a request can meet is one of these classes; ``core.web.app`` maps them to HTTP
responses in one place with the body ``{"error": {"code": ..., "message": ...}}``.
Messages are written for the sender of the alert and must never contain a secret.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class ErrorDetail(TypedDict):
    code: str
    message: str
    limit: NotRequired[str]  # RiskLimitExceeded: which limit refused the alert


class ErrorBody(TypedDict):
    """The JSON body of every error answer: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorDetail


class WebhookError(Exception):
    """Base class: an HTTP status, a stable machine-readable code and a message."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_body(self) -> ErrorBody:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(WebhookError):
    """The body cannot be read as an alert at all (malformed JSON, bad encoding, too deep)."""

    status = 400
    code = "bad_request"


class Unauthorized(WebhookError):
    """No valid credentials. One message for every cause, so it is no oracle."""

    status = 401
    code = "unauthorized"


class Forbidden(WebhookError):
    """Credentials may be fine but this request is not allowed (address, plain HTTP)."""

    status = 403
    code = "forbidden"


class NotFound(WebhookError):
    status = 404
    code = "not_found"


class PayloadTooLarge(WebhookError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(WebhookError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(WebhookError):
    """Valid JSON that is not a tradable alert, or an order the exchange refused for good."""

    status = 422
    code = "unprocessable"


class RiskLimitExceeded(Unprocessable):
    """A risk limit or a halt refused the alert before anything was sent (422 ``risk_limit``).

    ``limit`` names the limit (``max_order_notional``, ``halt``...), ``value`` its
    configured value and ``figure`` what the alert came to; the message says all three.
    """

    code = "risk_limit"

    def __init__(self, limit: str, message: str, *, value: object = None, figure: object = None):
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.figure = figure

    def to_body(self) -> ErrorBody:
        body = super().to_body()
        body["error"]["limit"] = self.limit
        return body


class RateLimited(WebhookError):
    status = 429
    code = "rate_limited"


# ---------------------------------------------------------------- order errors
#
# What sending an order to a venue can come to, in the router's words. Executors raise
# these from ``submit`` (and ``prepare``); each venue plugin translates its client's
# exceptions into them (the ccxt plugin: ``plugins.exchanges.ccxt.errors``). Core decides
# from the class alone what the alert's answer is, whether the engine retries, and
# whether the order may exist at the venue. Any other exception raised by ``submit`` is
# read as ``OutcomeUnknown``: the order may have been booked.


class OrderError(WebhookError):
    """Base of the order errors. Class attributes say what the router does with it:

    * ``status``/``code``: the HTTP answer and the stable error code (``error.code`` in
      the body and in the journal);
    * ``state``: the alert's journal state (rejected, failed, unknown);
    * ``retry``: the engine may send the same order again (same client order id) after
      a pause, while the answer budget lasts;
    * ``may_be_booked``: the order may exist at the venue; the engine reconciles it by
      client order id and never sends it again unless a lookup proves it absent.

    ``venue_code`` is the venue's own error code, if it gave one (shown, never parsed).
    """

    status = 500
    code = "order_error"
    state = "failed"
    retry = False
    may_be_booked = False

    def __init__(
        self,
        message: str,
        *,
        venue_code: str | int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, code=code)
        self.venue_code = str(venue_code) if venue_code is not None else None
        self.retry_after = retry_after
        if self.status in (429, 503):
            self.headers = {"Retry-After": str(int(retry_after) if retry_after else 5)}


class OrderRejected(OrderError):
    """The venue refused the order for good (funds, size, symbol, a closed market); nothing
    was booked. Answered 422; never retried."""

    status = 422
    code = "exchange_rejected"
    state = "rejected"


class OrderNotSent(OrderError):
    """The order provably never left the process (connection refused, DNS, the socket never
    opened): nothing can have been booked, so sending it again is safe. Retried with
    backoff within the answer budget, then answered 503 with Retry-After."""

    status = 503
    code = "exchange_unreachable"
    retry = True


class VenueBusy(OrderError):
    """The venue refused to take the request now (rate limit, overload, maintenance)
    before booking anything. Retried like ``OrderNotSent``, then 503 with Retry-After."""

    status = 503
    code = "exchange_busy"
    retry = True


class OutcomeUnknown(OrderError):
    """The order may have been booked (a timeout or a lost connection after sending). The
    answer is 202 ``outcome_unknown``, never a 5xx; the engine looks the order up by client
    order id and sends it again only when the venue says it is absent for sure."""

    status = 202
    code = "outcome_unknown"
    state = "unknown"
    may_be_booked = True


class CredentialsRefused(OrderError):
    """The venue refused the account's credentials or permissions; nothing was executed.
    Answered 502; never retried."""

    status = 502
    code = "exchange_auth_failed"


class ServiceUnavailable(WebhookError):
    """Nothing was sent to an exchange, so a resend is safe."""

    status = 503
    code = "unavailable"


class StoreUnavailable(ServiceUnavailable):
    """The shared state store (Redis) cannot be reached; nothing was sent."""

    code = "state_store_unavailable"


class ConfigError(Exception):
    """A startup error: one readable line naming the file, the plugin and the field."""
