"""Paper's ledger: orders, balances, per-symbol settings and positions in SQLite.

``SCHEMA`` is the ledger's tables (``paper.sqlite3`` under DATA_DIR, shared by the paper
accounts). ``PaperLedger`` holds what reads and writes rows: the public reads (balances,
positions, orders, settings), and the helpers every fill and cancel uses on the database
thread (find, insert, move a balance, the ``OrderResult`` of a row).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from core.errors import Unprocessable
from core.pipeline.models import OrderRequest, OrderResult
from core.store.sqlite.database import SqliteDatabase
from core.trading.execution import Executor, child_order_id
from core.trading.venue import Market, order_status

SCHEMA = """
CREATE TABLE IF NOT EXISTS paper_orders (
    id              TEXT PRIMARY KEY,
    account         TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    type            TEXT NOT NULL,
    amount          TEXT NOT NULL,
    price           TEXT NOT NULL,
    fee             TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      REAL NOT NULL,
    details         TEXT NOT NULL DEFAULT '{}',  -- stop price, reduce/post-only, time in force, SL/TP parent
    UNIQUE (account, client_order_id)
);
CREATE TABLE IF NOT EXISTS paper_balances (
    account TEXT NOT NULL,
    asset   TEXT NOT NULL,
    amount  TEXT NOT NULL,
    PRIMARY KEY (account, asset)
);
CREATE TABLE IF NOT EXISTS paper_settings (
    account     TEXT NOT NULL,
    symbol      TEXT NOT NULL,
    leverage    TEXT NOT NULL,
    margin_mode TEXT NOT NULL,
    PRIMARY KEY (account, symbol)
);
CREATE TABLE IF NOT EXISTS paper_positions (
    account     TEXT NOT NULL,
    symbol      TEXT NOT NULL,
    contracts   TEXT NOT NULL,
    entry_price TEXT NOT NULL,
    PRIMARY KEY (account, symbol)
);
"""


def decimal_text(value: Decimal) -> str:
    return format(value.normalize(), "f")


class PaperLedger(Executor):
    """One paper account's rows in the ledger."""

    account: str
    db: SqliteDatabase
    options: Any  # plugins.exchanges.paper.plugin.Plugin.Options

    if TYPE_CHECKING:  # what the parts call of one another (each defined in its own module)

        def _market(self, symbol: str) -> Market: ...  # plugin
        def _last_price(self, symbol: str) -> Decimal: ...  # plugin
        def _book(
            self, conn: sqlite3.Connection, order: OrderRequest, market: Market, price: Decimal
        ) -> OrderResult: ...  # fills

    async def balances(self) -> dict[str, str]:
        """The account's balance per asset."""

        def read(conn: sqlite3.Connection) -> dict[str, str]:
            return {
                r["asset"]: r["amount"]
                for r in conn.execute(
                    "SELECT asset, amount FROM paper_balances WHERE account = ? ORDER BY asset", (self.account,)
                )
            }

        return await self.db.run(read)

    async def positions(self) -> dict[str, dict[str, str]]:
        """Open perpetual positions: symbol → signed contracts and entry price."""

        def read(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
            return {
                r["symbol"]: {"contracts": r["contracts"], "entry_price": r["entry_price"]}
                for r in conn.execute(
                    "SELECT * FROM paper_positions WHERE account = ? AND CAST(contracts AS REAL) != 0", (self.account,)
                )
            }

        return await self.db.run(read)

    async def orders(self, status: str | None = None) -> list[dict[str, Any]]:
        """The ledger's orders, oldest first (``status``: open, closed, canceled)."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT * FROM paper_orders WHERE account = ? AND (? IS NULL OR status = ?) ORDER BY created_at, rowid",
                (self.account, status, status),
            ).fetchall()
            return [dict(row) | {"details": json.loads(row["details"] or "{}")} for row in rows]

        return await self.db.run(read)

    async def settings(self, symbol: str) -> dict[str, Any]:
        """The leverage and margin mode the ledger applies to ``symbol``."""
        return await self.db.run(lambda conn: self._settings(conn, symbol))

    # -- the ledger (runs on the database thread) ------------------------------

    def _find(
        self, conn: sqlite3.Connection, symbol: str, order_id: str | None, client_order_id: str | None
    ) -> sqlite3.Row | None:
        if order_id:
            return conn.execute(
                "SELECT * FROM paper_orders WHERE account = ? AND id = ? AND symbol = ?",
                (self.account, order_id, symbol),
            ).fetchone()
        return conn.execute(
            "SELECT * FROM paper_orders WHERE account = ? AND client_order_id = ? AND symbol = ?",
            (self.account, client_order_id, symbol),
        ).fetchone()

    def _refind(self, conn: sqlite3.Connection, symbol: str, order_id: str) -> sqlite3.Row:
        """A row this transaction has just read or written (so it exists)."""
        row = self._find(conn, symbol, order_id, None)
        if row is None:
            raise LookupError(f"paper order {order_id} vanished inside its own transaction")
        return row

    def _open(self, conn: sqlite3.Connection, symbol: str) -> list[sqlite3.Row]:
        return conn.execute(
            "SELECT * FROM paper_orders WHERE account = ? AND symbol = ? AND status = 'open' "
            "ORDER BY created_at, rowid",
            (self.account, symbol),
        ).fetchall()

    def _children(self, conn: sqlite3.Connection, entry: str) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT * FROM paper_orders WHERE account = ? AND client_order_id IN (?, ?) ORDER BY rowid",
            (self.account, child_order_id(entry, "sl"), child_order_id(entry, "tp")),
        ).fetchall()
        return [self._child(row) for row in rows]

    @staticmethod
    def _child(row: sqlite3.Row) -> dict[str, Any]:
        details = json.loads(row["details"] or "{}")
        return {
            "type": details.get("kind"),
            "client_order_id": row["client_order_id"],
            "order_id": row["id"],
            "side": row["side"],
            "amount": row["amount"],
            "trigger_price": details.get("stop_price"),
            "status": order_status(row["status"]),
        }

    def _result(
        self, order: OrderRequest, row: sqlite3.Row, children: list[dict[str, Any]] | None = None
    ) -> OrderResult:
        filled = row["status"] == "closed"
        return OrderResult(
            account=self.account,
            exchange="paper",
            symbol=row["symbol"],
            side=row["side"],
            order_type=row["type"],
            # The price it filled at, as ccxt reports a market order's.
            amount=row["amount"],
            price=order.price or row["price"],
            order_id=row["id"],
            client_order_id=row["client_order_id"],
            status=order_status(row["status"]),
            filled=row["amount"] if filled else "0",
            average=row["price"] if filled else None,
            route="paper",
            children=children or [],
        )

    def _settings(self, conn: sqlite3.Connection, symbol: str) -> dict[str, Any]:
        row = conn.execute(
            "SELECT leverage, margin_mode FROM paper_settings WHERE account = ? AND symbol = ?", (self.account, symbol)
        ).fetchone()
        if row is None:
            return {"leverage": self.options.leverage, "margin_mode": self.options.margin_mode or "cross"}
        return {"leverage": Decimal(row["leverage"]), "margin_mode": row["margin_mode"]}

    def _move_balance(self, conn: sqlite3.Connection, asset: str, delta: Decimal) -> None:
        row = conn.execute(
            "SELECT amount FROM paper_balances WHERE account = ? AND asset = ?", (self.account, asset)
        ).fetchone()
        have = Decimal(row["amount"]) if row else Decimal(0)
        if have + delta < 0:
            raise Unprocessable(
                f"insufficient {asset} balance on paper account '{self.account}': "
                f"need {decimal_text(-delta)}, have {decimal_text(have)}",
                code="insufficient_funds",
            )
        conn.execute(
            "INSERT INTO paper_balances (account, asset, amount) VALUES (?,?,?) "
            "ON CONFLICT(account, asset) DO UPDATE SET amount = excluded.amount",
            (self.account, asset, str(have + delta)),
        )

    def _insert(
        self,
        conn: sqlite3.Connection,
        order: OrderRequest,
        *,
        client_order_id: str,
        side: str,
        order_type: str,
        amount: str,
        price: Decimal,
        fee: Decimal,
        status: str,
        details: dict[str, Any],
    ) -> sqlite3.Row:
        order_id = uuid.uuid4().hex[:16]
        conn.execute(
            "INSERT INTO paper_orders (id, account, client_order_id, symbol, side, type, amount, price, fee, "
            "status, created_at, details) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                order_id,
                self.account,
                client_order_id,
                order.symbol,
                side,
                order_type,
                amount,
                decimal_text(price),
                str(fee),
                status,
                time.time(),
                json.dumps({k: v for k, v in details.items() if v not in (None, False)}),
            ),
        )
        return conn.execute("SELECT * FROM paper_orders WHERE id = ?", (order_id,)).fetchone()
