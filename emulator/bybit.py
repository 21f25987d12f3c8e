"""Bybit v5 subset (unified trading account), mounted under ``/bybit``.

Spot and linear (USDT perpetual) categories share one unified wallet.  Errors
come back as HTTP 200 with ``retCode``/``retMsg`` like the live API.  Private
requests are signed with ``X-BAPI-SIGN = HMAC_SHA256(secret, timestamp + apiKey
+ recvWindow + (query string | JSON body))``.

Order ids are UUIDs; ``orderLinkId`` may never be reused on the same account
and category (retCode 110072), unlike Binance client ids.

A stop-loss / take-profit attached to an order (``stopLoss``/``takeProfit``, as
ccxt sends its unified params) is checked against the side and the last price,
recorded on the order (``stop_loss``/``take_profit`` in ``/_emu/orders``, and
the order's ``stopLoss``/``takeProfit``) and, once the order fills, on the
linear position; it is not triggered.  ``/v5/account/set-margin-mode`` sets the
unified account's margin mode (``ISOLATED_MARGIN``/``REGULAR_MARGIN``), shown by
``/v5/account/info`` and as every linear position's ``margin_type``.
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from . import faults as F
from .dispatch import Endpoint, JsonApiVenue, MarketLookup, OrderLogParams, Reply, RequestContext, VenueError, truthy
from .faults import Fault
from .markets import BYBIT, LINEAR, SPOT, D, MarketSpec, dec, decimals_of, is_multiple, plain
from .state import (
    BUY,
    CANCELED,
    DUPLICATE_CLIENT_ID,
    EXPIRED,
    FILLED,
    INSUFFICIENT_BALANCE,
    INSUFFICIENT_MARGIN,
    NEW,
    REDUCE_ONLY_REJECTED,
    SELL,
    Account,
    ExchangeState,
    Order,
    Rejection,
    now_ms,
)

BYBIT_PREFIX = "/bybit"
DEFAULT_RECV_WINDOW = 5000
HISTORY_LIMIT = 500

REJECTIONS = {
    SPOT: {
        INSUFFICIENT_BALANCE: (170131, "Insufficient balance."),
        DUPLICATE_CLIENT_ID: (110072, "OrderLinkedID is duplicate"),
    },
    LINEAR: {
        INSUFFICIENT_MARGIN: (110007, "ab not enough for new order"),
        INSUFFICIENT_BALANCE: (110007, "ab not enough for new order"),
        REDUCE_ONLY_REJECTED: (110017, "current position is zero, cannot fix reduce-only order qty"),
        DUPLICATE_CLIENT_ID: (110072, "OrderLinkedID is duplicate"),
    },
}
SIDES = {"Buy": BUY, "Sell": SELL}
SIDE_NAMES = {BUY: "Buy", SELL: "Sell"}


def envelope(result: Any, code: int = 0, msg: str = "OK") -> dict[str, Any]:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms()}


def ok(result: Any) -> Reply:
    return Reply(200, envelope(result))


def error(code: int, msg: str, status: int = 200) -> VenueError:
    return VenueError(Reply(status, envelope({}, code, msg)), code, msg)


class BybitVenue(JsonApiVenue):
    """Bybit v5 semantics on top of :class:`ExchangeState`."""

    venue = BYBIT
    prefix = BYBIT_PREFIX
    key_header = "X-BAPI-API-KEY"
    order_log_params: OrderLogParams = {
        "symbol": "symbol",
        "side": "side",
        "type": "orderType",
        "quantity": "qty",
        "price": "price",
        "client_order_id": "orderLinkId",
    }

    def __init__(self, state: ExchangeState) -> None:
        self.state = state
        self._market = MarketLookup(state, BYBIT, missing=self._bad_symbol, unknown=self._bad_symbol)

    @staticmethod
    def market_type_of(endpoint: Endpoint, params: dict[str, Any]) -> str | None:
        category = params.get("category")
        return category if category in (SPOT, LINEAR) else endpoint.market_type

    # ================================================================ auth
    def authenticate_rest(self, ctx: RequestContext, security: str) -> None:
        headers = ctx.headers
        key = headers.get(self.key_header)
        account = self.state.accounts.get(key or "")
        if account is None:
            raise error(10003, "API key is invalid.")
        stamp_raw = headers.get("X-BAPI-TIMESTAMP", "")
        recv_raw = headers.get("X-BAPI-RECV-WINDOW") or str(DEFAULT_RECV_WINDOW)
        server = now_ms()
        stale = error(
            10002,
            f"invalid request, please check your server timestamp or recv_window param. "
            f"req_timestamp[{stamp_raw}],server_timestamp[{server}],recv_window[{recv_raw}]",
        )
        try:
            stamp, recv_window = int(stamp_raw), int(recv_raw)
        except ValueError:
            raise stale from None
        if not (server - recv_window <= stamp < server + 1000):
            raise stale
        payload = ctx.raw_body if ctx.raw_body else ctx.raw_query
        origin = f"{stamp_raw}{key}{recv_raw}"
        signature = (headers.get("X-BAPI-SIGN") or "").lower()
        candidates = {payload, unquote(payload)}
        if not any(hmac.compare_digest(self._sign(account.secret, origin + c), signature) for c in candidates):
            raise error(10004, f"error sign! origin_string[{origin + payload}]")
        ctx.account = account

    @staticmethod
    def _sign(secret: str, payload: str) -> str:
        return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()

    # ========================================================= fault shapes
    def fault_reply(self, fault: Fault, ctx: RequestContext) -> Reply:
        if fault.kind == F.RATE_LIMIT:
            headers = {
                "X-Bapi-Limit-Status": "0",
                "X-Bapi-Limit": "10",
                "X-Bapi-Limit-Reset-Timestamp": str(now_ms() + fault.retry_after * 1000),
                "Retry-After": str(fault.retry_after),
            }
            if fault.status == 403:
                return Reply(403, "access too frequent", headers)
            return Reply(fault.status or 200, envelope({}, 10006, "Too many visits!"), headers)
        if fault.kind == F.KEY_ERROR:
            return Reply(200, envelope({}, 10003, "API key is invalid."))
        return self.gateway_page(fault.status or 503)

    # ============================================================ helpers
    @staticmethod
    def _category(params: dict[str, Any], allowed: tuple[str, ...] = (SPOT, LINEAR)) -> str:
        category = params.get("category")
        if category not in allowed:
            raise error(10001, "Illegal category")
        return str(category)

    @staticmethod
    def _bad_symbol() -> VenueError:
        return error(10001, "params error: symbol invalid")

    @staticmethod
    def _number(params: dict[str, Any], name: str) -> Decimal | None:
        value = params.get(name)
        if value in (None, ""):
            return None
        try:
            number = dec(value)
        except ValueError:
            raise error(10001, f"params error: {name} invalid") from None
        return number

    # ============================================================= orders
    async def create_order(self, ctx: RequestContext) -> Reply:
        p = ctx.params
        category = self._category(p)
        market = self._market(category, p)
        side = SIDES.get(str(p.get("side")))
        if side is None:
            raise error(10001, "params error: side invalid")
        order_type = str(p.get("orderType"))
        if order_type not in ("Market", "Limit"):
            raise error(10001, "params error: orderType invalid")
        qty = self._number(p, "qty")
        if qty is None or qty <= 0:
            raise error(10001, "params error: qty invalid")
        price = self._number(p, "price")
        if order_type == "Limit" and (price is None or price <= 0):
            raise error(10001, "params error: price invalid")
        trigger = self._number(p, "triggerPrice")
        time_in_force = str(p.get("timeInForce") or ("IOC" if order_type == "Market" else "GTC"))
        if time_in_force not in ("GTC", "IOC", "FOK", "PostOnly"):
            raise error(10001, "params error: timeInForce invalid")
        reduce_only = truthy(p.get("reduceOnly"))
        quote_unit = (
            category == SPOT
            and order_type == "Market"
            and (p.get("marketUnit") == "quoteCoin" or (side == BUY and not p.get("marketUnit")))
        )
        if category == SPOT:
            self._spot_checks(market, qty, price if order_type == "Limit" else None, quote_unit)
        else:
            self._linear_checks(
                market, qty, price if order_type == "Limit" else None, order_type == "Market", reduce_only
            )
        direction = None
        if trigger is not None:
            direction = self._trigger_direction(market, p, trigger)
        attached = self._attached_tpsl(market, p, side, price if order_type == "Limit" else None)
        account = ctx.authenticated()
        link_id = str(p.get("orderLinkId") or "")
        if link_id:
            if len(link_id) > 36:
                raise error(10001, "params error: orderLinkId invalid")
            if self.state.client_id_taken(market.book, account.key, None, link_id, open_only=False):
                raise error(*REJECTIONS[category][DUPLICATE_CLIENT_ID])
        order = ctx.new_order(
            market,
            side=side,
            venue_type=order_type,
            execution=order_type.lower(),
            quantity=None if quote_unit else qty,
            quote_quantity=qty if quote_unit else None,
            price=price if order_type == "Limit" else None,
            client_order_id=link_id,
            time_in_force=time_in_force,
            reduce_only=reduce_only,
            post_only=time_in_force == "PostOnly",
            post_only_policy="cancel",
            trigger_price=trigger,
            trigger_direction=direction,
            extra={
                "reduce_only_policy": "clamp",
                "market_unit": "quoteCoin" if quote_unit else "baseCoin",
                "last_price": self.state.price(market),
                "order_filter": "StopOrder" if trigger is not None else "Order",
                **attached,
            },
        )
        try:
            self.state.submit(order)
        except Rejection as rejection:
            code, msg = REJECTIONS[category].get(rejection.reason, (10001, rejection.reason))
            raise error(code, msg) from None
        ctx.log_booked(order, order.status)
        return ok({"orderId": order.order_id, "orderLinkId": link_id})

    def _attached_tpsl(self, market: MarketSpec, p: dict[str, Any], side: str, price: Decimal | None) -> dict[str, Any]:
        """stopLoss/takeProfit riding on an order: below/above the entry for a buy, the reverse for a sell."""
        found = {}
        entry = price if price is not None else self.state.price(market)
        for name, key, loss in (("stopLoss", "stop_loss", True), ("takeProfit", "take_profit", False)):
            value = self._number(p, name)
            if value is None:
                continue
            if not is_multiple(value, market.tick_size):
                raise error(10001, f"params error: {name} invalid")
            below = (side == BUY) == loss  # a long's stop-loss and a short's take-profit sit below the entry
            if (below and value >= entry) or (not below and value <= entry):
                raise error(
                    10001,
                    f"{'StopLoss' if loss else 'TakeProfit'}:{plain(value)} set for "
                    f"{'Buy' if side == BUY else 'Sell'} position should {'lower' if below else 'greater'} "
                    f"than base_price:{plain(entry)}??LastPrice",
                )
            found[key] = value
        return found

    def _spot_checks(self, m: MarketSpec, qty: Decimal, price: Decimal | None, quote_unit: bool) -> None:
        if quote_unit:
            if decimals_of(qty) > 8:
                raise error(170137, "Order quantity has too many decimals.")
            if qty < m.min_notional:
                raise error(170140, "Order value exceeded lower limit.")
            return
        if not is_multiple(qty, m.step_size):
            raise error(170137, "Order quantity has too many decimals.")
        if qty < m.min_qty:
            raise error(170136, "Order quantity lower than the minimum.")
        if qty > m.max_qty:
            raise error(170135, "Order quantity exceeds the upper limit.")
        if price is not None and not is_multiple(price, m.tick_size):
            raise error(170134, "Order price has too many decimals.")
        value = qty * (price if price is not None else self.state.price(m))
        if value < m.min_notional:
            raise error(170140, "Order value exceeded lower limit.")

    def _linear_checks(
        self, m: MarketSpec, qty: Decimal, price: Decimal | None, is_market: bool, reduce_only: bool
    ) -> None:
        if qty < m.min_qty or not is_multiple(qty, m.step_size):
            raise error(10001, "The number of contracts exceeds minimum limit allowed")
        if qty > (m.market_max_qty if is_market else m.max_qty):
            raise error(10001, "The number of contracts exceeds maximum limit allowed: too large")
        if price is not None:
            if not is_multiple(price, m.tick_size):
                raise error(10001, "params error: price invalid")
            if price < m.min_price or price > m.max_price:
                raise error(110003, "Order price exceeds the allowable range.")
        value = qty * (price if price is not None else self.state.price(m))
        if not reduce_only and value < m.min_notional:
            raise error(110094, f"Order does not meet minimum order value {plain(m.min_notional)}USDT")

    def _trigger_direction(self, market: MarketSpec, p: dict[str, Any], trigger: Decimal) -> str:
        now = self.state.price(market)
        raw = str(p.get("triggerDirection") or "")
        if market.market_type == SPOT or raw not in ("1", "2"):
            if market.market_type == LINEAR:
                raise error(10001, "params error: triggerDirection invalid")
            return "rise" if trigger > now else "fall"
        if raw == "1" and trigger <= now:
            raise error(110092, f"expect Rising, but trigger_price[{plain(trigger)}] <= current[{plain(now)}]")
        if raw == "2" and trigger >= now:
            raise error(110093, f"expect Falling, but trigger_price[{plain(trigger)}] >= current[{plain(now)}]")
        return "rise" if raw == "1" else "fall"

    def _find(self, ctx: RequestContext, category: str, market: MarketSpec | None) -> Order | None:
        p = ctx.params
        order_id, link_id = p.get("orderId"), p.get("orderLinkId")
        if not order_id and not link_id:
            raise error(10001, "orderId or orderLinkId is required")
        return self.state.find_order(
            f"bybit.{category}",
            ctx.authenticated().key,
            market.symbol if market else None,
            order_id=str(order_id) if order_id else None,
            client_order_id=link_id,
        )

    async def cancel_order(self, ctx: RequestContext) -> Reply:
        category = self._category(ctx.params)
        market = self._market(category, ctx.params)
        order = self._find(ctx, category, market)
        if order is None or not order.is_open:
            if category == SPOT:
                raise error(170213, "Order does not exist.")
            raise error(110001, "order not exists or too late to cancel")
        self.state.cancel(order)
        order.extra["cancel_type"] = "CancelByUser"
        return ok({"orderId": order.order_id, "orderLinkId": order.client_order_id})

    async def cancel_all(self, ctx: RequestContext) -> Reply:
        category = self._category(ctx.params)
        market = self._market(category, ctx.params, required=False)
        if market is None and category == LINEAR and not (ctx.params.get("settleCoin") or ctx.params.get("baseCoin")):
            raise error(10001, "Missing some parameters that must be filled in, symbol or settleCoin or baseCoin")
        orders = self.state.orders_of(
            f"bybit.{category}", ctx.authenticated().key, market.symbol if market else None, open_only=True
        )
        for order in orders:
            self.state.cancel(order)
            order.extra["cancel_type"] = "CancelByUser"
        return ok({"list": [{"orderId": o.order_id, "orderLinkId": o.client_order_id} for o in orders], "success": "1"})

    def _selected(self, ctx: RequestContext, category: str) -> list[Order]:
        p = ctx.params
        market = self._market(category, p, required=False)
        orders = self.state.orders_of(f"bybit.{category}", ctx.authenticated().key, market.symbol if market else None)
        if p.get("orderId"):  # orderId takes priority over orderLinkId, as documented
            orders = [o for o in orders if o.order_id == str(p["orderId"])]
        elif p.get("orderLinkId"):
            orders = [o for o in orders if o.client_order_id == str(p["orderLinkId"])]
        order_filter = p.get("orderFilter")
        if order_filter == "StopOrder":
            orders = [o for o in orders if o.trigger_price is not None]
        elif order_filter == "Order":
            orders = [o for o in orders if o.trigger_price is None]
        return orders

    def _page(self, ctx: RequestContext, category: str, orders: list[Order]) -> Reply:
        limit = max(1, min(int(str(ctx.params.get("limit") or 20)), 50))
        newest_first = sorted(orders, key=lambda o: o.seq, reverse=True)[:limit]
        return ok({"category": category, "list": [self.render_order(o) for o in newest_first], "nextPageCursor": ""})

    async def realtime_orders(self, ctx: RequestContext) -> Reply:
        """Open orders; with orderId/orderLinkId also recently closed ones (last 500), as on UTA."""
        p = ctx.params
        category = self._category(p)
        orders = self._selected(ctx, category)
        if p.get("orderId") or p.get("orderLinkId"):
            orders = orders[-HISTORY_LIMIT:]
        elif str(p.get("openOnly") or "0") == "1":
            orders = [o for o in orders if not o.is_open][-HISTORY_LIMIT:]
        else:
            orders = [o for o in orders if o.is_open]
        return self._page(ctx, category, orders)

    async def order_history(self, ctx: RequestContext) -> Reply:
        p = ctx.params
        category = self._category(p)
        orders = self._selected(ctx, category)
        status = p.get("orderStatus")
        if status:
            orders = [o for o in orders if self.status_of(o) == status]
        elif not (p.get("orderId") or p.get("orderLinkId")):
            orders = [o for o in orders if not o.is_open]
        return self._page(ctx, category, orders)

    async def executions(self, ctx: RequestContext) -> Reply:
        p = ctx.params
        category = self._category(p)
        orders = self._selected(ctx, category)
        rows: list[dict[str, Any]] = []
        for order in orders:
            for fill in order.fills:
                rows.append(
                    {
                        "symbol": order.symbol,
                        "orderId": order.order_id,
                        "orderLinkId": order.client_order_id,
                        "side": SIDE_NAMES[order.side],
                        "orderPrice": plain(order.price or fill.price),
                        "orderQty": plain(order.quantity),
                        "leavesQty": plain(order.remaining),
                        "createType": "CreateByUser",
                        "orderType": order.venue_type,
                        "stopOrderType": "",
                        "execFee": plain(fill.commission),
                        "feeCurrency": fill.commission_asset,
                        "execId": str(fill.trade_id),
                        "execPrice": plain(fill.price),
                        "execQty": plain(fill.qty),
                        "execType": "Trade",
                        "execValue": plain(fill.quote_qty),
                        "execTime": str(fill.time_ms),
                        "isMaker": fill.maker,
                        "feeRate": "0.001" if category == SPOT else "0.00055",
                        "tradeIv": "",
                        "markIv": "",
                        "markPrice": plain(fill.price),
                        "indexPrice": "",
                        "underlyingPrice": "",
                        "blockTradeId": "",
                        "closedSize": "",
                        "seq": fill.trade_id,
                    }
                )
        rows.sort(key=lambda r: int(r["execTime"]), reverse=True)
        limit = max(1, min(int(str(p.get("limit") or 50)), 100))
        return ok({"category": category, "list": rows[:limit], "nextPageCursor": ""})

    @staticmethod
    def status_of(order: Order) -> str:
        conditional = order.trigger_price is not None
        if order.status == NEW:
            return "Untriggered" if conditional and not order.working else "New"
        if order.status == FILLED:
            return "Filled"
        if order.status in (CANCELED, EXPIRED):
            return "Deactivated" if conditional and not order.working else "Cancelled"
        return "Rejected"

    def render_order(self, order: Order) -> dict[str, Any]:
        spot = order.market_type == SPOT
        quote_unit = order.extra.get("market_unit") == "quoteCoin"
        qty = order.quote_quantity if quote_unit else order.quantity
        leaves_qty = (
            D(0) if not order.is_open else (qty or D(0)) - (order.cum_quote if quote_unit else order.executed_qty)
        )
        reject_reason = "EC_NoError"
        if order.post_only and order.status == CANCELED and not order.fills and "cancel_type" not in order.extra:
            reject_reason = "EC_PostOnlyWillTakeLiquidity"
        cancel_type = order.extra.get("cancel_type", "UNKNOWN")
        if order.status == EXPIRED:
            cancel_type = "CancelByUser" if order.trigger_price is None else "CancelByTpSlTsClear"
        fee_asset = order.fills[0].commission_asset if order.fills else ""
        result = {
            "orderId": order.order_id,
            "orderLinkId": order.client_order_id,
            "blockTradeId": "",
            "symbol": order.symbol,
            "price": plain(order.price) if order.price else "0",
            "qty": plain(qty),
            "side": SIDE_NAMES[order.side],
            "isLeverage": "0" if spot else "",
            "positionIdx": 0,
            "orderStatus": self.status_of(order),
            "createType": "CreateByUser",
            "cancelType": cancel_type,
            "rejectReason": reject_reason,
            "avgPrice": plain(order.avg_price) if order.executed_qty else "",
            "leavesQty": plain(leaves_qty),
            "leavesValue": plain(leaves_qty * (order.price or D(0))),
            "cumExecQty": plain(order.executed_qty),
            "cumExecValue": plain(order.cum_quote),
            "cumExecFee": plain(order.fee_total),
            "cumFeeDetail": {fee_asset: plain(order.fee_total)} if fee_asset else {},
            "timeInForce": order.time_in_force,
            "orderType": order.venue_type,
            "stopOrderType": "Stop" if order.trigger_price is not None else "",
            "orderIv": "",
            "triggerPrice": plain(order.trigger_price) if order.trigger_price is not None else "",
            "takeProfit": plain(order.extra.get("take_profit")),
            "stopLoss": plain(order.extra.get("stop_loss")),
            "tpTriggerBy": "LastPrice" if "take_profit" in order.extra else "",
            "slTriggerBy": "LastPrice" if "stop_loss" in order.extra else "",
            "triggerDirection": {"rise": 1, "fall": 2}.get(order.trigger_direction or "", 0),
            "triggerBy": "LastPrice" if order.trigger_price is not None else "",
            "lastPriceOnCreated": plain(order.extra.get("last_price")),
            "basePrice": "",
            "reduceOnly": order.reduce_only,
            "closeOnTrigger": False,
            "placeType": "",
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "tpLimitPrice": "",
            "slLimitPrice": "",
            "createdTime": str(order.created_ms),
            "updatedTime": str(order.updated_ms),
        }
        if spot:
            result["marketUnit"] = order.extra.get("market_unit", "") if order.venue_type == "Market" else ""
        else:
            result["tpslMode"] = ""
        return result

    # ============================================================ account
    async def wallet_balance(self, ctx: RequestContext) -> Reply:
        account_type = ctx.params.get("accountType")
        if account_type != "UNIFIED":
            raise error(10001, "accountType only support UNIFIED.")
        account = ctx.authenticated()
        wanted = [c for c in str(ctx.params.get("coin") or "").split(",") if c]
        coins = []
        total_equity = D(0)
        upnl_total = D(0)
        position_im = D(0)
        for (book, symbol), position in account.positions.items():
            if book == "bybit.linear" and position.amount:
                market = self.state.markets[(book, symbol)]
                mark = self.state.price(market)
                upnl_total += (mark - position.entry_price) * position.amount
                position_im += abs(position.amount) * mark / self.state.leverage(account, market)
        for asset, balance in sorted(account.wallets.get("bybit.unified", {}).items()):
            if wanted and asset not in wanted:
                continue
            usd_price = D(1) if asset in ("USDT", "USDC") else self._usd_price(asset)
            is_usdt = asset == "USDT"
            upnl = upnl_total if is_usdt else D(0)
            equity = balance.total + upnl
            total_equity += equity * usd_price
            coins.append(
                {
                    "coin": asset,
                    "equity": plain(equity),
                    "usdValue": plain(equity * usd_price),
                    "walletBalance": plain(balance.total),
                    "free": "",
                    "locked": plain(balance.locked),
                    "spotHedgingQty": "0",
                    "borrowAmount": "0",
                    "availableToWithdraw": "",
                    "accruedInterest": "0",
                    "totalOrderIM": "0",
                    "totalPositionIM": plain(position_im if is_usdt else D(0)),
                    "totalPositionMM": "0",
                    "unrealisedPnl": plain(upnl),
                    "cumRealisedPnl": "0",
                    "bonus": "0",
                    "marginCollateral": True,
                    "collateralSwitch": True,
                    "availableToBorrow": "",
                }
            )
        available = self.state.available_margin(account, "bybit.unified")
        return ok(
            {
                "list": [
                    {
                        "accountType": "UNIFIED",
                        "totalEquity": plain(total_equity),
                        "accountIMRate": "0",
                        "totalMarginBalance": plain(total_equity),
                        "totalInitialMargin": plain(position_im),
                        "totalAvailableBalance": plain(available),
                        "accountMMRate": "0",
                        "totalPerpUPL": plain(upnl_total),
                        "totalWalletBalance": plain(total_equity - upnl_total),
                        "accountLTV": "0",
                        "totalMaintenanceMargin": "0",
                        "coin": coins,
                    }
                ]
            }
        )

    def _usd_price(self, asset: str) -> Decimal:
        market = self.state.market("bybit.spot", f"{asset}USDT")
        return self.state.price(market) if market else D(0)

    async def positions(self, ctx: RequestContext) -> Reply:
        p = ctx.params
        category = self._category(p, (LINEAR,))
        market = self._market(category, p, required=False)
        if market is None and not (p.get("settleCoin") or p.get("baseCoin")):
            raise error(10001, "Missing some parameters that must be filled in, symbol or settleCoin")
        account = ctx.authenticated()
        rows = []
        for m in self.state.markets_of("bybit.linear"):
            if market is not None and m.symbol != market.symbol:
                continue
            if p.get("baseCoin") and m.base != p["baseCoin"]:
                continue
            position = account.positions.get((m.book, m.symbol))
            if market is None and (position is None or position.amount == 0):
                continue
            rows.append(self._render_position(account, m, position))
        return ok({"category": category, "list": rows, "nextPageCursor": ""})

    def _render_position(self, account: Account, m: MarketSpec, position: Any) -> dict[str, Any]:
        amount = position.amount if position else D(0)
        entry = position.entry_price if position and amount else D(0)
        mark = self.state.price(m)
        leverage = self.state.leverage(account, m)
        value = abs(amount) * mark
        side = "Buy" if amount > 0 else "Sell" if amount < 0 else ""
        return {
            "positionIdx": 0,
            "riskId": 1,
            "riskLimitValue": "2000000",
            "symbol": m.symbol,
            "side": side,
            "size": plain(abs(amount)),
            "avgPrice": plain(entry),
            "positionValue": plain(abs(amount) * entry),
            "tradeMode": 1 if account.margin_type.get((m.book, m.symbol)) == "ISOLATED" else 0,
            "positionStatus": "Normal",
            "autoAddMargin": 0,
            "adlRankIndicator": 2 if amount else 0,
            "leverage": str(leverage),
            "positionBalance": plain(value / leverage),
            "markPrice": plain(mark),
            "liqPrice": "",
            "bustPrice": "",
            "positionMM": plain(value * D("0.005")),
            "positionIM": plain(value / leverage),
            "tpslMode": "Full",
            "takeProfit": plain(position.take_profit) if position and amount else "",
            "stopLoss": plain(position.stop_loss) if position and amount else "",
            "trailingStop": "0",
            "unrealisedPnl": plain((mark - entry) * amount),
            "curRealisedPnl": plain(position.realized_pnl if position else D(0)),
            "cumRealisedPnl": plain(position.realized_pnl if position else D(0)),
            "seq": 1,
            "isReduceOnly": False,
            "mmrSysUpdatedTime": "",
            "leverageSysUpdatedTime": "",
            "sessionAvgPrice": "",
            "createdTime": str(position.created_ms if position else now_ms()),
            "updatedTime": str(position.updated_ms if position else now_ms()),
        }

    async def set_leverage(self, ctx: RequestContext) -> Reply:
        p = ctx.params
        category = self._category(p, (LINEAR,))
        market = self._market(category, p)
        buy, sell = self._number(p, "buyLeverage"), self._number(p, "sellLeverage")
        if buy is None or sell is None or buy != sell:
            raise error(10001, "buy leverage not equal to sell leverage in one-way mode")
        if buy < 1 or buy > market.max_leverage:
            raise error(10001, "leverage invalid")
        account = ctx.authenticated()
        if D(self.state.leverage(account, market)) == buy:
            raise error(110043, "leverage not modified")
        account.leverage[(market.book, market.symbol)] = int(buy)
        return ok({})

    async def query_api(self, ctx: RequestContext) -> Reply:
        account = ctx.authenticated()
        return ok(
            {
                "id": str(abs(hash(account.key)) % 10**8),
                "note": "emulator",
                "apiKey": account.key,
                # The key's permissions follow its (binance-shaped) api_restrictions: POST /_emu/api_restrictions.
                "readOnly": 0 if account.api_restrictions.get("enableSpotAndMarginTrading", True) else 1,
                "secret": "",
                "permissions": {
                    "ContractTrade": ["Order", "Position"],
                    "Spot": ["SpotTrade"],
                    "Wallet": ["AccountTransfer"]
                    + (["Withdraw"] if account.api_restrictions.get("enableWithdrawals") else []),
                    "Options": [],
                    "Derivatives": [],
                    "CopyTrading": [],
                    "BlockTrade": [],
                    "Exchange": [],
                    "NFT": [],
                },
                "ips": ["*"],
                "type": 1,
                "deadlineDay": -1,
                "expiredAt": "",
                "createdAt": "2024-01-01T00:00:00Z",
                "unified": 0,
                "uta": 1,
                "userID": abs(hash(account.key)) % 10**8,
                "inviterID": 0,
                "vipLevel": "No VIP",
                "mktMakerLevel": "0",
                "affiliateID": 0,
                "rsaPublicKey": "",
                "isMaster": True,
                "parentUid": "0",
                "kycLevel": "LEVEL_DEFAULT",
                "kycRegion": "",
            }
        )

    async def set_margin_mode(self, ctx: RequestContext) -> Reply:
        mode = str(ctx.params.get("setMarginMode") or "")
        if mode not in ("ISOLATED_MARGIN", "REGULAR_MARGIN", "PORTFOLIO_MARGIN"):
            raise error(10001, "params error: setMarginMode invalid")
        account = ctx.authenticated()
        for market in self.state.markets_of("bybit.linear"):
            account.margin_type[(market.book, market.symbol)] = "ISOLATED" if mode == "ISOLATED_MARGIN" else "CROSSED"
        account.margin_type[("bybit", "*")] = mode
        return ok({"reasons": []})

    async def account_info(self, ctx: RequestContext) -> Reply:
        return ok(
            {
                "marginMode": ctx.authenticated().margin_type.get(("bybit", "*"), "REGULAR_MARGIN"),
                "updatedTime": str(now_ms()),
                "unifiedMarginStatus": 6,
                "dcpStatus": "OFF",
                "timeWindow": 10,
                "smpGroup": 0,
                "isMasterTrader": False,
                "spotHedgingStatus": "OFF",
            }
        )

    async def coin_info(self, ctx: RequestContext) -> Reply:
        coins = sorted({m.base for m in self.state.markets_of("bybit.spot")} | {"USDT"})
        return ok(
            {
                "rows": [
                    {
                        "name": coin,
                        "coin": coin,
                        "remainAmount": "1000000",
                        "chains": [
                            {
                                "chainType": coin,
                                "confirmation": "6",
                                "withdrawFee": "0.0001",
                                "depositMin": "0",
                                "withdrawMin": "0.001",
                                "chain": coin,
                                "chainDeposit": "1",
                                "chainWithdraw": "1",
                                "minAccuracy": "8",
                                "withdrawPercentageFee": "0",
                                "contractAddress": "",
                                "safeConfirmNumber": "6",
                            }
                        ],
                    }
                    for coin in coins
                ]
            }
        )

    # ============================================================= public
    async def server_time(self, ctx: RequestContext) -> Reply:
        stamp = now_ms()
        return ok({"timeSecond": str(stamp // 1000), "timeNano": str(stamp * 1000000)})

    async def instruments(self, ctx: RequestContext) -> Reply:
        category = self._category(ctx.params)
        if ctx.params.get("status") not in (None, "", "Trading"):
            return ok({"category": category, "list": [], "nextPageCursor": ""})
        market = self._market(category, ctx.params, required=False)
        markets = [market] if market else self.state.markets_of(f"bybit.{category}")
        render = self._spot_instrument if category == SPOT else self._linear_instrument
        return ok({"category": category, "list": [render(m) for m in markets], "nextPageCursor": ""})

    @staticmethod
    def _spot_instrument(m: MarketSpec) -> dict[str, Any]:
        return {
            "symbol": m.symbol,
            "baseCoin": m.base,
            "quoteCoin": m.quote,
            "innovation": "0",
            "status": "Trading",
            "marginTrading": "utaOnly",
            "stTag": "0",
            "lotSizeFilter": {
                "basePrecision": plain(m.step_size),
                "quotePrecision": "0.00000001",
                "minOrderQty": plain(m.min_qty),
                "maxOrderQty": plain(m.max_qty),
                "minOrderAmt": plain(m.min_notional),
                "maxOrderAmt": plain(m.max_notional),
            },
            "priceFilter": {"tickSize": plain(m.tick_size)},
            "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
        }

    @staticmethod
    def _linear_instrument(m: MarketSpec) -> dict[str, Any]:
        return {
            "symbol": m.symbol,
            "contractType": "LinearPerpetual",
            "status": "Trading",
            "baseCoin": m.base,
            "quoteCoin": m.quote,
            "launchTime": "1585526400000",
            "deliveryTime": "0",
            "deliveryFeeRate": "",
            "priceScale": str(decimals_of(m.tick_size)),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": f"{m.max_leverage}.00", "leverageStep": "0.01"},
            "priceFilter": {
                "minPrice": plain(m.min_price),
                "maxPrice": plain(m.max_price),
                "tickSize": plain(m.tick_size),
            },
            "lotSizeFilter": {
                "maxOrderQty": plain(m.max_qty),
                "minOrderQty": plain(m.min_qty),
                "qtyStep": plain(m.step_size),
                "postOnlyMaxOrderQty": plain(m.max_qty),
                "maxMktOrderQty": plain(m.market_max_qty),
                "minNotionalValue": plain(m.min_notional),
            },
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
            "settleCoin": m.settle,
            "copyTrading": "both",
            "upperFundingRate": "0.005",
            "lowerFundingRate": "-0.005",
            "isPreListing": False,
            "preListingInfo": None,
        }

    async def tickers(self, ctx: RequestContext) -> Reply:
        category = self._category(ctx.params)
        market = self._market(category, ctx.params, required=False)
        markets = [market] if market else self.state.markets_of(f"bybit.{category}")
        rows = []
        for m in markets:
            price = plain(self.state.price(m))
            bid, ask = plain(self.state.price(m) - m.tick_size), plain(self.state.price(m) + m.tick_size)
            row = {
                "symbol": m.symbol,
                "bid1Price": bid,
                "bid1Size": "1",
                "ask1Price": ask,
                "ask1Size": "1",
                "lastPrice": price,
                "prevPrice24h": price,
                "price24hPcnt": "0",
                "highPrice24h": price,
                "lowPrice24h": price,
                "turnover24h": "0",
                "volume24h": "0",
            }
            if category == LINEAR:
                row.update(
                    {
                        "indexPrice": price,
                        "markPrice": price,
                        "prevPrice1h": price,
                        "openInterest": "0",
                        "openInterestValue": "0",
                        "fundingRate": "0.0001",
                        "nextFundingTime": str((now_ms() // 28800000 + 1) * 28800000),
                        "predictedDeliveryPrice": "",
                        "basisRate": "",
                        "deliveryFeeRate": "",
                        "deliveryTime": "0",
                        "basis": "",
                    }
                )
            else:
                row["usdIndexPrice"] = price
            rows.append(row)
        return ok({"category": category, "list": rows})

    async def orderbook(self, ctx: RequestContext) -> Reply:
        category = self._category(ctx.params)
        m = self._market(category, ctx.params)
        price = self.state.price(m)
        levels = max(1, min(int(str(ctx.params.get("limit") or 25)), 50))
        return ok(
            {
                "s": m.symbol,
                "b": [[plain(price - m.tick_size * (i + 1)), "1"] for i in range(levels)],
                "a": [[plain(price + m.tick_size * (i + 1)), "1"] for i in range(levels)],
                "ts": now_ms(),
                "u": 1,
                "seq": 1,
                "cts": now_ms(),
            }
        )

    # ============================================================ routing
    def endpoints(self) -> list[Endpoint]:
        E, s = Endpoint, "signed"
        return [
            E("GET", "/v5/market/time", self.server_time, F.PUBLIC, None),
            E("GET", "/v5/market/instruments-info", self.instruments, F.PUBLIC, None),
            E("GET", "/v5/market/tickers", self.tickers, F.PUBLIC, None),
            E("GET", "/v5/market/orderbook", self.orderbook, F.PUBLIC, None),
            E("POST", "/v5/order/create", self.create_order, F.PLACE, None, s, "order.create"),
            E("POST", "/v5/order/cancel", self.cancel_order, F.CANCEL, None, s, "order.cancel"),
            E("POST", "/v5/order/cancel-all", self.cancel_all, F.CANCEL, None, s, "order.cancel-all"),
            E("GET", "/v5/order/realtime", self.realtime_orders, F.STATUS, None, s, "order.realtime"),
            E("GET", "/v5/order/history", self.order_history, F.QUERY, None, s, "order.history"),
            E("GET", "/v5/execution/list", self.executions, F.QUERY, None, s),
            E("GET", "/v5/account/wallet-balance", self.wallet_balance, F.QUERY, None, s),
            E("GET", "/v5/account/info", self.account_info, F.QUERY, None, s),
            E("POST", "/v5/account/set-margin-mode", self.set_margin_mode, F.QUERY, None, s),
            E("GET", "/v5/user/query-api", self.query_api, F.QUERY, None, s),
            E("GET", "/v5/asset/coin/query-info", self.coin_info, F.QUERY, None, s),
            E("GET", "/v5/position/list", self.positions, F.QUERY, LINEAR, s),
            E("POST", "/v5/position/set-leverage", self.set_leverage, F.QUERY, LINEAR, s),
        ]
