"""Execution on real exchanges through ccxt: named accounts, the default account, and
clients for alerts that carry their own credentials.

Accounts are named in plugins.yaml (``ccxt.accounts``; see ``ccxt_accounts.AccountOptions``);
``DEFAULT_EXCHANGE``/``DEFAULT_API_KEY``/``DEFAULT_API_SECRET`` add the account ``default``.
Each account gets **one** ccxt client, created at startup with its markets loaded (only
the configured market types), reused by every alert, refreshed in the background and
closed at shutdown. An account whose exchange cannot be reached at startup is not ready
(``GET /`` says why, its alerts get 503) and is retried in the background.

Sending: ``submit`` sends an order **once** and raises ccxt's exception; retries and
reconciliation belong to the router. An exception raised before anything left the
process carries ``order_not_sent = True``. Orders go over the WebSocket API
(``create_order_ws``) where the account asks for it and ccxt supports it; an order whose
WebSocket message provably never left (``ccxt_websocket.WsOrderGate``) goes over REST
instead, one whose answer was lost is an unknown outcome — never sent twice.

``lookup`` finds an order by its client order id, for reconciliation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
from pydantic import Field, SecretStr

from core.config import PluginOptions
from core.errors import ConfigError, ServiceUnavailable
from core.execution import Executor
from core.markets import market_index, prepare_order
from core.models import Alert, Credentials, OrderRequest, OrderResult, decimal_str
from core.plugins import hookimpl
from core.redaction import REDACTOR
from plugins.exchanges.ccxt_accounts import (
    SECRET_CONFIG_KEYS,
    AccountConfigError,
    AccountOptions,
    build_client,
    client_id_rule,
    is_ccxt_exchange,
)
from plugins.exchanges.ccxt_websocket import WsOrderGate

log = logging.getLogger(__name__)
_CLIENT_SERIAL = itertools.count(1)

# Exchanges whose fetchOrder takes params['clientOrderId'] (checked in ccxt 4.5's source);
# matched against the ccxt class and its bases, so binanceusdm counts as binance.
FETCH_ORDER_BY_CLIENT_ID = frozenset({
    "binance", "okx", "bitget", "kucoin", "mexc", "gate", "htx", "kraken", "bitstamp", "bitvavo", "bingx", "phemex",
    "woo", "xt", "coinbaseexchange", "hyperliquid", "poloniex", "bitrue",
})
# Exchanges whose order lists filter by the client order id, and the parameter.
LIST_ORDERS_BY_CLIENT_ID = {"bybit": "orderLinkId"}
# After the WebSocket API could not be reached, orders go over REST for this long.
WS_PAUSE_SECONDS = 15.0


def mark_not_sent(exc: BaseException) -> BaseException:
    """Tell the router this order never left the process (a resend is safe)."""
    try:
        exc.order_not_sent = True  # type: ignore[attr-defined]
    except AttributeError:
        pass
    return exc


def never_left(exc: BaseException) -> bool:
    """Whether a REST request failed before any byte of it was written."""
    if isinstance(exc, ccxt.ExchangeClosedByUser):
        return True
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        # ClientConnectorError: refused, unresolvable, TLS handshake failed; ConnectionTimeoutError:
        # no connection within the timeout. Either way no request was written.
        if isinstance(cause, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, socket.gaierror)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def key_refusal(exc: BaseException) -> BaseException:
    """ccxt reads binance's -2015 ("Invalid API-key, IP, or permissions") as a temporary ban
    (DDoSProtection) once the key has worked before; for an order router it means the key,
    its IP whitelist or its permissions were changed: an authentication error, not retried."""
    if isinstance(exc, ccxt.DDoSProtection) and '"code":-2015' in str(exc).replace(" ", ""):
        refused = ccxt.AuthenticationError(str(exc))
        refused.__cause__ = exc
        return refused
    return exc


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
    if not isinstance(config, dict) or getattr(throttler, "running", True) or not isinstance(config.get("tokens"), (int, float)):
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
            self.client.set_markets([m for m in markets.values() if m.get("type") in self.keep_types], self.client.currencies)
        if not self.client.markets:
            raise ccxt.ExchangeError(f"{self.exchange} returned no markets"
                                     + (f" of type {', '.join(self.options.market_types)}" if self.options.market_types else ""))
        self.markets_loaded_at = time.time()

    def adopt_markets(self, other: CcxtExecutor) -> None:
        """Use another client's loaded markets (same exchange and settings): no request."""
        self.client.set_markets(other.client.markets, other.client.currencies)
        self.markets_loaded_at = other.markets_loaded_at

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
                    log.warning("account %s (%s): reloading markets failed, keeping those of %s: %s", self.account,
                                self.exchange, time.strftime("%H:%M:%S", time.localtime(self.markets_loaded_at or 0)), exc)

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
                status["route_note"] = f"WebSocket API unreachable ({self._ws_pause_reason}); orders go over REST for now"
        return status

    # ------------------------------------------------------------ orders

    def lane_key(self, alert: Alert) -> str:
        """The resolved market (BTCUSDT and BINANCE:BTCUSDT share the lane of BTC/USDT)."""
        try:
            return market_index(self.client).resolve(alert.symbol, alert.market_type, self.default_type)["symbol"]
        except Exception:
            return alert.symbol.upper()

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        coid = self.id_rule.for_alert(alert.alert_id or client_order_id, self.account, client_order_id)
        return prepare_order(self.client, alert, account=self.account, client_order_id=coid, default_type=self.default_type)

    def _order_args(self, order: OrderRequest) -> tuple[Any, ...]:
        params = dict(order.params)
        params[self.id_rule.param] = order.client_order_id
        price: float | None = float(order.price) if order.price is not None else None
        if (order.order_type == "market" and order.side == "buy" and order.reference_price
                and self.client.safe_bool(self.client.options, "createMarketBuyOrderRequiresPrice", False)):
            price = float(order.reference_price)  # the exchange sizes market buys by cost
        return order.symbol, order.order_type, order.side, float(Decimal(order.amount)), price, params

    async def submit(self, order: OrderRequest) -> OrderResult:
        async with self._use():
            args = self._order_args(order)
            throttlers = self._throttlers()
            for throttler in throttlers:
                credit_idle_time(throttler)
            try:
                if self.gate is not None and not self._ws_paused():
                    return await self._submit_ws(order, args)
                return await self._submit_rest(order, args)
            finally:
                for throttler in throttlers + [t for t in self._throttlers() if t not in throttlers]:
                    mark_idle(throttler)

    def _throttlers(self) -> list[Any]:
        """ccxt's REST throttle and those of its WebSocket connections (when it throttles)."""
        if not self.client.enableRateLimit:
            return []
        found = [getattr(self.client, "throttler", None)]
        found += [getattr(ws, "throttle", None) for ws in (getattr(self.client, "clients", None) or {}).values()]
        return [t for t in found if t is not None]

    async def _submit_rest(self, order: OrderRequest, args: tuple[Any, ...]) -> OrderResult:
        try:
            raw = await self.client.create_order(*args)
        except Exception as exc:
            if never_left(exc):
                raise mark_not_sent(exc)
            refused = key_refusal(exc)
            if refused is not exc:
                raise refused from exc
            raise
        return self._result(order, await self._complete(order, raw), "rest")

    async def _complete(self, order: OrderRequest, raw: dict[str, Any]) -> dict[str, Any]:
        """An acknowledgement with ids only (bybit): ask once for the order's state."""
        if raw and raw.get("id") is not None and raw.get("status") is None:
            try:
                return await self._find(order) or raw
            except Exception as exc:  # the order is placed; its state is a nicety
                log.info("account %s: order %s placed; fetching its state failed: %s", self.account, raw.get("id"), exc)
        return raw

    async def _submit_ws(self, order: OrderRequest, args: tuple[Any, ...]) -> OrderResult:
        assert self.gate is not None
        ticket = self.gate.track(order.client_order_id)
        timeout = max(self.client.timeout / 1000, 1.0)
        try:
            raw = await asyncio.wait_for(self.client.create_order_ws(*args), timeout)
        except BaseException as exc:
            if ticket.settle():
                if isinstance(exc, TimeoutError):
                    raise ccxt.RequestTimeout(f"{self.exchange} sent no answer to the WebSocket order within {timeout:g}s") from exc
                refused = key_refusal(exc)
                if refused is not exc:
                    raise refused from exc
                raise  # it may have reached the exchange: the router reconciles
            # The message never left, and the gate will never let it leave now.
            if isinstance(exc, (ccxt.NetworkError, TimeoutError, ConnectionError)):
                self._pause_ws(exc)
            elif not isinstance(exc, (ccxt.NotSupported, ccxt.BadRequest)):
                raise mark_not_sent(exc)
            self.ws_fallbacks += 1
            log.warning("account %s: WebSocket order %s was not sent (%s); placing it over REST", self.account,
                        order.client_order_id, type(exc).__name__)
            return await self._submit_rest(order, args)
        ticket.settle()
        return self._result(order, await self._complete(order, raw), "websocket")

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
            order_type=raw.get("type") or order.order_type,
            amount=decimal_str(raw.get("amount")) or order.amount,
            price=decimal_str(raw.get("price")) or order.price,
            order_id=str(order_id) if order_id is not None else None,
            client_order_id=raw.get("clientOrderId") or order.client_order_id,
            # An acknowledgement without a status (bybit answers with ids only) is an open order.
            status=raw.get("status") or ("open" if order_id is not None else "unknown"),
            filled=decimal_str(raw.get("filled")),
            average=decimal_str(raw.get("average")),
            route=route,
            info=raw.get("info") if isinstance(raw.get("info"), dict) else {},
        )

    # ------------------------------------------------------------ reconciliation

    async def lookup(self, order: OrderRequest) -> OrderResult | None:
        """The order with ``order.client_order_id``, or None when the exchange has none."""
        async with self._use():
            raw = await self._find(order)
        return self._result(order, raw, self.route) if raw else None

    async def _find(self, order: OrderRequest) -> dict[str, Any] | None:
        coid, symbol, client = order.client_order_id, order.symbol, self.client
        names = _mro_names(client)
        if names & FETCH_ORDER_BY_CLIENT_ID:
            try:
                return await client.fetch_order_with_client_order_id(coid, symbol)
            except ccxt.OrderNotFound:
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


def credentials_fingerprint(exchange: str, credentials: Credentials) -> str:
    """A stable hash of the credentials: the cache key and the account label, never the secret."""
    parts = [exchange, credentials.api_key.get_secret_value(), credentials.secret.get_secret_value(),
             credentials.password.get_secret_value() if credentials.password else ""]
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
                if keys:  # keys for an exchange ccxt does not know: a typo, most likely
                    raise ConfigError(f"environment: DEFAULT_EXCHANGE: '{settings.default_exchange}' is neither paper nor a ccxt exchange id")
                log.warning("DEFAULT_EXCHANGE=%s is not a ccxt exchange id; the ccxt plugin adds no default account", default_exchange)
            elif keys:
                accounts["default"] = AccountOptions(exchange=default_exchange, api_key=SecretStr(settings.default_api_key),
                                                     secret=SecretStr(settings.default_api_secret))
            else:
                log.info("DEFAULT_EXCHANGE=%s without DEFAULT_API_KEY/DEFAULT_API_SECRET: no default account "
                         "(alerts name an account or carry their own apiKey/secret)", default_exchange)
        for name, options in accounts.items():
            for value in options.secret_values():
                REDACTOR.add(value, static=True)
            try:
                executor = CcxtExecutor(name, options, use_websockets=self.use_websockets)
            except AccountConfigError as exc:
                raise ConfigError(f"{router.plugins_file.path}: plugin 'ccxt': field 'accounts.{name}.{exc.field}': {exc.message}") from None
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
            options = (template.options if template else AccountOptions(exchange=exchange)).model_copy(update={
                "api_key": credentials.api_key, "secret": credentials.secret, "password": credentials.password,
                "ccxt": {k: v for k, v in (template.options.ccxt if template else {}).items() if k not in SECRET_CONFIG_KEYS},
            })
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
                raise ServiceUnavailable(f"{exchange} is not reachable ({type(exc).__name__}); nothing was sent",
                                         code="exchange_unreachable", headers={"Retry-After": "5"}) from None
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
