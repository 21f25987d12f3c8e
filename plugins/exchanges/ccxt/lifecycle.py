"""A ccxt account's client and its life: built once, markets loaded, kept fresh, closed.

``ClientLifecycle`` is the base of ``CcxtExecutor`` (``plugins.exchanges.ccxt.executor``):
it builds the account's ccxt client (``accounts.build_client``), loads the markets it
trades (only the configured market types) at startup, retries an account that was not
ready and refreshes the markets of a ready one in the background, and closes the client at
shutdown. A client made for payload credentials (``clients.CredentialClients``) may be
retired while an order is using it: ``_use`` counts the operations in flight and the
client is closed once the last one ends (and reopened should a late reconciliation need it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import ccxt

from core.pipeline.models import OrderRequest, OrderResult
from core.trading.execution import Executor
from plugins.exchanges.ccxt.accounts import SECRET_CONFIG_KEYS, AccountOptions, build_client, client_id_rule
from plugins.exchanges.ccxt.markets import market_book
from plugins.exchanges.ccxt.websocket import WsOrderGate
from plugins.exchanges.maintenance import BackgroundTask

log = logging.getLogger(__name__)
_CLIENT_SERIAL = itertools.count(1)
# Market loads in flight, by market source: accounts that start together load them once.
_MARKETS_LOADING: dict[tuple[Any, ...], asyncio.Future[ClientLifecycle | None]] = {}


class ClientLifecycle(Executor):
    """One account's ccxt client, its markets and its state (what every part of the executor reads)."""

    def __init__(self, account: str, options: AccountOptions, *, use_websockets: bool):
        super().__init__(account, options.exchange)
        self.options = options
        built = build_client(options, use_websockets=use_websockets)
        self.client = built.client
        self.client_serial = next(_CLIENT_SERIAL)  # shown in GET /: one client per account, for the process's life
        self.route = built.route
        self.route_note = built.note
        self.keep_types = built.keep_types
        self.default_type = options.unified_default_type()
        self.id_rule = client_id_rule(options.exchange)
        self.gate: WsOrderGate | None = None
        if self.route == "websocket":
            self.gate = WsOrderGate()
            self.gate.attach(self.client)
        self.markets_loaded_at: float | None = None
        self._options_from_markets: dict[str, Any] = {}
        self.ws_fallbacks = 0
        self._ws_paused_until = 0.0
        self._ws_pause_reason = ""
        # Lifecycle for clients that are retired while in use (payload credentials).
        self._in_flight = 0
        self._market_buy_price_of: tuple[Any, bool] | None = None  # (client, answer): send.py
        self._retired = False
        self._closed = False
        self._lifecycle = asyncio.Lock()
        self._maintenance = BackgroundTask()

    if TYPE_CHECKING:  # what the parts call of one another (each defined in its own module)

        def _attaches(self, order: OrderRequest) -> bool: ...  # protective
        def _child_specs(self, order: OrderRequest) -> list[tuple[str, str, str]]: ...  # protective
        async def _protect(
            self,
            order: OrderRequest,
            result: OrderResult,
            raw: dict[str, Any] | None,
            existing: dict[str, dict[str, Any]] | None = None,
        ) -> OrderResult: ...  # protective
        def _result(self, order: OrderRequest, raw: dict[str, Any], route: str) -> OrderResult: ...  # send
        async def _cancel(self, order: OrderRequest) -> OrderResult: ...  # cancel
        async def _cancel_all(self, order: OrderRequest) -> OrderResult: ...  # cancel
        def _cancel_result(
            self, order: OrderRequest, children: list[dict[str, Any]], raw: dict[str, Any]
        ) -> OrderResult: ...  # cancel
        def _separate_trigger_book(self, symbol: str) -> bool: ...  # lookup
        async def _open_orders(self, symbol: str) -> list[dict[str, Any]]: ...  # lookup
        async def _fetch_order(
            self, symbol: str, order_id: str | None, client_order_id: str | None
        ) -> dict[str, Any] | None: ...  # lookup
        async def _find(self, order: OrderRequest) -> dict[str, Any] | None: ...  # lookup

    # ------------------------------------------------------------ lifecycle

    def matches_exchange(self, name: str) -> bool:
        """TradingView's BINANCE fits binance and binanceusdm; BYBIT fits bybit."""
        name = name.strip().lower()
        return bool(name) and (name == self.exchange or self.exchange.startswith(name))

    async def start(self) -> None:
        """Load the account's markets; accounts starting together with the same market
        source (``_market_source``) load them once and share them."""
        source = self._market_source()
        if source is None:
            await self._load_markets()
            return
        loading = _MARKETS_LOADING.get(source)
        if loading is not None:
            loaded = await asyncio.shield(loading)
            if loaded is not None:  # else the other load failed: this account tries on its own
                self.adopt_markets(loaded)
                return
            await self._load_markets()
            return
        done: asyncio.Future[ClientLifecycle | None] = asyncio.get_running_loop().create_future()
        _MARKETS_LOADING[source] = done
        loaded = None
        try:
            await self._load_markets()
            loaded = self
        finally:
            del _MARKETS_LOADING[source]
            done.set_result(loaded)

    def _market_source(self) -> tuple[Any, ...] | None:
        """What the loaded markets depend on: the exchange, its testnet, the market types and
        the ccxt configuration (urls, options) without credentials. None when they may
        depend on the account too (its currencies, its margin pairs): loaded on its own."""
        options = self.options
        if options.load_currencies or "margin" in (options.market_types or ()):
            return None
        config = {k: v for k, v in options.ccxt.items() if k not in SECRET_CONFIG_KEYS}
        return (
            options.exchange,
            options.sandbox,
            tuple(options.market_types or ()),
            json.dumps(config, sort_keys=True, default=str),
        )

    async def _load_markets(self, reload: bool = False) -> None:
        before = dict(self.client.options)
        markets = await self.client.load_markets(reload=reload)
        # What loading the markets wrote into the client's options (kraken's altnames,
        # binance's clock offset): a client adopting these markets takes them too.
        self._options_from_markets = {
            key: value for key, value in self.client.options.items() if key not in before or before[key] is not value
        }
        if self.keep_types and any(m.get("type") not in self.keep_types for m in markets.values()):
            # ccxt: set_markets(markets, currencies) rebuilds the symbol and id indexes.
            # The exchange cannot load by type (or loads more): keep what the account trades.
            self.client.set_markets(
                [m for m in markets.values() if m.get("type") in self.keep_types], self.client.currencies
            )
        if not self.client.markets:
            raise ccxt.ExchangeError(
                f"{self.exchange} returned no markets"
                + (f" of type {', '.join(self.options.market_types)}" if self.options.market_types else "")
            )
        self.markets_loaded_at = time.time()
        self._market_buy_price_of = None  # the options may have changed: asked again
        # Translated now (off the event loop: thousands of markets on a big exchange), not
        # on the first alert's path.
        await asyncio.to_thread(market_book, self.client)

    def adopt_markets(self, other: ClientLifecycle) -> None:
        """Use another client's loaded markets (same exchange and settings): no request, and
        the same market objects. ccxt's ``set_markets_from_exchange`` shares the markets and
        the options its exchanges declare they fill while loading them
        (``marketHelperProps``); the options the other client's load wrote are copied too."""
        self.client.set_markets_from_exchange(other.client)
        self.client.options.update(other._options_from_markets)
        self._options_from_markets = dict(other._options_from_markets)
        self.markets_loaded_at = other.markets_loaded_at
        self._market_buy_price_of = None
        market_book(self.client)

    def start_maintenance(self) -> None:
        self._maintenance.start(self._maintain, f"ccxt-markets-{self.account}")

    async def _maintain(self) -> None:
        """Background: retry a not-ready account; refresh the markets of a ready one."""
        while True:
            if not self.ready:
                await asyncio.sleep(self.options.retry_seconds)
                try:
                    await self._load_markets(reload=True)
                except Exception as exc:
                    self.error = f"{type(exc).__name__}: {exc}"[:300]
                    log.warning("account %s (%s) is still not ready: %s", self.account, self.exchange, self.error)
                    continue
                self.ready, self.error = True, None
                log.info("account %s (%s) is ready: %d markets", self.account, self.exchange, len(self.client.markets))
            else:
                await asyncio.sleep(self.options.markets_refresh_seconds)
                try:
                    await self._load_markets(reload=True)
                except Exception as exc:
                    log.warning(
                        "account %s (%s): reloading markets failed, keeping those of %s: %s",
                        self.account,
                        self.exchange,
                        time.strftime("%H:%M:%S", time.localtime(self.markets_loaded_at or 0)),
                        exc,
                    )

    def stop_maintenance(self) -> None:
        """Ask the background refresh to stop, without waiting (``close`` waits for it)."""
        self._maintenance.cancel()

    async def close(self) -> None:
        await self._maintenance.stop()
        async with self._lifecycle:
            if not self._closed:
                self._closed = True
                await self.client.close()

    def retire(self) -> None:
        """Close when no operation is using the client (evicted from a cache)."""
        self._retired = True
        if self._in_flight == 0:
            asyncio.get_running_loop().create_task(self._close_if_idle())

    async def _close_if_idle(self) -> None:
        async with self._lifecycle:
            if self._retired and self._in_flight == 0 and not self._closed:
                self._closed = True
                with contextlib.suppress(Exception):
                    await self.client.close()

    def _use(self) -> _InUse:
        """``async with self._use():`` around every operation on the client: counts it in
        flight, so a retired client is closed only once the last one ended."""
        return _InUse(self)

    async def _enter_retired(self) -> None:
        async with self._lifecycle:
            if self._closed:  # used after retirement (a late reconciliation): reopen lazily
                # ccxt internal: Exchange.closed_by_user, set by close(); while it is set every
                # request raises ExchangeClosedByUser instead of opening a new session.
                self.client.closed_by_user = False
                self._closed = False
            self._in_flight += 1

    def _exit_use(self) -> None:
        self._in_flight -= 1
        if self._retired and self._in_flight == 0:
            asyncio.get_running_loop().create_task(self._close_if_idle())


class _InUse:
    """``ClientLifecycle._use``: a plain async context manager (one per order and read; an
    ``asynccontextmanager`` would build an async generator the loop tracks for each)."""

    __slots__ = ("owner",)

    def __init__(self, owner: ClientLifecycle):
        self.owner = owner

    async def __aenter__(self) -> None:
        owner = self.owner
        if owner._retired:
            await owner._enter_retired()
        else:
            owner._in_flight += 1

    async def __aexit__(self, *_: object) -> None:
        self.owner._exit_use()
