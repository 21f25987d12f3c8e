"""What core's sizing reads of an Alpaca account, and Alpaca's order statuses in the router's words.

``AlpacaAccountReader`` is the ``core.trading.sizing.AccountReader`` of one alert: buying power
and cash, holdings from ``GET /v2/positions/{symbol}``, order states. Alpaca's trading API
quotes no prices: a price is the alert's, else the held position's current price.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.errors import Unprocessable
from core.pipeline.models import Alert
from core.trading.venue import Market, OrderStatus, order_status
from plugins.exchanges.alpaca.client import AlpacaClient, NotFound

# Alpaca's statuses for a live order that core's status words do not list.
STILL_OPEN = frozenset({"accepted_for_bidding", "calculated", "pending_replace", "stopped", "suspended"})


def status_word(alpaca_status: object) -> OrderStatus:
    """An Alpaca order status in the router's words (filled, open, canceled, ...)."""
    word = str(alpaca_status or "").lower()
    return "open" if word in STILL_OPEN else order_status(word)


def refuse(message: str, code: str = "unprocessable") -> Unprocessable:
    """A 422 with the code of what Alpaca cannot do."""
    return Unprocessable(message, code=code)


class AlpacaAccountReader:
    """What core's sizing reads of the account for one alert (``core.trading.sizing.AccountReader``):
    buying power and cash, holdings from ``GET /v2/positions/{symbol}``, order states.
    Alpaca's trading API quotes no prices: a price is the alert's, else the held
    position's current price."""

    def __init__(self, client: AlpacaClient, alert: Alert):
        self.client = client
        self.alert = alert
        self._positions: dict[str, dict[str, Any] | None] = {}

    async def _position(self, symbol: str) -> dict[str, Any] | None:
        if symbol not in self._positions:
            self._positions[symbol] = await self.client.position(symbol)
        return self._positions[symbol]

    async def position(self, market: Market) -> Decimal:
        return Decimal(0)  # no derivatives at Alpaca: holdings are balances

    async def balance(self, asset: str, market: Market) -> tuple[Decimal, Decimal]:
        """Dollars: the buying power (free) and the cash; a coin or stock: the position
        held (``qty_available`` free, ``qty`` in all) — USDT of a BTC/USDT buy is Alpaca's
        USDT/USD position."""
        if asset == "USD":
            account = await self.client.account()
            crypto = market.info.get("class") == "crypto"
            power = account.get("non_marginable_buying_power" if crypto else "buying_power") or "0"
            return Decimal(str(power)), Decimal(str(account.get("cash") or power))
        row = await self._position(market.symbol if asset == market.base else f"{asset}/USD")
        if not row:
            return Decimal(0), Decimal(0)
        held = Decimal(str(row.get("qty") or 0))
        free = row.get("qty_available")
        return (Decimal(str(free)) if free is not None else held), held

    async def price(self, market: Market) -> Decimal:
        if self.alert.price is not None:
            return self.alert.price
        row = await self._position(market.symbol)
        if row and row.get("current_price"):
            return Decimal(str(row["current_price"]))
        raise refuse(
            f"Alpaca's trading API quotes no price for {market.symbol}: send the alert's price "
            "(TradingView's {{close}}) to convert the amount",
            "no_price",
        )

    def buys_by_cost(self, market: Market) -> bool:
        return market.buys_by_cost

    async def order_state(self, market: Market, order_id: str | None, client_order_id: str | None) -> str | None:
        try:
            if order_id:
                return status_word((await self.client.order(order_id)).get("status"))
            if client_order_id:
                return status_word((await self.client.order_by_client_id(client_order_id)).get("status"))
        except NotFound:
            return None
        return None

    async def open_orders(self, market: Market) -> list[dict[str, Any]]:
        return await self.client.open_orders(market.symbol)
