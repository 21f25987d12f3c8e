"""The :class:`Emulator`: one aiohttp server on one port serving every venue.

Paths (relative to ``emu.base_url``):

* Binance spot REST ``/api/v3/...``, USD-M REST ``/fapi/v1|v2|v3/...``
* Binance WebSocket API ``/ws-api/v3`` (spot) and ``/ws-fapi/v1`` (USD-M)
* Bybit v5 REST under ``/bybit`` (``/bybit/v5/...``)
* Alpaca Trading API v2 under ``/alpaca`` (``/alpaca/v2/...``; ``alpaca.py``)
* control API ``/_emu/...`` (JSON, below)

Anything else answers 404 and is recorded in ``GET /_emu/unhandled`` so that
a missing endpoint shows up instead of silently failing.

Control API (every method also exists on :class:`Emulator` and on
``control.EmulatorControl``):

==========================  ===================================================
``GET  /_emu/health``        ``{"ok": true, "base_url": ...}``
``POST /_emu/reset``         back to the start configuration (accounts,
                             balances, prices); drops orders, log and faults
``POST /_emu/faults``        queue one fault object or a list of them (shape in
                             ``faults.py``): ``{"kind": "delay_after_book",
                             "seconds": 2, "count": 1, "match": {"venue":
                             "binance", "route": "order.place", "key": "k"}}``;
                             answers the stored fault(s) with ``id``
``GET  /_emu/faults``        faults not yet used up, with ``remaining``
``DELETE /_emu/faults``      clear all (``?id=N``: one)
``GET  /_emu/orders``        booked orders, oldest first: ``seq``, ``venue``,
                             ``market_type``, ``account_key``, ``symbol``,
                             ``side``, ``type``, ``quantity``, ``price``,
                             ``trigger_price``, ``client_order_id``,
                             ``order_id``, ``status`` (NEW, FILLED, CANCELED,
                             EXPIRED, TRIGGERED), ``executed_qty``,
                             ``avg_price``, ``transport`` (rest|ws),
                             ``booked_at`` (epoch s), ``reduce_only``,
                             ``post_only``, ``time_in_force``, ``stop_loss``/
                             ``take_profit`` (attached, bybit) ...; any field
                             is a query filter, plus ``since_seq``
``GET  /_emu/requests``      order-placement attempts incl. refused and faulted
                             ones: ``seq``, ``time``, ``venue``, ``route``,
                             ``transport``, ``account_key``, ``symbol``,
                             ``side``, ``type``, ``quantity``, ``price``,
                             ``client_order_id``, ``outcome`` (booked,
                             rejected, fault, answered, pending), ``error``
                             ``{code, msg}``, ``fault``, ``order_id``
``POST /_emu/price``         ``{"symbol": "BTC/USDT" | "BTC/USDT:USDT" |
                             "BTCUSDT", "price": 51000, "venue"?,
                             "market_type"?}``; fills/fires what becomes
                             marketable
``GET  /_emu/prices``        every market's price
``GET  /_emu/positions``     ``?key=``: positions per account (signed
                             ``amount``, ``leverage``, ``margin_type``,
                             attached ``stop_loss``/``take_profit``)
``GET  /_emu/balances``      ``?key=``: ``{key: {wallet: {asset: {free,
                             locked, total}}}}``
``GET|POST /_emu/accounts``  list keys / add ``{"key", "secret",
                             "balances"?: {wallet: {asset: amount}}}``
``POST /_emu/clock``         ``{"offset_ms": 10000}``: the venues' clock runs
                             this far ahead of the host's (serverTime,
                             timestamp checks); reset puts it back
``POST /_emu/api_restrictions`` ``{"key", "enableWithdrawals": true, ...}``:
                             binance's apiRestrictions of that key
``GET  /_emu/unhandled``     requests that hit no route
``GET|POST /_emu/alpaca/clock`` Alpaca's market clock: ``{"is_open": bool}``
==========================  ===================================================
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import faults as F
from .alpaca import AlpacaVenue, alpaca_markets
from .binance import BinanceVenue
from .binance_ws import BinanceWsApi
from .bybit import BybitVenue
from .dispatch import DROP, CallRunner, Reply, RequestContext
from .faults import Call
from .markets import BINANCE, LINEAR, SPOT, MarketSpec, default_markets
from .state import ExchangeState


def _filtered(rows: list[dict[str, Any]], filters: dict[str, Any]) -> list[dict[str, Any]]:
    def same(value: Any, wanted: Any) -> bool:
        if isinstance(value, bool):
            return str(wanted).lower() == str(value).lower()
        return str(value) == str(wanted)

    return [r for r in rows if all(same(r.get(k), v) for k, v in filters.items() if v is not None)]


def _json_response(reply: Reply) -> web.StreamResponse:
    if reply.body is None:
        return web.Response(status=reply.status, headers=reply.headers)
    if isinstance(reply.body, (dict, list)):
        return web.Response(
            status=reply.status, text=json.dumps(reply.body), content_type="application/json", headers=reply.headers
        )
    return web.Response(status=reply.status, text=str(reply.body), content_type="text/html", headers=reply.headers)


class Emulator:
    """Loopback exchange emulator for ccxt's Binance, Binance USD-M and Bybit classes.

    ``accounts`` maps API key to secret (default ``emu-key-1``/``emu-secret-1``
    and ``emu-key-2``/``emu-secret-2``); ``prices`` maps a symbol (``BTCUSDT``,
    ``BTC/USDT``, ``BTC/USDT:USDT``) to its starting price; ``balances`` maps a
    wallet (``binance.spot``, ``binance.linear``, ``bybit.unified``) to
    ``{asset: amount}`` for every account.

    Use ``async with Emulator() as emu:`` or ``await emu.start()`` /
    ``await emu.stop()``.  The synchronous methods (``orders``, ``add_fault``,
    ``set_price`` ...) mirror the HTTP control API for in-process use.
    """

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        prices: dict[str, Any] | None = None,
        balances: dict[str, dict[str, Any]] | None = None,
        markets: list[MarketSpec] | None = None,
    ) -> None:
        self.state = ExchangeState(
            accounts=accounts, prices=prices, balances=balances, markets=markets or default_markets() + alpaca_markets()
        )
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()
        self._waiters = 0
        self.state.listeners.append(self._on_change)
        self.runner = CallRunner(self.state, self._sleep)
        self.binance = BinanceVenue(self.state)
        self.bybit = BybitVenue(self.state)
        self.alpaca = AlpacaVenue(self.state)
        self.host: str | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("emulator not started")
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving; returns the base URL (``port=0`` picks a free port)."""
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()
        app = self.build_app()
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.host, self.port = host, self._runner.addresses[0][1]
        return self.base_url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _sleep(self, seconds: float) -> None:
        """A fault delay that ends early when the emulator stops."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _on_change(self) -> None:
        if not self._waiters:
            return

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        try:
            asyncio.get_running_loop().create_task(notify())
        except RuntimeError:
            pass

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every state change); return its value."""

        async def waiter() -> Any:
            async with self._changed:
                while True:
                    value = predicate()
                    if value:
                        return value
                    await self._changed.wait()

        self._waiters += 1
        try:
            return await asyncio.wait_for(waiter(), timeout)
        finally:
            self._waiters -= 1

    # ------------------------------------------------------- in-process API
    def ccxt_config(self, venue: str, **kwargs: Any) -> dict[str, Any]:
        from .ccxt_config import ccxt_config

        return ccxt_config(venue, self.base_url, **kwargs)

    def reset(self) -> None:
        self.state.reset()
        self.alpaca.reset()

    def add_fault(self, kind: str, **spec: Any) -> dict[str, Any]:
        return self.state.faults.add_dict({"kind": kind, **spec}).to_dict()

    def clear_faults(self, fault_id: int | None = None) -> int:
        return self.state.faults.clear(fault_id)

    def faults(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.state.faults.active()]

    def orders(self, since_seq: int | str | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Every booked order (any status) as dicts, oldest first.

        Filter on any field by equality (``client_order_id='x'``, ``status='FILLED'``);
        ``since_seq=N`` keeps orders with ``seq > N``.
        """
        rows = [o.to_dict() for o in self.state.orders if since_seq is None or o.seq > int(since_seq)]
        return _filtered(rows, filters)

    def requests(self, since_seq: int | str | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Order-placement attempts (booked, rejected or faulted), oldest first; same filters as :meth:`orders`."""
        rows = [dict(r) for r in self.state.requests if since_seq is None or r["seq"] > int(since_seq)]
        return _filtered(rows, filters)

    def set_price(self, symbol: str, price: Any, venue: str | None = None, market_type: str | None = None) -> None:
        self.state.set_price(symbol, price, venue=venue, market_type=market_type)

    def prices(self) -> list[dict[str, Any]]:
        return self.state.prices_snapshot()

    def positions(self, key: str | None = None) -> list[dict[str, Any]]:
        return self.state.positions_snapshot(key)

    def balances(self, key: str | None = None) -> dict[str, Any]:
        return self.state.balances_snapshot(key)

    def add_account(self, key: str, secret: str, balances: dict[str, dict[str, Any]] | None = None) -> None:
        self.state.add_account(key, secret, balances)

    # ------------------------------------------------------------------ app
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        self._control_routes(app)
        for venue in (self.binance, self.bybit, self.alpaca):
            for endpoint in venue.endpoints():
                app.router.add_route(endpoint.method, venue.prefix + endpoint.path, self._rest_adapter(venue, endpoint))
        self.alpaca.control_routes(app)
        for market_type in (SPOT, LINEAR):
            ws_api = BinanceWsApi(self.binance, self.runner, market_type)
            app.router.add_get(ws_api.path, ws_api.handle)
        app.router.add_route("*", "/{tail:.*}", self._unhandled)
        return app

    def _rest_adapter(self, venue: Any, endpoint: Any) -> Callable:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw_query = request.rel_url.raw_query_string
            raw_body = await request.text() if request.can_read_body else ""
            params = venue.parse_params(raw_query, raw_body, request.headers.get("Content-Type", ""))
            params.update(request.match_info)  # path parameters (Alpaca's /v2/orders/{order_id})
            call = Call(
                venue=venue.venue,
                route=f"{endpoint.method} {endpoint.path}",
                action=endpoint.action,
                transport="rest",
                market_type=venue.market_type_of(endpoint, params),
                api_key=request.headers.get(venue.key_header),
                symbol=params.get("symbol"),
                aliases=endpoint.aliases(venue.venue),
            )
            ctx = RequestContext(
                call=call, params=params, headers=request.headers, raw_query=raw_query, raw_body=raw_body
            )

            async def execute(context: RequestContext) -> Reply:
                if endpoint.security != "none":
                    venue.authenticate_rest(context, endpoint.security)
                return await endpoint.handler(context)

            result = await self.runner.run(venue, ctx, execute)
            if result is DROP:
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError()
            return _json_response(result)

        return handle

    async def _unhandled(self, request: web.Request) -> web.StreamResponse:
        self.state.unhandled.append(
            {"method": request.method, "path": request.path, "query": request.rel_url.raw_query_string}
        )
        down = self.state.faults.take_down(
            Call(venue=BINANCE, route=f"{request.method} {request.path}", action=F.PUBLIC)
        )
        if down is not None:
            return web.Response(status=503, text="503 Service Unavailable")
        return web.json_response(
            {"code": -1, "msg": f"emulator: no route for {request.method} {request.path}"}, status=404
        )

    # -------------------------------------------------------- control API
    def _control_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/_emu/health", self._c_health)
        r.add_post("/_emu/reset", self._c_reset)
        r.add_get("/_emu/faults", self._c_faults)
        r.add_post("/_emu/faults", self._c_add_faults)
        r.add_delete("/_emu/faults", self._c_clear_faults)
        r.add_get("/_emu/orders", self._c_orders)
        r.add_get("/_emu/requests", self._c_requests)
        r.add_get("/_emu/prices", self._c_prices)
        r.add_post("/_emu/price", self._c_set_price)
        r.add_get("/_emu/positions", self._c_positions)
        r.add_get("/_emu/balances", self._c_balances)
        r.add_get("/_emu/accounts", self._c_accounts)
        r.add_post("/_emu/accounts", self._c_add_account)
        r.add_get("/_emu/unhandled", self._c_unhandled)
        r.add_post("/_emu/clock", self._c_clock)
        r.add_post("/_emu/api_restrictions", self._c_api_restrictions)

    @staticmethod
    async def _body(request: web.Request) -> Any:
        text = await request.text()
        return json.loads(text) if text.strip() else {}

    @staticmethod
    def _bad(message: str) -> web.Response:
        return web.json_response({"error": message}, status=400)

    async def _c_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "base_url": self.base_url})

    async def _c_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _c_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults())

    async def _c_add_faults(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            specs = body if isinstance(body, list) else [body]
            added = [self.state.faults.add_dict(spec).to_dict() for spec in specs]
        except (ValueError, TypeError) as exc:
            return self._bad(str(exc))
        return web.json_response(added if isinstance(body, list) else added[0])

    async def _c_clear_faults(self, request: web.Request) -> web.Response:
        fault_id = request.query.get("id")
        return web.json_response({"cleared": self.clear_faults(int(fault_id) if fault_id else None)})

    async def _c_orders(self, request: web.Request) -> web.Response:
        return web.json_response(self.orders(**dict(request.query)))

    async def _c_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests(**dict(request.query)))

    async def _c_prices(self, request: web.Request) -> web.Response:
        return web.json_response(self.prices())

    async def _c_set_price(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            touched = self.state.set_price(
                str(body["symbol"]), body["price"], venue=body.get("venue"), market_type=body.get("market_type")
            )
        except (KeyError, ValueError, TypeError) as exc:
            return self._bad(str(exc))
        return web.json_response({"ok": True, "markets": [f"{book}:{symbol}" for book, symbol in touched]})

    async def _c_positions(self, request: web.Request) -> web.Response:
        return web.json_response(self.positions(request.query.get("key")))

    async def _c_balances(self, request: web.Request) -> web.Response:
        return web.json_response(self.balances(request.query.get("key")))

    async def _c_accounts(self, request: web.Request) -> web.Response:
        return web.json_response(sorted(self.state.accounts))

    async def _c_add_account(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            self.add_account(str(body["key"]), str(body["secret"]), body.get("balances"))
        except (KeyError, ValueError, TypeError) as exc:
            return self._bad(str(exc))
        return web.json_response({"ok": True, "key": body["key"]})

    async def _c_clock(self, request: web.Request) -> web.Response:
        from .state import CLOCK

        try:
            CLOCK["offset_ms"] = int((await self._body(request))["offset_ms"])
        except (KeyError, ValueError, TypeError) as exc:
            return self._bad(str(exc))
        return web.json_response({"ok": True, "offset_ms": CLOCK["offset_ms"]})

    async def _c_api_restrictions(self, request: web.Request) -> web.Response:
        try:
            body = dict(await self._body(request))
            account = self.state.accounts[str(body.pop("key"))]
            account.api_restrictions.update({str(k): bool(v) for k, v in body.items()})
        except (KeyError, ValueError, TypeError) as exc:
            return self._bad(f"unknown key or bad body: {exc}")
        return web.json_response(account.api_restrictions)

    async def _c_unhandled(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.unhandled)
