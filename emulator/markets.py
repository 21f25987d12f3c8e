"""Market catalogue of the emulator: which instruments exist and their trading rules.

A :class:`MarketSpec` is venue-neutral; the venue modules render it as Binance
``exchangeInfo`` symbols or Bybit ``instruments-info`` entries and apply its
limits with their own error codes.  The numbers are taken from the real venues
(rounded where it does not matter) so that ccxt derives the same precision and
limits it would in production.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

BINANCE = "binance"
BYBIT = "bybit"
SPOT = "spot"
LINEAR = "linear"

D = Decimal


def dec(value: object) -> Decimal:
    """Convert a number or numeric string to Decimal; raise ValueError if it is not one."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a number: {value!r}")
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not result.is_finite():
        raise ValueError(f"not a number: {value!r}")
    return result


def decimals_of(value: Decimal) -> int:
    """Number of significant fractional digits (``0.0100`` -> 2)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def is_multiple(value: Decimal, step: Decimal) -> bool:
    return step == 0 or value % step == 0


def plain(value: Decimal | None) -> str:
    """Render a Decimal without exponent and without trailing zeros ("0.001", "50000")."""
    if value is None:
        return ""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def fixed(value: Decimal | None, places: int) -> str:
    """Render a Decimal with exactly ``places`` fractional digits (Binance style)."""
    if value is None:
        value = D(0)
    quantum = D(1).scaleb(-places)
    return format(value.quantize(quantum), "f")


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    if step == 0:
        return value
    return (value // step) * step


@dataclass
class MarketSpec:
    """One tradable instrument of one venue.

    ``book`` identifies the order book family the market lives in (``binance.spot``,
    ``binance.linear``, ``bybit.spot``, ``bybit.linear``); order ids, client-id
    uniqueness and wallets are scoped by it.
    """

    venue: str
    market_type: str  # SPOT | LINEAR
    symbol: str  # exchange id, e.g. "BTCUSDT"
    base: str
    quote: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    # Binance spot: asset precisions; Binance futures: price/quantity precision digits.
    base_precision: int = 8
    quote_precision: int = 8
    price_precision: int = 2
    quantity_precision: int = 3
    # Binance USD-M: the step and minimum of the MARKET_LOT_SIZE filter (0: not rendered by other venues).
    market_step_size: Decimal = D(0)
    market_min_qty: Decimal = D(0)
    max_notional: Decimal = D("9000000")
    taker_fee: Decimal = D("0.001")
    maker_fee: Decimal = D("0.001")
    max_leverage: int = 125
    extra: dict = field(default_factory=dict)

    @property
    def book(self) -> str:
        return f"{self.venue}.{self.market_type}"

    @property
    def settle(self) -> str:
        return self.quote

    @property
    def unified_symbol(self) -> str:
        symbol = f"{self.base}/{self.quote}"
        return symbol if self.market_type == SPOT else f"{symbol}:{self.settle}"


def _usdt_market(
    venue: str,
    market_type: str,
    symbol: str,
    base: str,
    *,
    tick: str,
    step: str,
    max_qty: str,
    max_price: str,
    min_notional: str,
    min_price: str | None = None,
    min_qty: str | None = None,
    market_max: str | None = None,
    **rules: Any,
) -> MarketSpec:
    """A USDT-quoted instrument. Its lowest price is one tick, its smallest quantity one step
    and its largest market order ``max_qty`` unless the venue says otherwise; ``rules`` are
    the other :class:`MarketSpec` fields."""
    return MarketSpec(
        venue=venue,
        market_type=market_type,
        symbol=symbol,
        base=base,
        quote="USDT",
        tick_size=D(tick),
        min_price=D(min_price or tick),
        max_price=D(max_price),
        step_size=D(step),
        min_qty=D(min_qty or step),
        max_qty=D(max_qty),
        market_max_qty=D(market_max or max_qty),
        min_notional=D(min_notional),
        **rules,
    )


# What the instruments of one venue's product have in common; default_markets() adds each one's own numbers.
_binance_spot = functools.partial(_usdt_market, BINANCE, SPOT, max_qty="9000", max_price="1000000", min_notional="5")
_bybit_spot = functools.partial(
    _usdt_market, BYBIT, SPOT, max_price="10000000", min_notional="1", max_notional=D("4000000")
)
_bybit_linear = functools.partial(
    _usdt_market,
    BYBIT,
    LINEAR,
    max_price="1999999.80",
    min_notional="5",
    taker_fee=D("0.00055"),
    maker_fee=D("0.0002"),
    max_leverage=100,
)


def _binance_usdm(symbol: str, base: str, *, step: str, **numbers: Any) -> MarketSpec:
    """A USD-M perpetual: its MARKET_LOT_SIZE filter has the lot step as step and minimum."""
    return _usdt_market(
        BINANCE,
        LINEAR,
        symbol,
        base,
        step=step,
        market_step_size=D(step),
        market_min_qty=D(step),
        max_price="4529764",
        taker_fee=D("0.0005"),
        maker_fee=D("0.0002"),
        **numbers,
    )


def default_markets() -> list[MarketSpec]:
    """The instruments every emulator starts with."""
    return [
        _binance_spot("BTCUSDT", "BTC", tick="0.01", step="0.00001", market_max="120"),
        _binance_spot("ETHUSDT", "ETH", tick="0.01", step="0.0001", market_max="2000", max_qty="100000"),
        _binance_spot("SOLUSDT", "SOL", tick="0.01", step="0.001", market_max="20000", max_qty="900000"),
        _binance_usdm(
            "BTCUSDT",
            "BTC",
            tick="0.10",
            min_price="261.10",
            step="0.001",
            max_qty="1000",
            market_max="120",
            min_notional="100",
            price_precision=2,
            quantity_precision=3,
        ),
        _binance_usdm(
            "ETHUSDT",
            "ETH",
            tick="0.01",
            min_price="39.86",
            step="0.001",
            max_qty="10000",
            market_max="2000",
            min_notional="20",
            price_precision=2,
            quantity_precision=3,
        ),
        _bybit_spot("BTCUSDT", "BTC", tick="0.01", step="0.000001", min_qty="0.000048", max_qty="71.73956243"),
        _bybit_spot("ETHUSDT", "ETH", tick="0.01", step="0.00001", min_qty="0.00062", max_qty="1229.2336343"),
        _bybit_linear("BTCUSDT", "BTC", tick="0.10", step="0.001", max_qty="1190", market_max="119"),
        _bybit_linear("ETHUSDT", "ETH", tick="0.01", step="0.01", max_qty="7240", market_max="724"),
    ]


def catalogue_markets() -> list[MarketSpec]:
    """The default instruments plus more of the venues' popular ones: what the paper
    exchange's shipped snapshots were refreshed from (``python -m emulator --markets
    catalogue``). DOGEUSDT's filters follow Binance's published ones for the pair (price
    tick 0.00001, lot step 1, minimum notional 5 USDT) as known to the author; they are not
    fetched from Binance."""
    return default_markets() + [
        _binance_spot("DOGEUSDT", "DOGE", tick="0.00001", step="1", market_max="9000000", max_qty="9000000"),
    ]


DEFAULT_PRICES: dict[str, Decimal] = {
    "BTC": D("50000"),
    "ETH": D("3000"),
    "SOL": D("150"),
    "DOGE": D("0.15"),
    # Alpaca's stocks (alpaca.py)
    "AAPL": D("190"),
    "MSFT": D("410"),
    "SPY": D("500"),
    "F": D("12"),
    "BRK.A": D("600000"),
    "DLSTD": D("1"),
}
