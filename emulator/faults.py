"""Fault injection: queued misbehaviours consumed by matching requests.

A fault is a dict like ``{"kind": "rate_limit", "match": {"route": "order.place"},
"count": 1}``.  Every incoming request is described by a :class:`Call`; the first
queued fault whose ``match`` fits the call is applied to it and its ``count`` is
decremented (``count: null`` = until cleared).

Match fields (all optional, all must fit):

* ``venue`` - ``binance``, ``bybit`` or ``alpaca``
* ``market_type`` - ``spot`` or ``linear``
* ``route`` - ``"*"`` (any request), an action (``order.place``, ``order.cancel``,
  ``order.status``), a transport-qualified action (``ws order.place``,
  ``rest order.place``), a venue-qualified one (``binance order.place``,
  ``bybit order.create``), or an exact route (``POST /api/v3/order``,
  ``POST /fapi/v1/order``, ``POST /fapi/v1/algoOrder``, ``ws-api order.place``,
  ``POST /v5/order/create``, Alpaca's ``POST /v2/orders`` or
  ``GET /v2/orders:by_client_order_id``).  Default: ``order.place`` for every kind except
  ``down`` whose default is ``*``.
* ``key`` - the API key the request carries
* ``symbol`` - exchange symbol id (``BTCUSDT``)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

DELAY_AFTER_BOOK = "delay_after_book"
DELAY_BEFORE_BOOK = "delay_before_book"
HTTP_ERROR = "http_error"
RATE_LIMIT = "rate_limit"
DROP_BEFORE_BOOK = "drop_before_book"
DROP_AFTER_BOOK = "drop_after_book"
KEY_ERROR = "key_error"
DOWN = "down"

FAULT_KINDS = (
    DELAY_AFTER_BOOK,
    DELAY_BEFORE_BOOK,
    HTTP_ERROR,
    RATE_LIMIT,
    DROP_BEFORE_BOOK,
    DROP_AFTER_BOOK,
    KEY_ERROR,
    DOWN,
)
# Faults that answer in place of the exchange, so nothing is booked.
SHORT_CIRCUIT_KINDS = (HTTP_ERROR, RATE_LIMIT, KEY_ERROR, DROP_BEFORE_BOOK)

PLACE = "order.place"
CANCEL = "order.cancel"
STATUS = "order.status"
QUERY = "query"
PUBLIC = "public"


@dataclass
class Call:
    """What the fault matcher (and the request log) knows about one request."""

    venue: str
    route: str  # "POST /api/v3/order", "ws-api order.place", "POST /v5/order/create"
    action: str  # PLACE | CANCEL | STATUS | QUERY | PUBLIC
    transport: str = "rest"  # "rest" | "ws"
    market_type: str | None = None
    api_key: str | None = None
    symbol: str | None = None
    aliases: tuple[str, ...] = ()

    def names(self) -> set[str]:
        names = {self.route, self.action, f"{self.transport} {self.action}", f"{self.venue} {self.action}"}
        names.update(self.aliases)
        return names


@dataclass
class Fault:
    """One queued fault; see the module docstring for the JSON shape."""

    id: int
    kind: str
    match: dict[str, Any] = field(default_factory=dict)
    count: int | None = 1
    seconds: float = 0.0
    status: int | None = None
    retry_after: int = 1
    mode: str | None = None  # DOWN only: "503" (default) or "reset"
    applied: int = 0

    def fits(self, call: Call) -> bool:
        match = self.match
        route = match.get("route", "*" if self.kind == DOWN else PLACE)
        if route != "*" and route not in call.names():
            return False
        for key, value in (
            ("venue", call.venue),
            ("market_type", call.market_type),
            ("key", call.api_key),
            ("symbol", call.symbol),
        ):
            if key in match and match[key] is not None and match[key] != value:
                return False
        return True

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.applied >= self.count

    def to_dict(self) -> dict[str, Any]:
        remaining = None if self.count is None else max(0, self.count - self.applied)
        return {
            "id": self.id,
            "kind": self.kind,
            "match": dict(self.match),
            "count": self.count,
            "remaining": remaining,
            "applied": self.applied,
            "seconds": self.seconds,
            "status": self.status,
            "retry_after": self.retry_after,
            "mode": self.mode,
        }


class FaultQueue:
    """Ordered faults; :meth:`take` consumes the first one that fits a call."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(
        self,
        kind: str,
        *,
        match: dict[str, Any] | None = None,
        count: int | None | str = "default",
        seconds: float = 0.0,
        status: int | None = None,
        retry_after: int = 1,
        mode: str | None = None,
    ) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if count == "default":
            count = None if kind == DOWN else 1
        if count is not None and int(count) < 1:
            raise ValueError("count must be >= 1 or null")
        if kind == HTTP_ERROR and status is not None and status not in (500, 502, 503, 504):
            raise ValueError("http_error status must be one of 500, 502, 503, 504")
        if kind == RATE_LIMIT and status is not None and status not in (403, 418, 429):
            raise ValueError("rate_limit status must be 429, 418 or 403")
        fault = Fault(
            id=next(self._ids),
            kind=kind,
            match=dict(match or {}),
            count=None if count is None else int(count),
            seconds=float(seconds),
            status=status,
            retry_after=int(retry_after),
            mode=mode,
        )
        self._faults.append(fault)
        return fault

    def add_dict(self, spec: dict[str, Any]) -> Fault:
        known = {"kind", "match", "count", "seconds", "status", "retry_after", "mode"}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "kind" not in spec:
            raise ValueError("fault needs a 'kind'")
        kwargs = {k: v for k, v in spec.items() if k != "kind"}
        return self.add(spec["kind"], **kwargs)

    def clear(self, fault_id: int | None = None) -> int:
        before = len(self._faults)
        self._faults = [f for f in self._faults if fault_id is not None and f.id != fault_id]
        return before - len(self._faults)

    def active(self) -> list[Fault]:
        return [f for f in self._faults if not f.exhausted]

    def _consume(self, call: Call, kinds: tuple[str, ...] | None, exclude: tuple[str, ...] = ()) -> Fault | None:
        for fault in self._faults:
            if fault.exhausted or fault.kind in exclude:
                continue
            if kinds is not None and fault.kind not in kinds:
                continue
            if fault.fits(call):
                fault.applied += 1
                self._faults = [f for f in self._faults if not f.exhausted]
                return fault
        return None

    def take_down(self, call: Call) -> Fault | None:
        """The ``down`` fault covering this call, if any (consumes one count)."""
        return self._consume(call, (DOWN,))

    def take(self, call: Call) -> Fault | None:
        """The first non-``down`` fault fitting this call (consumes one count)."""
        return self._consume(call, None, exclude=(DOWN,))
