"""Execution on real exchanges through ccxt: named accounts, the default account, and
clients for alerts that carry their own credentials.

Accounts are named in plugins.yaml (``ccxt.accounts``; see ``ccxt_accounts.AccountOptions``);
``DEFAULT_EXCHANGE``/``DEFAULT_API_KEY``/``DEFAULT_API_SECRET`` add the account ``default``.
Each account gets **one** ccxt client, created at startup with its markets loaded (only
the configured market types), reused by every alert, refreshed in the background and
closed at shutdown. An account whose exchange cannot be reached at startup is not ready
(``GET /`` says why, its alerts get 503) and is retried in the background.

Sending: ``submit`` sends an order **once**; retries and reconciliation belong to the
router. ccxt's exceptions reach core as core's order errors (``ccxt_errors.order_error``):
one raised before anything left the process is ``OrderNotSent``, one that leaves the
order's fate open ``OutcomeUnknown``. Orders go over the WebSocket API
(``create_order_ws``) where the account asks for it and ccxt supports it; an order whose
WebSocket message provably never left (``ccxt_websocket.WsOrderGate``) goes over REST
instead, one whose answer was lost is an unknown outcome — never sent twice.

``prepare`` reads what the alert needs (positions, balances, the ticker, the order to
cancel; ``core.trading.sizing``) and places nothing. ``submit`` sets the margin mode and leverage
when asked (an exchange's "already set" is fine; a failure there sends no order), then
sends the entry; stop-loss / take-profit ride on it where ccxt supports that
(``has['createOrderWithTakeProfitAndStopLoss']``), else follow as reduce-only orders
whose client ids derive from the entry's. Cancels go by order id or client id; binance's
conditional contract orders (its Algo Order API) are reached with ``{'trigger': True}``.

``lookup`` finds an order by its client order id, for reconciliation (placing the
entry's missing stop-loss / take-profit), or tells whether a cancel took effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import ccxt
from pydantic import Field, SecretStr

from core.config import PluginOptions
from core.errors import ConfigError, ServiceUnavailable, Unprocessable
from core.hooks.manager import hookimpl
from core.observability.redaction import REDACTOR
from core.pipeline.models import Alert, Credentials, OrderRequest, OrderResult, decimal_str
from core.trading.execution import Executor, LookupResult, VenueNotSupported
from core.trading.markets import MarketBook
from core.trading.sizing import prepare_alert
from core.trading.venue import Market, order_status
from plugins.exchanges.ccxt.accounts import (
    SECRET_CONFIG_KEYS,
    AccountConfigError,
    AccountOptions,
    account_preflight,
    build_client,
    client_id_rule,
    is_ccxt_exchange,
    suggests_exchange,
    unknown_exchange_message,
)
from plugins.exchanges.ccxt.errors import key_refusal, never_left, not_sent, order_error
from plugins.exchanges.ccxt.markets import market_book
from plugins.exchanges.ccxt.websocket import WsOrderGate

log = logging.getLogger(__name__)
_CLIENT_SERIAL = itertools.count(1)

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
# Exchanges whose contract trigger orders need params['triggerDirection'] (above/below).
TRIGGER_DIRECTION = frozenset({"bybit"})
# What exchanges answer when a leverage or margin mode is already what was asked.
ALREADY_SET = ("No need to change", "not modified", "110043", "110026", "-4046")
# After the WebSocket API could not be reached, orders go over REST for this long.
WS_PAUSE_SECONDS = 15.0


def credit_idle_time(throttler: Any) -> None:
    """Let ccxt's throttle count the time it sat idle.

    ccxt's leaky bucket refills only while a request is waiting in it, so after any pause
    the next request still waits for the tokens the previous one spent — every order pays
    ``cost × rateLimit`` (≈ 11 ms per binance REST order, 250 ms per WebSocket order) however
    long the account was idle. This credits the idle time, never beyond the bucket's
    capacity: the pacing of bursts is ccxt's, unchanged. The time is taken after a request
    completed, so the credit errs on the low side. A no-op if ccxt's internals differ.
    """
    config = getattr(throttler, "config", None)
    if (
        not isinstance(config, dict)
        or getattr(throttler, "running", True)
        or not isinstance(config.get("tokens"), (int, float))
    ):
        return
    idle_since = getattr(throttler, "_router_idle_since", None)
    if idle_since is not None and config["tokens"] < config.get("capacity", 1):
        elapsed_ms = time.time() * 1000 - idle_since
        config["tokens"] = min(config["tokens"] + elapsed_ms * config.get("refillRate", 0), config.get("capacity", 1))


def mark_idle(throttler: Any) -> None:
    if getattr(throttler, "config", None) is not None:
        throttler._router_idle_since = time.time() * 1000


def _mro_names(obj: Any) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__}


class CcxtExecutor(Executor):
    """One account on a ccxt exchange: its client, its markets and its order route."""

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
        self.ws_fallbacks = 0
        self._ws_paused_until = 0.0
        self._ws_pause_reason = ""
        # Lifecycle for clients that are retired while in use (payload credentials).
        self._in_flight = 0
        self._retired = False
        self._closed = False
        self._lifecycle = asyncio.Lock()
        self._maintenance: asyncio.Task | None = None

    # ------------------------------------------------------------ lifecycle

    def matches_exchange(self, name: str) -> bool:
        """TradingView's BINANCE fits binance and binanceusdm; BYBIT fits bybit."""
        name = name.strip().lower()
        return bool(name) and (name == self.exchange or self.exchange.startswith(name))

    async def start(self) -> None:
        await self._load_markets()

    async def _load_markets(self, reload: bool = False) -> None:
        markets = await self.client.load_markets(reload=reload)
        if self.keep_types and any(m.get("type") not in self.keep_types for m in markets.values()):
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
        # Translated now (off the event loop: thousands of markets on a big exchange), not
        # on the first alert's path.
        await asyncio.to_thread(market_book, self.client)

    def adopt_markets(self, other: CcxtExecutor) -> None:
        """Use another client's loaded markets (same exchange and settings): no request."""
        self.client.set_markets(other.client.markets, other.client.currencies)
        self.markets_loaded_at = other.markets_loaded_at
        market_book(self.client)

    def start_maintenance(self) -> None:
        if self._maintenance is None:
            self._maintenance = asyncio.create_task(self._maintain(), name=f"ccxt-markets-{self.account}")

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

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._maintenance
            self._maintenance = None
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

    @contextlib.asynccontextmanager
    async def _use(self) -> AsyncIterator[None]:
        if self._retired:
            async with self._lifecycle:
                if self._closed:  # used after retirement (a late reconciliation): reopen lazily
                    self.client.closed_by_user = False
                    self._closed = False
                self._in_flight += 1
        else:
            self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._retired and self._in_flight == 0:
                asyncio.get_running_loop().create_task(self._close_if_idle())

    async def preflight(self, symbols: list[str]) -> list[tuple[str, str]]:
        """Findings for ``python -m core doctor`` (``ccxt_accounts.account_preflight``)."""
        return await account_preflight(self, symbols)

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["client"] = self.client_serial
        status["markets"] = len(self.client.markets or {})
        if self.markets_loaded_at:
            status["markets_loaded_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.markets_loaded_at))
        if self.options.market_types:
            status["market_types"] = self.options.market_types
        if self.options.sandbox:
            status["sandbox"] = True
        if not self.options.rate_limit:
            status["rate_limit"] = False
        if self.route_note:
            status["route_note"] = self.route_note
        if self.route == "websocket":
            status["websocket_fallbacks"] = self.ws_fallbacks
            if self._ws_paused():
                status["route_note"] = (
                    f"WebSocket API unreachable ({self._ws_pause_reason}); orders go over REST for now"
                )
        return status

    # ------------------------------------------------------------ orders

    def lane_key(self, alert: Alert) -> str:
        """The resolved market (BTCUSDT and BINANCE:BTCUSDT share the lane of BTC/USDT)."""
        try:
            return self.book.resolve(alert.symbol, alert.market_type, self.default_type).symbol
        except Exception:
            return alert.symbol.upper()

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        try:
            return await self._prepare(alert, client_order_id)
        except Exception as exc:  # reads only: nothing was sent
            translated = order_error(exc, sent=False)
            if translated is exc:
                raise
            raise translated from exc

    async def _prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        coid = self.id_rule.for_alert(alert.alert_id or client_order_id, self.account, client_order_id)
        async with self._use():
            order = await prepare_alert(
                self.book,
                alert,
                self,
                account=self.account,
                client_order_id=coid,
                default_type=self.default_type,
                leverage=self.options.leverage,
                margin_mode=self.options.margin_mode,
            )
        if self.options.sandbox:
            order = order.model_copy(update={"sandbox": True})
        if order.stop_loss and order.take_profit and order.market_type == "spot" and not self._attaches(order):
            # Two separate sell orders would each lock the whole base amount: the second is refused.
            raise Unprocessable(
                f"on {self.exchange} spot, stop_loss and take_profit would be two orders selling the same "
                f"{self.client.market(order.symbol)['base']}; send one of them",
                code="not_supported",
            )
        for what, value, feature in (
            ("leverage", order.leverage, "setLeverage"),
            ("margin_mode", order.margin_mode, "setMarginMode"),
        ):
            if value and not self.client.has.get(feature):
                raise Unprocessable(
                    f"ccxt cannot set the {what.replace('_', ' ')} on {self.exchange}: set it on the exchange and "
                    f"leave {what} out of the alert and the account",
                    code="not_supported",
                )
        return order

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
                    # Without a symbol: binance weighs it heavily and ccxt refuses unless told it is meant.
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
        # Listing without a symbol is deliberate here (a flatten must see every market).
        self.client.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
        if isinstance(self.client.options.get("fetchOpenOrders"), dict):
            self.client.options["fetchOpenOrders"]["warnWithoutSymbol"] = False
        types = sorted({m.get("type") for m in (self.client.markets or {}).values()} - {None})
        seen: dict[str, set[str]] = {}
        async with self._use():
            for kind in types:
                books = [{"type": kind}]
                if kind != "spot" and _mro_names(self.client) & SEPARATE_TRIGGER_BOOKS:
                    books.append({"type": kind, "trigger": True})
                for params in books:
                    for order in await self.client.fetch_open_orders(None, None, None, params):
                        seen.setdefault(order["symbol"], set()).add(str(order.get("id")))
        return {symbol: len(ids) for symbol, ids in seen.items()}

    # -- sending

    async def submit(self, order: OrderRequest) -> OrderResult:
        try:
            return await self._submit(order)
        except Exception as exc:
            translated = order_error(exc, sent=True)
            if translated is exc:
                raise
            raise translated from exc

    async def _submit(self, order: OrderRequest) -> OrderResult:
        async with self._use():
            if order.action == "cancel":
                return await self._cancel(order)
            if order.action == "cancel_all":
                return await self._cancel_all(order)
            await self._configure(order)
            args = self._order_args(order)
            throttlers = self._throttlers()
            for throttler in throttlers:
                credit_idle_time(throttler)
            try:
                if order.cost is not None:
                    result, raw = await self._submit_rest(order, args)
                elif self.gate is not None and not self._ws_paused() and not order.stop_price:
                    result, raw = await self._submit_ws(order, args)
                else:
                    result, raw = await self._submit_rest(order, args)
            finally:
                for throttler in throttlers + [t for t in self._throttlers() if t not in throttlers]:
                    mark_idle(throttler)
            return await self._protect(order, result, raw)

    def _throttlers(self) -> list[Any]:
        """ccxt's REST throttle and those of its WebSocket connections (when it throttles)."""
        if not self.client.enableRateLimit:
            return []
        found = [getattr(self.client, "throttler", None)]
        found += [getattr(ws, "throttle", None) for ws in (getattr(self.client, "clients", None) or {}).values()]
        return [t for t in found if t is not None]

    def _order_args(self, order: OrderRequest) -> tuple[Any, ...]:
        params = dict(order.params)
        params[self.id_rule.param] = order.client_order_id
        kind = "limit" if order.order_type in ("limit", "stop_limit") else "market"
        price: float | None = float(order.price) if order.price is not None else None
        if (
            kind == "market"
            and order.side == "buy"
            and order.reference_price
            and order.cost is None
            and self.client.safe_bool(self.client.options, "createMarketBuyOrderRequiresPrice", False)
        ):
            price = float(order.reference_price)  # the exchange sizes market buys by cost
        if order.stop_price is not None:
            params["triggerPrice"] = float(order.stop_price)
            if _mro_names(self.client) & TRIGGER_DIRECTION and order.market_type != "spot":
                # A stop buys when the price rises to it and sells when it falls to it.
                params["triggerDirection"] = "above" if order.side == "buy" else "below"
        if order.reduce_only:
            params["reduceOnly"] = True
        if order.post_only:
            params["postOnly"] = True
        if order.time_in_force:
            params["timeInForce"] = order.time_in_force
        if self._attaches(order):
            if order.stop_loss:
                params["stopLoss"] = {"triggerPrice": float(order.stop_loss)}
            if order.take_profit:
                params["takeProfit"] = {"triggerPrice": float(order.take_profit)}
        if order.cost is not None:
            return order.symbol, float(Decimal(order.cost)), params
        assert order.amount is not None
        return order.symbol, kind, order.side, float(Decimal(order.amount)), price, params

    def _attaches(self, order: OrderRequest) -> bool:
        """Stop-loss / take-profit ride on the entry (ccxt's unified stopLoss/takeProfit) where
        ccxt supports it — bybit, okx — except on spot market orders (bybit refuses them there)."""
        return bool(self.client.has.get("createOrderWithTakeProfitAndStopLoss")) and (
            order.market_type != "spot" or order.order_type != "market"
        )

    async def _configure(self, order: OrderRequest) -> None:
        """Margin mode, then leverage, on the order's symbol; "already set" is fine. Nothing
        of the order has been sent when this fails."""
        settings = (
            ("margin mode", order.margin_mode, self.client.set_margin_mode),
            ("leverage", order.leverage, self.client.set_leverage),
        )
        for what, value, method in settings:
            if not value:
                continue
            try:
                await method(value, order.symbol)
            except Exception as exc:
                if isinstance(exc, (ccxt.MarginModeAlreadySet, ccxt.NoChange)) or any(
                    mark in str(exc) for mark in ALREADY_SET
                ):
                    continue
                refused = key_refusal(exc)
                if isinstance(refused, ccxt.ExchangeError) and not isinstance(
                    refused, (ccxt.AuthenticationError, ccxt.PermissionDenied)
                ):
                    raise Unprocessable(
                        f"{self.exchange} refused {what} {value} for {order.symbol}, so the order was not sent: "
                        f"{str(exc)[:200]}",
                        code="exchange_rejected",
                    ) from exc
                raise order_error(refused, sent=False) from exc

    async def _submit_rest(self, order: OrderRequest, args: tuple[Any, ...]) -> tuple[OrderResult, dict[str, Any]]:
        if order.cost is not None:
            raw = await self.client.create_market_buy_order_with_cost(*args)
        else:
            raw = await self.client.create_order(*args)
        raw = await self._complete(order, raw)
        return self._result(order, raw, "rest"), raw

    async def _complete(self, order: OrderRequest, raw: dict[str, Any]) -> dict[str, Any]:
        """An acknowledgement with ids only (bybit): ask once for the order's state."""
        if raw and raw.get("id") is not None and raw.get("status") is None:
            try:
                return await self._find(order) or raw
            except Exception as exc:  # the order is placed; its state is a nicety
                log.info("account %s: order %s placed; fetching its state failed: %s", self.account, raw.get("id"), exc)
        return raw

    async def _submit_ws(self, order: OrderRequest, args: tuple[Any, ...]) -> tuple[OrderResult, dict[str, Any]]:
        assert self.gate is not None
        ticket = self.gate.track(order.client_order_id)
        timeout = max(self.client.timeout / 1000, 1.0)
        try:
            raw = await asyncio.wait_for(self.client.create_order_ws(*args), timeout)
        except BaseException as exc:
            if ticket.settle():
                if isinstance(exc, TimeoutError):
                    raise ccxt.RequestTimeout(
                        f"{self.exchange} sent no answer to the WebSocket order within {timeout:g}s"
                    ) from exc
                refused = key_refusal(exc)
                if refused is not exc:
                    raise refused from exc
                raise  # it may have reached the exchange: the router reconciles
            # The message never left, and the gate will never let it leave now.
            if isinstance(exc, (ccxt.NetworkError, TimeoutError, ConnectionError)):
                self._pause_ws(exc)
            elif not isinstance(exc, (ccxt.NotSupported, ccxt.BadRequest)):
                raise not_sent(exc) from exc
            self.ws_fallbacks += 1
            log.warning(
                "account %s: WebSocket order %s was not sent (%s); placing it over REST",
                self.account,
                order.client_order_id,
                type(exc).__name__,
            )
            return await self._submit_rest(order, args)
        ticket.settle()
        raw = await self._complete(order, raw)
        return self._result(order, raw, "websocket"), raw

    def _ws_paused(self) -> bool:
        return time.monotonic() < self._ws_paused_until

    def _pause_ws(self, exc: BaseException) -> None:
        self._ws_paused_until = time.monotonic() + WS_PAUSE_SECONDS
        self._ws_pause_reason = f"{type(exc).__name__}: {str(exc)[:120]}"

    def _result(self, order: OrderRequest, raw: dict[str, Any], route: str) -> OrderResult:
        raw = raw or {}
        order_id = raw.get("id")
        return OrderResult(
            account=self.account,
            exchange=self.exchange,
            symbol=raw.get("symbol") or order.symbol,
            side=raw.get("side") or order.side,
            order_type=order.order_type if order.stop_price else (raw.get("type") or order.order_type),
            amount=decimal_str(raw.get("amount")) or order.amount,
            price=decimal_str(raw.get("price")) or order.price,
            order_id=str(order_id) if order_id is not None else None,
            client_order_id=raw.get("clientOrderId") or order.client_order_id,
            # An acknowledgement without a status (bybit answers with ids only) is an open order.
            status=order_status(raw.get("status"))
            if raw.get("status")
            else ("open" if order_id is not None else "unknown"),
            filled=decimal_str(raw.get("filled")),
            average=decimal_str(raw.get("average")),
            route=route,
            sandbox=self.options.sandbox,
            info=raw.get("info") if isinstance(raw.get("info"), dict) else {},
        )

    # -- stop-loss and take-profit

    def _protection_plan(
        self, order: OrderRequest, result: OrderResult, raw: dict[str, Any] | None
    ) -> tuple[str, Decimal]:
        """The side and size of the orders protecting what the entry leaves open."""
        market = self.client.market(order.symbol)
        if market.get("contract") and order.position_before is not None and order.amount is not None:
            signed = Decimal(order.amount) if order.side == "buy" else -Decimal(order.amount)
            after = Decimal(order.position_before) + signed
            return ("sell" if after > 0 else "buy"), abs(after)
        filled = Decimal(result.filled or 0)
        size = filled if filled > 0 else Decimal(order.amount or 0)
        if not market.get("contract") and raw:
            for fee in raw.get("fees") or ([raw["fee"]] if raw.get("fee") else []):
                if fee and fee.get("currency") == market.get("base") and fee.get("cost"):
                    size -= Decimal(str(fee["cost"]))  # a spot buy's fee paid in the base currency
        try:
            size = Decimal(self.client.amount_to_precision(order.symbol, str(size)))
        except ccxt.InvalidOrder:
            size = Decimal(0)
        return ("sell" if order.side == "buy" else "buy"), size

    def _child_specs(self, order: OrderRequest) -> list[tuple[str, str, str]]:
        """(kind, trigger price, client order id) of each protective order the entry asks for."""
        specs = []
        for kind, tag, trigger in (("stop_loss", "sl", order.stop_loss), ("take_profit", "tp", order.take_profit)):
            if trigger is not None:
                specs.append((kind, trigger, self.id_rule.child(order.client_order_id, tag)))
        return specs

    async def _protect(
        self,
        order: OrderRequest,
        result: OrderResult,
        raw: dict[str, Any] | None,
        existing: dict[str, dict[str, Any]] | None = None,
    ) -> OrderResult:
        """Report attached stop-loss/take-profit, or place them as reduce-only orders of their own
        after the entry (``existing``: those a lookup already found, which are not placed again)."""
        specs = self._child_specs(order)
        if not specs:
            return result
        if self._attaches(order):
            result.children = [
                {"type": kind, "trigger_price": trigger, "attached": True, "status": "attached"}
                for kind, trigger, _ in specs
            ]
            return result
        side, size = self._protection_plan(order, result, raw)
        contract = order.market_type != "spot"
        children = []
        for kind, trigger, coid in specs:
            child: dict[str, Any] = {
                "type": kind,
                "client_order_id": coid,
                "side": side,
                "amount": decimal_str(size),
                "trigger_price": trigger,
            }
            found = (existing or {}).get(coid)
            if found is not None:
                children.append(
                    child | {"order_id": found.get("id"), "status": order_status(found.get("status") or "open")}
                )
                continue
            if size <= 0:
                children.append(child | {"status": "not_placed", "error": "the entry left nothing to protect"})
                continue
            params: dict[str, Any] = {
                self.id_rule.param: coid,
                ("stopLossPrice" if kind == "stop_loss" else "takeProfitPrice"): float(trigger),
            }
            if contract:
                params["reduceOnly"] = True
            try:
                placed = await self.client.create_order(order.symbol, "market", side, float(size), None, params)
                children.append(
                    child | {"order_id": placed.get("id"), "status": order_status(placed.get("status") or "open")}
                )
            except Exception as exc:
                may_exist = isinstance(exc, ccxt.NetworkError) and not never_left(exc)
                log.warning(
                    "account %s: %s %s for %s was %s: %s",
                    self.account,
                    kind,
                    coid,
                    order.client_order_id,
                    "maybe placed" if may_exist else "not placed",
                    exc,
                )
                children.append(
                    child
                    | {
                        "status": "unknown" if may_exist else "failed",
                        "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                    }
                )
        result.children = children
        return result

    # -- cancels

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

    def _separate_trigger_book(self, symbol: str) -> bool:
        """binance keeps conditional contract orders (Algo Order API) apart: ccxt reaches them
        with params {'trigger': True} when reading, cancelling and listing."""
        market = self.client.market(symbol)
        return bool(_mro_names(self.client) & SEPARATE_TRIGGER_BOOKS) and bool(market.get("contract"))

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
        names = _mro_names(self.client)
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
        names = _mro_names(self.client)
        return bool(names & FETCH_ORDER_BY_CLIENT_ID) or any(name in names for name in LIST_ORDERS_BY_CLIENT_ID)

    async def _find(self, order: OrderRequest) -> dict[str, Any] | None:
        return await self._find_client_id(order.symbol, order.client_order_id, trigger=order.stop_price is not None)

    async def _find_client_id(self, symbol: str, coid: str, trigger: bool | None = None) -> dict[str, Any] | None:
        """The order with client id ``coid``. ``trigger`` None: look in both books where the
        exchange keeps conditional orders apart; True/False: in that one first."""
        client = self.client
        names = _mro_names(client)
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


def _text_or_none(value: Any) -> str | None:
    return None if value is None else format(Decimal(str(value)), "f")


def credentials_fingerprint(exchange: str, credentials: Credentials) -> str:
    """A stable hash of the credentials: the cache key and the account label, never the secret."""
    parts = [
        exchange,
        credentials.api_key.get_secret_value(),
        credentials.secret.get_secret_value(),
        credentials.password.get_secret_value() if credentials.password else "",
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class CredentialClients:
    """Executors for alerts carrying apiKey/secret: an LRU keyed by a hash of the credentials.

    Bounded; an evicted executor is closed once no order is using it. Concurrent alerts
    with the same new credentials share one client.
    """

    def __init__(self, size: int):
        self.size = size
        self._clients: OrderedDict[str, CcxtExecutor] = OrderedDict()
        self._starting: dict[str, asyncio.Future] = {}

    def __len__(self) -> int:
        return len(self._clients)

    async def get(self, key: str, make) -> CcxtExecutor:
        executor = self._clients.get(key)
        if executor is not None:
            self._clients.move_to_end(key)
            return executor
        starting = self._starting.get(key)
        if starting is not None:
            return await asyncio.shield(starting)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._starting[key] = future
        try:
            executor = await make()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no warning when no one else waited
            raise
        finally:
            self._starting.pop(key, None)
        self._clients[key] = executor
        future.set_result(executor)
        while len(self._clients) > self.size:
            _, evicted = self._clients.popitem(last=False)
            evicted.retire()
        return executor

    async def close_all(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for executor in clients:
            with contextlib.suppress(Exception):
                await executor.close()


class Plugin:
    """Registers the ccxt accounts and serves alerts that carry their own credentials."""

    class Options(PluginOptions):
        # Named accounts: alerts choose one with "account": "<name>".
        accounts: dict[str, AccountOptions] = Field(default_factory=dict)
        # Clients kept for alerts carrying apiKey/secret (one per credential set).
        payload_clients: int = Field(16, ge=1, le=1024)

    def __init__(self, options: Plugin.Options):
        self.options = options
        self.executors: list[CcxtExecutor] = []
        self.payload = CredentialClients(options.payload_clients)
        self.use_websockets = False

    @hookimpl
    def register_executors(self, register, router) -> None:
        settings = router.settings
        self.use_websockets = settings.use_websockets
        accounts = dict(self.options.accounts)
        default_exchange = settings.default_exchange.strip().lower()
        if default_exchange != "paper" and "default" not in {name.lower() for name in accounts}:
            keys = bool(settings.default_api_key and settings.default_api_secret)
            if not is_ccxt_exchange(default_exchange):
                if keys or suggests_exchange(default_exchange):  # a typo, most likely
                    raise ConfigError(
                        f"environment: DEFAULT_EXCHANGE: expected paper or a ccxt exchange id: "
                        f"{unknown_exchange_message(default_exchange)}"
                    )
                log.warning(
                    "DEFAULT_EXCHANGE=%s is not a ccxt exchange id; the ccxt plugin adds no default account",
                    default_exchange,
                )
            elif keys:
                accounts["default"] = AccountOptions(
                    exchange=default_exchange,
                    api_key=SecretStr(settings.default_api_key),
                    secret=SecretStr(settings.default_api_secret),
                )
            else:
                log.info(
                    "DEFAULT_EXCHANGE=%s without DEFAULT_API_KEY/DEFAULT_API_SECRET: no default account "
                    "(alerts name an account or carry their own apiKey/secret)",
                    default_exchange,
                )
        for name, options in accounts.items():
            for value in options.secret_values():
                router.register_secret(value)
            try:
                executor = CcxtExecutor(name, options, use_websockets=self.use_websockets)
            except AccountConfigError as exc:
                raise ConfigError(
                    f"{router.config_path}: plugin 'ccxt': field 'accounts.{name}.{exc.field}': {exc.message}"
                ) from None
            register(name, executor)
            self.executors.append(executor)

    @hookimpl
    def router_startup(self, router) -> None:
        for executor in self.executors:
            executor.start_maintenance()

    @hookimpl
    async def executor_for_credentials(self, exchange: str, credentials: Credentials, router) -> CcxtExecutor | None:
        if not is_ccxt_exchange(exchange):
            return None
        key = credentials_fingerprint(exchange, credentials)
        template = self._template(exchange)

        async def make() -> CcxtExecutor:
            options = (template.options if template else AccountOptions(exchange=exchange, public=True)).model_copy(
                update={
                    "api_key": credentials.api_key,
                    "secret": credentials.secret,
                    "password": credentials.password,
                    "ccxt": {
                        k: v
                        for k, v in (template.options.ccxt if template else {}).items()
                        if k not in SECRET_CONFIG_KEYS
                    },
                }
            )
            for value in options.secret_values():
                REDACTOR.add(value)
            executor = CcxtExecutor(f"payload-{exchange}-{key[:10]}", options, use_websockets=self.use_websockets)
            try:
                if template is not None and template.ready and template.client.markets:
                    executor.adopt_markets(template)
                else:
                    await executor.start()
            except Exception as exc:
                await executor.close()
                raise ServiceUnavailable(
                    f"{exchange} is not reachable ({type(exc).__name__}); nothing was sent",
                    code="exchange_unreachable",
                    headers={"Retry-After": "5"},
                ) from None
            executor.ready = True
            return executor

        return await self.payload.get(key, make)

    def _template(self, exchange: str) -> CcxtExecutor | None:
        """The configured account whose settings (urls, market types) payload credentials reuse."""
        candidates = [e for e in self.executors if e.exchange == exchange]
        for preferred in (exchange, "default"):
            for executor in candidates:
                if executor.account.lower() == preferred:
                    return executor
        return candidates[0] if candidates else None

    @hookimpl
    async def router_shutdown(self, router) -> None:
        for executor in self.executors:
            if executor._maintenance is not None:
                executor._maintenance.cancel()
        await self.payload.close_all()
