"""Binance WebSocket API (``ws-api/v3`` for spot, ``ws-fapi/v1`` for USD-M).

Requests are ``{"id", "method", "params"}``; answers are
``{"id", "status": 200, "result": ..., "rateLimits": [...]}`` or
``{"id", "status": 4xx/5xx, "error": {"code", "msg"}}``.  Signed methods carry
``apiKey``, ``timestamp`` and ``signature`` (HMAC-SHA256 of the other params
sorted by key as ``k=v&...``, booleans as ``true``/``false``) inside
``params``.  Each request is served in its own task, so a delayed answer does
not hold back the others on the same connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType, web

from . import binance_render as R
from . import faults as F
from .binance import BinanceVenue
from .dispatch import DROP, CallRunner, Handler, Reply, RequestContext
from .faults import Call
from .markets import BINANCE, SPOT
from .state import now_ms


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


class BinanceWsApi:
    """One WebSocket API endpoint (spot or linear) bound to the shared venue."""

    def __init__(self, venue: BinanceVenue, runner: CallRunner, market_type: str) -> None:
        self.venue = venue
        self.runner = runner
        self.market_type = market_type
        self.route_name = "ws-api" if market_type == SPOT else "ws-fapi"
        self.path = "/ws-api/v3" if market_type == SPOT else "/ws-fapi/v1"
        # method name: (handler, fault-matching action, signed)
        self.methods: dict[str, tuple[Handler, str, bool]] = {
            "ping": (self._ping, F.PUBLIC, False),
            "time": (self._time, F.PUBLIC, False),
        }
        # The other methods are REST endpoints' handlers under the names the REST table gives them.
        for endpoint in venue.endpoints():
            if endpoint.ws is not None and endpoint.market_type == market_type:
                self.methods[endpoint.ws] = (endpoint.handler, endpoint.action, endpoint.security == "signed")

    async def _ping(self, ctx: RequestContext) -> Reply:
        return Reply(200, {})

    async def _time(self, ctx: RequestContext) -> Reply:
        return Reply(200, {"serverTime": now_ms()})

    # ------------------------------------------------------------ transport
    async def handle(self, request: web.Request) -> web.StreamResponse:
        state = self.runner.state
        handshake = Call(
            venue=BINANCE, route=f"GET {self.path}", action=F.PUBLIC, transport="ws", market_type=self.market_type
        )
        down = state.faults.take_down(handshake)
        if down is not None:
            if down.mode == "reset" and request.transport is not None:
                request.transport.abort()
            return web.Response(status=503, text="503 Service Unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        lock = asyncio.Lock()
        tasks: set[asyncio.Task] = set()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    task = asyncio.create_task(self._serve(request, ws, lock, message.data))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            for task in tasks:
                task.cancel()
        return ws

    async def _serve(self, request: web.Request, ws: web.WebSocketResponse, lock: asyncio.Lock, data: str) -> None:
        try:
            message = json.loads(data)
            request_id = message.get("id")
            method = message["method"]
            raw_params = message.get("params") or {}
            if not isinstance(raw_params, dict):
                raise ValueError("params must be an object")
        except (ValueError, KeyError, TypeError, AttributeError):
            await self._send(
                ws, lock, {"id": None, "status": 400, "error": {"code": -1102, "msg": "Invalid JSON request."}}
            )
            return
        params = {k: _text(v) for k, v in raw_params.items() if v is not None}
        entry = self.methods.get(method)
        if entry is None:
            await self._send(
                ws,
                lock,
                {"id": request_id, "status": 400, "error": {"code": -1102, "msg": f"Unknown method '{method}'."}},
            )
            return
        handler, action, signed = entry
        call = Call(
            venue=BINANCE,
            route=f"{self.route_name} {method}",
            action=action,
            transport="ws",
            market_type=self.market_type,
            api_key=params.get("apiKey"),
            symbol=params.get("symbol"),
            aliases=(f"ws {method}",),
        )
        ctx = RequestContext(call=call, params=params)
        state = self.runner.state
        down = state.faults.take_down(call)
        if down is not None:
            self._drop(request)
            return

        async def execute(context: RequestContext) -> Reply:
            if signed:
                self.venue.authenticate_ws(context)
            return await handler(context)

        result = await self.runner.run(self.venue, ctx, execute, check_down=False)
        if result is DROP:
            self._drop(request)
            return
        await self._send(ws, lock, self._envelope(request_id, result, params))

    def _envelope(self, request_id: Any, reply: Reply, params: dict[str, str]) -> dict[str, Any]:
        limits = R.rate_limits(self.market_type)[:1]
        if reply.status == 200:
            body = {"id": request_id, "status": 200, "result": reply.body}
            if params.get("returnRateLimits", "true") != "false":
                body["rateLimits"] = [{**limit, "count": 1} for limit in limits]
            return body
        error_body = reply.body if isinstance(reply.body, dict) else {"code": -1008, "msg": "Service Unavailable."}
        body = {"id": request_id, "status": reply.status, "error": error_body}
        if reply.status in (418, 429):
            body["error"] = {**error_body, "data": {"retryAfter": now_ms() + 1000}}
            body["rateLimits"] = [{**limit, "count": limit["limit"] + 1} for limit in limits]
        return body

    @staticmethod
    async def _send(ws: web.WebSocketResponse, lock: asyncio.Lock, body: dict[str, Any]) -> None:
        if ws.closed:
            return
        async with lock:
            try:
                await ws.send_str(json.dumps(body))
            except (ConnectionError, RuntimeError):
                pass

    @staticmethod
    def _drop(request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()
