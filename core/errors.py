"""Typed errors of the pipeline.

Every error a request can meet is one of these classes; ``core.app`` maps them to HTTP
responses in one place with the body ``{"error": {"code": ..., "message": ...}}``.
Messages are written for the sender of the alert and must never contain a secret.
"""

from __future__ import annotations


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

    def to_body(self) -> dict:
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

    def to_body(self) -> dict:
        body = super().to_body()
        body["error"]["limit"] = self.limit
        return body


class RateLimited(WebhookError):
    status = 429
    code = "rate_limited"


class ExchangeAuthError(WebhookError):
    """The exchange refused the account's credentials; nothing was executed."""

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
