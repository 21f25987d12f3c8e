"""ccxt's markets as core's ``Market``s: one ``MarketBook`` per loaded client.

ccxt describes precision as a step (``TICK_SIZE`` mode, most exchanges) or as a number of
decimal places (``DECIMAL_PLACES``); both become step sizes. Significant-digit precision
(a few exchanges) has no fixed step and is left to the exchange (``None``). kraken's
alternative names (``XBTUSD`` for ``XXBTZUSD``) become the market's aliases.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.trading.markets import MarketBook
from core.trading.venue import Market, MarketLimits, MarketType

_TYPES: dict[str, MarketType] = {
    "spot": "spot",
    "margin": "margin",
    "swap": "swap",
    "future": "future",
    "option": "option",
}
# ccxt's precision modes (ccxt.base.decimal_to_precision), spelled out so that reading a
# market (the paper exchange's snapshots) imports no ccxt; test_ccxt_internals checks them.
DECIMAL_PLACES = 2
SIGNIFICANT_DIGITS = 3
TICK_SIZE = 4


def _number(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return None
    return number if number.is_finite() else None


def _step(value: Any, mode: int) -> Decimal | None:
    number = _number(value)
    if number is None:
        return None
    if mode == DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(number))
    if mode == SIGNIFICANT_DIGITS:
        return None
    return number if number > 0 else None


def market_from_ccxt(
    market: dict[str, Any],
    *,
    precision_mode: int = TICK_SIZE,
    aliases: tuple[str, ...] = (),
    buys_by_cost: bool = False,
) -> Market | None:
    """One ccxt market as a core ``Market`` (None for a kind core does not trade)."""
    kind = _TYPES.get(market.get("type") or ("spot" if market.get("spot") else ""))
    if kind is None:
        return None
    precision = market.get("precision") or {}
    limits = market.get("limits") or {}

    def limit(name: str, side: str) -> Decimal | None:
        return _number((limits.get(name) or {}).get(side))

    names = set(aliases)
    if market.get("altname"):
        names.add(str(market["altname"]))
    return Market(
        symbol=market["symbol"],
        id=str(market.get("id") or market["symbol"]),
        base=market.get("base") or "",
        quote=market.get("quote") or "",
        type=kind,
        settle=market.get("settle"),
        contract=bool(market.get("contract")),
        linear=market.get("linear"),
        contract_size=_number(market.get("contractSize")) or Decimal(1),
        active=market.get("active") is not False,
        amount_step=_step(precision.get("amount"), precision_mode),
        price_tick=_step(precision.get("price"), precision_mode),
        limits=MarketLimits(
            amount_min=limit("amount", "min"),
            amount_max=limit("amount", "max"),
            market_amount_max=limit("market", "max"),
            cost_min=limit("cost", "min"),
            cost_max=limit("cost", "max"),
            price_min=limit("price", "min"),
            price_max=limit("price", "max"),
        ),
        aliases=tuple(sorted(names)),
        buys_by_cost=buys_by_cost and kind == "spot",
        info=market.get("info") or {},
    )


def market_book(client: Any) -> MarketBook:
    """The ``MarketBook`` of a ccxt client's current markets (rebuilt when they are reloaded)."""
    cached = getattr(client, "_router_market_book", None)
    if cached is not None and cached[0] is client.markets:
        return cached[1]
    altnames: dict[str, list[str]] = {}
    # ccxt internal: kraken's options["marketsByAltname"], filled by its fetch_markets.
    by_altname = client.options.get("marketsByAltname") if isinstance(client.options, dict) else None
    for name, found in (by_altname or {}).items():
        for market in found if isinstance(found, list) else [found]:
            if isinstance(market, dict) and market.get("symbol"):
                altnames.setdefault(market["symbol"], []).append(str(name))
    by_cost = bool(client.has.get("createMarketBuyOrderWithCost"))
    mode = getattr(client, "precisionMode", TICK_SIZE)
    markets = [
        market_from_ccxt(m, precision_mode=mode, aliases=tuple(altnames.get(m["symbol"], ())), buys_by_cost=by_cost)
        for m in (client.markets or {}).values()
    ]
    book = MarketBook(client.id, [m for m in markets if m is not None])
    client._router_market_book = (client.markets, book)  # an attribute of ours on ccxt's instance
    return book
