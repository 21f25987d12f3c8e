"""Paper's order entry points: submit, cancel, cancel-all, and lookup (the ledger knows every order).

``submit`` books a new order (``fills.PaperFills``) or cancels: by order id or client order
id, or every open order of the symbol. ``lookup`` answers from the ledger: found, or
absent for sure.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal

from core.errors import Unprocessable
from core.pipeline.models import OrderRequest, OrderResult
from core.store.sqlite.database import transaction
from core.trading.execution import LookupResult
from core.trading.venue import order_status
from plugins.exchanges.paper.ledger import PaperLedger


class PaperOrders(PaperLedger):
    """Orders in and out of the ledger."""

    async def submit(self, order: OrderRequest) -> OrderResult:
        market = self._market(order.symbol)
        if order.action == "cancel":
            return await self.db.run(lambda conn: self._cancel(conn, order))
        if order.action == "cancel_all":
            return await self.db.run(lambda conn: self._cancel_all(conn, order))
        fill_price = Decimal(order.price or order.reference_price or self._last_price(order.symbol))
        return await self.db.run(lambda conn: self._book(conn, order, market, fill_price))

    async def lookup(self, order: OrderRequest) -> LookupResult:
        """The ledger knows every order it booked: found, or absent for sure."""

        def find(conn: sqlite3.Connection) -> LookupResult:
            if order.action == "cancel":
                row = self._find(conn, order.symbol, order.cancel_id, order.cancel_client_order_id)
                if row is not None and row["status"] == "canceled":
                    return LookupResult.found(self._cancel_result(order, [row]))
                return LookupResult.absent("the order is not canceled")
            if order.action == "cancel_all":
                if self._open(conn, order.symbol):
                    return LookupResult.absent("orders are still open")
                return LookupResult.found(self._cancel_result(order, []))
            row = self._find(conn, order.symbol, None, order.client_order_id)
            if row is None:
                return LookupResult.absent(f"no order with client id {order.client_order_id} in the ledger")
            return LookupResult.found(self._result(order, row, self._children(conn, order.client_order_id)))

        return await self.db.run(find)

    def _cancel(self, conn: sqlite3.Connection, order: OrderRequest) -> OrderResult:
        with transaction(conn):
            row = self._find(conn, order.symbol, order.cancel_id, order.cancel_client_order_id)
            if row is None or row["status"] != "open":
                what = (
                    f"order {order.cancel_id}"
                    if order.cancel_id
                    else f"order with client id {order.cancel_client_order_id}"
                )
                raise Unprocessable(
                    f"no open {what} on {order.symbol} in paper account '{self.account}'", code="order_not_found"
                )
            conn.execute("UPDATE paper_orders SET status = 'canceled' WHERE id = ?", (row["id"],))
            return self._cancel_result(order, [self._refind(conn, order.symbol, row["id"])])

    def _cancel_all(self, conn: sqlite3.Connection, order: OrderRequest) -> OrderResult:
        with transaction(conn):
            rows = self._open(conn, order.symbol)
            conn.execute(
                "UPDATE paper_orders SET status = 'canceled' WHERE account = ? AND symbol = ? AND status = 'open'",
                (self.account, order.symbol),
            )
            return self._cancel_result(order, [self._refind(conn, order.symbol, row["id"]) for row in rows])

    def _cancel_result(self, order: OrderRequest, rows: list[sqlite3.Row]) -> OrderResult:
        children = [
            {
                "order_id": r["id"],
                "client_order_id": r["client_order_id"],
                "side": r["side"],
                "type": r["type"],
                "amount": r["amount"],
                "status": order_status(r["status"]),
            }
            for r in rows
        ]
        first = rows[0] if order.action == "cancel" and rows else None
        return OrderResult(
            account=self.account,
            exchange="paper",
            symbol=order.symbol,
            side=first["side"] if first else None,
            order_type=first["type"] if first else "market",
            amount=first["amount"] if first else None,
            order_id=first["id"] if first else None,
            client_order_id=first["client_order_id"] if first else order.client_order_id,
            status="canceled",
            route="paper",
            children=children,
        )
