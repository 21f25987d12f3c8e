"""What a ccxt account reads: positions, balances, prices, open orders — never an order placed.

``core.trading.sizing.prepare_alert`` reads the account through these (its ``AccountReader``:
``book``, ``position``, ``balance``, ``price``, ``buys_by_cost``, ``order_state``,
``open_orders``); the risk limits, the kill switch's flatten and the position sync use the
optional reads of ``core.trading.execution.Executor`` (``fetch_*``); the dashboard shows
``account_snapshot``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.errors import Unprocessable
from core.trading.execution import VenueNotSupported
from core.trading.markets import MarketBook
from core.trading.venue import Market, order_status
from plugins.exchanges.ccxt.lifecycle import ClientLifecycle
from plugins.exchanges.ccxt.lookup import SEPARATE_TRIGGER_BOOKS, class_names
from plugins.exchanges.ccxt.markets import market_book


def _text_or_none(value: Any) -> str | None:
    return None if value is None else format(Decimal(str(value)), "f")


class AccountReads(ClientLifecycle):
    """The account's balances, positions, prices and open orders, read through ccxt."""

    async def account_snapshot(self) -> dict[str, Any]:
        """Balances, positions and open orders read through ccxt now (for the dashboard);
        a part the exchange refuses or ccxt lacks is named in ``errors``."""
        snapshot: dict[str, Any] = {"balances": {}, "positions": [], "open_orders": [], "errors": {}}
        async with self._use():
            try:
                raw = await self.client.fetch_balance({"type": self.default_type} if self.default_type else {})
                for asset, total in (raw.get("total") or {}).items():
                    if total:
                        snapshot["balances"][asset] = {
                            k: _text_or_none((raw.get(k) or {}).get(asset)) for k in ("free", "used", "total")
                        }
            except Exception as exc:
                snapshot["errors"]["balances"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            contracts = [t for t in (self.options.market_types or []) if t in ("swap", "future")]
            if contracts and self.client.has.get("fetchPositions"):
                try:
                    for p in await self.client.fetch_positions():
                        if p and p.get("contracts"):
                            snapshot["positions"].append(
                                {
                                    "symbol": p.get("symbol"),
                                    "contracts": _text_or_none(p.get("contracts")),
                                    "side": p.get("side"),
                                    "entry_price": _text_or_none(p.get("entryPrice")),
                                }
                            )
                except Exception as exc:
                    snapshot["errors"]["positions"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            if self.client.has.get("fetchOpenOrders"):
                try:
                    # Without a symbol: binance weighs it heavily and ccxt refuses unless told it is meant
                    # (ccxt internal: binance's options["warnOnFetchOpenOrdersWithoutSymbol"]).
                    self.client.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
                    for o in await self.client.fetch_open_orders():
                        snapshot["open_orders"].append(
                            {
                                "symbol": o.get("symbol"),
                                "side": o.get("side"),
                                "type": o.get("type"),
                                "amount": _text_or_none(o.get("amount")),
                                "price": _text_or_none(o.get("price")),
                                "id": o.get("id"),
                                "client_order_id": o.get("clientOrderId"),
                            }
                        )
                except Exception as exc:
                    snapshot["errors"]["open_orders"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            else:
                snapshot["errors"]["open_orders"] = f"ccxt cannot list open orders on {self.exchange}"
        return snapshot

    # -- what prepare_alert reads (core.trading.sizing.AccountReader)

    @property
    def book(self) -> MarketBook:
        """The account's markets in core's terms (rebuilt when ccxt reloads them)."""
        return market_book(self.client)

    async def position(self, market: Market) -> Decimal:
        """The signed contracts held on ``market`` (long > 0), from fetch_positions."""
        symbol = market.symbol
        if self.client.has.get("fetchPositions"):
            positions = await self.client.fetch_positions([symbol])
        elif self.client.has.get("fetchPosition"):
            positions = [await self.client.fetch_position(symbol)]
        else:
            raise Unprocessable(f"ccxt cannot read positions on {self.exchange}", code="not_supported")
        total = Decimal(0)
        for position in positions or []:
            if not position or position.get("symbol") != symbol:
                continue
            contracts = Decimal(str(position.get("contracts") or 0))
            side = position.get("side")
            total += -abs(contracts) if side == "short" else abs(contracts) if side == "long" else contracts
        return total

    async def balance(self, asset: str, market: Market) -> tuple[Decimal, Decimal]:
        balances = await self.client.fetch_balance({"type": market.type})
        entry = balances.get(asset) or {}
        total = entry.get("total")
        free = entry.get("free")
        free = total if free is None else free
        return Decimal(str(free or 0)), Decimal(str(total or 0))

    async def price(self, market: Market) -> Decimal:
        ticker = await self.client.fetch_ticker(market.symbol)
        price = ticker.get("last") or ticker.get("close")
        if not price and ticker.get("bid") and ticker.get("ask"):
            price = (ticker["bid"] + ticker["ask"]) / 2
        return Decimal(str(price or 0))

    def buys_by_cost(self, market: Market) -> bool:
        return market.buys_by_cost

    async def order_state(self, market: Market, order_id: str | None, client_order_id: str | None) -> str | None:
        found = await self._fetch_order(market.symbol, order_id, client_order_id)
        return order_status(found.get("status") or "open") if found else None

    async def open_orders(self, market: Market) -> list[dict[str, Any]]:
        return await self._open_orders(market.symbol)

    # -- the optional reads of core.trading.execution.Executor (risk limits, flatten, position sync)

    async def fetch_last_price(self, symbol: str) -> Decimal:
        async with self._use():
            return await self.price(self.book.market(symbol))

    async def fetch_position(self, symbol: str) -> Decimal:
        market = self.book.market(symbol)
        async with self._use():
            if market.contract:
                return await self.position(market)
            return (await self.balance(market.base, market))[1]

    def _contract_types(self) -> list[str]:
        return sorted({m.get("type") for m in (self.client.markets or {}).values() if m.get("contract")} - {None})

    async def fetch_positions(self) -> dict[str, Decimal]:
        if not self._contract_types():
            return {}
        if not self.client.has.get("fetchPositions"):
            raise VenueNotSupported(f"ccxt cannot list positions on {self.exchange}")
        held: dict[str, Decimal] = {}
        async with self._use():
            for position in await self.client.fetch_positions() or []:
                symbol, contracts = position.get("symbol"), Decimal(str(position.get("contracts") or 0))
                if not symbol or not contracts:
                    continue
                side = position.get("side")
                signed = -abs(contracts) if side == "short" else abs(contracts) if side == "long" else contracts
                held[symbol] = held.get(symbol, Decimal(0)) + signed
        return {symbol: size for symbol, size in held.items() if size}

    async def fetch_equity(self, currency: str) -> Decimal:
        """The total of ``currency`` in the derivatives wallet where the account trades
        contracts (ccxt's total there includes unrealized profit), else the spot one."""
        types = self._contract_types()
        async with self._use():
            balances = await self.client.fetch_balance({"type": types[0]} if types else {})
        total = (balances.get(currency) or {}).get("total")
        return Decimal(str(total or 0))

    async def fetch_open_orders(self) -> dict[str, int]:
        if not self.client.has.get("fetchOpenOrders"):
            raise VenueNotSupported(f"ccxt cannot list open orders on {self.exchange}")
        # Listing without a symbol is deliberate here (a flatten must see every market). ccxt internals:
        # binance's options["warnOnFetchOpenOrdersWithoutSymbol"] and options["fetchOpenOrders"]["warnWithoutSymbol"].
        self.client.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
        if isinstance(self.client.options.get("fetchOpenOrders"), dict):
            self.client.options["fetchOpenOrders"]["warnWithoutSymbol"] = False
        types = sorted({m.get("type") for m in (self.client.markets or {}).values()} - {None})
        seen: dict[str, set[str]] = {}
        async with self._use():
            for kind in types:
                books = [{"type": kind}]
                if kind != "spot" and class_names(self.client) & SEPARATE_TRIGGER_BOOKS:
                    books.append({"type": kind, "trigger": True})
                for params in books:
                    for order in await self.client.fetch_open_orders(None, None, None, params):
                        seen.setdefault(order["symbol"], set()).add(str(order.get("id")))
        return {symbol: len(ids) for symbol, ids in seen.items()}
