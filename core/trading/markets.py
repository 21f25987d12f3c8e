"""TradingView tickers → the account's markets, and the checks an order must pass first.

Everything here works on core's own ``core.trading.venue.Market`` — whatever the venue plugin
(ccxt, paper, a broker's API) translated its market data into — collected in one
``MarketBook`` per account. Resolution uses only that data: no hand-kept quote lists.
Accepted forms: ``BINANCE:BTCUSDT``, ``BTCUSDT``, ``BTCUSDT.P`` (perpetual), ``BTC/USDT``,
``BTC/USDT:USDT``, ``XBTUSD`` (an alias), ``BTC-USDT``, ``NASDAQ:AAPL``. Where one id names
a spot market and a perpetual, ``market_type`` (or ``.P``) decides, else the account's
default market type.

Precision: amounts are truncated to the market's step, prices rounded (half up) to its
tick. Min/max amount, min cost, the price tick and market status are checked here, before
anything is sent: every refusal is a 422 whose message says what to change.

``prepare_order`` turns an alert into an ``OrderRequest``: the amount (or, for a market
buy sized by cost, the cost), limit and stop prices, post-only / reduce-only / time in
force, stop-loss and take-profit (rounded to the tick, on the right side of the entry)
and leverage / margin mode (derivatives only). The side and size come from a ``Sizing``
that ``core.trading.sizing`` works out from the alert's action and amount type — a plain order
in base units needs none — and its ``story`` prefixes the refusals of converted amounts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, DecimalException
from typing import Any, Literal, TypeVar

from core.errors import Unprocessable
from core.pipeline.models import Alert, OrderRequest
from core.trading.venue import Market

_PERP_SUFFIX = re.compile(r"(\.P|PERP)$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[-_/:.]")
RESOLVED_KEPT = 4096  # resolved tickers a MarketBook remembers
_TYPE_ALIASES = {
    "spot": "spot",
    "swap": "swap",
    "perp": "swap",
    "perpetual": "swap",
    "future": "future",
    "futures": "future",
}


def _squash(text: str) -> str:
    return _SEPARATORS.sub("", text).upper()


class MarketBook:
    """One venue's markets (``core.trading.venue.Market``), indexed for ticker look-ups, with the
    precision rules orders follow. Build a new one when the markets are reloaded."""

    def __init__(self, venue: str, markets: Iterable[Market]):
        self.venue = venue
        self.markets: dict[str, Market] = {}
        self.by_id: dict[str, list[Market]] = {}
        self.by_alias: dict[str, list[Market]] = {}
        self.by_squashed: dict[str, list[Market]] = {}
        for market in markets:
            self.markets[market.symbol] = market
            self.by_id.setdefault(market.id, []).append(market)
            for alias in market.aliases:
                self.by_alias.setdefault(alias.upper(), []).append(market)
            keys = {_squash(market.id), _squash(f"{market.base}{market.quote}")} | {_squash(a) for a in market.aliases}
            for key in keys:
                self.by_squashed.setdefault(key, []).append(market)
        # Tickers resolved before: the book never changes (a reload builds a new one), so a
        # ticker resolves to the same market every time; refusals are not kept.
        self._resolved: dict[tuple[str, str | None, str | None], Market] = {}

    def __len__(self) -> int:
        return len(self.markets)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.markets

    def market(self, symbol: str) -> Market:
        """The market of an order's ``symbol`` (the venue's unified name)."""
        try:
            return self.markets[symbol]
        except KeyError:
            raise Unprocessable(f"symbol '{symbol}' is not a market on {self.venue}", code="unknown_symbol") from None

    def resolve(self, ticker: str, market_type: str | None, default_type: str | None) -> Market:
        """The market ``ticker`` names (of ``market_type``, else preferring ``default_type``); 422 when none."""
        key = (ticker, market_type, default_type)
        market = self._resolved.get(key)
        if market is None:
            market = self._resolve(ticker, market_type, default_type)
            if len(self._resolved) >= RESOLVED_KEPT:
                self._resolved.clear()  # a bound on what many distinct tickers could grow it to
            self._resolved[key] = market
        return market

    def _resolve(self, ticker: str, market_type: str | None, default_type: str | None) -> Market:
        # An exchange prefix (BINANCE:BTCUSDT, BINANCE:BTC/USDT) goes; a settle suffix
        # (BTC/USDT:USDT) stays: the prefix is the part before ':' without a '/'.
        head, colon, tail = ticker.partition(":")
        name = tail if colon and "/" not in head and tail else ticker
        wanted = _TYPE_ALIASES.get(market_type or "", None)
        if _PERP_SUFFIX.search(name) and "/" not in name:
            name = _PERP_SUFFIX.sub("", name)
            wanted = wanted or "swap"
        if name in self.markets:
            candidates = [self.markets[name]]
        else:
            candidates = list(
                self.by_id.get(name) or self.by_id.get(name.upper()) or self.by_alias.get(name.upper()) or []
            )
            if not candidates:
                candidates = list(self.by_squashed.get(_squash(name), []))
        if wanted:
            typed = [m for m in candidates if m.type == wanted]
            if not typed:
                raise Unprocessable(
                    f"symbol '{ticker}' is not a {wanted} market on {self.venue}"
                    + (f" (found: {', '.join(sorted({m.symbol for m in candidates}))})" if candidates else ""),
                    code="unknown_symbol",
                )
            candidates = typed
        if not candidates:
            raise Unprocessable(f"symbol '{ticker}' is not a market on {self.venue}", code="unknown_symbol")
        if len(candidates) > 1:
            preferred = [m for m in candidates if m.type == (default_type or "spot")] or candidates
            # Then spot, perpetuals before dated futures, linear (USDT-settled) before inverse.
            candidates = sorted(
                preferred, key=lambda m: (m.type not in ("spot", "swap"), m.type != "spot", m.linear is False, m.symbol)
            )
        return candidates[0]

    # -- precision

    def amount_to_precision(self, market: Market, value: Any) -> str:
        """An amount truncated to the market's step (never rounded up past what was asked)."""
        return format(self.amount_on_step(market, value), "f")

    def amount_on_step(self, market: Market, value: Any) -> Decimal:
        """``amount_to_precision`` as the Decimal its text reads (normalized), without the text."""
        return _on_step(_decimal(value), market.amount_step, ROUND_DOWN).normalize()

    def price_to_precision(self, market: Market, value: Any) -> str:
        """A price rounded (half up) to the market's tick."""
        return _to_step(_decimal(value), market.price_tick, ROUND_HALF_UP)

    def cost_to_precision(self, market: Market, value: Any) -> str:
        """A quote amount truncated to the price tick."""
        return _to_step(_decimal(value), market.price_tick, ROUND_DOWN)


def _decimal(value: Any) -> Decimal:
    """``value`` as a Decimal: a Decimal as it is, anything else through its text."""
    return value if type(value) is Decimal else Decimal(str(value))


def _to_step(value: Decimal, step: Decimal | None, rounding: str) -> str:
    return _fmt(_on_step(value, step, rounding))


def _on_step(value: Decimal, step: Decimal | None, rounding: str) -> Decimal:
    if step is None or step <= 0:
        return value
    return (value / step).to_integral_value(rounding=rounding) * step


def _fmt(value: Any) -> str:
    # A Decimal as it is (Decimal(str(d)) is d); anything else through its text (a float's shortest form).
    return format((value if type(value) is Decimal else Decimal(str(value))).normalize(), "f")


def resolve_market(book: MarketBook, alert: Alert, default_type: str | None = None) -> Market:
    """The market an alert trades in ``book``; 422 when it is unknown or not trading."""
    market = book.resolve(alert.symbol, alert.market_type, default_type)
    if not market.active:
        raise Unprocessable(f"market {market.symbol} is not trading on {book.venue} now", code="market_closed")
    return market


Side = Literal["buy", "sell"]
T = TypeVar("T")


def required(value: T | None, name: str) -> T:
    """An alert field that the alert model requires for this action or order type (checked
    when the alert was parsed); should it be missing all the same, a 422 naming it."""
    if value is None:
        raise Unprocessable(f"the alert has no {name}, which this order needs", code="invalid_order")
    return value


@dataclass
class Sizing:
    """An order's side and size as ``core.trading.sizing`` worked them out from the alert's action,
    amount type and what the account holds; ``prepare_order`` then rounds and checks it.

    ``story`` tells how the amount was arrived at ("10% of 100 USDT free is 10 USDT =
    0.0002 BTC at 50000"): refusals quote it, so the trader sees the numbers.
    """

    side: Side
    amount: Decimal | None  # base units (contracts on derivatives); None for a market buy sized by cost
    cost: Decimal | None = None  # quote amount of a market buy the exchange sizes itself
    story: str | None = None
    reduce_only: bool = False
    position_before: Decimal | None = None
    position_after: Decimal | None = None  # target / flip: where the position goes
    reference_price: Decimal | None = None  # the price a conversion used


def prepare_order(
    book: MarketBook,
    alert: Alert,
    *,
    account: str,
    client_order_id: str,
    default_type: str | None = None,
    reference_price: Callable[[str], Decimal | None] | None = None,
    market: Market | None = None,
    sizing: Sizing | None = None,
    leverage: int | None = None,
    margin_mode: str | None = None,
) -> OrderRequest:
    """Resolve, round and check an alert into an order on ``book``'s venue; 422 on refusal.

    Without ``sizing`` the alert must be a plain order (action ``order``) in base units;
    ``core.trading.sizing.prepare_alert`` handles the other actions and amount types and hands
    its result here as ``sizing``. ``leverage``/``margin_mode`` are the account's
    defaults (derivatives only); the alert's own win.

    A market order is valued at the alert's price (TradingView's ``{{close}}``), else at
    ``reference_price(symbol)`` (the last price the executor knows, if any), for the
    minimum-cost check; with neither, that check is left to the exchange.
    """
    venue = book.venue
    if sizing is None:
        if alert.action != "order" or alert.amount_type != "base":
            raise Unprocessable(
                f"{venue}: action '{alert.action}' with amount_type '{alert.amount_type}' needs the "
                f"account's balances and positions, which this executor does not read",
                code="not_supported",
            )
        sizing = Sizing(side=required(alert.side, "side"), amount=required(alert.amount, "amount"))
    market = market or resolve_market(book, alert, default_type)
    symbol = market.symbol
    contract = market.contract
    params = dict(alert.params)
    reduce_only = sizing.reduce_only or alert.reduce_only or params.get("reduceOnly") in (True, "true")
    if not contract:
        for name, value in (
            ("reduce_only", reduce_only),
            ("leverage", alert.leverage),
            ("margin_mode", alert.margin_mode),
        ):
            if value:
                raise Unprocessable(
                    f"{name} applies to derivatives; {symbol} is a spot market on {venue}"
                    + (" (to sell what you hold, send action close)" if name == "reduce_only" else ""),
                    code="not_supported",
                )
    post_only = alert.post_only or alert.time_in_force == "PO"
    limit_like = alert.order_type in ("limit", "stop_limit")
    if post_only and alert.order_type != "limit":
        raise Unprocessable(
            f"post_only needs a limit order (this is a {alert.order_type.replace('_', '-')} order)",
            code="invalid_order",
        )
    if sizing.cost is not None and alert.order_type != "market":
        raise Unprocessable("an order sized by cost must be a market buy", code="invalid_order")

    amount: str | None = None
    amount_value: Decimal | None = None  # the amount's Decimal, for the cost check
    if sizing.amount is not None:
        amount, amount_value = _checked_amount(book, market, sizing, alert.order_type)

    price = _checked_price(book, market, "price", alert.price) if limit_like else None
    stop_price = (
        _checked_price(book, market, "stop_price", alert.stop_price)
        if alert.order_type in ("stop", "stop_limit")
        else None
    )
    value_price = (
        Decimal(price)
        if price
        else Decimal(stop_price)
        if stop_price
        else alert.price or sizing.reference_price or (reference_price(symbol) if reference_price else None)
    )
    cost: str | None = None
    if sizing.cost is not None:
        cost = book.cost_to_precision(market, sizing.cost)
    _check_cost(market, venue, sizing, amount_value, cost, value_price, reduce_only=reduce_only and contract)
    stop_loss, take_profit = _protection(book, market, alert, sizing, value_price)
    return OrderRequest(
        account=account,
        exchange=venue,
        symbol=symbol,
        market_type=market.type,
        side=sizing.side,
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


def _checked_amount(book: MarketBook, market: Market, sizing: Sizing, order_type: str) -> tuple[str, Decimal]:
    """The amount after the market's precision (its text and its Decimal), within its limits; 422 otherwise."""
    symbol, venue = market.symbol, book.venue
    limits = market.limits
    requested = required(sizing.amount, "amount")
    min_amount = limits.amount_min
    if min_amount is not None and requested < min_amount:
        raise Unprocessable(
            f"{_lead(sizing, market)} below the minimum {_fmt(min_amount)} for {symbol} on {venue}",
            code="amount_below_minimum",
        )
    max_amount = limits.amount_max
    if max_amount is not None and requested > max_amount:
        raise Unprocessable(
            f"{_lead(sizing, market)} above the maximum {_fmt(max_amount)} for {symbol} on {venue}",
            code="amount_above_maximum",
        )
    max_market = limits.market_amount_max  # binance's MARKET_LOT_SIZE
    if order_type in ("market", "stop") and max_market and requested > max_market:
        raise Unprocessable(
            f"{_lead(sizing, market)} above the maximum {_fmt(max_market)} for a market order on {symbol} on {venue}",
            code="amount_above_maximum",
        )
    rounded = book.amount_on_step(market, requested)
    amount = format(rounded, "f")
    if rounded <= 0:
        raise Unprocessable(
            f"{_subject(sizing, market)}{', which' if sizing.story else ''} rounds to 0 at {symbol}'s step "
            f"{_step_text(market)} on {venue}",
            code="amount_below_minimum",
        )
    if min_amount is not None and rounded < min_amount:
        # A step that does not divide the minimum: the rounded amount fell below it.
        raise Unprocessable(
            f"{_subject(sizing, market)}{', which' if sizing.story else ''} rounds down to {_fmt(amount)} at the "
            f"step {_step_text(market)}, below the minimum {_fmt(min_amount)} for {symbol} on {venue}",
            code="amount_below_minimum",
        )
    return amount, rounded


# The words of an amount's refusal, written only for one (an amount that passes needs none).


def _subject(sizing: Sizing, market: Market) -> str:
    return sizing.story or f"amount {_fmt(sizing.amount)} {market.unit}"


def _lead(sizing: Sizing, market: Market) -> str:
    return f"{sizing.story}," if sizing.story else f"{_subject(sizing, market)} is"


def _step_text(market: Market) -> str:
    return _fmt(market.amount_step) if market.amount_step else "?"


def _checked_price(book: MarketBook, market: Market, name: str, value: Decimal | None) -> str:
    """A limit or trigger price: on the tick and within the market's range, else 422."""
    value = required(value, name)
    symbol, venue = market.symbol, book.venue
    label = "price" if name == "price" else "stop_price"
    try:
        rounded = book.price_to_precision(market, value)
    except DecimalException:  # e.g. Underflow of a price far below any tick
        raise Unprocessable(
            f"{label} {value} cannot be rounded to a tick for {symbol} on {venue}", code="price_off_tick"
        ) from None
    if Decimal(rounded) != value:
        tick = market.price_tick
        raise Unprocessable(
            f"{label} {_fmt(value)} is not a multiple of the tick {_fmt(tick) if tick else '?'} "
            f"for {symbol} on {venue}",
            code="price_off_tick",
        )
    limits = market.limits
    if limits.price_min and value < limits.price_min:
        raise Unprocessable(
            f"{label} {_fmt(value)} is below the minimum {_fmt(limits.price_min)} for {symbol} on {venue}",
            code="price_out_of_range",
        )
    if limits.price_max and value > limits.price_max:
        raise Unprocessable(
            f"{label} {_fmt(value)} is above the maximum {_fmt(limits.price_max)} for {symbol} on {venue}",
            code="price_out_of_range",
        )
    return rounded


def _check_cost(
    market: Market,
    venue: str,
    sizing: Sizing,
    amount: Decimal | None,
    cost: str | None,
    value_price: Decimal | None,
    *,
    reduce_only: bool,
) -> None:
    cost_min, cost_max = market.limits.cost_min, market.limits.cost_max
    if not (cost_min or cost_max):
        return
    if cost is not None:
        value = Decimal(cost)
    elif amount is not None and value_price is not None:
        value = amount * market.contract_size * value_price
    else:
        return  # a market order without a price: the exchange checks
    symbol, quote = market.symbol, market.quote
    lead = f"{sizing.story}: order value" if sizing.story else "order value"
    # Reduce-only orders on derivatives may be smaller than the minimum value (binance, bybit).
    if cost_min and value < cost_min and not reduce_only:
        raise Unprocessable(
            f"{lead} {_fmt(value)} {quote} is below the minimum {_fmt(cost_min)} for {symbol} on {venue}",
            code="cost_below_minimum",
        )
    if cost_max and value > cost_max:
        raise Unprocessable(
            f"{lead} {_fmt(value)} {quote} is above the maximum {_fmt(cost_max)} for {symbol} on {venue}",
            code="cost_above_maximum",
        )


def _protection(
    book: MarketBook, market: Market, alert: Alert, sizing: Sizing, reference: Decimal | None
) -> tuple[str | None, str | None]:
    """Stop-loss and take-profit trigger prices, rounded to the tick and on the right side of
    the entry: below it (stop-loss) and above it (take-profit) for a long, the reverse for a short."""
    if alert.stop_loss is None and alert.take_profit is None:
        return None, None
    symbol = market.symbol
    if sizing.position_after is not None:
        if sizing.position_after == 0:
            raise Unprocessable(
                f"stop_loss/take_profit protect a position, and this alert leaves {symbol} flat", code="invalid_order"
            )
        long = sizing.position_after > 0
    else:
        long = sizing.side == "buy"
    rounded = [
        book.price_to_precision(market, v) if v is not None else None for v in (alert.stop_loss, alert.take_profit)
    ]
    if reference is not None:
        what = f"{'long' if long else 'short'} entry at {_fmt(reference)}"
        stop_loss, take_profit = (Decimal(v) if v is not None else None for v in rounded)
        if stop_loss is not None and (stop_loss >= reference if long else stop_loss <= reference):
            raise Unprocessable(
                f"stop_loss {_fmt(stop_loss)} must be {'below' if long else 'above'} the {what} on {symbol}",
                code="invalid_order",
            )
        if take_profit is not None and (take_profit <= reference if long else take_profit >= reference):
            raise Unprocessable(
                f"take_profit {_fmt(take_profit)} must be {'above' if long else 'below'} the {what} on {symbol}",
                code="invalid_order",
            )
    return rounded[0], rounded[1]
