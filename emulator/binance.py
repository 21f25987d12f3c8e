"""Binance spot (``/api/v3``) and USD-M futures (``/fapi``) behaviour.

:class:`BinanceVenue` validates requests the way Binance does (filters,
precision, mandatory parameters, duplicate client ids, reduce-only, margin) and
answers with Binance's error codes and messages.  Its endpoint handlers are
transport-neutral: ``server.py`` mounts them as REST routes and
``binance_ws.py`` calls the same handlers for WebSocket API methods.

Futures conditional orders (STOP/STOP_MARKET/TAKE_PROFIT/TAKE_PROFIT_MARKET/
TRAILING_STOP_MARKET) are only accepted through the Algo Order API
(``/fapi/v1/algoOrder``, WebSocket ``algoOrder.place``), where ccxt 4.5 sends
them since Binance moved conditional orders there; the classic
``/fapi/v1/order`` answers -4120 for them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, NoReturn
from urllib.parse import parse_qsl

from . import binance_render as R
from . import faults as F
from .dispatch import Endpoint, Handler, MarketLookup, OrderLogParams, Reply, RequestContext, VenueError
from .faults import Fault
from .markets import BINANCE, LINEAR, SPOT, MarketSpec, dec, decimals_of, is_multiple, plain
from .state import (
    BUY,
    DUPLICATE_CLIENT_ID,
    INSUFFICIENT_BALANCE,
    INSUFFICIENT_MARGIN,
    POST_ONLY_WOULD_TAKE,
    REDUCE_ONLY_REJECTED,
    SELL,
    ExchangeState,
    Fill,
    Order,
    Rejection,
    now_ms,
)

NUMBER = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
NUMBER_RANGE = r"'^([0-9]{1,20})(\.[0-9]{1,20})?$'"
CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
ALPHABET = string.ascii_letters + string.digits
MAX_RECV_WINDOW = 60000

SPOT_STOP_TYPES = {"STOP_LOSS": "market", "STOP_LOSS_LIMIT": "limit"}
SPOT_TAKE_PROFIT_TYPES = {"TAKE_PROFIT": "market", "TAKE_PROFIT_LIMIT": "limit"}
FUTURES_CONDITIONAL = {
    "STOP": "limit",
    "STOP_MARKET": "market",
    "TAKE_PROFIT": "limit",
    "TAKE_PROFIT_MARKET": "market",
    "TRAILING_STOP_MARKET": "market",
}

SPOT_REJECTIONS = {
    INSUFFICIENT_BALANCE: (-2010, "Account has insufficient balance for requested action."),
    DUPLICATE_CLIENT_ID: (-2010, "Duplicate order sent."),
    POST_ONLY_WOULD_TAKE: (-2010, "Order would immediately match and take."),
}
FUTURES_REJECTIONS = {
    INSUFFICIENT_MARGIN: (-2019, "Margin is insufficient."),
    INSUFFICIENT_BALANCE: (-2019, "Margin is insufficient."),
    REDUCE_ONLY_REJECTED: (-2022, "ReduceOnly Order is rejected."),
    DUPLICATE_CLIENT_ID: (-4116, "ClientOrderId is duplicated."),
    POST_ONLY_WOULD_TAKE: (
        -5022,
        "Due to the order could not be executed as maker, the Post Only order will be "
        "rejected. The order will not be recorded in the order history",
    ),
}


def error(code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None) -> VenueError:
    return VenueError(Reply(status, {"code": code, "msg": msg}, headers or {}), code, msg)


def ok(body: Any) -> Reply:
    return Reply(200, body)


def new_client_id() -> str:
    """Id Binance generates when the client sends none (22 random alphanumerics)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(22))


GATEWAY_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def gateway_error(status: int) -> Reply:
    """What a failing edge/gateway answers: an HTML page, not an API error object."""
    reason = GATEWAY_REASONS.get(status, "Error")
    return Reply(
        status,
        f"<html><head><title>{status} {reason}</title></head>"
        f"<body><center><h1>{status} {reason}</h1></center></body></html>",
    )


def parse_form(raw_query: str, raw_body: str) -> dict[str, str]:
    """Query string and form body merged (body wins), as Binance reads them."""
    params = dict(parse_qsl(raw_query, keep_blank_values=True))
    params.update(parse_qsl(raw_body, keep_blank_values=True))
    return params


def strip_signature(raw: str) -> str:
    return "&".join(part for part in raw.split("&") if part and not part.startswith("signature="))


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class BinanceVenue:
    """Binance semantics on top of :class:`ExchangeState`."""

    venue = BINANCE
    prefix = ""
    key_header = "X-MBX-APIKEY"
    order_log_params: OrderLogParams = {
        "symbol": "symbol",
        "side": "side",
        "type": "type",
        "quantity": ("quantity", "quoteOrderQty"),
        "price": "price",
        "client_order_id": ("newClientOrderId", "clientAlgoId"),
    }

    def __init__(self, state: ExchangeState) -> None:
        self.state = state
        self._market = MarketLookup(
            state,
            BINANCE,
            missing=lambda: error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
            unknown=lambda: error(-1121, "Invalid symbol."),
        )

    # ================================================================ auth
    def authenticate_rest(self, ctx: RequestContext, security: str) -> None:
        key = ctx.headers.get(self.key_header)
        if not key:
            raise error(-2014, "API-key format invalid.", 401)
        account = self.state.accounts.get(key)
        if account is None:
            raise error(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        ctx.account = account
        if security != "signed":
            return
        self._check_timestamp(ctx.params)
        signature = str(ctx.params.get("signature") or "")
        if not signature:
            raise error(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        payload = strip_signature(ctx.raw_query) + strip_signature(ctx.raw_body)
        if not hmac.compare_digest(sign(account.secret, payload), signature.lower()):
            raise error(-1022, "Signature for this request is not valid.")

    def authenticate_ws(self, ctx: RequestContext) -> None:
        """WebSocket API: HMAC over ``k=v`` pairs of all params but ``signature``, sorted by key."""
        params = ctx.params
        key = params.get("apiKey")
        if not key:
            raise error(-1102, "Mandatory parameter 'apiKey' was not sent, was empty/null, or malformed.")
        account = self.state.accounts.get(key)
        if account is None:
            raise error(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        ctx.account = account
        self._check_timestamp(params)
        signature = str(params.get("signature") or "")
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
        if not signature or not hmac.compare_digest(sign(account.secret, payload), signature.lower()):
            raise error(-1022, "Signature for this request is not valid.")

    @staticmethod
    def _check_timestamp(params: dict[str, Any]) -> None:
        raw = params.get("timestamp")
        if raw in (None, ""):
            raise error(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        try:
            stamp = int(str(raw))
            recv_window = int(str(params.get("recvWindow") or 5000))
        except ValueError:
            raise error(
                -1100, "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'."
            ) from None
        if recv_window > MAX_RECV_WINDOW:
            raise error(-1131, "recvWindow must be less than 60000")
        server = now_ms()
        if stamp >= server + 1000:
            raise error(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if server - stamp > recv_window:
            raise error(-1021, "Timestamp for this request is outside of the recvWindow.")

    # ========================================================= fault shapes
    def fault_reply(self, fault: Fault, ctx: RequestContext) -> Reply:
        if fault.kind == F.RATE_LIMIT:
            status = fault.status or 429
            headers = {"Retry-After": str(fault.retry_after)}
            if status == 418:
                until = now_ms() + fault.retry_after * 1000
                return Reply(
                    418,
                    {
                        "code": -1003,
                        "msg": f"Way too much request weight used; IP banned until "
                        f"{until}. Please use WebSocket Streams for live updates "
                        f"to avoid bans.",
                    },
                    headers,
                )
            return Reply(
                429,
                {
                    "code": -1003,
                    "msg": "Too much request weight used; current limit is 6000 request "
                    "weight per 1 MINUTE. Please use WebSocket Streams for live "
                    "updates to avoid polling the API.",
                },
                headers,
            )
        if fault.kind == F.KEY_ERROR:
            return Reply(401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
        return gateway_error(fault.status or 503)

    def down_reply(self, fault: Fault, ctx: RequestContext) -> Reply:
        return gateway_error(503)

    # ===================================================== request shape
    @staticmethod
    def parse_params(raw_query: str, raw_body: str, content_type: str) -> dict[str, Any]:
        return parse_form(raw_query, raw_body)

    @staticmethod
    def market_type_of(endpoint: Endpoint, params: dict[str, Any]) -> str:
        if endpoint.market_type is None:  # every Binance route names its market (spot or linear)
            raise ValueError(f"binance route {endpoint.path} has no market type")
        return endpoint.market_type

    # ===================================================== param helpers
    @staticmethod
    def _required(params: dict[str, Any], name: str, label: str | None = None) -> str:
        value = params.get(name)
        if value in (None, ""):
            BinanceVenue._missing(label or name)
        return str(value)

    @staticmethod
    def _missing(name: str) -> NoReturn:
        raise error(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")

    @staticmethod
    def _number(params: dict[str, Any], name: str) -> Decimal | None:
        value = params.get(name)
        if value in (None, ""):
            return None
        text = str(value)
        if not NUMBER.match(text):
            raise error(-1100, f"Illegal characters found in parameter '{name}'; legal range is {NUMBER_RANGE}.")
        return dec(text)

    @staticmethod
    def _id(params: dict[str, Any], name: str) -> str | None:
        value = params.get(name)
        if value in (None, ""):
            return None
        if not str(value).isdigit():
            raise error(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
        return str(int(str(value)))

    @staticmethod
    def _flag(params: dict[str, Any], name: str) -> bool:
        value = str(params.get(name, "false")).lower()
        if value not in ("true", "false"):
            raise error(-1100, f"Illegal characters found in parameter '{name}'; legal range is 'true, false'.")
        return value == "true"

    @staticmethod
    def _side(params: dict[str, Any]) -> str:
        side = BinanceVenue._required(params, "side")
        if side not in (BUY, SELL):
            raise error(-1117, "Invalid side.")
        return side

    @staticmethod
    def _client_id(params: dict[str, Any], name: str, code: int) -> str:
        value = params.get(name)
        if value in (None, ""):
            return new_client_id()
        if not CLIENT_ID.match(str(value)):
            if code == -1100:
                raise error(
                    -1100,
                    f"Illegal characters found in parameter '{name}'; legal range is '^[\\.A-Z\\:/a-z0-9_-]{{1,36}}$'.",
                )
            raise error(code, "Client order id is not valid.")
        return str(value)

    def _submit(self, ctx: RequestContext, order: Order, rejections: dict[str, tuple[int, str]]) -> Order:
        try:
            self.state.submit(order)
        except Rejection as rejection:
            code, msg = rejections.get(rejection.reason, (-2010, rejection.reason))
            raise error(code, msg) from None
        ctx.log_booked(order, order.status)
        return order

    def _trigger_direction(
        self, market: MarketSpec, side: str, is_stop: bool, trigger: Decimal, refusal: tuple[int, str]
    ) -> str:
        """Which way the price must move to reach ``trigger``: up for a buy stop and a sell
        take-profit, down for the others. A trigger the price has passed is refused with ``refusal``."""
        rising = (side == BUY) == is_stop
        now = self.state.price(market)
        if (rising and trigger <= now) or (not rising and trigger >= now):
            raise error(*refusal)
        return "rise" if rising else "fall"

    def _order_ids(self, params: dict[str, Any], id_name: str, client_name: str) -> tuple[str | None, str | None]:
        """The order a request names by its id or its client id (one at least)."""
        order_id, client_id = self._id(params, id_name), params.get(client_name) or None
        if order_id is None and client_id is None:
            raise error(-1102, f"Param '{client_name}' or '{id_name}' must be sent, but both were empty/null!")
        return order_id, client_id

    def _trades(
        self, ctx: RequestContext, market_type: str, render: Callable[[Order, Fill, MarketSpec], dict]
    ) -> Reply:
        """``myTrades`` / ``userTrades``: the account's fills on one symbol (of one order), oldest first."""
        market = self._market(market_type, ctx.params)
        orders = self.state.orders_of(market.book, ctx.authenticated().key, market.symbol)
        order_id = ctx.params.get("orderId")
        trades = [
            render(o, f, market)
            for o in orders
            for f in o.fills
            if order_id in (None, "") or o.order_id == str(order_id)
        ]
        limit = min(int(str(ctx.params.get("limit") or 500)), 1000)
        return ok(sorted(trades, key=lambda t: t["id"])[-limit:])

    # ================================================================ spot
    async def spot_new_order(self, ctx: RequestContext) -> Reply:
        p = ctx.params
        market = self._market(SPOT, p)
        side = self._side(p)
        order_type = self._required(p, "type")
        if order_type not in R.SPOT_ORDER_TYPES:
            raise error(-1116, "Invalid orderType.")
        quantity, quote_qty = self._number(p, "quantity"), self._number(p, "quoteOrderQty")
        price, stop = self._number(p, "price"), self._number(p, "stopPrice")
        time_in_force = p.get("timeInForce")
        needs_tif = order_type in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
        if needs_tif:
            self._required(p, "timeInForce")
            if time_in_force not in ("GTC", "IOC", "FOK"):
                raise error(-1115, "Invalid timeInForce.")
        elif time_in_force not in (None, ""):
            raise error(-1106, "Parameter 'timeInForce' sent when not required.")
        if order_type in ("MARKET", "STOP_LOSS", "TAKE_PROFIT") and price is not None:
            raise error(-1106, "Parameter 'price' sent when not required.")
        if order_type == "MARKET":
            if quantity is None and quote_qty is None:
                raise error(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
            if quantity is not None and quote_qty is not None:
                raise error(-1106, "Parameter 'quoteOrderQty' sent when not required.")
        else:
            quantity = dec(self._required(p, "quantity")) if quantity is None else quantity
        if order_type not in ("MARKET", "STOP_LOSS", "TAKE_PROFIT") and price is None:
            self._required(p, "price")
        if order_type in SPOT_STOP_TYPES or order_type in SPOT_TAKE_PROFIT_TYPES:
            if stop is None:
                self._required(p, "stopPrice")
        self._spot_filters(market, order_type, quantity, quote_qty, price, stop)
        client_id = self._client_id(p, "newClientOrderId", -1100)
        account = ctx.authenticated()
        if self.state.client_id_taken(market.book, account.key, market.symbol, client_id, open_only=True):
            raise error(*SPOT_REJECTIONS[DUPLICATE_CLIENT_ID])
        execution, trigger_direction = "limit" if price is not None else "market", None
        if order_type in SPOT_STOP_TYPES or order_type in SPOT_TAKE_PROFIT_TYPES:
            is_stop = order_type in SPOT_STOP_TYPES
            execution = (SPOT_STOP_TYPES if is_stop else SPOT_TAKE_PROFIT_TYPES)[order_type]
            if stop is None:  # refused above already; this narrows the type
                self._missing("stopPrice")
            trigger_direction = self._trigger_direction(
                market, side, is_stop, stop, (-2010, "Stop price would trigger immediately.")
            )
        order = ctx.new_order(
            market,
            side=side,
            venue_type=order_type,
            execution=execution,
            quantity=quantity,
            price=price if execution == "limit" else None,
            quote_quantity=quote_qty,
            client_order_id=client_id,
            time_in_force=time_in_force if needs_tif else ("GTC" if order_type == "LIMIT_MAKER" else None),
            post_only=order_type == "LIMIT_MAKER",
            trigger_price=stop,
            trigger_direction=trigger_direction,
        )
        if order.time_in_force is None:
            order.time_in_force = "GTC"
        self._submit(ctx, order, SPOT_REJECTIONS)
        resp_type = str(p.get("newOrderRespType") or ("FULL" if order_type in ("MARKET", "LIMIT") else "ACK"))
        return ok(R.spot_order_result(order, resp_type))

    def _spot_filters(
        self,
        m: MarketSpec,
        order_type: str,
        quantity: Decimal | None,
        quote_qty: Decimal | None,
        price: Decimal | None,
        stop: Decimal | None,
    ) -> None:
        if quantity is not None and decimals_of(quantity) > m.base_precision:
            raise error(-1111, "Parameter 'quantity' has too much precision.")
        for name, value in (("price", price), ("stopPrice", stop), ("quoteOrderQty", quote_qty)):
            if value is not None and decimals_of(value) > m.quote_precision:
                raise error(-1111, f"Parameter '{name}' has too much precision.")
        for value in (price, stop):
            if value is not None and (
                value < m.min_price or value > m.max_price or not is_multiple(value - m.min_price, m.tick_size)
            ):
                raise error(-1013, "Filter failure: PRICE_FILTER")
        if quantity is not None:
            if quantity < m.min_qty or quantity > m.max_qty or not is_multiple(quantity - m.min_qty, m.step_size):
                raise error(-1013, "Filter failure: LOT_SIZE")
            if order_type in ("MARKET", "STOP_LOSS", "TAKE_PROFIT") and quantity > m.market_max_qty:
                raise error(-1013, "Filter failure: MARKET_LOT_SIZE")
        reference = price if price is not None else self.state.price(m)
        notional = quote_qty if quote_qty is not None else (quantity or Decimal(0)) * reference
        if notional < m.min_notional or (price is not None and notional > m.max_notional):
            raise error(-1013, "Filter failure: NOTIONAL")

    def _spot_order_by_ids(self, ctx: RequestContext, market: MarketSpec) -> Order | None:
        order_id, client_id = self._order_ids(ctx.params, "orderId", "origClientOrderId")
        order = self.state.find_order(
            market.book, ctx.authenticated().key, market.symbol, order_id=order_id, client_order_id=client_id
        )
        if order is not None and order_id is not None and client_id is not None:
            if order.client_order_id != client_id:
                return None
        return order

    async def spot_query_order(self, ctx: RequestContext) -> Reply:
        market = self._market(SPOT, ctx.params)
        order = self._spot_order_by_ids(ctx, market)
        if order is None:
            raise error(-2013, "Order does not exist.")
        return ok(R.spot_order_query(order))

    async def spot_cancel_order(self, ctx: RequestContext) -> Reply:
        market = self._market(SPOT, ctx.params)
        order = self._spot_order_by_ids(ctx, market)
        if order is None or not order.is_open:
            raise error(-2011, "Unknown order sent.")
        self.state.cancel(order)
        cancel_id = self._client_id(ctx.params, "newClientOrderId", -1100)
        return ok(R.spot_cancel_result(order, cancel_id))

    async def spot_open_orders(self, ctx: RequestContext) -> Reply:
        market = self._market(SPOT, ctx.params, required=False)
        orders = self.state.orders_of(
            "binance.spot", ctx.authenticated().key, market.symbol if market else None, open_only=True
        )
        return ok([R.spot_order_query(o) for o in orders])

    async def spot_cancel_all(self, ctx: RequestContext) -> Reply:
        market = self._market(SPOT, ctx.params)
        orders = self.state.orders_of(market.book, ctx.authenticated().key, market.symbol, open_only=True)
        if not orders:
            raise error(-2011, "Unknown order sent.")
        for order in orders:
            self.state.cancel(order)
        return ok([R.spot_cancel_result(o, new_client_id()) for o in orders])

    def _history(self, ctx: RequestContext, orders: list[Order], id_param: str = "orderId") -> list[Order]:
        p = ctx.params
        if p.get(id_param) not in (None, ""):
            orders = [o for o in orders if int(o.order_id) >= int(str(p[id_param]))]
        if p.get("startTime") not in (None, ""):
            orders = [o for o in orders if o.created_ms >= int(str(p["startTime"]))]
        if p.get("endTime") not in (None, ""):
            orders = [o for o in orders if o.created_ms <= int(str(p["endTime"]))]
        limit = min(int(str(p.get("limit") or 500)), 1000)
        return orders[:limit] if p.get(id_param) not in (None, "") else orders[-limit:]

    async def spot_all_orders(self, ctx: RequestContext) -> Reply:
        market = self._market(SPOT, ctx.params)
        orders = self.state.orders_of(market.book, ctx.authenticated().key, market.symbol)
        return ok([R.spot_order_query(o) for o in self._history(ctx, orders)])

    async def spot_my_trades(self, ctx: RequestContext) -> Reply:
        return self._trades(ctx, SPOT, lambda order, fill, _market: R.spot_trade(order, fill))

    async def spot_account(self, ctx: RequestContext) -> Reply:
        return ok(R.spot_account(ctx.authenticated()))

    # ============================================================= futures
    def _futures_checks(
        self, m: MarketSpec, quantity: Decimal | None, prices: list[Decimal | None], is_market: bool
    ) -> None:
        if quantity is not None:
            if decimals_of(quantity) > m.quantity_precision:
                raise error(-1111, "Precision is over the maximum defined for this asset.")
            if quantity <= 0:
                raise error(-4003, "Quantity less than or equal to zero.")
            if quantity < m.min_qty:
                raise error(-4004, "Quantity less than min quantity.")
            if quantity > (m.market_max_qty if is_market else m.max_qty):
                raise error(-4005, "Quantity greater than max quantity.")
            if not is_multiple(quantity - m.min_qty, m.step_size):
                raise error(-4023, "Qty not increased by step size.")
        for price in prices:
            if price is None:
                continue
            if decimals_of(price) > m.price_precision:
                raise error(-1111, "Precision is over the maximum defined for this asset.")
            if price < m.min_price:
                raise error(-4013, "Price less than min price.")
            if price > m.max_price:
                raise error(-4016, f"Limit price can't be higher than {plain(m.max_price)}.")
            if not is_multiple(price - m.min_price, m.tick_size):
                raise error(-4014, "Price not increased by tick size.")

    def _position_side(self, params: dict[str, Any]) -> str:
        side = str(params.get("positionSide") or "BOTH")
        if side != "BOTH":
            raise error(-4061, "Order's position side does not match user's setting.")
        return side

    async def futures_new_order(self, ctx: RequestContext) -> Reply:
        p = ctx.params
        market = self._market(LINEAR, p)
        side = self._side(p)
        order_type = self._required(p, "type")
        if order_type in FUTURES_CONDITIONAL:
            raise error(
                -4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
            )
        if order_type not in ("LIMIT", "MARKET"):
            raise error(-1116, "Invalid orderType.")
        position_side = self._position_side(p)
        reduce_only = self._flag(p, "reduceOnly")
        time_in_force = p.get("timeInForce")
        if order_type == "LIMIT":
            self._required(p, "timeInForce", "timeinforce")
            if time_in_force not in ("GTC", "IOC", "FOK", "GTX", "GTD"):
                raise error(-1115, "Invalid timeInForce.")
        quantity = self._number(p, "quantity")
        if quantity is None:
            self._missing("quantity")
        price = self._number(p, "price")
        if order_type == "LIMIT" and price is None:
            self._missing("price")
        self._futures_checks(market, quantity, [price], order_type == "MARKET")
        reference = price if order_type == "LIMIT" and price is not None else self.state.price(market)
        if not reduce_only and quantity * reference < market.min_notional:
            raise error(
                -4164,
                f"Order's notional must be no smaller than {plain(market.min_notional)} "
                f"(unless you choose reduce only).",
            )
        client_id = self._client_id(p, "newClientOrderId", -4015)
        account = ctx.authenticated()
        if self.state.client_id_taken(market.book, account.key, market.symbol, client_id, open_only=True):
            raise error(*FUTURES_REJECTIONS[DUPLICATE_CLIENT_ID])
        order = ctx.new_order(
            market,
            side=side,
            venue_type=order_type,
            execution=order_type.lower(),
            quantity=quantity,
            price=price if order_type == "LIMIT" else None,
            client_order_id=client_id,
            time_in_force=time_in_force if order_type == "LIMIT" else "GTC",
            reduce_only=reduce_only,
            post_only=time_in_force == "GTX",
            extra={"position_side": position_side},
        )
        self._submit(ctx, order, FUTURES_REJECTIONS)
        ack = str(p.get("newOrderRespType") or "ACK") == "ACK"
        return ok(R.futures_order(order, market, with_time=False, ack=ack))

    async def futures_new_algo_order(self, ctx: RequestContext) -> Reply:
        p = ctx.params
        market = self._market(LINEAR, p)
        if str(p.get("algoType") or "") != "CONDITIONAL":
            raise error(-1102, "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.")
        side = self._side(p)
        order_type = self._required(p, "type")
        if order_type not in FUTURES_CONDITIONAL:
            raise error(-1116, "Invalid orderType.")
        position_side = self._position_side(p)
        reduce_only = self._flag(p, "reduceOnly")
        close_position = self._flag(p, "closePosition")
        quantity = self._number(p, "quantity")
        if close_position and quantity is not None:
            raise error(-4136, f"Target strategy invalid for orderType {order_type},closePosition true")
        if not close_position and quantity is None:
            self._required(p, "quantity")
        trailing = order_type == "TRAILING_STOP_MARKET"
        trigger = self._number(p, "triggerPrice")
        if trigger is None and not trailing:
            self._required(p, "triggerPrice")
        price = self._number(p, "price")
        execution = FUTURES_CONDITIONAL[order_type]
        if execution == "limit" and price is None:
            self._required(p, "price")
        self._futures_checks(market, quantity, [price, trigger], execution == "market")
        direction = None
        if trigger is not None:
            is_stop = order_type.startswith("STOP")
            direction = self._trigger_direction(
                market, side, is_stop, trigger, (-2021, "Order would immediately trigger.")
            )
        client_id = self._client_id(p, "clientAlgoId", -4015)
        account = ctx.authenticated()
        if any(
            o.client_order_id == client_id and o.is_open and o.extra.get("algo")
            for o in self.state.orders_of(market.book, account.key, market.symbol)
        ):
            raise error(*FUTURES_REJECTIONS[DUPLICATE_CLIENT_ID])
        order = ctx.new_order(
            market,
            side=side,
            venue_type=order_type,
            execution=execution,
            quantity=quantity,
            price=price if execution == "limit" else None,
            client_order_id=client_id,
            time_in_force=str(p.get("timeInForce") or "GTC"),
            reduce_only=reduce_only or close_position,
            trigger_price=trigger if trigger is not None else self.state.price(market),
            trigger_direction=direction,
            trigger_mode="spawn_child",
            order_id=self.state.new_order_id("binance.linear.algo"),
            extra={
                "algo": True,
                "position_side": position_side,
                "close_position": close_position,
                "working_type": str(p.get("workingType") or "CONTRACT_PRICE"),
            },
        )
        if trailing:  # trailing stops are accepted and rest, but never fire in the emulator
            order.trigger_direction = "never"
        self._submit(ctx, order, FUTURES_REJECTIONS)
        return ok(R.algo_order(order, market))

    def _futures_order_by_ids(self, ctx: RequestContext, market: MarketSpec) -> Order | None:
        order_id, client_id = self._order_ids(ctx.params, "orderId", "origClientOrderId")
        return self.state.find_order(
            market.book,
            ctx.authenticated().key,
            market.symbol,
            order_id=order_id,
            client_order_id=client_id,
            algo=False,
        )

    async def futures_query_order(self, ctx: RequestContext) -> Reply:
        market = self._market(LINEAR, ctx.params)
        order = self._futures_order_by_ids(ctx, market)
        if order is None:
            raise error(-2013, "Order does not exist.")
        return ok(R.futures_order(order, market))

    async def futures_query_open_order(self, ctx: RequestContext) -> Reply:
        market = self._market(LINEAR, ctx.params)
        order = self._futures_order_by_ids(ctx, market)
        if order is None or not order.is_open:
            raise error(-2013, "Order does not exist.")
        return ok(R.futures_order(order, market))

    async def futures_cancel_order(self, ctx: RequestContext) -> Reply:
        market = self._market(LINEAR, ctx.params)
        order = self._futures_order_by_ids(ctx, market)
        if order is None or not order.is_open:
            raise error(-2011, "Unknown order sent.")
        self.state.cancel(order)
        return ok(R.futures_order(order, market, with_time=False))

    def _futures_orders(self, ctx: RequestContext, algo: bool, open_only: bool) -> list[tuple[Order, MarketSpec]]:
        market = self._market(LINEAR, ctx.params, required=False)
        orders = self.state.orders_of(
            "binance.linear", ctx.authenticated().key, market.symbol if market else None, open_only=open_only
        )
        orders = [o for o in orders if bool(o.extra.get("algo")) == algo]
        if not open_only:
            orders = self._history(ctx, orders, "algoId" if algo else "orderId")
        return [(o, self.state.markets[(o.book, o.symbol)]) for o in orders]

    async def futures_open_orders(self, ctx: RequestContext) -> Reply:
        return ok([R.futures_order(o, m) for o, m in self._futures_orders(ctx, algo=False, open_only=True)])

    async def futures_all_orders(self, ctx: RequestContext) -> Reply:
        return ok([R.futures_order(o, m) for o, m in self._futures_orders(ctx, algo=False, open_only=False)])

    def _futures_cancel_all(self, ctx: RequestContext, algo: bool) -> Reply:
        """Cancel the account's open orders on one symbol: the algo orders, or the others."""
        market = self._market(LINEAR, ctx.params)
        for order in self.state.orders_of(market.book, ctx.authenticated().key, market.symbol, open_only=True):
            if bool(order.extra.get("algo")) == algo:
                self.state.cancel(order)
        return ok({"code": 200, "msg": "The operation of cancel all open order is done."})

    async def futures_cancel_all(self, ctx: RequestContext) -> Reply:
        return self._futures_cancel_all(ctx, algo=False)

    def _algo_by_ids(self, ctx: RequestContext) -> Order | None:
        algo_id, client_id = self._order_ids(ctx.params, "algoId", "clientAlgoId")
        market = self._market(LINEAR, ctx.params, required=False)
        order = self.state.find_order(
            "binance.linear",
            ctx.authenticated().key,
            market.symbol if market else None,
            order_id=algo_id,
            client_order_id=client_id,
            algo=True,
        )
        return order

    async def futures_query_algo(self, ctx: RequestContext) -> Reply:
        order = self._algo_by_ids(ctx)
        if order is None:
            raise error(-2013, "Order does not exist.")
        return ok(R.algo_order(order, self.state.markets[(order.book, order.symbol)]))

    async def futures_cancel_algo(self, ctx: RequestContext) -> Reply:
        order = self._algo_by_ids(ctx)
        if order is None or not order.is_open:
            raise error(-2011, "Unknown order sent.")
        self.state.cancel(order)
        return ok(
            {"algoId": int(order.order_id), "clientAlgoId": order.client_order_id, "code": "200", "msg": "success"}
        )

    async def futures_open_algos(self, ctx: RequestContext) -> Reply:
        return ok([R.algo_order(o, m) for o, m in self._futures_orders(ctx, algo=True, open_only=True)])

    async def futures_all_algos(self, ctx: RequestContext) -> Reply:
        return ok([R.algo_order(o, m) for o, m in self._futures_orders(ctx, algo=True, open_only=False)])

    async def futures_cancel_all_algos(self, ctx: RequestContext) -> Reply:
        return self._futures_cancel_all(ctx, algo=True)

    async def futures_user_trades(self, ctx: RequestContext) -> Reply:
        return self._trades(ctx, LINEAR, R.futures_trade)

    async def futures_leverage(self, ctx: RequestContext) -> Reply:
        market = self._market(LINEAR, ctx.params)
        raw = self._required(ctx.params, "leverage")
        try:
            leverage = int(raw)
        except ValueError:
            raise error(
                -1100, "Illegal characters found in parameter 'leverage'; legal range is '^[0-9]{1,20}$'."
            ) from None
        if leverage < 1 or leverage > market.max_leverage:
            raise error(-4028, f"Leverage {leverage} is not valid")
        ctx.authenticated().leverage[(market.book, market.symbol)] = leverage
        return ok({"leverage": leverage, "maxNotionalValue": "1000000", "symbol": market.symbol})

    async def futures_margin_type(self, ctx: RequestContext) -> Reply:
        market = self._market(LINEAR, ctx.params)
        margin_type = self._required(ctx.params, "marginType")
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise error(-4044, "The status of margin type is invalid.")
        account = ctx.authenticated()
        key = (market.book, market.symbol)
        if account.margin_type.get(key, "CROSSED") == margin_type:
            raise error(-4046, "No need to change margin type.")
        if self.state.orders_of(market.book, account.key, market.symbol, open_only=True):
            raise error(-4047, "Margin type cannot be changed if there exists open orders.")
        if account.positions.get(key) is not None and account.positions[key].amount != 0:
            raise error(-4048, "Margin type cannot be changed if there exists position.")
        account.margin_type[key] = margin_type
        return ok({"code": 200, "msg": "success"})

    async def futures_position_mode(self, ctx: RequestContext) -> Reply:
        return ok({"dualSidePosition": False})

    async def futures_set_position_mode(self, ctx: RequestContext) -> Reply:
        if self._flag(ctx.params, "dualSidePosition"):
            raise error(-4068, "Position side cannot be changed if there exists position.")
        raise error(-4059, "No need to change position side.")

    def _symbols(self, ctx: RequestContext) -> list[str]:
        market = self._market(LINEAR, ctx.params, required=False)
        return [market.symbol] if market else []

    async def futures_position_risk_v2(self, ctx: RequestContext) -> Reply:
        return ok(R.FuturesAccountView(self.state, ctx.authenticated()).position_risk_v2(self._symbols(ctx)))

    async def futures_position_risk_v3(self, ctx: RequestContext) -> Reply:
        return ok(R.FuturesAccountView(self.state, ctx.authenticated()).position_risk_v3(self._symbols(ctx)))

    async def futures_balance(self, ctx: RequestContext) -> Reply:
        return ok(R.FuturesAccountView(self.state, ctx.authenticated()).balance_entries())

    async def futures_account_v2(self, ctx: RequestContext) -> Reply:
        return ok(R.FuturesAccountView(self.state, ctx.authenticated()).account_v3(v2=True))

    async def futures_account_v3(self, ctx: RequestContext) -> Reply:
        return ok(R.FuturesAccountView(self.state, ctx.authenticated()).account_v3())

    async def futures_leverage_bracket(self, ctx: RequestContext) -> Reply:
        markets = self.state.markets_of("binance.linear")
        symbols = self._symbols(ctx)
        return ok(R.leverage_brackets([m for m in markets if not symbols or m.symbol in symbols]))

    async def futures_symbol_config(self, ctx: RequestContext) -> Reply:
        account = ctx.authenticated()
        symbols = self._symbols(ctx)
        return ok(
            [
                {
                    "symbol": m.symbol,
                    "marginType": account.margin_type.get((m.book, m.symbol), "CROSSED"),
                    "isAutoAddMargin": "false",
                    "leverage": self.state.leverage(account, m),
                    "maxNotionalValue": "1000000",
                }
                for m in self.state.markets_of("binance.linear")
                if not symbols or m.symbol in symbols
            ]
        )

    # ============================================================= public
    def _public_markets(self, market_type: str, ctx: RequestContext) -> tuple[list[MarketSpec], bool]:
        market = self._market(market_type, ctx.params, required=False)
        if market is not None:
            return [market], True
        symbols = ctx.params.get("symbols")
        if symbols:
            wanted = [s.strip(' "') for s in str(symbols).strip("[]").split(",")]
            found = [m for m in self.state.markets_of(f"binance.{market_type}") if m.symbol in wanted]
            if len(found) != len(wanted):
                raise error(-1121, "Invalid symbol.")
            return found, False
        return self.state.markets_of(f"binance.{market_type}"), False

    def public_handlers(self, market_type: str) -> dict[str, Callable[[RequestContext], Awaitable[Reply]]]:
        async def time_(ctx: RequestContext) -> Reply:
            return ok({"serverTime": now_ms()})

        async def ping(ctx: RequestContext) -> Reply:
            return ok({})

        async def info(ctx: RequestContext) -> Reply:
            markets, _ = self._public_markets(market_type, ctx)
            return ok(R.exchange_info(self.state, market_type, [m.symbol for m in markets]))

        def per_symbol(render: Callable[[MarketSpec, Decimal], dict]) -> Callable:
            async def handler(ctx: RequestContext) -> Reply:
                markets, single = self._public_markets(market_type, ctx)
                rows = [render(m, self.state.price(m)) for m in markets]
                return ok(rows[0] if single else rows)

            return handler

        def price_row(m: MarketSpec, price: Decimal) -> dict:
            places = 8 if market_type == SPOT else m.price_precision
            row: dict[str, Any] = {"symbol": m.symbol, "price": R.fixed(price, places)}
            if market_type == LINEAR:
                row["time"] = now_ms()
            return row

        def premium(m: MarketSpec, price: Decimal) -> dict:
            p = R.fixed(price, 8)
            return {
                "symbol": m.symbol,
                "markPrice": p,
                "indexPrice": p,
                "estimatedSettlePrice": p,
                "lastFundingRate": "0.00010000",
                "interestRate": "0.00010000",
                "nextFundingTime": (now_ms() // 28800000 + 1) * 28800000,
                "time": now_ms(),
            }

        async def order_book(ctx: RequestContext) -> Reply:
            market = self._market(market_type, ctx.params)
            return ok(R.depth(market, self.state.price(market), int(str(ctx.params.get("limit") or 20))))

        async def avg_price(ctx: RequestContext) -> Reply:
            market = self._market(market_type, ctx.params)
            return ok({"mins": 5, "price": R.fixed(self.state.price(market), 8), "closeTime": now_ms()})

        handlers: dict[str, Handler] = {
            "time": time_,
            "ping": ping,
            "exchangeInfo": info,
            "ticker/price": per_symbol(price_row),
            "ticker/24hr": per_symbol(R.ticker_24hr),
            "ticker/bookTicker": per_symbol(R.book_ticker),
            "depth": order_book,
        }
        if market_type == SPOT:
            handlers["avgPrice"] = avg_price
        else:
            handlers["premiumIndex"] = per_symbol(premium)
        return handlers

    # ============================================================ routing
    async def api_restrictions(self, ctx: RequestContext) -> Reply:
        """The key's permissions (withdrawals, spot and futures trading)."""
        return ok({**ctx.authenticated().api_restrictions, "createTime": now_ms() - 86_400_000})

    def endpoints(self) -> list[Endpoint]:
        E = Endpoint
        routes = [E("GET", f"/api/v3/{name}", h, F.PUBLIC, SPOT) for name, h in self.public_handlers(SPOT).items()]
        linear_public = self.public_handlers(LINEAR)
        routes += [E("GET", f"/fapi/v1/{name}", h, F.PUBLIC, LINEAR) for name, h in linear_public.items()]
        routes.append(E("GET", "/fapi/v2/ticker/price", linear_public["ticker/price"], F.PUBLIC, LINEAR))
        spot = functools.partial(Endpoint, market_type=SPOT, security="signed")
        usdm = functools.partial(Endpoint, market_type=LINEAR, security="signed")
        # ws: the WebSocket API method (binance_ws.py) that the same handler serves.
        routes += [
            spot("POST", "/api/v3/order", self.spot_new_order, F.PLACE, ws="order.place"),
            spot("GET", "/api/v3/order", self.spot_query_order, F.STATUS, ws="order.status"),
            spot("DELETE", "/api/v3/order", self.spot_cancel_order, F.CANCEL, ws="order.cancel"),
            spot("GET", "/api/v3/openOrders", self.spot_open_orders, F.QUERY, ws="openOrders.status"),
            spot("DELETE", "/api/v3/openOrders", self.spot_cancel_all, F.CANCEL, ws="openOrders.cancelAll"),
            spot("GET", "/api/v3/allOrders", self.spot_all_orders, F.QUERY, ws="allOrders"),
            spot("GET", "/api/v3/myTrades", self.spot_my_trades, F.QUERY),
            spot("GET", "/api/v3/account", self.spot_account, F.QUERY, ws="account.status"),
            usdm("POST", "/fapi/v1/order", self.futures_new_order, F.PLACE, ws="order.place"),
            usdm("GET", "/fapi/v1/order", self.futures_query_order, F.STATUS, ws="order.status"),
            usdm("DELETE", "/fapi/v1/order", self.futures_cancel_order, F.CANCEL, ws="order.cancel"),
            usdm("GET", "/fapi/v1/openOrder", self.futures_query_open_order, F.STATUS),
            usdm("GET", "/fapi/v1/openOrders", self.futures_open_orders, F.QUERY),
            usdm("GET", "/fapi/v1/allOrders", self.futures_all_orders, F.QUERY),
            usdm("DELETE", "/fapi/v1/allOpenOrders", self.futures_cancel_all, F.CANCEL),
            usdm("POST", "/fapi/v1/algoOrder", self.futures_new_algo_order, F.PLACE, ws="algoOrder.place"),
            usdm("GET", "/fapi/v1/algoOrder", self.futures_query_algo, F.STATUS),
            usdm("DELETE", "/fapi/v1/algoOrder", self.futures_cancel_algo, F.CANCEL, ws="algoOrder.cancel"),
            usdm("GET", "/fapi/v1/openAlgoOrders", self.futures_open_algos, F.QUERY),
            usdm("GET", "/fapi/v1/allAlgoOrders", self.futures_all_algos, F.QUERY),
            usdm("DELETE", "/fapi/v1/algoOpenOrders", self.futures_cancel_all_algos, F.CANCEL),
            usdm("GET", "/fapi/v1/userTrades", self.futures_user_trades, F.QUERY),
            usdm("POST", "/fapi/v1/leverage", self.futures_leverage, F.QUERY),
            usdm("POST", "/fapi/v1/marginType", self.futures_margin_type, F.QUERY),
            usdm("GET", "/fapi/v1/positionSide/dual", self.futures_position_mode, F.QUERY),
            usdm("POST", "/fapi/v1/positionSide/dual", self.futures_set_position_mode, F.QUERY),
            usdm("GET", "/fapi/v2/positionRisk", self.futures_position_risk_v2, F.QUERY),
            usdm("GET", "/fapi/v3/positionRisk", self.futures_position_risk_v3, F.QUERY, ws="account.position"),
            usdm("GET", "/fapi/v2/balance", self.futures_balance, F.QUERY, ws="account.balance"),
            usdm("GET", "/fapi/v3/balance", self.futures_balance, F.QUERY),
            usdm("GET", "/fapi/v2/account", self.futures_account_v2, F.QUERY),
            usdm("GET", "/fapi/v3/account", self.futures_account_v3, F.QUERY, ws="account.status"),
            usdm("GET", "/fapi/v1/leverageBracket", self.futures_leverage_bracket, F.QUERY),
            usdm("GET", "/fapi/v1/symbolConfig", self.futures_symbol_config, F.QUERY),
            spot("GET", "/sapi/v1/account/apiRestrictions", self.api_restrictions, F.QUERY),
        ]
        return routes
