"""Cancels on a ccxt exchange: one order by id or client order id, or every open order of a symbol.

binance's conditional contract orders (its Algo Order API) are cancelled with
``{'trigger': True}`` when the plain cancel does not find them. An order found canceled
already counts as canceled: a dropped connection whose DELETE the HTTP client resent was
cancelled by the first attempt.
"""

from __future__ import annotations

import contextlib
from typing import Any

import ccxt

from core.pipeline.models import OrderRequest, OrderResult, decimal_str
from plugins.exchanges.ccxt.errors import order_error
from plugins.exchanges.ccxt.lifecycle import ClientLifecycle


class CancelOrders(ClientLifecycle):
    """``cancel`` and ``cancel_all`` orders (the order lookups are ``lookup.FindOrders``'s)."""

    async def _cancel(self, order: OrderRequest) -> OrderResult:
        params = {"clientOrderId": order.cancel_client_order_id} if order.cancel_client_order_id else {}
        try:
            try:
                raw = await self.client.cancel_order(order.cancel_id, order.symbol, params)
            except ccxt.OrderNotFound:
                if not self._separate_trigger_book(order.symbol):
                    raise
                raw = await self.client.cancel_order(order.cancel_id, order.symbol, params | {"trigger": True})
        except ccxt.OrderNotFound:
            # Canceled already — by this very request when its connection dropped and the HTTP
            # client resent it (aiohttp retries a DELETE once) — is what was asked; filled is not.
            found = await self._fetch_order(order.symbol, order.cancel_id, order.cancel_client_order_id)
            if not found or found.get("status") != "canceled":
                raise
            raw = found
        canceled = {
            "order_id": str(raw.get("id") or order.cancel_id or "") or None,
            "client_order_id": raw.get("clientOrderId") or order.cancel_client_order_id,
            "status": "canceled",
        }
        return self._cancel_result(order, [canceled], raw)

    async def _cancel_all(self, order: OrderRequest) -> OrderResult:
        try:
            open_orders = await self._open_orders(order.symbol)
        except ccxt.NetworkError as exc:
            raise order_error(exc, sent=False) from exc  # only read so far: nothing was canceled
        with contextlib.suppress(ccxt.OrderNotFound):  # binance spot: nothing open
            await self.client.cancel_all_orders(order.symbol)
        if self._separate_trigger_book(order.symbol) and any(o.get("_trigger") for o in open_orders):
            with contextlib.suppress(ccxt.OrderNotFound):
                await self.client.cancel_all_orders(order.symbol, {"trigger": True})
        children = [
            {
                "order_id": o.get("id"),
                "client_order_id": o.get("clientOrderId"),
                "side": o.get("side"),
                "type": o.get("type"),
                "amount": decimal_str(o.get("amount")),
                "status": "canceled",
            }
            for o in open_orders
        ]
        return self._cancel_result(order, children, {})

    def _cancel_result(self, order: OrderRequest, children: list[dict[str, Any]], raw: dict[str, Any]) -> OrderResult:
        first = children[0] if order.action == "cancel" and children else {}
        return OrderResult(
            account=self.account,
            exchange=self.exchange,
            symbol=order.symbol,
            side=raw.get("side"),
            order_type=raw.get("type") or "market",
            amount=decimal_str(raw.get("amount")),
            price=decimal_str(raw.get("price")),
            order_id=first.get("order_id"),
            client_order_id=first.get("client_order_id") or order.client_order_id,
            status="canceled",
            route="rest",
            sandbox=self.options.sandbox,
            children=children,
        )
