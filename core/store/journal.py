"""The journal of record, whatever holds it: what it returns and how rows are stored.

Every accepted alert is written (and committed) before the webhook answers, in one step
with the order's *intent* (the client order id its order will carry) and the request's
replay key (a signature accepted once). Each order attempt is recorded once it ended
— after the answer, grouped with other writes (``Journal.record``) — with the client order
id, the route, the request, the exchange's answer or error, and its timings. So after a
crash, an unfinished alert with an intent and no recorded outcome may have been sent: it
is reconciled by client order id, never sent blindly again. The states an alert goes through are
``core.store.states.AlertState``; the contract is ``core.store.protocols.Journal``, kept by
``core.store.sqlite.journal`` and ``core.store.redis.journal``.

No secret is ever stored, structurally: the payload is journaled without token and
credentials, and secret-named fields are dropped (``core.observability.redaction.without_secrets``)
before the JSON is built (``dumps``). Stored JSON is never rewritten by text redaction
(values a request chose could otherwise corrupt it).

A row that cannot be read is *quarantined*: its state becomes ``quarantined`` (final: it
no longer holds its lane and is never recovered automatically; a human checks the
exchange), it is logged once and counted (GET / ``state.quarantined``), and the other
rows are read and recovered as usual.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

import orjson

from core.observability.redaction import without_secrets

log = logging.getLogger(__name__)

# A journaled alert as read back: its columns (``alert_id``, ``seq``, ``state``, ``account``,
# ``lane``, ``payload``, ``result``, ``error_code``, ...), ``orders`` (its attempts, oldest
# first) and, when some of it cannot be decoded, ``unreadable`` (what is wrong).
AlertRow = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """What ``Journal.admit`` records of a new alert, in one value (see ``Journal.admit``)."""

    explicit_id: str | None  # the alert's own id, if it has one (else the journal makes one)
    body_hash: str
    received_at: float
    dedup_window: float  # seconds within which an alert without an id and the same body_hash is a resend
    principal: str | None
    account: str
    symbol: str
    side: str
    amount: str
    payload: dict[str, Any]
    owner: str | None = None  # the worker that executes it
    lane: str = ""
    authenticated_at: float | None = None
    client_order_id: str | None = None  # the order's intent: after a crash, it may have been sent
    replay_key: str | None = None  # the request's, remembered in the same step
    replay_expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """The journal's answer to a new alert: its id, and whether it was seen before."""

    alert_id: str
    duplicate: bool
    seq: int = 0  # the alert's place in the journal: arrival order (0 for a duplicate)
    # The request's replay key was recorded before: nothing was admitted (the alert id is "").
    replayed: bool = False
    # A new alert: whether an earlier alert of its lane, of another worker (or of none),
    # still held the lane when it was admitted. Only then must its turn ask the journal.
    behind_others: bool = False
    # A duplicate: the state and HTTP status of the alert it duplicates, as committed.
    state: str = ""
    http_status: int | None = None


def new_alert_id(explicit_id: str | None, body_hash: str, received_at: float) -> str:
    """The id ``Journal.admit`` gives a new alert: the explicit one, else the body hash's
    first 20 characters, ``-``, the arrival in milliseconds."""
    return explicit_id or f"{body_hash[:20]}-{int(received_at * 1000)}"


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One order attempt as ``Journal.record`` writes it, once it ended (``state`` is the
    attempt's: filled, failed, unknown, ...; ``finished_at`` None while it is not over)."""

    client_order_id: str
    account: str
    exchange: str
    route: str
    request: dict[str, Any]
    state: str
    started_at: float
    finished_at: float | None = None
    response: dict[str, Any] | None = None
    error: str | None = None  # redacted by the caller


@dataclass(frozen=True)
class OrderAttempt:
    """One order attempt as ``Journal.order_started`` recorded it; ``order_finished`` takes it."""

    alert_id: str
    number: int  # 1 for the alert's first attempt
    client_order_id: str
    account: str
    exchange: str
    route: str
    request: dict[str, Any] = field(default_factory=dict)  # as stored: secret-named fields dropped
    started_at: float = 0.0


class JournalStats(TypedDict):
    """``Journal.stats()``: alerts per state and how many are unfinished (SQLite adds order
    attempts per state and the duplicates counted)."""

    alerts: dict[str, int]
    unfinished: int
    orders: NotRequired[dict[str, int]]
    duplicates: NotRequired[int]


# Stored JSON is written by orjson: compact, and several times faster than the standard
# library's encoder on the journal's values (every alert writes three). What it does not
# take as JSON goes through ``default=str``, as ``json.dumps(..., default=str)`` would: a
# Decimal, and (passed through rather than written orjson's way) datetimes and dataclasses.
# Dict keys that are not strings are written as json.dumps writes them, an enum member as
# its value. NaN and infinities become null (JSON has no such numbers; a browser's
# JSON.parse refuses them), and text is UTF-8, not \u-escaped.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# What orjson refuses (an integer beyond 64 bits, a lone surrogate, nesting deeper than 254)
# goes through the standard library's encoder, built once (it keeps no state between calls:
# the loop and a database thread may share it).
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Stored JSON: secret-named fields dropped first; the text itself is never rewritten."""
    clean = without_secrets(value)
    try:
        return orjson.dumps(clean, default=str, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return _ENCODER.encode(clean)


def decode_json_fields(data: dict[str, Any], keys: tuple[str, ...], where: str, problems: list[str]) -> None:
    """Decode the JSON columns ``keys`` of a stored row in place; one that is not valid JSON
    becomes None and is named in ``problems`` (the row is then quarantined, not fatal)."""
    for key in keys:
        text = data.get(key)
        if not text:
            data[key] = None if text in (None, "") else text
            continue
        try:
            data[key] = json.loads(text)
        except (TypeError, ValueError) as exc:
            data[key] = None
            problems.append(f"{where}{key} is not valid JSON ({type(exc).__name__})")


def quarantine_reason(problems: list[str]) -> str:
    return "the journal row cannot be read: " + "; ".join(problems)[:400]


def log_quarantined(alert_id: str, reason: str) -> None:
    log.error(
        "alert %s quarantined (state 'quarantined', not recovered; check the exchange by hand): %s", alert_id, reason
    )
