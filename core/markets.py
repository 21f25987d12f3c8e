"""TradingView tickers → the account's markets, and the checks an order must pass first.

Resolution uses only the exchange's own loaded market data (ccxt's ``markets``,
``markets_by_id`` and, for kraken, ``marketsByAltname``): no hand-kept quote lists.
Accepted forms: ``BINANCE:BTCUSDT``, ``BTCUSDT``, ``BTCUSDT.P`` (perpetual), ``BTC/USDT``,
``BTC/USDT:USDT``, ``XBTUSD``, ``BTC-USDT``. Where one id names a spot market and a
perpetual, ``market_type`` (or ``.P``) decides, else the account's default market type.

Amounts and prices go through ccxt's precision; min/max amount, min cost, the price
tick and market status are checked here because ccxt does not check them before
sending. Every refusal is a 422 whose message says what to change.

``prepare_order`` turns an alert into an ``OrderRequest``: the amount (or, for a market
buy sized by cost, the cost), limit and stop prices, post-only / reduce-only / time in
force, stop-loss and take-profit (rounded to the tick, on the right side of the entry)
and leverage / margin mode (derivatives only). The side and size come from a ``Sizing``
that ``core.sizing`` works out from the alert's action and amount type — a plain order
in base units needs none — and its ``story`` prefixes the refusals of converted amounts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, DecimalException
from typing import Any

import ccxt

from core.errors import Unprocessable
from core.models import Alert, OrderRequest

_PERP_SUFFIX = re.compile(r"(\.P|PERP)$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[-_/:.]")
_TYPE_ALIASES = {"spot": "spot", "swap": "swap", "perp": "swap", "perpetual": "swap", "future": "future", "futures": "future"}


def _squash(text: str) -> str:
    return _SEPARATORS.sub("", text).upper()


class MarketIndex:
    """Look-ups over one exchange's loaded markets, built once per market load."""

    def __init__(self, exchange: ccxt.Exchange):
        self.exchange = exchange
        self.by_squashed: dict[str, list[dict[str, Any]]] = {}
        for market in exchange.markets.values():
            keys = {_squash(market["id"]), _squash(f"{market['base']}{market['quote']}")}
            if market.get("altname"):  # kraken: XBTUSD for XXBTZUSD (BTC/USD)
                keys.add(_squash(str(market["altname"])))
            for key in keys:
                self.by_squashed.setdefault(key, []).append(market)

    def resolve(self, ticker: str, market_type: str | None, default_type: str | None) -> dict[str, Any]:
        # An exchange prefix (BINANCE:BTCUSDT, BINANCE:BTC/USDT) goes; a settle suffix
        # (BTC/USDT:USDT) stays: the prefix is the part before ':' without a '/'.
        head, colon, tail = ticker.partition(":")
        name = tail if colon and "/" not in head and tail else ticker
        wanted = _TYPE_ALIASES.get(market_type or "", None)
        if _PERP_SUFFIX.search(name) and "/" not in name:
            name = _PERP_SUFFIX.sub("", name)
            wanted = wanted or "swap"
        markets = self.exchange.markets
        if name in markets:
            candidates = [markets[name]]
        else:
            candidates = list(self.exchange.markets_by_id.get(name) or self.exchange.markets_by_id.get(name.upper()) or [])
            altnames = self.exchange.options.get("marketsByAltname") if isinstance(self.exchange.options, dict) else None
            if not candidates and isinstance(altnames, dict) and name.upper() in altnames:
                found = altnames[name.upper()]
                candidates = found if isinstance(found, list) else [found]
            if not candidates:
                candidates = list(self.by_squashed.get(_squash(name), []))
        if wanted:
            typed = [m for m in candidates if m.get("type") == wanted or (wanted == "future" and m.get("future"))]
            if not typed:
                raise Unprocessable(
                    f"symbol '{ticker}' is not a {wanted} market on {self.exchange.id}"
                    + (f" (found: {', '.join(sorted({m['symbol'] for m in candidates}))})" if candidates else ""),
                    code="unknown_symbol",
                )
            candidates = typed
        if not candidates:
            raise Unprocessable(f"symbol '{ticker}' is not a market on {self.exchange.id}", code="unknown_symbol")
        if len(candidates) > 1:
            preferred = [m for m in candidates if m.get("type") == (default_type or "spot")] or candidates
            # Then spot, perpetuals before dated futures, linear (USDT-settled) before inverse.
            candidates = sorted(preferred, key=lambda m: (m.get("type") not in ("spot", "swap"), m.get("type") != "spot",
                                                          m.get("linear") is False, m["symbol"]))
        # The canonical market (ccxt's markets_by_id holds the parsed, not the merged, dicts).
        return self.exchange.markets.get(candidates[0]["symbol"], candidates[0])


def market_index(exchange: ccxt.Exchange) -> MarketIndex:
    """The index for the exchange's current markets (rebuilt when markets are reloaded)."""
    cached = getattr(exchange, "_router_market_index", None)
    if cached is None or cached[0] is not exchange.markets:
        cached = (exchange.markets, MarketIndex(exchange))
        exchange._router_market_index = cached  # type: ignore[attr-defined]
    return cached[1]


def _fmt(value: Any) -> str:
    return format(Decimal(str(value)).normalize(), "f")


def unit_of(market: dict[str, Any]) -> str:
    """What amounts of the market count: the base currency on spot, contracts on derivatives."""
    return market.get("base") if market.get("spot") or not market.get("contract") else "contracts"


def resolve_market(exchange: ccxt.Exchange, alert: Alert, default_type: str | None = None) -> dict[str, Any]:
    """The market an alert trades on ``exchange``; 422 when it is unknown or not trading."""
    market = market_index(exchange).resolve(alert.symbol, alert.market_type, default_type)
    if market.get("active") is False:
        raise Unprocessable(f"market {market['symbol']} is not trading on {exchange.id} now", code="market_closed")
    return market


@dataclass
class Sizing:
    """An order's side and size as ``core.sizing`` worked them out from the alert's action,
    amount type and what the account holds; ``prepare_order`` then rounds and checks it.

    ``story`` tells how the amount was arrived at ("10% of 100 USDT free is 10 USDT =
    0.0002 BTC at 50000"): refusals quote it, so the trader sees the numbers.
    """

    side: str
    amount: Decimal | None  # base units (contracts on derivatives); None for a market buy sized by cost
    cost: Decimal | None = None  # quote amount of a market buy the exchange sizes itself
    story: str | None = None
    reduce_only: bool = False
    position_before: Decimal | None = None
    position_after: Decimal | None = None  # target / flip: where the position goes
    reference_price: Decimal | None = None  # the price a conversion used


def prepare_order(
    exchange: ccxt.Exchange,
    alert: Alert,
    *,
    account: str,
    client_order_id: str,
    default_type: str | None = None,
    reference_price: Callable[[str], Decimal | None] | None = None,
    market: dict[str, Any] | None = None,
    sizing: Sizing | None = None,
    leverage: int | None = None,
    margin_mode: str | None = None,
) -> OrderRequest:
    """Resolve, round and check an alert into an order for ``exchange``; 422 on refusal.

    Without ``sizing`` the alert must be a plain order (action ``order``) in base units;
    ``core.sizing.prepare_alert`` handles the other actions and amount types and hands
    its result here as ``sizing``. ``leverage``/``margin_mode`` are the account's
    defaults (derivatives only); the alert's own win.

    A market order is valued at the alert's price (TradingView's ``{{close}}``), else at
    ``reference_price(symbol)`` (the last price the executor knows, if any), for the
    minimum-cost check; with neither, that check is left to the exchange.
    """
    if sizing is None:
        if alert.action != "order" or alert.amount_type != "base":
            raise Unprocessable(f"{exchange.id}: action '{alert.action}' with amount_type '{alert.amount_type}' needs the "
                                f"account's balances and positions, which this executor does not read", code="not_supported")
        assert alert.amount is not None and alert.side is not None
        sizing = Sizing(side=alert.side, amount=alert.amount)
    market = market or resolve_market(exchange, alert, default_type)
    symbol, venue = market["symbol"], exchange.id
    contract = bool(market.get("contract"))
    params = dict(alert.params)
    reduce_only = sizing.reduce_only or alert.reduce_only or params.get("reduceOnly") in (True, "true")
    if not contract:
        for name, value in (("reduce_only", reduce_only), ("leverage", alert.leverage), ("margin_mode", alert.margin_mode)):
            if value:
                raise Unprocessable(f"{name} applies to derivatives; {symbol} is a spot market on {venue}"
                                    + (" (to sell what you hold, send action close)" if name == "reduce_only" else ""),
                                    code="not_supported")
    post_only = alert.post_only or alert.time_in_force == "PO"
    limit_like = alert.order_type in ("limit", "stop_limit")
    if post_only and alert.order_type != "limit":
        raise Unprocessable(f"post_only needs a limit order (this is a {alert.order_type.replace('_', '-')} order)",
                            code="invalid_order")
    if sizing.cost is not None and alert.order_type != "market":
        raise Unprocessable("an order sized by cost must be a market buy", code="invalid_order")

    amount: str | None = None
    if sizing.amount is not None:
        amount = _checked_amount(exchange, market, sizing, alert.order_type)

    price = _checked_price(exchange, market, "price", alert.price) if limit_like else None
    stop_price = _checked_price(exchange, market, "stop_price", alert.stop_price) if alert.order_type in ("stop", "stop_limit") else None
    value_price = (Decimal(price) if price else Decimal(stop_price) if stop_price else
                   alert.price or sizing.reference_price or (reference_price(symbol) if reference_price else None))
    cost: str | None = None
    if sizing.cost is not None:
        cost = exchange.cost_to_precision(symbol, str(sizing.cost))
    _check_cost(market, venue, sizing, amount, cost, value_price, reduce_only=reduce_only and contract)
    stop_loss, take_profit = _protection(exchange, market, alert, sizing, value_price)
    return OrderRequest(
        account=account,
        exchange=venue,
        symbol=symbol,
        market_type=market.get("type") or "spot",
        side=sizing.side,  # type: ignore[arg-type]
        order_type=alert.order_type,
        amount=amount,
        cost=cost,
        price=price,
        stop_price=stop_price,
        stop_loss=stop_loss,
        take_profit=take_profit,
        reduce_only=bool(reduce_only),
        post_only=post_only,
        time_in_force=(alert.time_in_force if limit_like and alert.time_in_force != "PO" else None),
        leverage=(alert.leverage or leverage) if contract else None,
        margin_mode=(alert.margin_mode or margin_mode) if contract else None,
        client_order_id=client_order_id,
        reference_price=_fmt(value_price) if value_price is not None else None,
        position_before=_fmt(sizing.position_before) if sizing.position_before is not None else None,
        params=params,
    )


def _checked_amount(exchange: ccxt.Exchange, market: dict[str, Any], sizing: Sizing, order_type: str) -> str:
    """The amount after the exchange's precision, within the market's limits; 422 otherwise."""
    assert sizing.amount is not None
    symbol, venue, unit = market["symbol"], exchange.id, unit_of(market)
    limits = market.get("limits") or {}
    requested = sizing.amount
    subject = sizing.story or f"amount {_fmt(requested)} {unit}"
    lead = f"{sizing.story}," if sizing.story else f"{subject} is"
    min_amount = (limits.get("amount") or {}).get("min")
    if min_amount is not None and requested < Decimal(str(min_amount)):
        raise Unprocessable(f"{lead} below the minimum {_fmt(min_amount)} for {symbol} on {venue}", code="amount_below_minimum")
    max_amount = (limits.get("amount") or {}).get("max")
    if max_amount is not None and requested > Decimal(str(max_amount)):
        raise Unprocessable(f"{lead} above the maximum {_fmt(max_amount)} for {symbol} on {venue}", code="amount_above_maximum")
    max_market = (limits.get("market") or {}).get("max")  # binance's MARKET_LOT_SIZE
    if order_type in ("market", "stop") and max_market and requested > Decimal(str(max_market)):
        raise Unprocessable(f"{lead} above the maximum {_fmt(max_market)} for a market order on {symbol} on {venue}",
                            code="amount_above_maximum")
    try:
        amount = exchange.amount_to_precision(symbol, str(requested))
    except ccxt.InvalidOrder:
        amount = "0"
    step = (market.get("precision") or {}).get("amount")
    step_text = _fmt(step) if step else "?"
    if Decimal(amount) <= 0:
        raise Unprocessable(f"{subject}{', which' if sizing.story else ''} rounds to 0 at {symbol}'s step {step_text} on {venue}",
                            code="amount_below_minimum")
    if min_amount is not None and Decimal(amount) < Decimal(str(min_amount)):
        # A step that does not divide the minimum: the rounded amount fell below it.
        raise Unprocessable(f"{subject}{', which' if sizing.story else ''} rounds down to {_fmt(amount)} at the step {step_text}, "
                            f"below the minimum {_fmt(min_amount)} for {symbol} on {venue}", code="amount_below_minimum")
    return amount


def _checked_price(exchange: ccxt.Exchange, market: dict[str, Any], name: str, value: Decimal | None) -> str:
    """A limit or trigger price: on the tick and within the market's range, else 422."""
    assert value is not None
    symbol, venue = market["symbol"], exchange.id
    label = "price" if name == "price" else "stop_price"
    try:
        rounded = exchange.price_to_precision(symbol, str(value))
    except DecimalException:  # e.g. Underflow of a price far below any tick
        raise Unprocessable(f"{label} {value} cannot be rounded to a tick for {symbol} on {venue}", code="price_off_tick") from None
    if Decimal(rounded) != value:
        tick = (market.get("precision") or {}).get("price")
        raise Unprocessable(f"{label} {_fmt(value)} is not a multiple of the tick {_fmt(tick) if tick else '?'} for {symbol} on {venue}",
                            code="price_off_tick")
    price_limits = (market.get("limits") or {}).get("price") or {}
    if price_limits.get("min") and value < Decimal(str(price_limits["min"])):
        raise Unprocessable(f"{label} {_fmt(value)} is below the minimum {_fmt(price_limits['min'])} for {symbol} on {venue}",
                            code="price_out_of_range")
    if price_limits.get("max") and value > Decimal(str(price_limits["max"])):
        raise Unprocessable(f"{label} {_fmt(value)} is above the maximum {_fmt(price_limits['max'])} for {symbol} on {venue}",
                            code="price_out_of_range")
    return rounded


def _check_cost(market: dict[str, Any], venue: str, sizing: Sizing, amount: str | None, cost: str | None,
                value_price: Decimal | None, *, reduce_only: bool) -> None:
    cost_limits = (market.get("limits") or {}).get("cost") or {}
    if not (cost_limits.get("min") or cost_limits.get("max")):
        return
    if cost is not None:
        value = Decimal(cost)
    elif amount is not None and value_price is not None:
        value = Decimal(amount) * Decimal(str(market.get("contractSize") or 1)) * value_price
    else:
        return  # a market order without a price: the exchange checks
    symbol, quote = market["symbol"], market.get("quote")
    lead = f"{sizing.story}: order value" if sizing.story else "order value"
    # Reduce-only orders on derivatives may be smaller than the minimum value (binance, bybit).
    if cost_limits.get("min") and value < Decimal(str(cost_limits["min"])) and not reduce_only:
        raise Unprocessable(f"{lead} {_fmt(value)} {quote} is below the minimum {_fmt(cost_limits['min'])} for {symbol} on {venue}",
                            code="cost_below_minimum")
    if cost_limits.get("max") and value > Decimal(str(cost_limits["max"])):
        raise Unprocessable(f"{lead} {_fmt(value)} {quote} is above the maximum {_fmt(cost_limits['max'])} for {symbol} on {venue}",
                            code="cost_above_maximum")


def _protection(exchange: ccxt.Exchange, market: dict[str, Any], alert: Alert, sizing: Sizing,
                reference: Decimal | None) -> tuple[str | None, str | None]:
    """Stop-loss and take-profit trigger prices, rounded to the tick and on the right side of
    the entry: below it (stop-loss) and above it (take-profit) for a long, the reverse for a short."""
    if alert.stop_loss is None and alert.take_profit is None:
        return None, None
    symbol = market["symbol"]
    if sizing.position_after is not None:
        if sizing.position_after == 0:
            raise Unprocessable(f"stop_loss/take_profit protect a position, and this alert leaves {symbol} flat",
                                code="invalid_order")
        long = sizing.position_after > 0
    else:
        long = sizing.side == "buy"
    rounded = [exchange.price_to_precision(symbol, str(v)) if v is not None else None for v in (alert.stop_loss, alert.take_profit)]
    if reference is not None:
        what = f"{'long' if long else 'short'} entry at {_fmt(reference)}"
        stop_loss, take_profit = (Decimal(v) if v is not None else None for v in rounded)
        if stop_loss is not None and (stop_loss >= reference if long else stop_loss <= reference):
            raise Unprocessable(f"stop_loss {_fmt(stop_loss)} must be {'below' if long else 'above'} the {what} on {symbol}",
                                code="invalid_order")
        if take_profit is not None and (take_profit <= reference if long else take_profit >= reference):
            raise Unprocessable(f"take_profit {_fmt(take_profit)} must be {'above' if long else 'below'} the {what} on {symbol}",
                                code="invalid_order")
    return rounded[0], rounded[1]
