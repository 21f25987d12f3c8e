"""Alpaca Trading API v2 subset (stocks and crypto), mounted under ``/alpaca``.

Point a client's base URL at ``emu.base_url + "/alpaca"``. Requests carry the
headers ``APCA-API-KEY-ID`` and ``APCA-API-SECRET-KEY`` (the emulator's account
keys, ``emu-key-1``/``emu-secret-1`` by default): a missing or unknown key is
answered 401, a known key with the wrong secret 403. Errors have Alpaca's shape
``{"code": 40010001, "message": "..."}``.

Every account has one USD cash wallet (``alpaca.spot``, default 100000 USD, seeded
on first use); a buy moves cash into the asset, a sell back (no short selling and no
margin here: a sell beyond the holding is refused as Alpaca refuses it in a cash
account). Positions are the non-USD holdings.

The market clock (``GET /v2/clock``) is controlled with ``POST /_emu/alpaca/clock``
``{"is_open": false}``. While it is closed, US-equity orders are accepted and queued
(status ``accepted``) as Alpaca does, unless they are extended-hours limit orders,
which execute at once when marketable; queued orders execute when the clock opens.
Crypto trades at any time.

Bracket / OTO / OCO orders record their legs (``legs`` in the order, ``stop_loss``
/``take_profit`` in ``/_emu/orders``); legs are ``held`` until the entry fills, then
``new``; they are not triggered by price changes.

Where Alpaca's documentation does not give an exact message, the emulator's text is
a close guess (see docs/exchanges/alpaca.md); clients should rely on the HTTP status
and the numeric ``code``, not on the message.
"""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web

from . import faults as F
from .dispatch import Endpoint, JsonApiVenue, OrderLogParams, Reply, RequestContext, VenueError, truthy
from .faults import Fault
from .markets import SPOT, D, MarketSpec, dec, decimals_of, is_multiple, plain
from .state import (
    BUY,
    CANCELED,
    EXPIRED,
    FILLED,
    INSUFFICIENT_BALANCE,
    NEW,
    SELL,
    Account,
    ExchangeState,
    Order,
    Rejection,
    now_ms,
)

ALPACA = "alpaca"
ALPACA_PREFIX = "/alpaca"
BOOK = f"{ALPACA}.{SPOT}"  # one book and one USD wallet for stocks and crypto
DEFAULT_CASH = D("100000")
EQUITY, CRYPTO = "us_equity", "crypto"
TIME_IN_FORCE = ("day", "gtc", "opg", "cls", "ioc", "fok")
CRYPTO_TIME_IN_FORCE = ("gtc", "ioc")
ORDER_TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
CRYPTO_ORDER_TYPES = ("market", "limit", "stop_limit")
ORDER_CLASSES = ("simple", "bracket", "oco", "oto")
MAX_CLIENT_ORDER_ID = 128
CRYPTO_MIN_NOTIONAL_USD = D("10")

# Alpaca's error codes (an 8-digit number beside the HTTP status; 40010001, a malformed
# or invalid request, comes with 422 as well as 400).
BAD_REQUEST = 40010001
UNAUTHORIZED = 40110000
FORBIDDEN = 40310000
NOT_FOUND = 40410000
UNPROCESSABLE = 42210000
RATE_LIMITED = 42910000


def _asset(
    symbol: str,
    cls: str,
    exchange: str,
    name: str,
    *,
    fractionable: bool = True,
    tradable: bool = True,
    min_order_size: str = "1",
    min_trade_increment: str = "0.000000001",
    price_increment: str = "0.01",
    quote: str = "USD",
) -> MarketSpec:
    base = symbol.split("/")[0]
    return MarketSpec(
        venue=ALPACA,
        market_type=SPOT,
        symbol=symbol,
        base=base,
        quote=quote,
        tick_size=D(price_increment),
        min_price=D(price_increment),
        max_price=D("10000000"),
        step_size=D(min_trade_increment) if fractionable else D(1),
        min_qty=D(min_order_size) if cls == CRYPTO else D(0),
        max_qty=D("100000000"),
        market_max_qty=D("100000000"),
        min_notional=D(1) if cls == EQUITY else D(0),
        taker_fee=D(0),
        maker_fee=D(0),
        extra={
            "class": cls,
            "exchange": exchange,
            "name": name,
            "fractionable": fractionable,
            "tradable": tradable,
            "min_order_size": min_order_size,
            "min_trade_increment": min_trade_increment,
            "price_increment": price_increment,
        },
    )


def alpaca_markets() -> list[MarketSpec]:
    """The assets the emulator lists: a few stocks (one not fractionable, one not
    tradable) and crypto pairs quoted in USD and USDT. Starting prices come from
    ``markets.DEFAULT_PRICES`` by base (AAPL 190, BTC 50000); ``--price AAPL=200`` or
    ``set_price("BTC/USD", ...)`` change them."""
    return [
        _asset("AAPL", EQUITY, "NASDAQ", "Apple Inc. Common Stock"),
        _asset("MSFT", EQUITY, "NASDAQ", "Microsoft Corporation Common Stock"),
        _asset("SPY", EQUITY, "ARCA", "SPDR S&P 500 ETF Trust"),
        _asset("F", EQUITY, "NYSE", "Ford Motor Co."),
        _asset("BRK.A", EQUITY, "NYSE", "Berkshire Hathaway Inc. Class A", fractionable=False),
        _asset("DLSTD", EQUITY, "OTC", "Delisted Corp.", tradable=False, fractionable=False),
        _asset(
            "BTC/USD",
            CRYPTO,
            "CRYPTO",
            "Bitcoin / US Dollar",
            min_order_size="0.0001",
            min_trade_increment="0.000000001",
            price_increment="1",
        ),
        _asset(
            "ETH/USD",
            CRYPTO,
            "CRYPTO",
            "Ethereum / US Dollar",
            min_order_size="0.001",
            min_trade_increment="0.000000001",
            price_increment="0.1",
        ),
        _asset(
            "BTC/USDT",
            CRYPTO,
            "CRYPTO",
            "Bitcoin / USD Tether",
            min_order_size="0.0001",
            min_trade_increment="0.000000001",
            price_increment="1",
            quote="USDT",
        ),
    ]


def error(status: int, code: int, message: str, **extra: Any) -> VenueError:
    return VenueError(Reply(status, {"code": code, "message": message, **extra}), code, message)


def _iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _asset_id(symbol: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-emulator/{symbol}"))


class AlpacaVenue(JsonApiVenue):
    """Alpaca Trading API v2 semantics on top of :class:`ExchangeState`."""

    venue = ALPACA
    prefix = ALPACA_PREFIX
    key_header = "APCA-API-KEY-ID"
    order_log_params: OrderLogParams = {
        "symbol": "symbol",
        "side": "side",
        "type": "type",
        "quantity": "qty",
        "notional": "notional",
        "price": "limit_price",
        "stop_price": "stop_price",
        "time_in_force": "time_in_force",
        "extended_hours": "extended_hours",
        "order_class": "order_class",
        "take_profit": "take_profit",
        "stop_loss": "stop_loss",
        "client_order_id": "client_order_id",
    }

    def __init__(self, state: ExchangeState) -> None:
        self.state = state
        self.is_open = True

    def reset(self) -> None:
        self.is_open = True

    @staticmethod
    def market_type_of(endpoint: Endpoint, params: dict[str, Any]) -> str | None:
        return SPOT

    # ================================================================ auth
    def authenticate_rest(self, ctx: RequestContext, security: str) -> None:
        key = ctx.headers.get(self.key_header) or ""
        secret = ctx.headers.get("APCA-API-SECRET-KEY") or ""
        account = self.state.accounts.get(key)
        if not key or not secret or account is None:
            raise error(401, UNAUTHORIZED, "request is not authorized")
        if secret != account.secret:
            raise error(403, FORBIDDEN, "forbidden")
        if BOOK not in account.wallets:
            account.balance(BOOK, "USD").free = DEFAULT_CASH
        ctx.account = account

    # ========================================================= fault shapes
    def fault_reply(self, fault: Fault, ctx: RequestContext) -> Reply:
        if fault.kind == F.RATE_LIMIT:
            headers = {
                "X-RateLimit-Limit": "200",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(now_ms() // 1000 + fault.retry_after),
            }
            return Reply(fault.status or 429, {"code": RATE_LIMITED, "message": "rate limit exceeded"}, headers)
        if fault.kind == F.KEY_ERROR:
            return Reply(401, {"code": UNAUTHORIZED, "message": "request is not authorized"})
        return self.gateway_page(fault.status or 503)

    # ============================================================ helpers
    def market_of(self, symbol: Any) -> MarketSpec | None:
        """An asset by symbol, crypto also without the slash (``BTCUSD``), or by asset id."""
        text = str(symbol or "").upper()
        for market in self.state.markets_of(BOOK):
            if text in (market.symbol, market.symbol.replace("/", ""), _asset_id(market.symbol).upper()):
                return market
        return None

    @staticmethod
    def _number(value: Any, name: str) -> Decimal | None:
        if value in (None, ""):
            return None
        try:
            number = dec(value)
        except ValueError:
            raise error(422, BAD_REQUEST, f"invalid {name}") from None
        if number <= 0:
            raise error(422, BAD_REQUEST, f"{name} must be > 0")
        return number

    def _check_price(self, market: MarketSpec, price: Decimal, name: str) -> None:
        increment = market.tick_size
        if market.extra["class"] == EQUITY and price < 1:
            increment = D("0.0001")
        if not is_multiple(price, increment):
            raise error(
                422,
                UNPROCESSABLE,
                f"invalid {name} {plain(price)}. sub-penny increment does not fulfill minimum pricing criteria",
            )

    # ============================================================= orders
    async def create_order(self, ctx: RequestContext) -> Reply:
        p = ctx.params
        account = ctx.authenticated()
        market = self.market_of(p.get("symbol"))
        if market is None:
            raise error(422, UNPROCESSABLE, f'asset "{p.get("symbol")}" not found')
        info = market.extra
        crypto = info["class"] == CRYPTO
        if not info["tradable"]:
            raise error(422, UNPROCESSABLE, f"asset {market.symbol} is not tradable")
        side = {"buy": BUY, "sell": SELL}.get(str(p.get("side")))
        if side is None:
            raise error(422, BAD_REQUEST, "invalid side")
        order_type = str(p.get("type") or p.get("order_type") or "")
        if order_type not in ORDER_TYPES:
            raise error(422, BAD_REQUEST, "invalid order type")
        if crypto and order_type not in CRYPTO_ORDER_TYPES:
            raise error(422, BAD_REQUEST, "invalid order type for crypto order")
        if order_type == "trailing_stop":
            raise error(422, UNPROCESSABLE, "trailing_stop orders are not supported by the emulator")
        tif = str(p.get("time_in_force") or "")
        if tif not in TIME_IN_FORCE:
            raise error(422, BAD_REQUEST, "invalid time_in_force")
        if crypto and tif not in CRYPTO_TIME_IN_FORCE:
            raise error(422, UNPROCESSABLE, "invalid crypto time_in_force")
        qty = self._number(p.get("qty"), "qty")
        notional = self._number(p.get("notional"), "notional")
        if qty is None and notional is None:
            raise error(422, BAD_REQUEST, "qty or notional is required")
        if qty is not None and notional is not None:
            raise error(422, BAD_REQUEST, "only one of qty or notional may be specified")
        for value, name in ((qty, "qty"), (notional, "notional")):
            if value is not None and decimals_of(value) > 9:
                raise error(422, BAD_REQUEST, f"{name} must have at most 9 decimal places")
        limit_price = self._number(p.get("limit_price"), "limit_price")
        stop_price = self._number(p.get("stop_price"), "stop_price")
        if order_type in ("limit", "stop_limit") and limit_price is None:
            raise error(422, BAD_REQUEST, "limit_price is required")
        if order_type in ("stop", "stop_limit") and stop_price is None:
            raise error(422, BAD_REQUEST, "stop_price is required")
        if order_type == "limit" and stop_price is not None:
            raise error(422, BAD_REQUEST, "limit orders must not have stop_price")
        if order_type == "market" and (limit_price is not None or stop_price is not None):
            raise error(422, BAD_REQUEST, "market orders must not have limit_price or stop_price")
        for price, name in ((limit_price, "limit_price"), (stop_price, "stop_price")):
            if price is not None:
                self._check_price(market, price, name)
        if notional is not None and order_type != "market":
            raise error(422, UNPROCESSABLE, "notional orders are only supported for market orders")
        fractional = notional is not None or (qty is not None and qty != qty.to_integral_value())
        if not crypto and fractional:
            if not info["fractionable"]:
                raise error(422, UNPROCESSABLE, f"asset {market.symbol} is not fractionable")
            if tif != "day":
                raise error(422, UNPROCESSABLE, "fractional orders must be DAY orders")
        if crypto and qty is not None and qty < dec(info["min_order_size"]):
            raise error(422, UNPROCESSABLE, f"qty must be >= {info['min_order_size']}")
        extended = truthy(p.get("extended_hours"))
        if extended and not crypto and (order_type != "limit" or tif != "day"):
            raise error(422, UNPROCESSABLE, "extended hours order must be DAY limit orders")
        order_class = str(p.get("order_class") or "simple")
        if order_class not in ORDER_CLASSES:
            raise error(422, BAD_REQUEST, "invalid order_class")
        legs = self._legs(market, p, order_class, side, order_type, tif, limit_price, fractional, extended)
        client_order_id = str(p.get("client_order_id") or uuid.uuid4())
        if len(client_order_id) > MAX_CLIENT_ORDER_ID:
            raise error(422, BAD_REQUEST, f"client_order_id must be no more than {MAX_CLIENT_ORDER_ID} characters")
        if self.state.client_id_taken(BOOK, account.key, None, client_order_id, open_only=False):
            raise error(422, BAD_REQUEST, "client_order_id must be unique")
        price_now = self.state.price(market)
        if crypto and side == BUY and market.quote == "USD":
            if notional is not None:
                cost = notional
            else:
                assert qty is not None  # one of qty and notional, checked above
                cost = qty * (limit_price or price_now)
            if cost < CRYPTO_MIN_NOTIONAL_USD:
                raise error(403, FORBIDDEN, f"cost basis must be >= minimal amount of order {CRYPTO_MIN_NOTIONAL_USD}")
        execution = "limit" if order_type in ("limit", "stop_limit") else "market"
        attached = {
            leg["kind"]: D(leg["limit_price"] if leg["kind"] == "take_profit" else leg["stop_price"]) for leg in legs
        }
        order = ctx.new_order(
            market,
            side=side,
            venue_type=order_type,
            execution=execution,
            quantity=qty,
            quote_quantity=notional,
            price=limit_price,
            client_order_id=client_order_id,
            time_in_force=tif,
            trigger_price=stop_price,
            trigger_direction=None if stop_price is None else ("rise" if side == BUY else "fall"),
            order_id=str(uuid.uuid4()),
            extra={
                "order_class": order_class,
                "extended_hours": extended,
                "asset_class": info["class"],
                "notional": notional,
                "legs": legs,
                **attached,
            },
        )
        queued = not crypto and not self.is_open and not extended
        try:
            if queued:
                self._queue(account, market, order, price_now)
            else:
                self.state.submit(order)
        except Rejection as rejection:
            raise self._rejected(rejection, account, market, order) from None
        ctx.log_booked(order, self.status_of(order))
        return Reply(200, self.render_order(order))

    def _legs(
        self,
        market: MarketSpec,
        p: dict[str, Any],
        order_class: str,
        side: str,
        order_type: str,
        tif: str,
        limit_price: Decimal | None,
        fractional: bool,
        extended: bool,
    ) -> list[dict[str, Any]]:
        if order_class == "simple":
            return []
        if market.extra["class"] == CRYPTO:
            raise error(422, UNPROCESSABLE, f"crypto orders not allowed for advanced order_class: {order_class}")
        if fractional:
            raise error(422, UNPROCESSABLE, "fractional orders are not allowed for advanced order_class")
        if extended:
            raise error(422, UNPROCESSABLE, "extended hours orders are not allowed for advanced order_class")
        if tif not in ("day", "gtc"):
            raise error(422, UNPROCESSABLE, "advanced orders must be DAY or GTC orders")
        take_profit = p.get("take_profit") if isinstance(p.get("take_profit"), dict) else None
        stop_loss = p.get("stop_loss") if isinstance(p.get("stop_loss"), dict) else None
        tp_price = self._number((take_profit or {}).get("limit_price"), "take_profit.limit_price")
        sl_stop = self._number((stop_loss or {}).get("stop_price"), "stop_loss.stop_price")
        sl_limit = self._number((stop_loss or {}).get("limit_price"), "stop_loss.limit_price")
        if order_class in ("bracket", "oco") and (tp_price is None or sl_stop is None):
            raise error(
                422, UNPROCESSABLE, f"{order_class} orders require take_profit.limit_price and stop_loss.stop_price"
            )
        if order_class == "oto" and (tp_price is None) == (sl_stop is None):
            raise error(422, UNPROCESSABLE, "oto orders require either take_profit or stop_loss")
        if order_class == "oco" and order_type != "limit":
            raise error(422, UNPROCESSABLE, "oco orders must be limit orders")
        base = limit_price if limit_price is not None else self.state.price(market)
        cent = D("0.01")
        exit_side = SELL if side == BUY else BUY
        legs = []
        if tp_price is not None:
            self._check_price(market, tp_price, "take_profit.limit_price")
            if order_class != "oco":
                if side == BUY and tp_price < base + cent:
                    raise error(422, UNPROCESSABLE, "take_profit.limit_price must be >= base_price + 0.01")
                if side == SELL and tp_price > base - cent:
                    raise error(422, UNPROCESSABLE, "take_profit.limit_price must be <= base_price - 0.01")
            legs.append(
                {
                    "kind": "take_profit",
                    "side": exit_side,
                    "type": "limit",
                    "limit_price": plain(tp_price),
                    "stop_price": None,
                }
            )
        if sl_stop is not None:
            self._check_price(market, sl_stop, "stop_loss.stop_price")
            if order_class != "oco":
                if side == BUY and sl_stop > base - cent:
                    raise error(422, UNPROCESSABLE, "stop_loss.stop_price must be <= base_price - 0.01")
                if side == SELL and sl_stop < base + cent:
                    raise error(422, UNPROCESSABLE, "stop_loss.stop_price must be >= base_price + 0.01")
            legs.append(
                {
                    "kind": "stop_loss",
                    "side": exit_side,
                    "type": "stop_limit" if sl_limit else "stop",
                    "limit_price": plain(sl_limit) if sl_limit else None,
                    "stop_price": plain(sl_stop),
                }
            )
        for leg in legs:
            leg.update(id=str(uuid.uuid4()), client_order_id=str(uuid.uuid4()), time_in_force=tif)
        return legs

    def _rejected(self, rejection: Rejection, account: Account, market: MarketSpec, order: Order) -> VenueError:
        if rejection.reason == INSUFFICIENT_BALANCE and order.side == SELL:
            held = account.balance(BOOK, market.base).free
            requested = order.quantity if order.quantity is not None else order.quote_quantity
            return error(
                403,
                FORBIDDEN,
                f"insufficient qty available for order (requested: {plain(requested)}, available: {plain(held)})",
            )
        if rejection.reason == INSUFFICIENT_BALANCE:
            cash = account.balance(BOOK, market.quote).free
            return error(403, FORBIDDEN, "insufficient buying power", buying_power=plain(cash))
        return error(422, UNPROCESSABLE, rejection.reason)

    def _queue(self, account: Account, market: MarketSpec, order: Order, price_now: Decimal) -> None:
        """Accept an equity order while the market is closed: booked, not working, funds held."""
        self.state._check_funds(account, market, order, price_now)
        self.state._book(order, working=False)
        order.extra["queued"] = True
        self.state._lock(account, market, order)
        self.state._notify()

    def set_clock(self, is_open: bool) -> None:
        """Open or close the market; opening executes the queued orders."""
        self.is_open = is_open
        if not is_open:
            return
        for order in [o for o in list(self.state._open.values()) if o.book == BOOK and o.extra.get("queued")]:
            order.extra["queued"] = False
            account = self.state.accounts[order.account_key]
            market = self.state.markets[(BOOK, order.symbol)]
            self.state._unlock(account, order)
            price_now = self.state.price(market)
            if order.trigger_price is None and self.state._marketable(order, price_now):
                self.state._fill(account, market, order, price_now, maker=False)
            else:
                order.working = order.trigger_price is None
                self.state._lock(account, market, order)
        self.state._notify()

    def _find(self, ctx: RequestContext, order_id: str | None = None, client_order_id: str | None = None) -> Order:
        order = self.state.find_order(
            BOOK, ctx.authenticated().key, None, order_id=order_id, client_order_id=client_order_id
        )
        if order is None:
            raise error(404, NOT_FOUND, "order not found")
        return order

    async def get_order(self, ctx: RequestContext) -> Reply:
        return Reply(200, self.render_order(self._find(ctx, order_id=str(ctx.params.get("order_id")))))

    async def get_order_by_client_id(self, ctx: RequestContext) -> Reply:
        client_order_id = ctx.params.get("client_order_id")
        if not client_order_id:
            raise error(422, BAD_REQUEST, "client_order_id is required")
        return Reply(200, self.render_order(self._find(ctx, client_order_id=str(client_order_id))))

    async def list_orders(self, ctx: RequestContext) -> Reply:
        p = ctx.params
        status = str(p.get("status") or "open")
        if status not in ("open", "closed", "all"):
            raise error(422, BAD_REQUEST, "invalid status")
        orders = self.state.orders_of(BOOK, ctx.authenticated().key)
        if status == "open":
            orders = [o for o in orders if o.is_open]
        elif status == "closed":
            orders = [o for o in orders if not o.is_open]
        symbols = {s.strip().upper() for s in str(p.get("symbols") or "").split(",") if s.strip()}
        if symbols:
            orders = [o for o in orders if o.symbol in symbols or o.symbol.replace("/", "") in symbols]
        if str(p.get("side") or "") in ("buy", "sell"):
            orders = [o for o in orders if o.side == p["side"].upper()]
        limit = max(1, min(int(str(p.get("limit") or 50)), 500))
        newest_first = str(p.get("direction") or "desc") == "desc"
        orders = sorted(orders, key=lambda o: o.seq, reverse=newest_first)[:limit]
        return Reply(200, [self.render_order(o) for o in orders])

    async def cancel_order(self, ctx: RequestContext) -> Reply:
        order = self._find(ctx, order_id=str(ctx.params.get("order_id")))
        if not order.is_open:
            raise error(422, UNPROCESSABLE, f"order is not cancelable (status: {self.status_of(order)})")
        self.state.cancel(order)
        return Reply(204, None)

    async def cancel_all(self, ctx: RequestContext) -> Reply:
        results = []
        for order in self.state.orders_of(BOOK, ctx.authenticated().key, open_only=True):
            self.state.cancel(order)
            results.append({"id": order.order_id, "status": 200, "body": self.render_order(order)})
        return Reply(207, results)

    @staticmethod
    def status_of(order: Order) -> str:
        if order.status == NEW:
            if order.extra.get("queued"):
                return "accepted"
            return "partially_filled" if order.executed_qty else "new"
        return {FILLED: "filled", CANCELED: "canceled", EXPIRED: "expired"}.get(order.status, "rejected")

    def render_order(self, order: Order, nested: bool = True) -> dict[str, Any]:
        notional = order.extra.get("notional")
        filled = order.status == FILLED
        legs = None
        if order.extra.get("legs"):
            legs = [self._render_leg(order, leg) for leg in order.extra["legs"]]
        order_type = order.venue_type
        return {
            "id": order.order_id,
            "client_order_id": order.client_order_id,
            "created_at": _iso(order.created_ms),
            "updated_at": _iso(order.updated_ms),
            "submitted_at": _iso(order.created_ms),
            "filled_at": _iso(order.updated_ms) if filled else None,
            "expired_at": _iso(order.updated_ms) if order.status == EXPIRED else None,
            "canceled_at": _iso(order.updated_ms) if order.status == CANCELED else None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": _asset_id(order.symbol),
            "symbol": order.symbol,
            "asset_class": order.extra.get("asset_class", EQUITY),
            "notional": plain(notional) if notional is not None else None,
            "qty": plain(order.quantity) if order.quantity is not None and notional is None else None,
            "filled_qty": plain(order.executed_qty),
            "filled_avg_price": plain(order.avg_price) if order.executed_qty else None,
            "order_class": "" if order.extra.get("order_class") == "simple" else order.extra.get("order_class", ""),
            "order_type": order_type,
            "type": order_type,
            "side": order.side.lower(),
            "time_in_force": order.time_in_force,
            "limit_price": plain(order.price) if order.price is not None else None,
            "stop_price": plain(order.trigger_price) if order.trigger_price is not None else None,
            "status": self.status_of(order),
            "extended_hours": bool(order.extra.get("extended_hours")),
            "legs": legs,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "position_intent": ("buy_to_open" if order.side == BUY else "sell_to_close"),
        }

    def _render_leg(self, parent: Order, leg: dict[str, Any]) -> dict[str, Any]:
        if parent.status == FILLED:
            status = "new"
        elif parent.status in (CANCELED, EXPIRED):
            status = "canceled"
        else:
            status = "held"
        return {
            "id": leg["id"],
            "client_order_id": leg["client_order_id"],
            "created_at": _iso(parent.created_ms),
            "updated_at": _iso(parent.updated_ms),
            "submitted_at": _iso(parent.created_ms),
            "filled_at": None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": _asset_id(parent.symbol),
            "symbol": parent.symbol,
            "asset_class": parent.extra.get("asset_class", EQUITY),
            "notional": None,
            "qty": plain(parent.quantity) if parent.quantity is not None else None,
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": parent.extra.get("order_class"),
            "order_type": leg["type"],
            "type": leg["type"],
            "side": leg["side"].lower(),
            "time_in_force": leg["time_in_force"],
            "limit_price": leg["limit_price"],
            "stop_price": leg["stop_price"],
            "status": status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }

    # =========================================================== account
    async def account(self, ctx: RequestContext) -> Reply:
        account = ctx.authenticated()
        cash = account.balance(BOOK, "USD")
        holdings = self._holdings(account)
        market_value = sum((qty * self.state.price(m) for m, qty in holdings), D(0))
        equity = cash.total + market_value
        number = f"PA{abs(hash(account.key)) % 10**10:010d}"
        return Reply(
            200,
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-emulator/account/{account.key}")),
                "account_number": number,
                "status": "ACTIVE",
                "crypto_status": "ACTIVE",
                "currency": "USD",
                "cash": plain(cash.free),
                "buying_power": plain(cash.free),
                "regt_buying_power": plain(cash.free),
                "non_marginable_buying_power": plain(cash.free),
                "daytrading_buying_power": "0",
                "equity": plain(equity),
                "last_equity": plain(equity),
                "portfolio_value": plain(equity),
                "long_market_value": plain(market_value),
                "short_market_value": "0",
                "multiplier": "1",
                "initial_margin": "0",
                "maintenance_margin": "0",
                "pattern_day_trader": False,
                "trading_blocked": False,
                "transfers_blocked": False,
                "account_blocked": False,
                "trade_suspended_by_user": False,
                "shorting_enabled": False,
                "created_at": "2024-01-01T00:00:00Z",
                "daytrade_count": 0,
                "sma": "0",
            },
        )

    def _holdings(self, account: Account) -> list[tuple[MarketSpec, Decimal]]:
        wallet = account.wallets.get(BOOK, {})
        rows = []
        for market in self.state.markets_of(BOOK):
            if market.quote != "USD":
                continue
            balance = wallet.get(market.base)
            if balance is not None and balance.total != 0:
                rows.append((market, balance.total))
        return rows

    def _render_position(self, account: Account, market: MarketSpec, qty: Decimal) -> dict[str, Any]:
        bought = [f for o in self.state.orders_of(BOOK, account.key, market.symbol) if o.side == BUY for f in o.fills]
        bought_qty = sum((f.qty for f in bought), D(0))
        entry = sum((f.quote_qty for f in bought), D(0)) / bought_qty if bought_qty else self.state.price(market)
        price = self.state.price(market)
        available = account.balance(BOOK, market.base).free
        return {
            "asset_id": _asset_id(market.symbol),
            "symbol": market.symbol.replace("/", ""),
            "exchange": market.extra["exchange"],
            "asset_class": market.extra["class"],
            "asset_marginable": False,
            "qty": plain(qty),
            "qty_available": plain(available),
            "avg_entry_price": plain(entry),
            "side": "long" if qty > 0 else "short",
            "market_value": plain(qty * price),
            "cost_basis": plain(qty * entry),
            "unrealized_pl": plain(qty * (price - entry)),
            "unrealized_plpc": "0",
            "unrealized_intraday_pl": "0",
            "unrealized_intraday_plpc": "0",
            "current_price": plain(price),
            "lastday_price": plain(price),
            "change_today": "0",
        }

    async def positions(self, ctx: RequestContext) -> Reply:
        account = ctx.authenticated()
        return Reply(200, [self._render_position(account, m, qty) for m, qty in self._holdings(account)])

    def _position(self, ctx: RequestContext) -> tuple[Account, MarketSpec, Decimal]:
        account = ctx.authenticated()
        market = self.market_of(ctx.params.get("symbol"))
        held = {m.symbol: q for m, q in self._holdings(account)}
        if market is None or market.symbol not in held:
            raise error(404, NOT_FOUND, "position does not exist")
        return account, market, held[market.symbol]

    async def position(self, ctx: RequestContext) -> Reply:
        account, market, qty = self._position(ctx)
        return Reply(200, self._render_position(account, market, qty))

    async def close_position(self, ctx: RequestContext) -> Reply:
        account, market, _ = self._position(ctx)
        available = account.balance(BOOK, market.base).free
        order = ctx.new_order(
            market,
            side=SELL,
            venue_type="market",
            execution="market",
            quantity=available,
            client_order_id=str(uuid.uuid4()),
            time_in_force="gtc" if market.extra["class"] == CRYPTO else "day",
            order_id=str(uuid.uuid4()),
            extra={"order_class": "simple", "asset_class": market.extra["class"]},
        )
        queued = market.extra["class"] == EQUITY and not self.is_open
        try:
            if queued:
                self._queue(account, market, order, self.state.price(market))
            else:
                self.state.submit(order)
        except Rejection as rejection:
            raise self._rejected(rejection, account, market, order) from None
        return Reply(200, self.render_order(order))

    # ============================================================ public-ish
    async def clock(self, ctx: RequestContext) -> Reply:
        now = datetime.now(UTC).replace(microsecond=0)
        return Reply(
            200,
            {
                "timestamp": now.isoformat(),
                "is_open": self.is_open,
                "next_open": (now + timedelta(hours=1 if not self.is_open else 17)).isoformat(),
                "next_close": (now + timedelta(hours=6 if self.is_open else 7)).isoformat(),
            },
        )

    @staticmethod
    def render_asset(market: MarketSpec) -> dict[str, Any]:
        info = market.extra
        return {
            "id": _asset_id(market.symbol),
            "class": info["class"],
            "exchange": info["exchange"],
            "symbol": market.symbol,
            "name": info["name"],
            "status": "active" if info["tradable"] else "inactive",
            "tradable": info["tradable"],
            "marginable": info["class"] == EQUITY,
            "shortable": False,
            "easy_to_borrow": False,
            "fractionable": info["fractionable"],
            "maintenance_margin_requirement": 100,
            "attributes": ["fractional_eh_enabled"] if info["fractionable"] and info["class"] == EQUITY else [],
            "min_order_size": info["min_order_size"],
            "min_trade_increment": info["min_trade_increment"],
            "price_increment": info["price_increment"],
        }

    async def assets(self, ctx: RequestContext) -> Reply:
        p = ctx.params
        rows = [self.render_asset(m) for m in self.state.markets_of(BOOK)]
        if p.get("status"):
            rows = [r for r in rows if r["status"] == p["status"]]
        if p.get("asset_class"):
            rows = [r for r in rows if r["class"] == p["asset_class"]]
        if p.get("exchange"):
            rows = [r for r in rows if r["exchange"] == p["exchange"]]
        return Reply(200, rows)

    async def asset(self, ctx: RequestContext) -> Reply:
        market = self.market_of(ctx.params.get("symbol"))
        if market is None:
            raise error(404, NOT_FOUND, "asset not found")
        return Reply(200, self.render_asset(market))

    # ============================================================ routing
    def endpoints(self) -> list[Endpoint]:
        E = functools.partial(Endpoint, security="keys")  # every Alpaca route needs the key headers
        return [
            E("POST", "/v2/orders", self.create_order, F.PLACE, alias="order.create"),
            E("GET", "/v2/orders", self.list_orders, F.QUERY, alias="order.list"),
            E("DELETE", "/v2/orders", self.cancel_all, F.CANCEL, alias="order.cancel-all"),
            E(
                "GET",
                "/v2/orders:by_client_order_id",
                self.get_order_by_client_id,
                F.STATUS,
                alias="order.by-client-id",
            ),
            E("GET", "/v2/orders/{order_id}", self.get_order, F.STATUS, alias="order.get"),
            E("DELETE", "/v2/orders/{order_id}", self.cancel_order, F.CANCEL, alias="order.cancel"),
            E("GET", "/v2/account", self.account, F.QUERY),
            E("GET", "/v2/positions", self.positions, F.QUERY),
            E("GET", "/v2/positions/{symbol:.+}", self.position, F.QUERY),
            E("DELETE", "/v2/positions/{symbol:.+}", self.close_position, F.PLACE, alias="position.close"),
            E("GET", "/v2/clock", self.clock, F.QUERY),
            E("GET", "/v2/assets", self.assets, F.QUERY),
            E("GET", "/v2/assets/{symbol:.+}", self.asset, F.QUERY),
        ]

    # ====================================================== control API
    def control_routes(self, app: web.Application) -> None:
        async def get_clock(request: web.Request) -> web.Response:
            return web.json_response({"is_open": self.is_open})

        async def set_clock(request: web.Request) -> web.Response:
            try:
                body = json.loads(await request.text() or "{}")
                self.set_clock(bool(body["is_open"]))
            except (KeyError, ValueError, TypeError) as exc:
                return web.json_response({"error": f'expected {{"is_open": true|false}}: {exc}'}, status=400)
            return web.json_response({"is_open": self.is_open})

        app.router.add_get("/_emu/alpaca/clock", get_clock)
        app.router.add_post("/_emu/alpaca/clock", set_clock)
