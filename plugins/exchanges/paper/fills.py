"""Paper fills: an order booked against the ledger at the fill price, atomically.

A market order fills at the alert's price (or the last price paper knows), a limit order
at its price; a fee is charged in the quote currency; an order beyond the balance is
refused (422). Spot orders move the base and quote balances; perpetual orders move the
position (its margin, the realised profit and the fee come out of the quote balance), with
leverage and margin mode per symbol. Stop orders and stop-loss / take-profit rest in the
ledger as open orders (paper has no price feed to trigger them). A client order id already
in the ledger returns the booked order instead of booking again.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any

from core.errors import Unprocessable
from core.pipeline.models import OrderRequest, OrderResult
from core.store.sqlite.database import transaction
from core.trading.execution import child_order_id
from core.trading.venue import Market
from plugins.exchanges.paper.ledger import PaperLedger, decimal_text


class PaperFills(PaperLedger):
    """Booking an order: configure, move balances or the position, rest protective orders."""

    def _configure(self, conn: sqlite3.Connection, order: OrderRequest, market: Market) -> None:
        """Leverage and margin mode for the symbol; an open position's margin follows the leverage."""
        if not order.leverage and not order.margin_mode:
            return
        current = self._settings(conn, order.symbol)
        leverage = Decimal(order.leverage) if order.leverage else current["leverage"]
        margin_mode = order.margin_mode or current["margin_mode"]
        if leverage != current["leverage"]:
            row = conn.execute(
                "SELECT contracts, entry_price FROM paper_positions WHERE account = ? AND symbol = ?",
                (self.account, order.symbol),
            ).fetchone()
            if row and Decimal(row["contracts"]):
                notional = abs(Decimal(row["contracts"])) * Decimal(row["entry_price"])
                self._move_balance(conn, market.quote, notional / current["leverage"] - notional / leverage)
        conn.execute(
            "INSERT INTO paper_settings (account, symbol, leverage, margin_mode) VALUES (?,?,?,?) "
            "ON CONFLICT(account, symbol) DO UPDATE SET "
            "leverage = excluded.leverage, margin_mode = excluded.margin_mode",
            (self.account, order.symbol, str(leverage), margin_mode),
        )

    def _book(self, conn: sqlite3.Connection, order: OrderRequest, market: Market, price: Decimal) -> OrderResult:
        with transaction(conn):
            existing = conn.execute(
                "SELECT * FROM paper_orders WHERE account = ? AND client_order_id = ?",
                (self.account, order.client_order_id),
            ).fetchone()
            if existing:
                return self._result(order, existing, self._children(conn, order.client_order_id))
            self._configure(conn, order, market)
            assert order.amount is not None
            details = {
                "reduce_only": order.reduce_only,
                "post_only": order.post_only,
                "time_in_force": order.time_in_force,
                "stop_price": order.stop_price,
            }
            if order.stop_price is not None:
                # Paper has no price feed: a stop order rests in the ledger until it is canceled.
                row = self._insert(
                    conn,
                    order,
                    client_order_id=order.client_order_id,
                    side=order.side or "buy",
                    order_type=order.order_type,
                    amount=order.amount,
                    price=Decimal(order.price or order.stop_price),
                    fee=Decimal(0),
                    status="open",
                    details=details,
                )
                return self._result(order, row, self._protect(conn, order, market, order.amount))
            amount = Decimal(order.amount)
            notional = amount * price
            fee = (notional * self.options.fee_rate).quantize(Decimal("0.00000001"))
            if not market.contract:
                if order.side == "buy":
                    changes = {market.quote: -(notional + fee), market.base: amount}
                else:
                    changes = {market.base: -amount, market.quote: notional - fee}
            else:
                changes = self._position_change(conn, order, market, amount, price, fee)
            balance = {
                r["asset"]: Decimal(r["amount"])
                for r in conn.execute("SELECT asset, amount FROM paper_balances WHERE account = ?", (self.account,))
            }
            for asset, delta in changes.items():
                have = balance.get(asset, Decimal(0))
                if have + delta < 0:
                    raise Unprocessable(
                        f"insufficient {asset} balance on paper account '{self.account}': "
                        f"need {decimal_text(-delta)}, have {decimal_text(have)}",
                        code="insufficient_funds",
                    )
            for asset, delta in changes.items():
                self._move_balance(conn, asset, delta)
            row = self._insert(
                conn,
                order,
                client_order_id=order.client_order_id,
                side=order.side or "buy",
                order_type=order.order_type,
                amount=order.amount,
                price=price,
                fee=fee,
                status="closed",
                details=details,
            )
            return self._result(order, row, self._protect(conn, order, market, order.amount))

    def _protect(
        self, conn: sqlite3.Connection, order: OrderRequest, market: Market, amount: str
    ) -> list[dict[str, Any]]:
        """Stop-loss / take-profit as orders of their own, resting in the ledger (client ids
        "sl…"/"tp…" from the entry's), sized to what the entry leaves open."""
        if order.stop_loss is None and order.take_profit is None:
            return []
        if market.contract and order.position_before is not None:
            after = Decimal(order.position_before) + (Decimal(amount) if order.side == "buy" else -Decimal(amount))
            side, size = ("sell" if after > 0 else "buy"), abs(after)
        else:
            side, size = ("sell" if order.side == "buy" else "buy"), Decimal(amount)
        children = []
        for kind, tag, trigger in (("stop_loss", "sl", order.stop_loss), ("take_profit", "tp", order.take_profit)):
            if trigger is None:
                continue
            row = self._insert(
                conn,
                order,
                client_order_id=child_order_id(order.client_order_id, tag),
                side=side,
                order_type="stop",
                amount=decimal_text(size),
                price=Decimal(trigger),
                fee=Decimal(0),
                status="open",
                details={
                    "kind": kind,
                    "stop_price": trigger,
                    "reduce_only": market.contract,
                    "parent": order.client_order_id,
                },
            )
            children.append(self._child(row))
        return children

    def _position_change(
        self,
        conn: sqlite3.Connection,
        order: OrderRequest,
        market: Market,
        amount: Decimal,
        price: Decimal,
        fee: Decimal,
    ) -> dict[str, Decimal]:
        """Update the perpetual position; return the quote balance change (margin, PnL, fee)."""
        row = conn.execute(
            "SELECT contracts, entry_price FROM paper_positions WHERE account = ? AND symbol = ?",
            (self.account, order.symbol),
        ).fetchone()
        size = Decimal(row["contracts"]) if row else Decimal(0)
        entry = Decimal(row["entry_price"]) if row else Decimal(0)
        signed = amount if order.side == "buy" else -amount
        if (order.reduce_only or order.params.get("reduceOnly")) and (
            size == 0 or (size > 0) == (signed > 0) or abs(signed) > abs(size)
        ):
            raise Unprocessable(
                f"reduce-only order would not reduce the {order.symbol} position ({format(size, 'f')})",
                code="reduce_only_rejected",
            )
        leverage = self._settings(conn, order.symbol)["leverage"]
        new_size = size + signed
        closing = min(abs(signed), abs(size)) if size and (size > 0) != (signed > 0) else Decimal(0)
        pnl = closing * (price - entry) * (1 if size > 0 else -1) if closing else Decimal(0)
        opening = abs(signed) - closing
        margin_released = closing * entry / leverage
        margin_locked = opening * price / leverage
        if new_size == 0:
            new_entry = Decimal(0)
        elif opening and (size == 0 or (size > 0) == (signed > 0)):
            new_entry = (abs(size) * entry + opening * price) / abs(new_size)
        elif opening:  # flipped through zero
            new_entry = price
        else:
            new_entry = entry
        conn.execute(
            "INSERT INTO paper_positions (account, symbol, contracts, entry_price) VALUES (?,?,?,?) "
            "ON CONFLICT(account, symbol) DO UPDATE SET "
            "contracts = excluded.contracts, entry_price = excluded.entry_price",
            (self.account, order.symbol, str(new_size), str(new_entry)),
        )
        return {market.quote: margin_released - margin_locked + pnl - fee}
