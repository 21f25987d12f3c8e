"""Paper's markets: the configured ones (``paper.markets``) and real venues' from snapshots.

``PaperMarket`` is one configured market (plugins.yaml), ``DEFAULT_MARKETS`` those paper
knows without configuration; ``paper_market`` makes one a core ``Market``. ``venue_book``
translates a venue snapshot (``plugins.exchanges.paper.markets``) as the ccxt plugin
translates a loaded client's markets; ``close_matches`` names the markets close to an
unknown ticker.
"""

from __future__ import annotations

import difflib
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from core.trading.markets import MarketBook
from core.trading.venue import Market, MarketLimits
from plugins.exchanges.ccxt.markets import TICK_SIZE, market_from_ccxt


class PaperMarket(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str
    quote: str
    type: Literal["spot", "swap"] = "spot"
    amount_step: Decimal
    price_tick: Decimal
    min_amount: Decimal
    min_cost: Decimal = Decimal(0)
    # None: unknown; market orders then need the alert's price.
    last_price: Decimal | None = None


DEFAULT_MARKETS = {
    "BTC/USDT": PaperMarket(
        base="BTC",
        quote="USDT",
        amount_step=Decimal("0.00001"),
        price_tick=Decimal("0.01"),
        min_amount=Decimal("0.00001"),
        min_cost=Decimal(5),
        last_price=Decimal(50000),
    ),
    "ETH/USDT": PaperMarket(
        base="ETH",
        quote="USDT",
        amount_step=Decimal("0.0001"),
        price_tick=Decimal("0.01"),
        min_amount=Decimal("0.0001"),
        min_cost=Decimal(5),
        last_price=Decimal(3000),
    ),
    "SOL/USDT": PaperMarket(
        base="SOL",
        quote="USDT",
        amount_step=Decimal("0.001"),
        price_tick=Decimal("0.01"),
        min_amount=Decimal("0.001"),
        min_cost=Decimal(5),
        last_price=Decimal(150),
    ),
    "BTC/USDT:USDT": PaperMarket(
        base="BTC",
        quote="USDT",
        type="swap",
        amount_step=Decimal("0.001"),
        price_tick=Decimal("0.1"),
        min_amount=Decimal("0.001"),
        min_cost=Decimal(100),
        last_price=Decimal(50000),
    ),
    "ETH/USDT:USDT": PaperMarket(
        base="ETH",
        quote="USDT",
        type="swap",
        amount_step=Decimal("0.001"),
        price_tick=Decimal("0.01"),
        min_amount=Decimal("0.001"),
        min_cost=Decimal(20),
        last_price=Decimal(3000),
    ),
}


def paper_market(symbol: str, m: PaperMarket) -> Market:
    """A paper market in core's terms."""
    swap = m.type == "swap"
    return Market(
        symbol=symbol,
        id=f"{m.base}{m.quote}",
        base=m.base,
        quote=m.quote,
        type=m.type,
        settle=m.quote if swap else None,
        contract=swap,
        linear=True if swap else None,
        amount_step=m.amount_step,
        price_tick=m.price_tick,
        limits=MarketLimits(amount_min=m.min_amount, cost_min=m.min_cost or None),
    )


def venue_book(venue: str, snapshot: dict[str, Any]) -> tuple[MarketBook, dict[str, Decimal]]:
    """A venue snapshot's markets as core's (translated as the ccxt plugin translates a
    loaded client's, with the precision mode the snapshot was written in) and the last
    price of each market that has one."""
    mode = snapshot.get("precision_mode", TICK_SIZE)
    markets, prices = [], {}
    for raw in snapshot["markets"]:
        market = market_from_ccxt(raw, precision_mode=mode)
        if market is None:
            continue
        markets.append(market)
        last = (raw.get("info") or {}).get("last")
        if last not in (None, ""):
            prices[market.symbol] = Decimal(str(last))
    return MarketBook(f"paper ({venue} markets)", markets), prices


def close_matches(ticker: str, books: list[MarketBook], n: int = 3) -> list[str]:
    """Market ids and symbols close to a ticker (its exchange prefix and .P suffix ignored)."""
    head, colon, tail = ticker.partition(":")
    name = (tail if colon and "/" not in head else ticker).upper().removesuffix(".P")
    names: set[str] = set()
    for book in books:
        for market in book.markets.values():
            names.update((market.id.upper(), market.symbol, *market.aliases))
    return difflib.get_close_matches(name, sorted(names), n=n, cutoff=0.6)
