"""From an alert's action and amount type to one order, for every executor.

An executor's ``prepare`` calls ``prepare_alert`` with an ``AccountReader`` — itself,
reading its exchange or ledger — and gets back one ``OrderRequest``, or ``NothingToDo``
(the alert is already satisfied), or ``Unprocessable`` (422, with the numbers). Only what
the alert needs is read: a plain order in base units reads nothing.

Sizing (``amount_type``):

* ``base`` — base units; contracts on derivatives.
* ``quote`` — quote currency. A spot market buy goes to the exchange as a cost where
  the venue takes one (``reader.buys_by_cost``); anything else is converted at
  the limit price, the stop price, or the current price (``reader.price``).
* ``percent_of_balance`` — a share of the free balance: of the quote currency for a spot
  buy, of the base currency for a spot sell; on derivatives, of the free settlement
  currency, times the leverage when the alert or the account sets one (the order's
  value, not its margin).
* ``percent_of_position`` — a share of the position (derivatives: the contracts held,
  and the order is reduce-only when it goes against the position; spot: the base
  currency held).

Positions (``target``, ``close``, ``flip``). On derivatives the position is the signed
contracts the exchange reports (long > 0; one-way mode). On spot it is the base
currency held: ``target`` moves the holding to the target (never below 0), ``close``
sells what is free, ``flip`` is refused. The order is one market order (a limit order
when the alert gives ``order_type: limit``) of the rounded difference; a difference
below the market's minimum order is nothing to do.

Precision and limits are checked after every conversion (``core.trading.markets.prepare_order``),
and a refusal quotes how the amount was reached.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal, Protocol

from core.errors import Unprocessable
from core.pipeline.models import Alert, NothingToDo, OrderRequest
from core.trading.markets import MarketBook, Side, Sizing, prepare_order, required, resolve_market
from core.trading.venue import Market

HUNDRED = Decimal(100)


class AccountReader(Protocol):
    """What ``prepare_alert`` may read of an account. Reading only: nothing is placed."""

    async def position(self, market: Market) -> Decimal:
        """The signed position in contracts on a derivatives market (long > 0, flat 0)."""

    async def balance(self, asset: str, market: Market) -> tuple[Decimal, Decimal]:
        """(free, total) of ``asset`` in the wallet that trades ``market``."""

    async def price(self, market: Market) -> Decimal:
        """The market's current price."""

    def buys_by_cost(self, market: Market) -> bool:
        """Whether a market buy on ``market`` can be sent as a quote amount (a cost)."""

    async def order_state(self, market: Market, order_id: str | None, client_order_id: str | None) -> str | None:
        """The order's status in the router's words (``core.trading.venue.OrderStatus``: open, filled,
        canceled, ...); None when there is no such order."""

    async def open_orders(self, market: Market) -> list[dict[str, Any]]:
        """The market's open orders (conditional ones included)."""


def show(value: Decimal | int) -> str:
    """A number for a message: plain decimal, at most 12 decimal places."""
    return format(round(Decimal(value), 12).normalize(), "f")


async def prepare_alert(
    book: MarketBook,
    alert: Alert,
    reader: AccountReader,
    *,
    account: str,
    client_order_id: str,
    default_type: str | None = None,
    leverage: int | None = None,
    margin_mode: str | None = None,
    reference_price: Any = None,
) -> OrderRequest:
    """The order an alert asks for on this account; ``NothingToDo`` or 422 otherwise.

    ``leverage``/``margin_mode`` are the account's defaults (the alert's own win);
    ``reference_price(symbol)`` values a market order for the minimum-cost check when
    the alert carries no price (the paper ledger's last price).
    """
    market = resolve_market(book, alert, default_type)
    if alert.action in ("cancel", "cancel_all"):
        return await _cancel(book, alert, reader, market, account=account, client_order_id=client_order_id)
    sizing: Sizing | None = None  # a plain order in base units: prepare_order takes its side and amount
    if alert.action != "order" or alert.amount_type != "base":
        planner = _Planner(book, alert, reader, market, leverage)
        if alert.action == "order":
            sizing = await planner.order()
        elif alert.action == "target":
            sizing = await planner.target()
        elif alert.action == "close":
            sizing = await planner.close()
        else:
            sizing = await planner.flip()
    return prepare_order(
        book,
        alert,
        account=account,
        client_order_id=client_order_id,
        default_type=default_type,
        reference_price=reference_price,
        market=market,
        sizing=sizing,
        leverage=leverage,
        margin_mode=margin_mode,
    )


class _Planner:
    """Works out one alert's side and size; reads through ``reader`` only what it needs."""

    def __init__(self, book: MarketBook, alert: Alert, reader: AccountReader, market: Market, leverage: int | None):
        self.book, self.alert, self.reader, self.market = book, alert, reader, market
        self.symbol = market.symbol
        self.venue = book.venue
        self.contract = market.contract
        self.unit = market.unit
        self.base, self.quote = market.base, market.quote
        self.leverage = alert.leverage or leverage

    # ------------------------------------------------------------ action: order

    async def order(self) -> Sizing:
        alert = self.alert
        side: Side = required(alert.side, "side")
        amount, kind = required(alert.amount, "amount"), alert.amount_type
        if kind == "base":
            return Sizing(side=side, amount=amount)
        if kind == "quote":
            return await self._from_quote(side, amount, None)
        pct = f"{show(amount)}%"
        if kind == "percent_of_balance":
            if self.contract:
                settle = self.market.settle or self.quote
                free, _ = await self.reader.balance(settle, self.market)
                lev = Decimal(self.leverage or 1)
                value = free * amount / HUNDRED * lev
                story = (
                    f"{pct} of {show(free)} {settle} free"
                    + (f" × {show(lev)} leverage" if lev != 1 else "")
                    + f" is {show(value)} {settle}"
                )
                return await self._from_quote(side, value, story)
            if side == "buy":
                free, _ = await self.reader.balance(self.quote, self.market)
                value = free * amount / HUNDRED
                return await self._from_quote(
                    side, value, f"{pct} of {show(free)} {self.quote} free is {show(value)} {self.quote}"
                )
            free, _ = await self.reader.balance(self.base, self.market)
            size = free * amount / HUNDRED
            return Sizing(
                side=side, amount=size, story=f"{pct} of {show(free)} {self.base} free is {show(size)} {self.base}"
            )
        # percent_of_position
        if self.contract:
            current = await self.reader.position(self.market)
            if current == 0:
                raise NothingToDo(f"no position on {self.symbol} to take {pct} of")
            size = abs(current) * amount / HUNDRED
            reduce_only = (current > 0) != (side == "buy")
            return Sizing(
                side=side,
                amount=size,
                reduce_only=reduce_only,
                position_before=current,
                story=f"{pct} of the {self._describe(current)} position is {show(size)} contracts",
            )
        free, total = await self.reader.balance(self.base, self.market)
        held = free if side == "sell" else total
        if held <= 0:
            raise NothingToDo(f"no {self.base} held on {self.venue} to take {pct} of")
        size = held * amount / HUNDRED
        return Sizing(
            side=side,
            amount=size,
            position_before=total,
            story=f"{pct} of the {show(held)} {self.base} {'free' if side == 'sell' else 'held'} "
            f"is {show(size)} {self.base}",
        )

    async def _from_quote(self, side: Side, value: Decimal, story: str | None) -> Sizing:
        """A quote amount as a cost (spot market buys, where supported) or converted at a price."""
        alert = self.alert
        if value <= 0:
            raise Unprocessable(
                f"{story or f'{show(value)} {self.quote}'}: nothing to trade", code="amount_below_minimum"
            )
        if (
            alert.order_type == "market"
            and side == "buy"
            and not self.contract
            and self.reader.buys_by_cost(self.market)
        ):
            return Sizing(side=side, amount=None, cost=value, story=story)
        if alert.order_type in ("limit", "stop_limit"):
            price = alert.price
        elif alert.order_type == "stop":
            price = alert.stop_price
        else:
            price = await self.reader.price(self.market)
        price = required(price, "price" if alert.order_type != "stop" else "stop_price")
        if price <= 0:
            raise Unprocessable(
                f"{self.venue} has no price for {self.symbol} to convert {show(value)} {self.quote} at", code="no_price"
            )
        size = value / price / self.market.contract_size
        told = story or f"{show(value)} {self.quote}"
        return Sizing(
            side=side, amount=size, story=f"{told} = {show(size)} {self.unit} at {show(price)}", reference_price=price
        )

    # ------------------------------------------------------------ positions

    def _describe(self, position: Decimal) -> str:
        if not self.contract:
            return f"{show(position)} {self.base}"
        if position == 0:
            return "flat"
        return f"{show(abs(position))} contracts {'long' if position > 0 else 'short'}"

    def _only(self, *kinds: str) -> None:
        if self.alert.amount_type not in kinds:
            raise Unprocessable(
                f"action {self.alert.action} takes amount_type {' or '.join(kinds)}, not {self.alert.amount_type}",
                code="invalid_alert",
            )

    def _no_protection(self) -> None:
        if self.alert.stop_loss is not None or self.alert.take_profit is not None:
            raise Unprocessable(f"action {self.alert.action} takes no stop_loss/take_profit", code="invalid_alert")

    def _no_stops(self) -> None:
        if self.alert.order_type in ("stop", "stop_limit"):
            raise Unprocessable(
                f"action {self.alert.action} places a market or limit order, not a "
                f"{self.alert.order_type.replace('_', '-')} order",
                code="invalid_alert",
            )

    def _rounded(self, amount: Decimal) -> Decimal:
        return Decimal(self.book.amount_to_precision(self.market, amount))

    def _min_amount(self) -> Decimal | None:
        return self.market.limits.amount_min

    async def _current(self) -> Decimal:
        if self.contract:
            return await self.reader.position(self.market)
        _, total = await self.reader.balance(self.base, self.market)
        return total

    def _move(self, current: Decimal, target: Decimal) -> Sizing:
        """One order from ``current`` to ``target``; nothing to do within the minimum order."""
        delta = target - current
        rounded = self._rounded(abs(delta))
        minimum = self._min_amount()
        if rounded == 0 or (minimum is not None and rounded < minimum):
            if delta == 0:
                raise NothingToDo(f"position is already {self._describe(current)} on {self.symbol}")
            raise NothingToDo(
                f"the position on {self.symbol} is {self._describe(current)}, {show(abs(delta))} {self.unit} from "
                f"the target {self._describe(target)}: less than the smallest order"
                + (f" ({show(minimum)})" if minimum is not None else "")
            )
        side: Side = "buy" if delta > 0 else "sell"
        reduce_only = self.contract and (target == 0 or (target > 0) == (current > 0)) and abs(target) < abs(current)
        story = (
            f"going from {self._describe(current)} to {self._describe(target)} on {self.symbol} "
            f"is a {side} of {show(abs(delta))} {self.unit}"
        )
        return Sizing(
            side=side,
            amount=abs(delta),
            story=story,
            reduce_only=reduce_only,
            position_before=current,
            position_after=target,
        )

    async def target(self) -> Sizing:
        self._only("base")
        self._no_stops()
        target = required(self.alert.target, "target")
        if not self.contract and target < 0:
            raise Unprocessable(
                f"{self.symbol} is a spot market: the position cannot go short (target {show(target)})",
                code="invalid_alert",
            )
        return self._move(await self._current(), target)

    async def flip(self) -> Sizing:
        self._only("base")
        self._no_stops()
        if not self.contract:
            raise Unprocessable(
                f"flip needs a derivatives market; {self.symbol} is spot and cannot go short "
                "(send action close to sell what you hold)",
                code="not_supported",
            )
        current = await self.reader.position(self.market)
        if current == 0:
            raise NothingToDo(f"no position to flip on {self.symbol}")
        size = self.alert.amount if self.alert.amount is not None else abs(current)
        return self._move(current, -size if current > 0 else size)

    async def close(self) -> Sizing:
        self._only("base", "percent_of_position")
        self._no_stops()
        self._no_protection()
        alert = self.alert
        if self.contract:
            current = await self.reader.position(self.market)
            if current == 0:
                raise NothingToDo(f"no position to close on {self.symbol}")
            held = abs(current)
        else:
            held, _ = await self.reader.balance(self.base, self.market)
            current = held
            minimum = self._min_amount()
            if self._rounded(held) == 0 or (minimum is not None and self._rounded(held) < minimum):
                raise NothingToDo(
                    f"no position to close on {self.symbol}: {show(held)} {self.base} free is less than the "
                    f"smallest order ({show(minimum or 0)})"
                )
        size = held
        if alert.amount is not None:
            size = min(held, alert.amount if alert.amount_type == "base" else held * alert.amount / HUNDRED)
        side: Side = "sell" if current > 0 else "buy"
        after = current - size if current > 0 else current + size
        story = f"closing {show(size)} {self.unit} of the {self._describe(current)} position on {self.symbol}"
        sizing = Sizing(
            side=side,
            amount=size,
            story=story,
            reduce_only=self.contract,
            position_before=current,
            position_after=after,
        )
        if not self.contract:
            await self._skip_dust(sizing)
        return sizing

    async def _skip_dust(self, sizing: Sizing) -> None:
        """Spot: a holding worth less than the minimum order value is dust, not a position."""
        min_cost = self.market.limits.cost_min
        if not min_cost or sizing.amount is None:
            return
        price = self.alert.price or await self.reader.price(self.market)
        value = self._rounded(sizing.amount) * price
        if value < Decimal(str(min_cost)):
            raise NothingToDo(
                f"no position to close on {self.symbol}: {show(sizing.amount)} {self.base} is worth "
                f"{show(value)} {self.quote}, less than the smallest order "
                f"({show(Decimal(str(min_cost)))} {self.quote})"
            )
        sizing.reference_price = price


async def _cancel(
    book: MarketBook, alert: Alert, reader: AccountReader, market: Market, *, account: str, client_order_id: str
) -> OrderRequest:
    symbol = market.symbol

    def request(
        action: Literal["cancel", "cancel_all"], cancel_id: str | None = None, cancel_client_order_id: str | None = None
    ) -> OrderRequest:
        return OrderRequest(
            account=account,
            exchange=book.venue,
            symbol=symbol,
            market_type=market.type,
            client_order_id=client_order_id,
            params=dict(alert.params),
            action=action,
            cancel_id=cancel_id,
            cancel_client_order_id=cancel_client_order_id,
        )

    if alert.action == "cancel_all":
        if not await reader.open_orders(market):
            raise NothingToDo(f"no open orders on {symbol}")
        return request("cancel_all")
    what = f"order {alert.order_id}" if alert.order_id else f"order with client id {alert.cancel_client_order_id}"
    state = await reader.order_state(market, alert.order_id, alert.cancel_client_order_id)
    if state is None:
        raise Unprocessable(f"no {what} on {symbol} at {book.venue}", code="order_not_found")
    if state not in ("open", "partially_filled"):
        raise NothingToDo(f"{what} on {symbol} is already {state}")
    return request("cancel", alert.order_id, alert.cancel_client_order_id)
