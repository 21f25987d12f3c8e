"""ccxt's exceptions in the router's words (the order errors of ``core.errors``).

Core never sees a ccxt exception: the ccxt executor passes everything ``prepare`` and
``submit`` raise through ``order_error``. The mapping:

* ``AuthenticationError`` and its kin (and binance's -2015, which ccxt reports as a
  temporary ban once a key has worked) → ``CredentialsRefused``;
* ``RateLimitExceeded``/``DDoSProtection``/``InvalidNonce`` (the request was refused before
  booking) → ``VenueBusy``;
* a request that provably never left the process (``never_left``) → ``OrderNotSent``;
* ``DuplicateOrderId`` (the client order id is taken: an earlier send was booked), any
  other ``NetworkError`` (timeouts, a dropped connection, a 5xx) and a garbled answer
  (``BadResponse``, ``CancelPending``) after sending → ``OutcomeUnknown``;
  before sending (``prepare``'s reads) → ``OrderNotSent``;
* every other ``ExchangeError`` (funds, size, symbol, ...) → ``OrderRejected``.

The ccxt exception stays the ``__cause__``; ``venue_code`` is the exchange's own error
code when its message carries one (binance's ``"code":-2010``).
"""

from __future__ import annotations

import re
import socket
from typing import TypeVar

import aiohttp
import ccxt

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

_AUTH = (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended, ccxt.AccountNotEnabled)
_BUSY = (ccxt.RateLimitExceeded, ccxt.DDoSProtection, ccxt.InvalidNonce)
_MAYBE_BOOKED = (ccxt.DuplicateOrderId, ccxt.NetworkError, ccxt.BadResponse, ccxt.CancelPending)
_VENUE_CODE = re.compile(r'"(?:code|retCode|sCode)"\s*:\s*"?(-?\w+)"?')


def never_left(exc: BaseException) -> bool:
    """Whether a REST request failed before any byte of it was written."""
    if isinstance(exc, ccxt.ExchangeClosedByUser):
        return True
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        # ClientConnectorError: refused, unresolvable, TLS handshake failed; ConnectionTimeoutError:
        # no connection within the timeout. Either way no request was written.
        if isinstance(cause, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, socket.gaierror)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def key_refusal(exc: BaseException) -> BaseException:
    """ccxt reads binance's -2015 ("Invalid API-key, IP, or permissions") as a temporary ban
    (DDoSProtection) once the key has worked before; for an order router it means the key,
    its IP whitelist or its permissions were changed: an authentication error, not retried."""
    if isinstance(exc, ccxt.DDoSProtection) and '"code":-2015' in str(exc).replace(" ", ""):
        refused = ccxt.AuthenticationError(str(exc))
        refused.__cause__ = exc
        return refused
    return exc


def venue_code(exc: BaseException) -> str | None:
    found = _VENUE_CODE.search(str(exc))
    return found.group(1) if found else None


def order_error(exc: BaseException, *, sent: bool) -> BaseException:
    """``exc`` as one of core's order errors (``sent``: the order may have left the process).

    Exceptions that are already the router's (``WebhookError``) and exceptions that are
    not ccxt's are returned unchanged (core reads the latter as "may be booked")."""
    if isinstance(exc, (OrderError, WebhookError)):
        return exc
    if never_left(exc):
        return _made(OrderNotSent, exc)
    if not isinstance(exc, ccxt.BaseError):
        return exc
    refused = key_refusal(exc)
    if isinstance(refused, _AUTH):
        return _made(CredentialsRefused, exc)
    if isinstance(refused, _BUSY):
        return _made(VenueBusy, exc)
    if isinstance(exc, _MAYBE_BOOKED):
        return _made(OutcomeUnknown if sent else OrderNotSent, exc)
    if isinstance(exc, ccxt.OperationFailed):  # anything else that failed in transport
        return _made(OutcomeUnknown if sent else OrderNotSent, exc)
    return _made(OrderRejected, exc)


def not_sent(exc: BaseException) -> OrderNotSent:
    """``exc`` happened before any part of the order left the process: a resend is safe."""
    return _made(OrderNotSent, exc)


E = TypeVar("E", bound=OrderError)


def _made(kind: type[E], exc: BaseException) -> E:
    text = REDACTOR.redact((str(exc) or type(exc).__name__)[:300])
    error = kind(
        f"{text} ({type(exc).__name__})" if type(exc).__name__ not in text else text, venue_code=venue_code(exc)
    )
    error.__cause__ = exc
    return error
