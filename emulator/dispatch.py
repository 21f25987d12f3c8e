"""Transport-neutral request handling shared by the venues.

A venue endpoint is an ``async def handler(ctx) -> Reply``.  :class:`CallRunner`
wraps it with what every request goes through - the ``down`` check, fault
injection before/after booking and the order-placement log - so REST and
WebSocket requests behave identically.  The transport layer (``server.py`` for
HTTP, ``binance_ws.py`` for the WebSocket API) only turns a :class:`Reply` or
:data:`DROP` into bytes on the wire.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, overload
from urllib.parse import parse_qsl

from . import faults as F
from .faults import Call, Fault
from .markets import MarketSpec
from .state import Account, ExchangeState, Order


def truthy(value: Any) -> bool:
    """A boolean request parameter: JSON true, or the text true/1 in any case."""
    return value is True or str(value).lower() in ("true", "1")


def query_and_json_params(raw_query: str, raw_body: str, content_type: str) -> dict[str, Any]:
    """A request's parameters: its query string, then a JSON object body over it (Bybit, Alpaca)."""
    params: dict[str, Any] = dict(parse_qsl(raw_query, keep_blank_values=True))
    if raw_body.strip():
        try:
            body = json.loads(raw_body)
        except ValueError:
            body = {}
        if isinstance(body, dict):
            params.update(body)
    return params


@dataclass
class Reply:
    """What a venue answers: HTTP-style status, JSON-able body, extra headers."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive for HTTP requests


class _Drop(enum.Enum):
    """The one value ``DROP``: an enum member, so ``result is DROP`` narrows the type."""

    DROP = "DROP"

    def __repr__(self) -> str:
        return "DROP"


DROP = _Drop.DROP  # close the connection without answering


class VenueError(Exception):
    """A refusal rendered in the venue's own error format."""

    def __init__(self, reply: Reply, code: Any = None, message: str = "") -> None:
        super().__init__(f"{code} {message}")
        self.reply = reply
        self.code = code
        self.message = message


@dataclass
class RequestContext:
    """One parsed request, whatever the transport."""

    call: Call
    params: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive for HTTP requests
    raw_query: str = ""
    raw_body: str = ""
    account: Account | None = None
    log: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def authenticated(self) -> Account:
        """The account the request's keys named; only for routes that authenticate."""
        assert self.account is not None
        return self.account

    def new_order(self, market: MarketSpec, **fields: Any) -> Order:
        """An order this request places on ``market`` for its account; ``fields``: the rest of :class:`Order`."""
        return Order(
            venue=market.venue,
            market_type=market.market_type,
            account_key=self.authenticated().key,
            symbol=market.symbol,
            transport=self.call.transport,
            **fields,
        )

    def log_booked(self, order: Order, status: str) -> None:
        """Note in the placement log, when this request is a placement, that ``order`` was booked."""
        if self.log is not None:
            self.log.update(
                outcome="booked", order_id=order.order_id, client_order_id=order.client_order_id, status=status
            )


Handler = Callable[[RequestContext], Awaitable[Reply]]


@dataclass
class Endpoint:
    """One REST route of a venue.

    ``path`` is without the venue's prefix (``/bybit``, ``/alpaca``); ``market_type`` the
    market type the route serves when its parameters do not say; ``security`` ``none``,
    ``key`` (API key only), ``signed`` or ``keys`` (Alpaca's key id and secret headers);
    ``alias`` the venue's name for the route in fault matching (``order.create``).
    """

    method: str
    path: str
    handler: Handler
    action: str
    market_type: str | None = None
    security: str = "none"
    alias: str | None = None
    ws: str | None = None  # the WebSocket API method served by the same handler (Binance)

    def aliases(self, venue: str) -> tuple[str, ...]:
        """The other names fault matching knows the route by (``bybit order.create``)."""
        return (f"{venue} {self.alias}",) if self.alias else ()


class MarketLookup:
    """A request's ``symbol`` resolved to one of a venue's markets, refused in the venue's words.

    ``missing`` and ``unknown`` build the venue's error for a symbol not sent and one it does not list.
    """

    def __init__(
        self, state: ExchangeState, venue: str, missing: Callable[[], Exception], unknown: Callable[[], Exception]
    ) -> None:
        self.state = state
        self.venue = venue
        self.missing = missing
        self.unknown = unknown

    @overload
    def __call__(self, market_type: str, params: Mapping[str, Any], required: Literal[True] = True) -> MarketSpec: ...
    @overload
    def __call__(self, market_type: str, params: Mapping[str, Any], required: bool) -> MarketSpec | None: ...
    def __call__(self, market_type: str, params: Mapping[str, Any], required: bool = True) -> MarketSpec | None:
        symbol = params.get("symbol")
        if not symbol:
            if required:
                raise self.missing()
            return None
        market = self.state.market(f"{self.venue}.{market_type}", str(symbol))
        if market is None:
            raise self.unknown()
        return market


class JsonApiVenue:
    """What Bybit and Alpaca share: parameters from the query string and a JSON body, and a
    gateway in front of the API that answers its own failures with bare HTML pages."""

    parse_params = staticmethod(query_and_json_params)

    @staticmethod
    def gateway_page(status: int) -> Reply:
        return Reply(status, f"<html><body><h1>{status}</h1></body></html>")

    def down_reply(self, fault: Fault, ctx: RequestContext) -> Reply:
        return Reply(503, "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>")


# A field of the placement log (``/_emu/requests``): the request parameter it is read from,
# or several, of which the first with a value counts.
OrderLogParams = Mapping[str, str | tuple[str, ...]]


def order_summary(params: Mapping[str, Any], fields: OrderLogParams) -> dict[str, Any]:
    """The placement log's view of an order request, in a venue's parameter names."""
    summary = {}
    for name, sources in fields.items():
        value = None
        for source in (sources,) if isinstance(sources, str) else sources:
            value = params.get(source)
            if value:
                break
        summary[name] = value
    return summary


class FaultRenderer(Protocol):
    order_log_params: OrderLogParams

    def fault_reply(self, fault: Fault, ctx: RequestContext) -> Reply: ...

    def down_reply(self, fault: Fault, ctx: RequestContext) -> Reply: ...


class CallRunner:
    """Applies faults and logging around venue handlers."""

    def __init__(self, state: ExchangeState, sleep: Callable[[float], Awaitable[None]]) -> None:
        self.state = state
        self.sleep = sleep

    async def run(
        self, venue: FaultRenderer, ctx: RequestContext, handler: Handler, check_down: bool = True
    ) -> Reply | _Drop:
        call = ctx.call
        down = self.state.faults.take_down(call) if check_down else None
        if down is not None:
            return DROP if down.mode == "reset" else venue.down_reply(down, ctx)
        fault = self.state.faults.take(call)
        if call.action == F.PLACE:
            ctx.log = self.state.log_request(call, order_summary(ctx.params, venue.order_log_params))
            if fault is not None:
                ctx.log["fault"] = fault.kind
        if fault is not None and fault.kind in F.SHORT_CIRCUIT_KINDS:
            if ctx.log is not None:
                ctx.log["outcome"] = "fault"
            return DROP if fault.kind == F.DROP_BEFORE_BOOK else venue.fault_reply(fault, ctx)
        if fault is not None and fault.kind == F.DELAY_BEFORE_BOOK:
            await self.sleep(fault.seconds)
        try:
            reply = await handler(ctx)
        except VenueError as error:
            reply = error.reply
            if ctx.log is not None and ctx.log["outcome"] == "pending":
                ctx.log.update(outcome="rejected", error={"code": error.code, "msg": error.message})
        if ctx.log is not None and ctx.log["outcome"] == "pending":
            ctx.log["outcome"] = "answered"
        self.state._notify()
        if fault is not None and fault.kind == F.DELAY_AFTER_BOOK:
            await self.sleep(fault.seconds)
        if fault is not None and fault.kind == F.DROP_AFTER_BOOK:
            return DROP
        return reply
