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
from the entry's by ``core.trading.execution.child_order_id``), rest in the ledger as open
orders — paper has no price feed to trigger them — until a cancel or cancel-all.

Besides the configured markets (``markets``), paper knows real venues' market lists from
the snapshots shipped with the package (``plugins.exchanges.paper.markets``; options
``venues``, ``default_venue``, ``snapshot_dir``), translated into core ``Market``s — one
``MarketBook`` per venue, named "paper (<venue> markets)" in refusals — so an alert that
would pass on the venue passes on paper with the venue's precision and limits. A ticker
naming a venue (``BINANCE:DOGEUSDT``, ``BYBIT:ETHUSDT.P``) uses that venue's markets;
others are looked up in the configured markets, then the default venue, then the other
venues. An unknown ticker's 422 names close matches.

The package, by concern: ``plugin`` (this module: ``PaperExecutor`` and the hooks),
``catalog`` (configured markets, venue books), ``markets`` (venue snapshots and
``python -m core paper-markets``), ``ledger`` (the SQLite tables and rows), ``fills``
(booking an order) and ``orders`` (submit, cancels, lookup).
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from core.config import PluginOptions
from core.errors import ConfigError, Unprocessable
from core.hooks.manager import hookimpl
from core.pipeline.models import Alert, OrderRequest
from core.store.sqlite.database import SqliteDatabase, transaction
from core.trading.markets import MarketBook
from core.trading.sizing import prepare_alert
from core.trading.venue import Market, order_status
from plugins.exchanges.ccxt.ids import is_ccxt_exchange
from plugins.exchanges.paper.catalog import DEFAULT_MARKETS, PaperMarket, close_matches, paper_market, venue_book
from plugins.exchanges.paper.fills import PaperFills
from plugins.exchanges.paper.ledger import SCHEMA
from plugins.exchanges.paper.markets import COMMANDS, load_snapshot
from plugins.exchanges.paper.orders import PaperOrders

__all__ = ["DEFAULT_MARKETS", "SCHEMA", "PaperExecutor", "PaperMarket", "Plugin", "paper_market", "venue_book"]


class PaperExecutor(PaperOrders, PaperFills):
    """One paper account: its markets and prices, and the ledger's orders (``ledger``, ``fills``, ``orders``)."""

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
                if not is_ccxt_exchange(venue):
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
