"""Alpaca's HTTP answers and transport failures, translated into the router's words.

Alpaca answers errors as ``{"code": 40310000, "message": "..."}`` whose first three
digits are the HTTP status. What each means for an order:

==============================  ==============================================  =========
Alpaca                          the router's word                               retried?
==============================  ==============================================  =========
401, 403 "forbidden"            credentials refused (nothing executed)          no
403 (buying power, qty, ...)    rejected: nothing booked                        no
400, 404, 422                   rejected: nothing booked                        no
429                             venue busy: refused before booking              yes
5xx, a read timeout, a reset    outcome unknown: the order may exist            reconciled
  after the request was sent
connection refused / connect    not sent: nothing left the process              yes
  timeout / pool timeout
==============================  ==============================================  =========
"""

from __future__ import annotations

import httpx

from core.errors import ExchangeAuthError, ServiceUnavailable, Unprocessable
from core.redaction import REDACTOR

# 403 messages that mean the key itself is refused, not the order.
_KEY_REFUSALS = ("forbidden", "request is not authorized", "unauthorized", "access denied")


class AlpacaRejected(Unprocessable):
    """Alpaca refused the order for good (422): nothing was booked."""

    code = "exchange_rejected"


class AlpacaCredentialsRefused(ExchangeAuthError):
    """Alpaca refused the account's keys: nothing was executed."""


class AlpacaBusy(ServiceUnavailable):
    """Alpaca refused to take the request now (429): nothing was booked, sending again is safe."""

    code = "exchange_busy"
    order_not_sent = True

    def __init__(self, message: str):
        super().__init__(message, headers={"Retry-After": "5"})


class AlpacaNotSent(ServiceUnavailable):
    """Alpaca could not be reached; no byte of the order left the process."""

    code = "exchange_unreachable"
    order_not_sent = True

    def __init__(self, message: str):
        super().__init__(message, headers={"Retry-After": "5"})


class AlpacaOutcomeUnknown(Exception):
    """The request may have reached Alpaca and the answer is lost: the order may exist.

    Deliberately not a ``WebhookError``: the engine treats it as "may be booked" and
    reconciles by client order id instead of answering or resending."""


def message_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        text = str(body["message"])
    else:
        text = response.reason_phrase or f"HTTP {response.status_code}"
    return REDACTOR.redact(text[:300])


def from_response(response: httpx.Response, *, placing: bool) -> Exception:
    """The exception an error answer means. ``placing``: the request creates or cancels
    something (a 5xx then leaves its fate open); a read has no side effect."""
    status = response.status_code
    text = message_of(response)
    if status == 401 or (status == 403 and text.strip(" .").lower() in _KEY_REFUSALS):
        return AlpacaCredentialsRefused(f"Alpaca refused the account's API key: {text}")
    if status == 429:
        return AlpacaBusy(f"Alpaca is rate limiting this account: {text}")
    if status >= 500:
        if placing:
            return AlpacaOutcomeUnknown(f"Alpaca answered {status}: {text}")
        return AlpacaNotSent(f"Alpaca answered {status}: {text}")
    return AlpacaRejected(f"Alpaca refused the order: {text}")


def from_transport(exc: httpx.HTTPError, *, placing: bool) -> Exception:
    """A transport failure: provably unsent before the connection existed, else unknown."""
    name = type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)):
        return AlpacaNotSent(f"Alpaca could not be reached ({name}); nothing was sent")
    if placing:
        return AlpacaOutcomeUnknown(f"no answer from Alpaca ({name}); the order may exist")
    return AlpacaNotSent(f"no answer from Alpaca ({name})")
