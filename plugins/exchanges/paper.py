"""The paper exchange: the embedded default (DEFAULT_EXCHANGE=paper), no keys needed.

It keeps a ledger in SQLite under DATA_DIR (``paper.sqlite3``): orders, balances per
asset and positions for perpetual symbols. Markets are described in ccxt's own market
structure, so alerts are resolved, rounded and checked exactly as for a real exchange
(``core.markets``). Market orders fill at the alert's price (TradingView's ``{{close}}``)
or the configured last price; limit orders fill at their price. A fee is charged in the
quote currency. An order beyond the balance is refused (422). A client order id already
in the ledger returns the booked order instead of booking again.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from decimal import Decimal
from typing import Any

import ccxt
from pydantic import BaseModel, ConfigDict, Field

from core.config import PluginOptions
from core.database import SqliteDatabase, transaction
from core.errors import Unprocessable
from core.execution import Executor
from core.markets import market_index, prepare_order
from core.models import Alert, OrderRequest, OrderResult
from core.plugins import hookimpl

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
    UNIQUE (account, client_order_id)
);
CREATE TABLE IF NOT EXISTS paper_balances (
    account TEXT NOT NULL,
    asset   TEXT NOT NULL,
    amount  TEXT NOT NULL,
    PRIMARY KEY (account, asset)
);
CREATE TABLE IF NOT EXISTS paper_positions (
    account     TEXT NOT NULL,
    symbol      TEXT NOT NULL,
    contracts   TEXT NOT NULL,
    entry_price TEXT NOT NULL,
    PRIMARY KEY (account, symbol)
);
"""


class PaperMarket(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str
    quote: str
    type: str = Field("spot", pattern="^(spot|swap)$")
    amount_step: Decimal
    price_tick: Decimal
    min_amount: Decimal
    min_cost: Decimal = Decimal(0)
    last_price: Decimal


DEFAULT_MARKETS = {
    "BTC/USDT": PaperMarket(base="BTC", quote="USDT", amount_step=Decimal("0.00001"), price_tick=Decimal("0.01"),
                            min_amount=Decimal("0.00001"), min_cost=Decimal(5), last_price=Decimal(50000)),
    "ETH/USDT": PaperMarket(base="ETH", quote="USDT", amount_step=Decimal("0.0001"), price_tick=Decimal("0.01"),
                            min_amount=Decimal("0.0001"), min_cost=Decimal(5), last_price=Decimal(3000)),
    "SOL/USDT": PaperMarket(base="SOL", quote="USDT", amount_step=Decimal("0.001"), price_tick=Decimal("0.01"),
                            min_amount=Decimal("0.001"), min_cost=Decimal(5), last_price=Decimal(150)),
    "BTC/USDT:USDT": PaperMarket(base="BTC", quote="USDT", type="swap", amount_step=Decimal("0.001"), price_tick=Decimal("0.1"),
                                 min_amount=Decimal("0.001"), min_cost=Decimal(100), last_price=Decimal(50000)),
    "ETH/USDT:USDT": PaperMarket(base="ETH", quote="USDT", type="swap", amount_step=Decimal("0.001"), price_tick=Decimal("0.01"),
                                 min_amount=Decimal("0.001"), min_cost=Decimal(20), last_price=Decimal(3000)),
}


def ccxt_market(symbol: str, m: PaperMarket) -> dict[str, Any]:
    """A paper market in ccxt's unified structure (what ``load_markets`` would return)."""
    swap = m.type == "swap"
    return {
        "id": f"{m.base}{m.quote}", "symbol": symbol, "base": m.base, "quote": m.quote, "settle": m.quote if swap else None,
        "baseId": m.base, "quoteId": m.quote, "settleId": m.quote if swap else None,
        "type": m.type, "spot": not swap, "margin": False, "swap": swap, "future": False, "option": False,
        "contract": swap, "linear": True if swap else None, "inverse": False if swap else None, "active": True,
        "contractSize": 1 if swap else None,
        "precision": {"amount": float(m.amount_step), "price": float(m.price_tick)},
        "limits": {"amount": {"min": float(m.min_amount), "max": None}, "cost": {"min": float(m.min_cost), "max": None},
                   "price": {"min": None, "max": None}, "leverage": {"min": None, "max": None}},
        "info": {},
    }


class PaperExecutor(Executor):
    route = "paper"

    def __init__(self, account: str, options: "Plugin.Options", db: SqliteDatabase):
        super().__init__(account, "paper")
        self.options = options
        self.db = db
        self.markets = ccxt.Exchange({"id": "paper"})
        self.markets.precisionMode = ccxt.TICK_SIZE
        self.markets.set_markets([ccxt_market(s, m) for s, m in options.markets.items()])

    def matches_exchange(self, name: str) -> bool:
        # Paper stands in for whatever venue the alert names (TradingView's {{exchange}}).
        return True

    async def start(self) -> None:
        balances = {asset: str(amount) for asset, amount in self.options.initial_balances.items()}

        def seed(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                for asset, amount in balances.items():
                    conn.execute("INSERT OR IGNORE INTO paper_balances (account, asset, amount) VALUES (?,?,?)",
                                 (self.account, asset, amount))

        await self.db.run(seed)

    def lane_key(self, alert: Alert) -> str:
        """The resolved market (BTCUSDT and BINANCE:BTCUSDT share the lane of BTC/USDT)."""
        try:
            return market_index(self.markets).resolve(alert.symbol, alert.market_type, self.options.default_market_type)["symbol"]
        except Exception:
            return alert.symbol.upper()

    async def balances(self) -> dict[str, str]:
        """The account's balance per asset."""
        def read(conn: sqlite3.Connection) -> dict[str, str]:
            return {r["asset"]: r["amount"] for r in conn.execute(
                "SELECT asset, amount FROM paper_balances WHERE account = ? ORDER BY asset", (self.account,))}

        return await self.db.run(read)

    async def positions(self) -> dict[str, dict[str, str]]:
        """Open perpetual positions: symbol → signed contracts and entry price."""
        def read(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
            return {r["symbol"]: {"contracts": r["contracts"], "entry_price": r["entry_price"]} for r in conn.execute(
                "SELECT * FROM paper_positions WHERE account = ? AND CAST(contracts AS REAL) != 0", (self.account,))}

        return await self.db.run(read)

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        return prepare_order(self.markets, alert, account=self.account, client_order_id=client_order_id,
                             default_type=self.options.default_market_type, reference_price=self._last_price)

    def _last_price(self, symbol: str) -> Decimal:
        return self.options.markets[symbol].last_price

    async def submit(self, order: OrderRequest) -> OrderResult:
        market = self.options.markets[order.symbol]
        fill_price = Decimal(order.price or order.reference_price or market.last_price)
        return await self.db.run(lambda conn: self._book(conn, order, market, fill_price))

    async def lookup(self, order: OrderRequest) -> OrderResult | None:
        def find(conn: sqlite3.Connection) -> OrderResult | None:
            row = conn.execute("SELECT * FROM paper_orders WHERE account = ? AND client_order_id = ?",
                               (self.account, order.client_order_id)).fetchone()
            return self._result(order, row) if row else None

        return await self.db.run(find)

    # -- the ledger (runs on the database thread) ------------------------------

    def _result(self, order: OrderRequest, row: sqlite3.Row) -> OrderResult:
        return OrderResult(
            account=self.account, exchange="paper", symbol=row["symbol"], side=row["side"], order_type=row["type"],
            # The price it filled at, as ccxt reports a market order's.
            amount=row["amount"], price=order.price or row["price"], order_id=row["id"], client_order_id=row["client_order_id"],
            status=row["status"], filled=row["amount"], average=row["price"], route="paper",
        )

    def _book(self, conn: sqlite3.Connection, order: OrderRequest, market: PaperMarket, price: Decimal) -> OrderResult:
        with transaction(conn):
            existing = conn.execute("SELECT * FROM paper_orders WHERE account = ? AND client_order_id = ?",
                                    (self.account, order.client_order_id)).fetchone()
            if existing:
                return self._result(order, existing)
            amount = Decimal(order.amount)
            notional = amount * price
            fee = (notional * self.options.fee_rate).quantize(Decimal("0.00000001"))
            balance = {r["asset"]: Decimal(r["amount"]) for r in
                       conn.execute("SELECT asset, amount FROM paper_balances WHERE account = ?", (self.account,))}
            changes: dict[str, Decimal] = {}
            if market.type == "spot":
                if order.side == "buy":
                    changes = {market.quote: -(notional + fee), market.base: amount}
                else:
                    changes = {market.base: -amount, market.quote: notional - fee}
            else:
                changes = self._position_change(conn, order, market, amount, price, fee, balance)
            for asset, delta in changes.items():
                have = balance.get(asset, Decimal(0))
                if have + delta < 0:
                    raise Unprocessable(
                        f"insufficient {asset} balance on paper account '{self.account}': "
                        f"need {format((-delta).normalize(), 'f')}, have {format(have.normalize(), 'f')}", code="insufficient_funds")
            for asset, delta in changes.items():
                conn.execute(
                    "INSERT INTO paper_balances (account, asset, amount) VALUES (?,?,?) "
                    "ON CONFLICT(account, asset) DO UPDATE SET amount = ?",
                    (self.account, asset, str(balance.get(asset, Decimal(0)) + delta), str(balance.get(asset, Decimal(0)) + delta)),
                )
            order_id = uuid.uuid4().hex[:16]
            conn.execute(
                "INSERT INTO paper_orders (id, account, client_order_id, symbol, side, type, amount, price, fee, status, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (order_id, self.account, order.client_order_id, order.symbol, order.side, order.order_type,
                 order.amount, format(price.normalize(), "f"), str(fee), "closed", time.time()),
            )
            row = conn.execute("SELECT * FROM paper_orders WHERE id = ?", (order_id,)).fetchone()
            return self._result(order, row)

    def _position_change(self, conn: sqlite3.Connection, order: OrderRequest, market: PaperMarket,
                         amount: Decimal, price: Decimal, fee: Decimal, balance: dict[str, Decimal]) -> dict[str, Decimal]:
        """Update the perpetual position; return the quote balance change (margin, PnL, fee)."""
        row = conn.execute("SELECT contracts, entry_price FROM paper_positions WHERE account = ? AND symbol = ?",
                           (self.account, order.symbol)).fetchone()
        size = Decimal(row["contracts"]) if row else Decimal(0)
        entry = Decimal(row["entry_price"]) if row else Decimal(0)
        signed = amount if order.side == "buy" else -amount
        if order.params.get("reduceOnly") and (size == 0 or (size > 0) == (signed > 0) or abs(signed) > abs(size)):
            raise Unprocessable(f"reduce-only order would not reduce the {order.symbol} position ({format(size, 'f')})",
                                code="reduce_only_rejected")
        leverage = self.options.leverage
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
            "ON CONFLICT(account, symbol) DO UPDATE SET contracts = excluded.contracts, entry_price = excluded.entry_price",
            (self.account, order.symbol, str(new_size), str(new_entry)),
        )
        return {market.quote: margin_released - margin_locked + pnl - fee}


class Plugin:
    """Registers the paper accounts (one named ``paper`` unless configured otherwise)."""

    class Options(PluginOptions):
        accounts: list[str] = Field(default_factory=lambda: ["paper"], min_length=1)
        fee_rate: Decimal = Field(Decimal("0.001"), ge=0, le=Decimal("0.1"))
        leverage: Decimal = Field(Decimal(1), gt=0, le=125)
        default_market_type: str = Field("spot", pattern="^(spot|swap)$")
        initial_balances: dict[str, Decimal] = Field(default_factory=lambda: {"USDT": Decimal(100000), "BTC": Decimal(1), "ETH": Decimal(10)})
        markets: dict[str, PaperMarket] = Field(default_factory=lambda: dict(DEFAULT_MARKETS))

    def __init__(self, options: "Plugin.Options"):
        self.options = options
        self.db: SqliteDatabase | None = None

    @hookimpl
    def register_executors(self, register, router) -> None:
        self.db = SqliteDatabase(router.data_dir / "paper.sqlite3", schema=SCHEMA)
        for account in self.options.accounts:
            register(account, PaperExecutor(account, self.options, self.db))

    @hookimpl
    def router_shutdown(self, router) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
