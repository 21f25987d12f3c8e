"""What core knows of a venue: its markets and its order statuses, in the router's words.

Venue plugins translate their client's data into these (the ccxt plugin:
``plugins.exchanges.ccxt.markets``); ``core.trading.markets`` (ticker resolution, precision,
limits) and ``core.trading.sizing`` (target / close / flip, percentages) work on them only, so a
venue that is not ccxt gets the same checks and the same refusals.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# An order's status in the router's words. ``open``: accepted and resting (nothing or
# part filled so far); ``filled``: completely executed; ``canceled``; ``rejected``;
# ``expired``; ``unknown``: the venue did not say.
OrderStatus = Literal["open", "partially_filled", "filled", "canceled", "rejected", "expired", "unknown"]

# Words venues and client libraries use, and the router's word for each. ccxt says
# "closed" for filled; Alpaca "new"/"accepted" for resting and "done_for_day" for a
# day order that stopped. Anything else is "unknown".
_STATUS_WORDS: dict[str, OrderStatus] = {
    "open": "open",
    "new": "open",
    "accepted": "open",
    "pending_new": "open",
    "pending": "open",
    "held": "open",
    "partially_filled": "partially_filled",
    "partial": "partially_filled",
    "filled": "filled",
    "closed": "filled",
    "canceled": "canceled",
    "cancelled": "canceled",
    "pending_cancel": "open",
    "done_for_day": "canceled",
    "rejected": "rejected",
    "expired": "expired",
    "unknown": "unknown",
}


def order_status(word: str | None) -> OrderStatus:
    """A venue's status word in the router's words (``closed`` → ``filled``)."""
    if not word:
        return "unknown"
    return _STATUS_WORDS.get(str(word).strip().lower(), "unknown")


MarketType = Literal["spot", "margin", "swap", "future", "option"]


class MarketLimits(BaseModel):
    """What the venue accepts on one market; ``None``: no limit known (the venue checks)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    # The largest market order, where it differs from amount_max (binance's MARKET_LOT_SIZE).
    market_amount_max: Decimal | None = None
    cost_min: Decimal | None = None  # the order's value in the quote currency
    cost_max: Decimal | None = None
    price_min: Decimal | None = None
    price_max: Decimal | None = None


class Market(BaseModel):
    """One tradable market of a venue, owned by core.

    ``symbol`` is the venue's unified name, what orders carry (``BTC/USDT``,
    ``BTC/USDT:USDT``, ``AAPL``); ``id`` the venue's own (``BTCUSDT``); ``aliases`` other
    names a ticker may use (kraken's ``XBTUSD``). Amounts are in base units on spot and in
    contracts on derivatives (``contract`` true), each contract worth ``contract_size``
    base units and settled in ``settle``. ``amount_step`` and ``price_tick`` are the
    precision as step sizes (``None``: not known, nothing is rounded); amounts are
    truncated to the step, prices rounded to the tick.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    id: str
    base: str
    quote: str
    type: MarketType = "spot"
    settle: str | None = None
    contract: bool = False
    linear: bool | None = None  # settled in the quote currency (USDT-margined)
    contract_size: Decimal = Decimal(1)
    active: bool = True
    amount_step: Decimal | None = None
    price_tick: Decimal | None = None
    limits: MarketLimits = Field(default_factory=MarketLimits)
    aliases: tuple[str, ...] = ()
    # Whether a market buy may be sized by its cost (a quote amount) at this venue.
    buys_by_cost: bool = False
    info: dict[str, Any] = Field(default_factory=dict, exclude=True, repr=False)

    @property
    def unit(self) -> str:
        """What amounts count: the base currency on spot, contracts on derivatives."""
        return "contracts" if self.contract else self.base
