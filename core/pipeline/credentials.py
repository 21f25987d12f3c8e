"""Secrets in an alert's payload: which keys carry them, the classic payload's per-alert
apiKey/secret, and when their values join the log redactor.

Secrets never reach the alert's fields or its journal row: ``split_payload`` sets them
aside, and ``payload_credentials`` turns the classic apiKey/secret into the
``Credentials`` of that one order (only with ``router.allow_payload_credentials``).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.errors import Unprocessable
from core.observability.redaction import REDACTOR
from core.pipeline.models import Alert, Credentials

PAYLOAD_CREDENTIALS_WARNING = (
    "router.allow_payload_credentials is on: an alert carrying apiKey/secret trades with those keys on any "
    "exchange, and anyone who can read an alert message (TradingView's alert log, a shared chart, a proxy) "
    "can read them; prefer named accounts (see docs/security.md)"
)

# Payload keys that carry secrets, and the Credentials field each one fills.
SECRET_FIELDS = {
    "token": "token",
    "apiKey": "api_key",
    "api_key": "api_key",
    "secret": "secret",
    "apiSecret": "secret",
    "api_secret": "secret",
    "password": "password",
    "passphrase": "password",
}
ALERT_FIELDS = frozenset(Alert.model_fields) - {"raw", "credentials", "principal", "received_at"}


def split_payload(payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the alert's fields, the rest of the payload (``raw``), the secrets by Credentials field)."""
    fields: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for key, value in payload.items():
        if key in SECRET_FIELDS:
            secrets[SECRET_FIELDS[key]] = value
        elif key in ALERT_FIELDS:
            fields[key] = value
        else:
            raw[key] = value
    return fields, raw, secrets


def presented_secrets(payload: dict[str, Any]) -> list[Any]:
    """The values of a payload's secret keys (its token, apiKey, ...)."""
    return [payload[key] for key in SECRET_FIELDS if key in payload]


def register_secrets(values: list[Any]) -> None:
    """The token and credentials of a request that authenticated join the log redactor.
    Never earlier: a value from an unauthenticated request must not choose what is masked."""
    for value in values:
        REDACTOR.add(value)


def payload_credentials(values: dict[str, Any], *, allowed: bool) -> Credentials:
    """The classic payload's per-alert apiKey/secret, used for that order only."""
    if not allowed:
        raise Unprocessable(
            "credentials in the payload are disabled (router.allow_payload_credentials); "
            "name a configured account instead",
            code="payload_credentials_disabled",
        )
    if not all(isinstance(values.get(k), str) and values.get(k) for k in ("api_key", "secret")):
        raise Unprocessable("apiKey and secret must both be non-empty strings", code="invalid_alert")
    try:
        return Credentials.model_validate(values)
    except ValidationError as exc:  # e.g. a password that is not a string
        raise Unprocessable(describe_alert_error(exc), code="invalid_alert") from None


def describe_alert_error(exc: ValidationError) -> str:
    """A pydantic error as one line naming the field, without echoing the input."""
    parts = []
    for err in exc.errors()[:3]:
        field_name = ".".join(str(p) for p in err["loc"]) or "alert"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{field_name}: {message}")
    return "; ".join(parts)
