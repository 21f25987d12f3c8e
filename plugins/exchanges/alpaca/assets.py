"""Alpaca's assets (``GET /v2/assets``) and how a TradingView ticker resolves to one.

Resolution uses the account's asset list, loaded at start, never string rules alone
(through core's ``MarketBook``, on the assets as core ``Market`` objects):
``NASDAQ:AAPL`` and ``AAPL`` find the stock ``AAPL``; ``BTCUSD``, ``COINBASE:BTCUSD``
and ``BTC/USD`` find the crypto pair ``BTC/USD`` (Alpaca lists pairs with a slash;
TradingView writes them without). A prefix (TradingView's exchange) is only a hint:
TradingView says ``AMEX:SPY`` where Alpaca lists SPY on ``ARCA``, so it never decides
which asset is meant. ``BRK.B``/``BRK/B``/``BRK-B`` find Alpaca's ``BRK.B``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from core.errors import Unprocessable
from core.trading.markets import MarketBook
from core.trading.venue import Market, MarketLimits

EQUITY = "us_equity"
CRYPTO = "crypto"
# Share quantities: Alpaca takes up to 9 decimals for fractionable stocks.
EQUITY_QTY_STEP = Decimal("0.000000001")
# Alpaca refuses notional (fractional) equity orders under $1 and USD crypto buys under $10.
EQUITY_MIN_NOTIONAL = Decimal(1)
CRYPTO_USD_MIN_NOTIONAL = Decimal(10)


def _decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() and number > 0 else None


@dataclass(frozen=True)
class Asset:
    """One tradable Alpaca asset, with what sizing and rounding need."""

    symbol: str  # Alpaca's own: AAPL, BRK.B, BTC/USD
    asset_class: str  # us_equity | crypto
    exchange: str
    tradable: bool
    fractionable: bool
    min_order_size: Decimal | None
    min_trade_increment: Decimal | None
    price_increment: Decimal | None

    @classmethod
    def from_api(cls, row: dict[str, Any]) -> Asset:
        return cls(
            symbol=str(row["symbol"]),
            asset_class=str(row.get("class") or EQUITY),
            exchange=str(row.get("exchange") or ""),
            tradable=bool(row.get("tradable")),
            fractionable=bool(row.get("fractionable")),
            min_order_size=_decimal(row.get("min_order_size")),
            min_trade_increment=_decimal(row.get("min_trade_increment")),
            price_increment=_decimal(row.get("price_increment")),
        )

    @property
    def crypto(self) -> bool:
        return self.asset_class == CRYPTO

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1] if self.crypto and "/" in self.symbol else "USD"

    @property
    def qty_step(self) -> Decimal:
        if self.crypto:
            return self.min_trade_increment or EQUITY_QTY_STEP
        return EQUITY_QTY_STEP if self.fractionable else Decimal(1)

    def price_step(self, price: Decimal) -> Decimal:
        if self.crypto:
            return self.price_increment or Decimal("0.000000001")
        # Stocks: whole cents from $1, hundredths of a cent below (SEC rule 612).
        return Decimal("0.01") if price >= 1 else Decimal("0.0001")

    @property
    def min_notional(self) -> Decimal | None:
        """Alpaca's smallest order value: $1 for fractional stock orders, $10 for USD
        crypto buys; none known otherwise."""
        if self.crypto:
            return CRYPTO_USD_MIN_NOTIONAL if self.quote == "USD" else None
        return EQUITY_MIN_NOTIONAL if self.fractionable else None

    def to_market(self) -> Market:
        """The asset as core's venue-neutral ``Market``, which core's resolution, sizing and
        checks work on. A stock's tick depends on its price (a cent from $1, 1/100 cent
        below), so its ``price_tick`` is the finest Alpaca accepts and the plugin rounds
        prices with ``price_step`` first. Alpaca's minimum order values apply to some
        orders only (fractional stock orders, crypto buys): the plugin checks them itself."""
        base = self.symbol.split("/")[0]
        return Market(
            symbol=self.symbol,
            id=self.symbol,
            base=base,
            quote=self.quote,
            type="spot",
            active=self.tradable,
            amount_step=self.qty_step,
            price_tick=self.price_increment if self.crypto and self.price_increment else Decimal("0.0001"),
            # A stock's smallest order is one step (a share, or a billionth of one).
            limits=MarketLimits(
                amount_min=self.min_order_size if self.crypto and self.min_order_size else self.qty_step
            ),
            aliases=(self.symbol.replace("/", ""),) if "/" in self.symbol else (),
            buys_by_cost=self.crypto or self.fractionable,
            info={"class": self.asset_class, "exchange": self.exchange, "fractionable": self.fractionable},
        )

    def round_qty(self, qty: Decimal) -> Decimal:
        """Truncate to the asset's step (never round an amount up)."""
        step = self.qty_step
        return (qty / step).to_integral_value(rounding=ROUND_DOWN) * step

    def round_price(self, price: Decimal) -> Decimal:
        step = self.price_step(price)
        return (price / step).to_integral_value(rounding=ROUND_HALF_UP) * step


class AssetBook:
    """The account's tradable assets, resolved through core's ``MarketBook`` (each asset
    as a ``core.trading.venue.Market``: crypto pairs carry their slash-free name as an alias)."""

    def __init__(self, assets: list[Asset]):
        self.by_symbol: dict[str, Asset] = {a.symbol: a for a in assets if a.tradable}
        self.markets = MarketBook("alpaca", [a.to_market() for a in self.by_symbol.values()])

    def __len__(self) -> int:
        return len(self.by_symbol)

    def resolve(self, ticker: str) -> Asset | None:
        """The asset a ticker names, or None. ``EXCHANGE:SYMBOL`` drops the prefix; an
        exact Alpaca symbol wins over a separator-free match (``BTCUSD`` → ``BTC/USD``)."""
        text = ticker.strip()
        if not text:
            return None
        try:
            market = self.markets.resolve(text, None, "spot")
        except Unprocessable:
            return None
        return self.by_symbol.get(market.symbol)

    def suggestions(self, ticker: str, limit: int = 3) -> list[str]:
        key = "".join(ch for ch in ticker.split(":", 1)[-1].upper() if ch.isalnum())
        if not key:
            return []
        return sorted(s for s in self.by_symbol if "".join(ch for ch in s if ch.isalnum()).startswith(key[:3]))[:limit]
