"""JSON shapes of Binance spot (``/api/v3``) and USD-M futures (``/fapi``) responses.

Field names, string formatting and defaults follow the live API so that ccxt's
``parse_*`` functions see what they see in production.  Spot numbers carry 8
decimals; futures numbers use the symbol's price/quantity precision.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .markets import LINEAR, SPOT, D, MarketSpec, fixed, plain
from .state import CANCELED, EXPIRED, FILLED, NEW, TRIGGERED, Account, ExchangeState, Order, now_ms

SPOT_ORDER_TYPES = [
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
]
FUTURES_ORDER_TYPES = [
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
]
ALGO_STATUS = {NEW: "NEW", CANCELED: "CANCELED", TRIGGERED: "FINISHED", EXPIRED: "EXPIRED", FILLED: "FINISHED"}
STP_MODE = "EXPIRE_MAKER"
NO_TIME = -1


def _s8(value: Decimal | None) -> str:
    return fixed(value, 8)


# ------------------------------------------------------------------ metadata
def rate_limits(market_type: str) -> list[dict[str, Any]]:
    if market_type == SPOT:
        return [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ]
    return [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
    ]


def spot_symbol_info(m: MarketSpec) -> dict[str, Any]:
    return {
        "symbol": m.symbol,
        "status": "TRADING",
        "baseAsset": m.base,
        "baseAssetPrecision": m.base_precision,
        "quoteAsset": m.quote,
        "quotePrecision": m.quote_precision,
        "quoteAssetPrecision": m.quote_precision,
        "baseCommissionPrecision": m.base_precision,
        "quoteCommissionPrecision": m.quote_precision,
        "orderTypes": SPOT_ORDER_TYPES,
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _s8(m.min_price),
                "maxPrice": _s8(m.max_price),
                "tickSize": _s8(m.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _s8(m.min_qty),
                "maxQty": _s8(m.max_qty),
                "stepSize": _s8(m.step_size),
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": _s8(D(0)),
                "maxQty": _s8(m.market_max_qty),
                "stepSize": _s8(D(0)),
            },
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": _s8(m.min_notional),
                "applyMinToMarket": True,
                "maxNotional": _s8(m.max_notional),
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": STP_MODE,
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"],
    }


def futures_symbol_info(m: MarketSpec) -> dict[str, Any]:
    return {
        "symbol": m.symbol,
        "pair": m.symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": m.base,
        "quoteAsset": m.quote,
        "marginAsset": m.settle,
        "pricePrecision": m.price_precision,
        "quantityPrecision": m.quantity_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": ["PoW"],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": plain(m.min_price),
                "maxPrice": plain(m.max_price),
                "tickSize": plain(m.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": plain(m.min_qty),
                "maxQty": plain(m.max_qty),
                "stepSize": plain(m.step_size),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": plain(m.market_min_qty),
                "maxQty": plain(m.market_max_qty),
                "stepSize": plain(m.market_step_size),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": plain(m.min_notional)},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": FUTURES_ORDER_TYPES,
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        "permissionSets": ["GRID", "COPY"],
    }


def exchange_info(state: ExchangeState, market_type: str, symbols: list[str] | None) -> dict[str, Any]:
    markets = state.markets_of(f"binance.{market_type}")
    if symbols:
        markets = [m for m in markets if m.symbol in symbols]
    if market_type == SPOT:
        return {
            "timezone": "UTC",
            "serverTime": now_ms(),
            "rateLimits": rate_limits(SPOT),
            "exchangeFilters": [],
            "symbols": [spot_symbol_info(m) for m in markets],
        }
    assets = sorted({m.settle for m in markets})
    return {
        "timezone": "UTC",
        "serverTime": now_ms(),
        "futuresType": "U_MARGINED",
        "rateLimits": rate_limits(LINEAR),
        "exchangeFilters": [],
        "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "-10000"} for a in assets],
        "symbols": [futures_symbol_info(m) for m in markets],
    }


# -------------------------------------------------------------------- orders
def _spot_order_state(order: Order) -> dict[str, Any]:
    """What the answers to a placement (RESULT, FULL) and to a cancel say of the order, in this order."""
    return {
        "price": _s8(order.price),
        "origQty": _s8(order.quantity),
        "executedQty": _s8(order.executed_qty),
        "origQuoteOrderQty": _s8(order.quote_quantity),
        "cummulativeQuoteQty": _s8(order.cum_quote),
        "status": order.status,
        "timeInForce": order.time_in_force or "GTC",
        "type": order.venue_type,
        "side": order.side,
        **({"stopPrice": _s8(order.trigger_price)} if order.trigger_price is not None else {}),
    }


def spot_order_result(order: Order, resp_type: str) -> dict[str, Any]:
    """Response of ``POST /api/v3/order`` for ACK, RESULT or FULL."""
    transact = order.created_ms
    result: dict[str, Any] = {
        "symbol": order.symbol,
        "orderId": int(order.order_id),
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "transactTime": transact,
    }
    if resp_type == "ACK":
        return result
    result.update(
        {
            **_spot_order_state(order),
            "workingTime": transact if order.working else NO_TIME,
            "selfTradePreventionMode": STP_MODE,
        }
    )
    if resp_type == "FULL":
        result["fills"] = [
            {
                "price": _s8(f.price),
                "qty": _s8(f.qty),
                "commission": _s8(f.commission),
                "commissionAsset": f.commission_asset,
                "tradeId": f.trade_id,
            }
            for f in order.fills
        ]
    return result


def spot_order_query(order: Order) -> dict[str, Any]:
    """Shape of ``GET /api/v3/order`` / ``openOrders`` / ``allOrders`` entries."""
    return {
        "symbol": order.symbol,
        "orderId": int(order.order_id),
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": _s8(order.price),
        "origQty": _s8(order.quantity),
        "executedQty": _s8(order.executed_qty),
        "cummulativeQuoteQty": _s8(order.cum_quote),
        "status": order.status,
        "timeInForce": order.time_in_force or "GTC",
        "type": order.venue_type,
        "side": order.side,
        "stopPrice": _s8(order.trigger_price),
        "icebergQty": _s8(D(0)),
        "time": order.created_ms,
        "updateTime": order.updated_ms,
        "isWorking": order.working,
        "workingTime": order.extra.get("trigger_time", order.created_ms) if order.working else NO_TIME,
        "origQuoteOrderQty": _s8(order.quote_quantity),
        "selfTradePreventionMode": STP_MODE,
    }


def spot_cancel_result(order: Order, cancel_client_id: str) -> dict[str, Any]:
    """``DELETE /api/v3/order``: ``clientOrderId`` is the *cancel's* id, the original is ``origClientOrderId``."""
    return {
        "symbol": order.symbol,
        "origClientOrderId": order.client_order_id,
        "orderId": int(order.order_id),
        "orderListId": -1,
        "clientOrderId": cancel_client_id,
        "transactTime": order.updated_ms,
        **_spot_order_state(order),
        "selfTradePreventionMode": STP_MODE,
    }


def futures_order(order: Order, market: MarketSpec, *, with_time: bool = True, ack: bool = False) -> dict[str, Any]:
    """Futures order shape (``POST``/``GET``/``DELETE /fapi/v1/order``, ``openOrders``, ``allOrders``).

    ``ack=True`` renders the state right after acceptance (status NEW, nothing
    executed), which is what the default ``newOrderRespType=ACK`` returns.
    """
    pp, qp = market.price_precision, market.quantity_precision
    executed = D(0) if ack else order.executed_qty
    cum_quote = D(0) if ack else order.cum_quote
    avg = D(0) if ack else order.avg_price
    result = {
        "orderId": int(order.order_id),
        "symbol": order.symbol,
        "status": NEW if ack else order.status,
        "clientOrderId": order.client_order_id,
        "price": fixed(order.price, pp) if order.price else "0",
        "avgPrice": fixed(avg, max(pp, 5)) if avg else "0.00",
        "origQty": fixed(order.quantity, qp),
        "executedQty": fixed(executed, qp),
        "cumQty": fixed(executed, qp),
        "cumQuote": fixed(cum_quote, 5),
        "timeInForce": order.time_in_force or "GTC",
        "type": order.venue_type,
        "reduceOnly": order.reduce_only,
        "closePosition": False,
        "side": order.side,
        "positionSide": order.extra.get("position_side", "BOTH"),
        "stopPrice": "0",
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": order.venue_type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": STP_MODE,
        "goodTillDate": 0,
        "updateTime": order.created_ms if ack else order.updated_ms,
    }
    if with_time:
        result["time"] = order.created_ms
    return result


def algo_order(order: Order, market: MarketSpec) -> dict[str, Any]:
    """Conditional (algo) order shape of ``/fapi/v1/algoOrder`` and friends."""
    pp, qp = market.price_precision, market.quantity_precision
    result = {
        "algoId": int(order.order_id),
        "clientAlgoId": order.client_order_id,
        "algoType": "CONDITIONAL",
        "orderType": order.venue_type,
        "symbol": order.symbol,
        "side": order.side,
        "positionSide": order.extra.get("position_side", "BOTH"),
        "timeInForce": order.time_in_force or "GTC",
        "quantity": fixed(order.quantity, qp) if order.quantity is not None else "0",
        "algoStatus": ALGO_STATUS.get(order.status, order.status),
        "triggerPrice": fixed(order.trigger_price, pp),
        "price": fixed(order.price, pp) if order.price else "0",
        "icebergQuantity": None,
        "selfTradePreventionMode": STP_MODE,
        "workingType": order.extra.get("working_type", "CONTRACT_PRICE"),
        "priceMatch": "NONE",
        "closePosition": bool(order.extra.get("close_position")),
        "priceProtect": False,
        "reduceOnly": order.reduce_only,
        "createTime": order.created_ms,
        "updateTime": order.updated_ms,
        "triggerTime": order.extra.get("trigger_time", 0),
        "goodTillDate": 0,
    }
    if order.child_order_id:
        result["actualOrderId"] = order.child_order_id
    return result


def spot_trade(order: Order, fill) -> dict[str, Any]:
    return {
        "symbol": order.symbol,
        "id": fill.trade_id,
        "orderId": int(order.order_id),
        "orderListId": -1,
        "price": _s8(fill.price),
        "qty": _s8(fill.qty),
        "quoteQty": _s8(fill.quote_qty),
        "commission": _s8(fill.commission),
        "commissionAsset": fill.commission_asset,
        "time": fill.time_ms,
        "isBuyer": order.side == "BUY",
        "isMaker": fill.maker,
        "isBestMatch": True,
    }


def futures_trade(order: Order, fill, market: MarketSpec) -> dict[str, Any]:
    return {
        "buyer": order.side == "BUY",
        "commission": plain(fill.commission),
        "commissionAsset": fill.commission_asset,
        "id": fill.trade_id,
        "maker": fill.maker,
        "orderId": int(order.order_id),
        "price": fixed(fill.price, market.price_precision),
        "qty": fixed(fill.qty, market.quantity_precision),
        "quoteQty": plain(fill.quote_qty),
        "realizedPnl": plain(fill.realized_pnl),
        "side": order.side,
        "positionSide": order.extra.get("position_side", "BOTH"),
        "symbol": order.symbol,
        "time": fill.time_ms,
    }


# ------------------------------------------------------------------ accounts
def spot_account(account: Account) -> dict[str, Any]:
    balances = account.wallets.get("binance.spot", {})
    return {
        "makerCommission": 10,
        "takerCommission": 10,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {
            "maker": "0.00100000",
            "taker": "0.00100000",
            "buyer": "0.00000000",
            "seller": "0.00000000",
        },
        "canTrade": True,
        "canWithdraw": True,
        "canDeposit": True,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": now_ms(),
        "accountType": "SPOT",
        "balances": [
            {"asset": asset, "free": _s8(b.free), "locked": _s8(b.locked)} for asset, b in sorted(balances.items())
        ],
        "permissions": ["SPOT"],
        "uid": abs(hash(account.key)) % 10**9,
    }


class FuturesAccountView:
    """Derived USD-M numbers (margins, PnL) for one account at current prices."""

    def __init__(self, state: ExchangeState, account: Account) -> None:
        self.state = state
        self.account = account
        self.rows = []
        for (book, symbol), position in sorted(account.positions.items()):
            if book != "binance.linear":
                continue
            market = state.markets[(book, symbol)]
            mark = state.price(market)
            leverage = state.leverage(account, market)
            notional = position.amount * mark
            self.rows.append(
                (
                    market,
                    position,
                    mark,
                    leverage,
                    notional,
                    (mark - position.entry_price) * position.amount if position.amount else D(0),
                )
            )

    def open_order_margin(self, symbol: str | None = None) -> Decimal:
        total = D(0)
        for order in self.state.orders_of("binance.linear", self.account.key, symbol, open_only=True):
            if order.working and not order.reduce_only and order.price is not None:
                market = self.state.markets[(order.book, order.symbol)]
                total += order.remaining * order.price / self.state.leverage(self.account, market)
        return total

    @property
    def wallet_balance(self) -> Decimal:
        return self.account.balance("binance.linear", "USDT").free

    @property
    def unrealized(self) -> Decimal:
        return sum((row[5] for row in self.rows), D(0))

    @property
    def position_margin(self) -> Decimal:
        return sum((abs(row[4]) / row[3] for row in self.rows), D(0))

    @property
    def available(self) -> Decimal:
        return self.state.available_margin(self.account, "binance.linear")

    def position_risk_v2(self, symbols: list[str]) -> list[dict[str, Any]]:
        by_symbol = {row[0].symbol: row for row in self.rows}
        result = []
        for market in self.state.markets_of("binance.linear"):
            if symbols and market.symbol not in symbols:
                continue
            position = self.account.positions.get((market.book, market.symbol))
            mark = self.state.price(market)
            row = by_symbol.get(market.symbol)
            amount = position.amount if position else D(0)
            result.append(
                {
                    "symbol": market.symbol,
                    "positionAmt": fixed(amount, market.quantity_precision),
                    "entryPrice": plain(position.entry_price) if position else "0.0",
                    "breakEvenPrice": plain(position.entry_price) if position else "0.0",
                    "markPrice": fixed(mark, 8),
                    "unRealizedProfit": fixed(row[5] if row else D(0), 8),
                    "liquidationPrice": "0",
                    "leverage": str(self.state.leverage(self.account, market)),
                    "maxNotionalValue": "1000000",
                    "marginType": self._margin_type(market).lower().replace("crossed", "cross"),
                    "isolatedMargin": "0.00000000",
                    "isAutoAddMargin": "false",
                    "positionSide": "BOTH",
                    "notional": plain(amount * mark),
                    "isolatedWallet": "0",
                    "updateTime": position.updated_ms if position else 0,
                }
            )
        return result

    def position_risk_v3(self, symbols: list[str]) -> list[dict[str, Any]]:
        """v3 lists only symbols with a position or open orders and has no ``leverage``."""
        result = []
        for market in self.state.markets_of("binance.linear"):
            if symbols and market.symbol not in symbols:
                continue
            position = self.account.positions.get((market.book, market.symbol))
            has_orders = bool(self.state.orders_of(market.book, self.account.key, market.symbol, open_only=True))
            if not has_orders and (position is None or position.amount == 0):
                continue
            amount = position.amount if position else D(0)
            entry = position.entry_price if position else D(0)
            mark = self.state.price(market)
            notional = amount * mark
            leverage = self.state.leverage(self.account, market)
            initial = abs(notional) / leverage
            order_margin = self.open_order_margin(market.symbol)
            result.append(
                {
                    "symbol": market.symbol,
                    "positionSide": "BOTH",
                    "positionAmt": fixed(amount, market.quantity_precision),
                    "entryPrice": plain(entry),
                    "breakEvenPrice": plain(entry),
                    "markPrice": fixed(mark, 8),
                    "unRealizedProfit": fixed((mark - entry) * amount if amount else D(0), 8),
                    "liquidationPrice": "0",
                    "isolatedMargin": "0",
                    "notional": fixed(notional, 8),
                    "marginAsset": market.settle,
                    "isolatedWallet": "0",
                    "initialMargin": fixed(initial + order_margin, 8),
                    "maintMargin": fixed(abs(notional) * D("0.004"), 8),
                    "positionInitialMargin": fixed(initial, 8),
                    "openOrderInitialMargin": fixed(order_margin, 8),
                    "adl": 0,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": position.updated_ms if position else 0,
                }
            )
        return result

    def _margin_type(self, market: MarketSpec) -> str:
        return self.account.margin_type.get((market.book, market.symbol), "CROSSED")

    def balance_entries(self) -> list[dict[str, Any]]:
        stamp = now_ms()
        entries = []
        for asset, balance in sorted(self.account.wallets.get("binance.linear", {}).items()):
            upnl = self.unrealized if asset == "USDT" else D(0)
            available = self.available if asset == "USDT" else balance.free
            entries.append(
                {
                    "accountAlias": "SgsR",
                    "asset": asset,
                    "balance": fixed(balance.free, 8),
                    "crossWalletBalance": fixed(balance.free, 8),
                    "crossUnPnl": fixed(upnl, 8),
                    "availableBalance": fixed(available, 8),
                    "maxWithdrawAmount": fixed(available, 8),
                    "marginAvailable": True,
                    "updateTime": stamp,
                }
            )
        return entries

    def account_v3(self, v2: bool = False) -> dict[str, Any]:
        stamp = now_ms()
        order_margin = self.open_order_margin()
        initial = self.position_margin + order_margin
        wallet = self.wallet_balance
        assets = []
        for asset, balance in sorted(self.account.wallets.get("binance.linear", {}).items()):
            is_usdt = asset == "USDT"
            upnl = self.unrealized if is_usdt else D(0)
            available = self.available if is_usdt else balance.free
            entry = {
                "asset": asset,
                "walletBalance": fixed(balance.free, 8),
                "unrealizedProfit": fixed(upnl, 8),
                "marginBalance": fixed(balance.free + upnl, 8),
                "maintMargin": fixed(self._maint() if is_usdt else D(0), 8),
                "initialMargin": fixed(initial if is_usdt else D(0), 8),
                "positionInitialMargin": fixed(self.position_margin if is_usdt else D(0), 8),
                "openOrderInitialMargin": fixed(order_margin if is_usdt else D(0), 8),
                "crossWalletBalance": fixed(balance.free, 8),
                "crossUnPnl": fixed(upnl, 8),
                "availableBalance": fixed(available, 8),
                "maxWithdrawAmount": fixed(available, 8),
                "updateTime": stamp,
            }
            if v2:
                entry["marginAvailable"] = True
            assets.append(entry)
        positions = []
        for market, position, _mark, leverage, notional, upnl in self.rows:
            if position.amount == 0 and not v2:
                continue
            row = {
                "symbol": market.symbol,
                "positionSide": "BOTH",
                "positionAmt": fixed(position.amount, market.quantity_precision),
                "unrealizedProfit": fixed(upnl, 8),
                "isolatedMargin": "0",
                "notional": fixed(notional, 8),
                "isolatedWallet": "0",
                "initialMargin": fixed(abs(notional) / leverage, 8),
                "maintMargin": fixed(abs(notional) * D("0.004"), 8),
                "updateTime": position.updated_ms,
            }
            if v2:
                row.update(
                    {
                        "leverage": str(leverage),
                        "entryPrice": plain(position.entry_price),
                        "breakEvenPrice": plain(position.entry_price),
                        "maxNotional": "1000000",
                        "isolated": self._margin_type(market) == "ISOLATED",
                        "positionInitialMargin": fixed(abs(notional) / leverage, 8),
                        "openOrderInitialMargin": "0",
                        "bidNotional": "0",
                        "askNotional": "0",
                    }
                )
            positions.append(row)
        result: dict[str, Any] = {
            "totalInitialMargin": fixed(initial, 8),
            "totalMaintMargin": fixed(self._maint(), 8),
            "totalWalletBalance": fixed(wallet, 8),
            "totalUnrealizedProfit": fixed(self.unrealized, 8),
            "totalMarginBalance": fixed(wallet + self.unrealized, 8),
            "totalPositionInitialMargin": fixed(self.position_margin, 8),
            "totalOpenOrderInitialMargin": fixed(order_margin, 8),
            "totalCrossWalletBalance": fixed(wallet, 8),
            "totalCrossUnPnl": fixed(self.unrealized, 8),
            "availableBalance": fixed(self.available, 8),
            "maxWithdrawAmount": fixed(self.available, 8),
            "assets": assets,
            "positions": positions,
        }
        if v2:
            result.update(
                {
                    "feeTier": 0,
                    "feeBurn": True,
                    "canTrade": True,
                    "canDeposit": True,
                    "canWithdraw": True,
                    "updateTime": 0,
                    "multiAssetsMargin": False,
                    "tradeGroupId": -1,
                }
            )
        return result

    def _maint(self) -> Decimal:
        return sum((abs(row[4]) * D("0.004") for row in self.rows), D(0))


def leverage_brackets(markets: list[MarketSpec]) -> list[dict[str, Any]]:
    tiers = [
        (125, 0, 50000, "0.004", 0),
        (100, 50000, 600000, "0.005", 50),
        (75, 600000, 3000000, "0.0065", 950),
        (50, 3000000, 12000000, "0.01", 11450),
        (25, 12000000, 70000000, "0.02", 131450),
    ]
    return [
        {
            "symbol": m.symbol,
            "notionalCoef": 1.0,
            "brackets": [
                {
                    "bracket": i + 1,
                    "initialLeverage": lev,
                    "notionalCap": cap,
                    "notionalFloor": floor,
                    "maintMarginRatio": float(mmr),
                    "cum": float(cum),
                }
                for i, (lev, floor, cap, mmr, cum) in enumerate(tiers)
            ],
        }
        for m in markets
    ]


# ------------------------------------------------------------------- tickers
def ticker_24hr(market: MarketSpec, price: Decimal) -> dict[str, Any]:
    stamp = now_ms()
    places = 8 if market.market_type == SPOT else market.price_precision
    p = fixed(price, places)
    result = {
        "symbol": market.symbol,
        "priceChange": fixed(D(0), places),
        "priceChangePercent": "0.000",
        "weightedAvgPrice": p,
        "lastPrice": p,
        "lastQty": fixed(market.min_qty, 8),
        "openPrice": p,
        "highPrice": p,
        "lowPrice": p,
        "volume": "1000.00000000",
        "quoteVolume": fixed(price * 1000, 8),
        "openTime": stamp - 86400000,
        "closeTime": stamp,
        "firstId": 1,
        "lastId": 1000,
        "count": 1000,
    }
    if market.market_type == SPOT:
        result.update(
            {
                "prevClosePrice": p,
                "bidPrice": fixed(price - market.tick_size, places),
                "bidQty": "1.00000000",
                "askPrice": fixed(price + market.tick_size, places),
                "askQty": "1.00000000",
            }
        )
    return result


def book_ticker(market: MarketSpec, price: Decimal) -> dict[str, Any]:
    places = 8 if market.market_type == SPOT else market.price_precision
    result: dict[str, Any] = {
        "symbol": market.symbol,
        "bidPrice": fixed(price - market.tick_size, places),
        "bidQty": "1.000",
        "askPrice": fixed(price + market.tick_size, places),
        "askQty": "1.000",
    }
    if market.market_type == LINEAR:
        result["time"] = now_ms()
    return result


def depth(market: MarketSpec, price: Decimal, limit: int) -> dict[str, Any]:
    levels = max(1, min(limit, 20))
    bids = [[plain(price - market.tick_size * (i + 1)), "1.0"] for i in range(levels)]
    asks = [[plain(price + market.tick_size * (i + 1)), "1.0"] for i in range(levels)]
    result = {"lastUpdateId": now_ms(), "bids": bids, "asks": asks}
    if market.market_type == LINEAR:
        result.update({"E": now_ms(), "T": now_ms()})
    return result
