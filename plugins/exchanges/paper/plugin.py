"""The paper exchange: the embedded default (DEFAULT_EXCHANGE=paper), no keys needed.

It keeps a ledger in SQLite under DATA_DIR (``paper.sqlite3``): orders, balances per
asset and positions for perpetual symbols. Markets are core's own (``core.trading.venue.Market``),
so alerts are resolved, rounded and checked exactly as for a real exchange
(``core.trading.markets``). Market orders fill at the alert's price (TradingView's ``{{close}}``)
or the last price paper knows (configured, else the venue snapshot's; with none, a market
order needs the alert's price: 422 ``price_required``); limit orders fill at their price. A fee is charged in the
quote currency. An order beyond the balance is refused (422). A client order id already
in the ledger returns the booked order instead of booking again.

The trading features are the ccxt accounts' (``core.trading.sizing``): sizing by quote amount
(converted at the alert's price, or the last price) and by percentages of the balance or
the position, target / close / flip on positions (spot: the base balance), leverage and
margin mode per symbol (an open position's margin follows a leverage change). Stop and
stop-limit orders, and stop-loss / take-profit (orders of their own, client ids derived
from the entry's by ``core.trading.execution.child_order_id``), rest in the ledger as open orders — paper has no price feed to
trigger them — until a cancel or cancel-all.

Besides the configured markets (``markets``), paper knows real venues' market lists from
the snapshots shipped with the package (``plugins.exchanges.paper.markets``; options
``venues``, ``default_venue``, ``snapshot_dir``), translated into core ``Market``s — one
``MarketBook`` per venue, named "paper (<venue> markets)" in refusals — so an alert that
would pass on the venue passes on paper with the venue's precision and limits. A ticker
naming a venue (``BINANCE:DOGEUSDT``, ``BYBIT:ETHUSDT.P``) uses that venue's markets;
others are looked up in the configured markets, then the default venue, then the other
venues. An unknown ticker's 422 names close matches.
"""

from __future__ import annotations

import difflib
import json
import sqlite3
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import ccxt
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from core.config import PluginOptions
from core.errors import ConfigError, Unprocessable
from core.hooks.manager import hookimpl
from core.pipeline.models import Alert, OrderRequest, OrderResult
from core.store.sqlite.database import SqliteDatabase, transaction
from core.trading.execution import Executor, LookupResult, child_order_id
from core.trading.markets import MarketBook
from core.trading.sizing import prepare_alert
from core.trading.venue import Market, MarketLimits, order_status
from plugins.exchanges.ccxt.markets import market_from_ccxt
from plugins.exchanges.paper.markets import COMMANDS, load_snapshot

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


class PaperMarket(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str
    quote: str
    type: str = Field("spot", pattern="^(spot|swap)$")
    amount_step: Decimal
    price_tick: Decimal
    min_amount: Decimal
    min_cost: Decimal = Decimal(0)
    # None: unknown; market orders then need the alert's price.
    last_price: Decimal | None = None


DEFAULT_MARKETS = {
    "BTC/USDT": PaperMarket(
        base="BTC",
        quote="USDT",
        amount_step=Decimal("0.00001"),
        price_tick=Decimal("0.01"),
        min_amount=Decimal("0.00001"),
        min_cost=Decimal(5),
        last_price=Decimal(50000),
    ),
    "ETH/USDT": PaperMarket(
        base="ETH",
        quote="USDT",
        amount_step=Decimal("0.0001"),
        price_tick=Decimal("0.01"),
        min_amount=Decimal("0.0001"),
        min_cost=Decimal(5),
        last_price=Decimal(3000),
    ),
    "SOL/USDT": PaperMarket(
        base="SOL",
        quote="USDT",
        amount_step=Decimal("0.001"),
        price_tick=Decimal("0.01"),
        min_amount=Decimal("0.001"),
        min_cost=Decimal(5),
        last_price=Decimal(150),
    ),
    "BTC/USDT:USDT": PaperMarket(
        base="BTC",
        quote="USDT",
        type="swap",
        amount_step=Decimal("0.001"),
        price_tick=Decimal("0.1"),
        min_amount=Decimal("0.001"),
        min_cost=Decimal(100),
        last_price=Decimal(50000),
    ),
    "ETH/USDT:USDT": PaperMarket(
        base="ETH",
        quote="USDT",
        type="swap",
        amount_step=Decimal("0.001"),
        price_tick=Decimal("0.01"),
        min_amount=Decimal("0.001"),
        min_cost=Decimal(20),
        last_price=Decimal(3000),
    ),
}


def paper_market(symbol: str, m: PaperMarket) -> Market:
    """A paper market in core's terms."""
    swap = m.type == "swap"
    return Market(
        symbol=symbol,
        id=f"{m.base}{m.quote}",
        base=m.base,
        quote=m.quote,
        type=m.type,
        settle=m.quote if swap else None,
        contract=swap,
        linear=True if swap else None,
        amount_step=m.amount_step,
        price_tick=m.price_tick,
        limits=MarketLimits(amount_min=m.min_amount, cost_min=m.min_cost or None),
    )


def venue_book(venue: str, snapshot: dict[str, Any]) -> tuple[MarketBook, dict[str, Decimal]]:
    """A venue snapshot's markets as core's (translated as the ccxt plugin translates a
    loaded client's, with the precision mode the snapshot was written in) and the last
    price of each market that has one."""
    mode = snapshot.get("precision_mode", ccxt.TICK_SIZE)
    markets, prices = [], {}
    for raw in snapshot["markets"]:
        market = market_from_ccxt(raw, precision_mode=mode)
        if market is None:
            continue
        markets.append(market)
        last = (raw.get("info") or {}).get("last")
        if last not in (None, ""):
            prices[market.symbol] = Decimal(str(last))
    return MarketBook(f"paper ({venue} markets)", markets), prices


def close_matches(ticker: str, books: list[MarketBook], n: int = 3) -> list[str]:
    """Market ids and symbols close to a ticker (its exchange prefix and .P suffix ignored)."""
    head, colon, tail = ticker.partition(":")
    name = (tail if colon and "/" not in head else ticker).upper().removesuffix(".P")
    names: set[str] = set()
    for book in books:
        for market in book.markets.values():
            names.update((market.id.upper(), market.symbol, *market.aliases))
    return difflib.get_close_matches(name, sorted(names), n=n, cutoff=0.6)


class PaperExecutor(Executor):
    route = "paper"

    def __init__(self, account: str, options: Plugin.Options, db: SqliteDatabase):
        super().__init__(account, "paper")
        self.options = options
        self.db = db
        self.markets = MarketBook("paper", [paper_market(s, m) for s, m in options.markets.items()])
        # Real venues' markets (paper_markets snapshots): ticker → venue → market, with the
        # venue's own precision; the ledger books them like the configured ones.
        self.venues: dict[str, MarketBook] = {}
        self.catalog: dict[str, Market] = dict(self.markets.markets)
        self.prices: dict[str, Decimal] = {
            s: m.last_price for s, m in options.markets.items() if m.last_price is not None
        }
        for venue, (book, prices) in options.venue_books().items():
            self.venues[venue] = book
            for symbol, market in book.markets.items():
                self.catalog.setdefault(symbol, market)
                if symbol in prices:
                    self.prices.setdefault(symbol, prices[symbol])

    def matches_exchange(self, name: str) -> bool:
        # Paper stands in for whatever venue the alert names (TradingView's {{exchange}}).
        return True

    async def start(self) -> None:
        balances = {asset: str(amount) for asset, amount in self.options.initial_balances.items()}

        def initialise(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                columns = {row[1] for row in conn.execute("PRAGMA table_info(paper_orders)")}
                if "details" not in columns:  # a ledger from before stop orders and SL/TP
                    conn.execute("ALTER TABLE paper_orders ADD COLUMN details TEXT NOT NULL DEFAULT '{}'")
                for asset, amount in balances.items():
                    conn.execute(
                        "INSERT OR IGNORE INTO paper_balances (account, asset, amount) VALUES (?,?,?)",
                        (self.account, asset, amount),
                    )

        await self.db.run(initialise)

    def lane_key(self, alert: Alert) -> str:
        """The resolved market (BTCUSDT and BINANCE:BTCUSDT share the lane of BTC/USDT)."""
        try:
            return self._resolve(alert)[1].symbol
        except Exception:
            return alert.symbol.upper()

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

    async def account_snapshot(self) -> dict[str, Any]:
        """The ledger's balances, positions and open orders (for the dashboard)."""
        balances = await self.balances()
        positions = await self.positions()
        return {
            "balances": {asset: {"free": amount, "used": "0", "total": amount} for asset, amount in balances.items()},
            "positions": [
                {
                    "symbol": symbol,
                    "contracts": p["contracts"],
                    "entry_price": p["entry_price"],
                    "side": "short" if p["contracts"].startswith("-") else "long",
                }
                for symbol, p in positions.items()
            ],
            "open_orders": [
                {
                    "symbol": o["symbol"],
                    "side": o["side"],
                    "type": o["type"],
                    "amount": o["amount"],
                    "price": o["price"],
                    "id": o["id"],
                    "client_order_id": o.get("client_order_id"),
                }
                for o in await self.orders("open")
            ],
            "errors": {},
        }

    async def settings(self, symbol: str) -> dict[str, Any]:
        """The leverage and margin mode the ledger applies to ``symbol``."""
        return await self.db.run(lambda conn: self._settings(conn, symbol))

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        book, _ = self._resolve(alert)
        return await prepare_alert(
            book,
            alert,
            _PaperReader(self, alert),
            account=self.account,
            client_order_id=client_order_id,
            default_type=self.options.default_market_type,
            leverage=self.options.account_leverage,
            margin_mode=self.options.margin_mode,
            reference_price=self._last_price,
        )

    def _resolve(self, alert: Alert) -> tuple[MarketBook, Market]:
        """The venue the ticker names (BINANCE:DOGEUSDT → binance: its precision and limits),
        else the configured markets (``paper.markets``), the default venue and the other
        venues, in that order; a 422 naming close matches when none has it."""
        head, colon, _ = alert.symbol.partition(":")
        named = (alert.exchange or (head if colon and "/" not in head else "")).strip().lower()
        default = self.options.default_venue
        books = [self.venues[named]] if named in self.venues else []
        books += [self.markets] + [
            self.venues[v] for v in sorted(self.venues, key=lambda v: v != default) if self.venues[v] not in books
        ]
        first_error: Unprocessable | None = None
        for book in books:
            try:
                return book, book.resolve(alert.symbol, alert.market_type, self.options.default_market_type)
            except Unprocessable as exc:
                first_error = first_error or exc
        assert first_error is not None
        close = close_matches(alert.symbol, books)
        raise Unprocessable(
            f"{first_error.message} (paper knows {', '.join(['configured markets', *self.venues])});"
            + (f" did you mean {', '.join(close)}?" if close else " no similar market"),
            code="unknown_symbol",
        )

    async def preflight(self, symbols: list[str]) -> list[tuple[str, str]]:
        """Findings for ``python -m core doctor``: paper, and where each ticker resolves."""
        found = [
            ("info", f"paper: no real money; venues {', '.join(self.venues) or 'none'} (snapshots, not live data)")
        ]
        for symbol in symbols:
            try:
                book, market = self._resolve(Alert.model_validate({"symbol": symbol, "side": "buy", "amount": "1"}))
                found.append(("ok", f"{symbol} → {market.symbol} ({book.venue})"))
            except Unprocessable as exc:
                found.append(("blocker", f"market {symbol!r} is missing: {exc.message}"))
        return found

    def _market(self, symbol: str) -> Market:
        try:
            return self.catalog[symbol]
        except KeyError:
            raise Unprocessable(f"symbol '{symbol}' is not a market on paper", code="unknown_symbol") from None

    def _last_price(self, symbol: str) -> Decimal:
        price = self.prices.get(symbol)
        if price is None:
            raise Unprocessable(
                f"paper has no last price for {symbol}: send the alert's price (TradingView's {{{{close}}}})",
                code="price_required",
            )
        return price

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

    # -- the optional reads of core.trading.execution.Executor (risk limits, flatten, position sync)

    async def fetch_last_price(self, symbol: str) -> Decimal:
        return self._last_price(symbol)

    async def fetch_position(self, symbol: str) -> Decimal:
        market = self._market(symbol)
        if not market.contract:
            return Decimal((await self.balances()).get(market.base, "0"))
        held = (await self.positions()).get(symbol)
        return Decimal(held["contracts"]) if held else Decimal(0)

    async def fetch_positions(self) -> dict[str, Decimal]:
        return {symbol: Decimal(p["contracts"]) for symbol, p in (await self.positions()).items()}

    async def fetch_equity(self, currency: str) -> Decimal:
        """The currency's balance plus, for positions settled in it, their margin and
        unrealized profit at the last price paper knows (none without one)."""
        equity = Decimal((await self.balances()).get(currency, "0"))
        for symbol, held in (await self.positions()).items():
            market = self.catalog.get(symbol)
            if market is None or market.quote != currency:
                continue
            contracts, entry = Decimal(held["contracts"]), Decimal(held["entry_price"])
            leverage = (await self.settings(symbol))["leverage"]
            equity += abs(contracts) * entry / leverage + contracts * (self.prices.get(symbol, entry) - entry)
        return equity

    async def fetch_open_orders(self) -> dict[str, int]:
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            return {
                r[0]: r[1]
                for r in conn.execute(
                    "SELECT symbol, COUNT(*) FROM paper_orders WHERE account = ? AND status = 'open' GROUP BY symbol",
                    (self.account,),
                )
            }

        return await self.db.run(read)

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

    def _open(self, conn: sqlite3.Connection, symbol: str) -> list[sqlite3.Row]:
        return conn.execute(
            "SELECT * FROM paper_orders WHERE account = ? AND symbol = ? AND status = 'open' ORDER BY created_at, rowid",
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
            "ON CONFLICT(account, symbol) DO UPDATE SET leverage = excluded.leverage, margin_mode = excluded.margin_mode",
            (self.account, order.symbol, str(leverage), margin_mode),
        )

    def _move_balance(self, conn: sqlite3.Connection, asset: str, delta: Decimal) -> None:
        row = conn.execute(
            "SELECT amount FROM paper_balances WHERE account = ? AND asset = ?", (self.account, asset)
        ).fetchone()
        have = Decimal(row["amount"]) if row else Decimal(0)
        if have + delta < 0:
            raise Unprocessable(
                f"insufficient {asset} balance on paper account '{self.account}': "
                f"need {_text(-delta)}, have {_text(have)}",
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
            "INSERT INTO paper_orders (id, account, client_order_id, symbol, side, type, amount, price, fee, status, created_at, details)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                order_id,
                self.account,
                client_order_id,
                order.symbol,
                side,
                order_type,
                amount,
                _text(price),
                str(fee),
                status,
                time.time(),
                json.dumps({k: v for k, v in details.items() if v not in (None, False)}),
            ),
        )
        return conn.execute("SELECT * FROM paper_orders WHERE id = ?", (order_id,)).fetchone()

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
                        f"need {_text(-delta)}, have {_text(have)}",
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
                amount=_text(size),
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
            return self._cancel_result(order, [self._find(conn, order.symbol, row["id"], None)])

    def _cancel_all(self, conn: sqlite3.Connection, order: OrderRequest) -> OrderResult:
        with transaction(conn):
            rows = self._open(conn, order.symbol)
            conn.execute(
                "UPDATE paper_orders SET status = 'canceled' WHERE account = ? AND symbol = ? AND status = 'open'",
                (self.account, order.symbol),
            )
            return self._cancel_result(order, [self._find(conn, order.symbol, row["id"], None) for row in rows])

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
            "ON CONFLICT(account, symbol) DO UPDATE SET contracts = excluded.contracts, entry_price = excluded.entry_price",
            (self.account, order.symbol, str(new_size), str(new_entry)),
        )
        return {market.quote: margin_released - margin_locked + pnl - fee}


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


class _PaperReader:
    """What ``core.trading.sizing`` reads of a paper account for one alert (``AccountReader``)."""

    def __init__(self, executor: PaperExecutor, alert: Alert):
        self.executor = executor
        self.alert = alert

    async def position(self, market: Market) -> Decimal:
        held = (await self.executor.positions()).get(market.symbol)
        return Decimal(held["contracts"]) if held else Decimal(0)

    async def balance(self, asset: str, market: Market) -> tuple[Decimal, Decimal]:
        amount = Decimal((await self.executor.balances()).get(asset, "0"))
        return amount, amount  # paper locks nothing for resting orders

    async def price(self, market: Market) -> Decimal:
        # A paper market order fills at the alert's price, else the last price paper knows.
        return self.alert.price or self.executor._last_price(market.symbol)

    def buys_by_cost(self, market: Market) -> bool:
        return False

    async def order_state(self, market: Market, order_id: str | None, client_order_id: str | None) -> str | None:
        ex = self.executor
        row = await ex.db.run(lambda conn: ex._find(conn, market.symbol, order_id, client_order_id))
        return order_status(row["status"]) if row else None

    async def open_orders(self, market: Market) -> list[dict[str, Any]]:
        ex = self.executor
        return [dict(r) for r in await ex.db.run(lambda conn: ex._open(conn, market.symbol))]


class Plugin:
    """Registers the paper accounts (one named ``paper`` unless configured otherwise)."""

    class Options(PluginOptions):
        accounts: list[str] = Field(default_factory=lambda: ["paper"], min_length=1)
        fee_rate: Decimal = Field(Decimal("0.001"), ge=0, le=Decimal("0.1"))
        # Leverage of perpetual positions (the margin they hold), and the account's default
        # for orders that set none; an alert's "leverage"/"margin_mode" change it per symbol.
        leverage: Decimal = Field(Decimal(1), gt=0, le=125)
        margin_mode: Literal["cross", "isolated"] | None = None
        default_market_type: str = Field("spot", pattern="^(spot|swap)$")
        initial_balances: dict[str, Decimal] = Field(
            default_factory=lambda: {"USDT": Decimal(100000), "BTC": Decimal(1), "ETH": Decimal(10)}
        )
        markets: dict[str, PaperMarket] = Field(default_factory=lambda: dict(DEFAULT_MARKETS))
        # Real venues' market lists (precision, limits) from the snapshots shipped with the
        # package (plugins/exchanges/paper/market_snapshots; `python -m core paper-markets refresh`).
        venues: list[str] = Field(default_factory=lambda: ["binance", "bybit", "kraken"])
        # The venue a ticker without an exchange prefix is looked up on after `markets`.
        default_venue: str = "binance"
        # Where the snapshots are (empty: the ones shipped with the package).
        snapshot_dir: str = ""
        _venue_books: dict[str, tuple[MarketBook, dict[str, Decimal]]] | None = PrivateAttr(default=None)

        @model_validator(mode="after")
        def _venues_known(self) -> Plugin.Options:
            for venue in self.venues:
                if venue not in ccxt.exchanges:
                    raise ValueError(f"venues: {venue!r} is not a ccxt exchange id")
            if self.venues and self.default_venue not in self.venues:
                raise ValueError(f"default_venue: {self.default_venue!r} is not one of venues {self.venues}")
            return self

        def venue_books(self) -> dict[str, tuple[MarketBook, dict[str, Decimal]]]:
            """Each venue's ``MarketBook`` and last prices, read from its snapshot once
            (ValueError naming the file when one is missing or broken)."""
            if self._venue_books is None:
                folder = Path(self.snapshot_dir) if self.snapshot_dir else None
                self._venue_books = {venue: venue_book(venue, load_snapshot(venue, folder)) for venue in self.venues}
            return self._venue_books

        @property
        def account_leverage(self) -> int | None:
            """The leverage orders default to (an integer above 1), as a ccxt account's ``leverage``."""
            return int(self.leverage) if self.leverage > 1 and self.leverage == int(self.leverage) else None

    # python -m core paper-markets refresh|list
    commands = COMMANDS

    def __init__(self, options: Plugin.Options):
        self.options = options
        self.db: SqliteDatabase | None = None

    @hookimpl
    def register_executors(self, register, router) -> None:
        try:
            self.options.venue_books()  # read once here: a missing snapshot stops startup with one line
        except ValueError as exc:
            raise ConfigError(f"{router.plugins_file.path}: plugin 'paper': field 'venues': {exc}") from None
        self.db = SqliteDatabase(router.data_dir / "paper.sqlite3", schema=SCHEMA)
        for account in self.options.accounts:
            register(account, PaperExecutor(account, self.options, self.db))

    @hookimpl
    def router_shutdown(self, router) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
