"""TradingView tickers → the account's markets, and the checks an order must pass first.

Resolution uses only the exchange's own loaded market data (ccxt's ``markets``,
``markets_by_id`` and, for kraken, ``marketsByAltname``): no hand-kept quote lists.
Accepted forms: ``BINANCE:BTCUSDT``, ``BTCUSDT``, ``BTCUSDT.P`` (perpetual), ``BTC/USDT``,
``BTC/USDT:USDT``, ``XBTUSD``, ``BTC-USDT``. Where one id names a spot market and a
perpetual, ``market_type`` (or ``.P``) decides, else the account's default market type.

Amounts and prices go through ccxt's precision; min/max amount, min cost, the price
tick and market status are checked here because ccxt does not check them before
sending. Every refusal is a 422 whose message says what to change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
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


def prepare_order(
    exchange: ccxt.Exchange,
    alert: Alert,
    *,
    account: str,
    client_order_id: str,
    default_type: str | None = None,
    reference_price: Callable[[str], Decimal | None] | None = None,
) -> OrderRequest:
    """Resolve, round and check an alert into an order for ``exchange``; 422 on refusal.

    A market order is valued at the alert's price (TradingView's ``{{close}}``), else at
    ``reference_price(symbol)`` (the last price the executor knows, if any), for the
    minimum-cost check; with neither, that check is left to the exchange.
    """
    if alert.action != "order" or alert.amount_type != "base" or alert.order_type not in ("market", "limit"):
        raise Unprocessable(f"{exchange.id} does not support action '{alert.action}', amount_type '{alert.amount_type}' "
                            f"or order_type '{alert.order_type}' here", code="not_supported")
    assert alert.amount is not None and alert.side is not None
    market = market_index(exchange).resolve(alert.symbol, alert.market_type, default_type)
    symbol, venue = market["symbol"], exchange.id
    if market.get("active") is False:
        raise Unprocessable(f"market {symbol} is not trading on {venue} now", code="market_closed")
    limits = market.get("limits") or {}
    unit = market.get("base") if market.get("spot") or not market.get("contract") else "contracts"

    min_amount = (limits.get("amount") or {}).get("min")
    if min_amount is not None and alert.amount < Decimal(str(min_amount)):
        raise Unprocessable(
            f"amount {_fmt(alert.amount)} {unit} is below the minimum {_fmt(min_amount)} for {symbol} on {venue}",
            code="amount_below_minimum",
        )
    max_amount = (limits.get("amount") or {}).get("max")
    if max_amount is not None and alert.amount > Decimal(str(max_amount)):
        raise Unprocessable(
            f"amount {_fmt(alert.amount)} {unit} is above the maximum {_fmt(max_amount)} for {symbol} on {venue}",
            code="amount_above_maximum",
        )
    max_market = (limits.get("market") or {}).get("max")  # binance's MARKET_LOT_SIZE
    if alert.order_type == "market" and max_market and alert.amount > Decimal(str(max_market)):
        raise Unprocessable(
            f"amount {_fmt(alert.amount)} {unit} is above the maximum {_fmt(max_market)} for a market order on {symbol} "
            f"on {venue}", code="amount_above_maximum",
        )
    try:
        amount = exchange.amount_to_precision(symbol, str(alert.amount))
    except ccxt.InvalidOrder:
        amount = "0"
    step = (market.get("precision") or {}).get("amount")
    if Decimal(amount) <= 0:
        raise Unprocessable(f"amount {_fmt(alert.amount)} {unit} rounds to 0 at {symbol}'s step {_fmt(step) if step else '?'} on {venue}",
                            code="amount_below_minimum")
    if min_amount is not None and Decimal(amount) < Decimal(str(min_amount)):
        # A step that does not divide the minimum: the rounded amount fell below it.
        raise Unprocessable(
            f"amount {_fmt(alert.amount)} {unit} rounds down to {_fmt(amount)} at the step {_fmt(step) if step else '?'}, "
            f"below the minimum {_fmt(min_amount)} for {symbol} on {venue}", code="amount_below_minimum",
        )

    price: str | None = None
    if alert.order_type == "limit":
        assert alert.price is not None
        price = exchange.price_to_precision(symbol, str(alert.price))
        if Decimal(price) != alert.price:
            tick = (market.get("precision") or {}).get("price")
            raise Unprocessable(
                f"price {_fmt(alert.price)} is not a multiple of the tick {_fmt(tick) if tick else '?'} for {symbol} on {venue}",
                code="price_off_tick",
            )
        price_limits = limits.get("price") or {}
        if price_limits.get("min") and alert.price < Decimal(str(price_limits["min"])):
            raise Unprocessable(f"price {_fmt(alert.price)} is below the minimum {_fmt(price_limits['min'])} for {symbol} on {venue}",
                                code="price_out_of_range")
        if price_limits.get("max") and alert.price > Decimal(str(price_limits["max"])):
            raise Unprocessable(f"price {_fmt(alert.price)} is above the maximum {_fmt(price_limits['max'])} for {symbol} on {venue}",
                                code="price_out_of_range")
    value_price = Decimal(price) if price else (alert.price or (reference_price(symbol) if reference_price else None))
    cost_limits = limits.get("cost") or {}
    if value_price is not None and (cost_limits.get("min") or cost_limits.get("max")):
        contract_size = Decimal(str(market.get("contractSize") or 1))
        cost = Decimal(amount) * contract_size * value_price
        if cost_limits.get("min") and cost < Decimal(str(cost_limits["min"])):
            raise Unprocessable(
                f"order value {_fmt(cost)} {market.get('quote')} is below the minimum {_fmt(cost_limits['min'])} for {symbol} on {venue}",
                code="cost_below_minimum",
            )
        if cost_limits.get("max") and cost > Decimal(str(cost_limits["max"])):
            raise Unprocessable(
                f"order value {_fmt(cost)} {market.get('quote')} is above the maximum {_fmt(cost_limits['max'])} for {symbol} on {venue}",
                code="cost_above_maximum",
            )
    return OrderRequest(
        account=account,
        exchange=venue,
        symbol=symbol,
        market_type=market.get("type") or "spot",
        side=alert.side,
        order_type=alert.order_type,
        amount=amount,
        price=price,
        client_order_id=client_order_id,
        reference_price=_fmt(value_price) if value_price is not None else None,
        params=dict(alert.params),
    )
