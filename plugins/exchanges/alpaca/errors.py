"""Alpaca's HTTP answers and transport failures, translated into core's order errors.

Alpaca answers errors as ``{"code": 40310000, "message": "..."}``: the HTTP status is
what decides (the 8-digit code is kept as the error's ``venue_code``, for display; it
does not always repeat the status: 40010001 comes with 422). What each means for an order:

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

from core.errors import (
    CredentialsRefused,
    OrderNotSent,
    OrderRejected,
    OutcomeUnknown,
    VenueBusy,
)
from core.observability.redaction import REDACTOR

# 403 messages that mean the key itself is refused, not the order.
_KEY_REFUSALS = ("forbidden", "request is not authorized", "unauthorized", "access denied")


def _body(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def message_of(response: httpx.Response) -> str:
    text = str(_body(response).get("message") or response.reason_phrase or f"HTTP {response.status_code}")
    return REDACTOR.redact(text[:300])


def from_response(response: httpx.Response, *, placing: bool) -> Exception:
    """The order error an error answer means. ``placing``: the request creates or cancels
    something (a 5xx then leaves its fate open); a read has no side effect."""
    status = response.status_code
    text = message_of(response)
    venue_code = _body(response).get("code") or status
    if status == 401 or (status == 403 and text.strip(" .").lower() in _KEY_REFUSALS):
        return CredentialsRefused(f"Alpaca refused the account's API key: {text}", venue_code=venue_code)
    if status == 429:
        return VenueBusy(f"Alpaca is rate limiting this account: {text}", venue_code=venue_code)
    if status >= 500:
        if placing:
            return OutcomeUnknown(f"Alpaca answered {status}: {text}", venue_code=venue_code)
        return OrderNotSent(f"Alpaca answered {status}: {text}", venue_code=venue_code)
    return OrderRejected(f"Alpaca refused the order: {text}", venue_code=venue_code)


def from_transport(exc: httpx.HTTPError, *, placing: bool) -> Exception:
    """A transport failure: provably unsent before the connection existed, else unknown."""
    name = type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)):
        return OrderNotSent(f"Alpaca could not be reached ({name}); nothing was sent")
    if placing:
        return OutcomeUnknown(f"no answer from Alpaca ({name}); the order may exist")
    return OrderNotSent(f"no answer from Alpaca ({name})")
