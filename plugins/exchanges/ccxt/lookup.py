"""Finding orders on a ccxt exchange: by id or client order id, in every book they may be in.

Reconciliation asks ``lookup`` about an order whose outcome is unknown: the order with the
alert's client order id (its missing stop-loss / take-profit placed now), whether a
cancel's order is now canceled, or whether a cancel-all left nothing open. Exchanges differ
in how an order can be found by client id: ``fetchOrder`` takes ``params['clientOrderId']``
(``FETCH_ORDER_BY_CLIENT_ID``), the order lists filter by it (``LIST_ORDERS_BY_CLIENT_ID``),
or neither, and then the recent orders are scanned — where "not seen" cannot mean "absent".
binance keeps conditional contract orders (its Algo Order API) apart: ccxt reaches them with
``params={'trigger': True}`` (``SEPARATE_TRIGGER_BOOKS``).
"""

from __future__ import annotations

from typing import Any

import ccxt

from core.pipeline.models import OrderRequest
from core.trading.execution import LookupResult
from plugins.exchanges.ccxt.lifecycle import ClientLifecycle

# Exchanges whose fetchOrder takes params['clientOrderId'] (checked in ccxt 4.5's source);
# matched against the ccxt class and its bases, so binanceusdm counts as binance.
FETCH_ORDER_BY_CLIENT_ID = frozenset(
    {
        "binance",
        "okx",
        "bitget",
        "kucoin",
        "mexc",
        "gate",
        "htx",
        "kraken",
        "bitstamp",
        "bitvavo",
        "bingx",
        "phemex",
        "woo",
        "xt",
        "coinbaseexchange",
        "hyperliquid",
        "poloniex",
        "bitrue",
    }
)
# Exchanges whose order lists filter by the client order id, and the parameter.
LIST_ORDERS_BY_CLIENT_ID = {"bybit": "orderLinkId"}
# Exchanges whose conditional contract orders live apart (binance's Algo Order API) and
# are reached with params {'trigger': True}.
SEPARATE_TRIGGER_BOOKS = frozenset({"binance"})


def class_names(obj: Any) -> set[str]:
    """The names of ``obj``'s class and its bases (binanceusdm counts as binance)."""
    return {cls.__name__ for cls in type(obj).__mro__}


class FindOrders(ClientLifecycle):
    """Orders by id or client order id, conditional ones included, and ``lookup``."""

    def _separate_trigger_book(self, symbol: str) -> bool:
        """binance keeps conditional contract orders (Algo Order API) apart: ccxt reaches them
        with params {'trigger': True} when reading, cancelling and listing."""
        market = self.client.market(symbol)
        return bool(class_names(self.client) & SEPARATE_TRIGGER_BOOKS) and bool(market.get("contract"))

    async def _open_orders(self, symbol: str) -> list[dict[str, Any]]:
        found = list(await self.client.fetch_open_orders(symbol))
        if self._separate_trigger_book(symbol):
            found += [
                o | {"_trigger": True}
                for o in await self.client.fetch_open_orders(symbol, None, None, {"trigger": True})
            ]
        return found

    async def _fetch_order(
        self, symbol: str, order_id: str | None, client_order_id: str | None
    ) -> dict[str, Any] | None:
        """One order by exchange id or client id, conditional ones included; None when absent."""
        if client_order_id:
            return await self._find_client_id(symbol, client_order_id)
        names = class_names(self.client)
        param = next((p for name, p in LIST_ORDERS_BY_CLIENT_ID.items() if name in names), None)
        if param is not None:  # bybit: its order lists filter by orderId as well
            for method in ("fetchOpenOrders", "fetchCanceledAndClosedOrders"):
                for found in await getattr(self.client, method)(symbol, None, None, {"orderId": order_id}):
                    if str(found.get("id")) == str(order_id):
                        return found
            return None
        for params in ({}, {"trigger": True}) if self._separate_trigger_book(symbol) else ({},):
            try:
                return await self.client.fetch_order(order_id, symbol, params)
            except ccxt.OrderNotFound:
                continue
        return None

    # ------------------------------------------------------------ reconciliation

    async def lookup(self, order: OrderRequest) -> LookupResult:
        """After an unknown outcome: the order with ``order.client_order_id`` (its missing
        stop-loss / take-profit placed now), whether a cancel's order is now canceled, or
        whether a cancel-all left nothing open. Absent when the exchange shows neither;
        cannot tell when the exchange has no way to look an order up by client id."""
        try:
            return await self._lookup(order)
        except ccxt.NotSupported as exc:
            return LookupResult.cannot_tell(str(exc), ask_again=False)

    async def _lookup(self, order: OrderRequest) -> LookupResult:
        async with self._use():
            if order.action == "cancel":
                found = await self._fetch_order(order.symbol, order.cancel_id, order.cancel_client_order_id)
                if not found or found.get("status") != "canceled":
                    return LookupResult.absent("the order is not canceled")
                target = {
                    "order_id": found.get("id"),
                    "client_order_id": found.get("clientOrderId"),
                    "status": "canceled",
                }
                return LookupResult.found(self._cancel_result(order, [target], found))
            if order.action == "cancel_all":
                if await self._open_orders(order.symbol):
                    return LookupResult.absent("orders are still open")
                return LookupResult.found(self._cancel_result(order, [], {}))
            raw = await self._find(order)
            if not raw:
                if not self._asks_by_client_id():
                    # Only the recent orders were scanned: not seen there is not "absent".
                    return LookupResult.cannot_tell(
                        f"{self.exchange} cannot be asked for an order by client id, and "
                        f"{order.client_order_id} is not among its recent orders"
                    )
                return LookupResult.absent(f"no order with client id {order.client_order_id}")
            existing = {}
            if not self._attaches(order):
                for _, _, coid in self._child_specs(order):
                    child = await self._find_client_id(order.symbol, coid, trigger=True)
                    if child:
                        existing[coid] = child
            return LookupResult.found(await self._protect(order, self._result(order, raw, self.route), raw, existing))

    def _asks_by_client_id(self) -> bool:
        """Whether the exchange answers a query by client order id (else recent orders are scanned)."""
        names = class_names(self.client)
        return bool(names & FETCH_ORDER_BY_CLIENT_ID) or any(name in names for name in LIST_ORDERS_BY_CLIENT_ID)

    async def _find(self, order: OrderRequest) -> dict[str, Any] | None:
        return await self._find_client_id(order.symbol, order.client_order_id, trigger=order.stop_price is not None)

    async def _find_client_id(self, symbol: str, coid: str, trigger: bool | None = None) -> dict[str, Any] | None:
        """The order with client id ``coid``. ``trigger`` None: look in both books where the
        exchange keeps conditional orders apart; True/False: in that one first."""
        client = self.client
        names = class_names(client)
        if names & FETCH_ORDER_BY_CLIENT_ID:
            books: tuple[dict[str, Any], ...] = ({},)
            if self._separate_trigger_book(symbol):
                books = ({"trigger": True}, {}) if trigger else ({}, {"trigger": True})
            for params in books:
                try:
                    return await client.fetch_order_with_client_order_id(coid, symbol, params)
                except ccxt.OrderNotFound:
                    continue
            return None
        param = next((p for name, p in LIST_ORDERS_BY_CLIENT_ID.items() if name in names), None)
        if param is not None:
            listings = [("fetchOpenOrders", {param: coid}), ("fetchCanceledAndClosedOrders", {param: coid})]
        else:
            # The exchange cannot be asked by client order id: scan the symbol's recent orders.
            listings = [("fetchOpenOrders", {}), ("fetchClosedOrders", {})]
            if not client.has.get("fetchClosedOrders"):
                listings.append(("fetchOrders", {}))
        supported = False
        for method, params in listings:
            if not client.has.get(method):
                continue
            supported = True
            for found in await getattr(client, method)(symbol, None, None, params):
                if found.get("clientOrderId") == coid:
                    return found
        if not supported:
            raise ccxt.NotSupported(f"{self.exchange} cannot look orders up by client order id")
        return None
