"""Sending an order to a ccxt exchange: once, over REST or the WebSocket API.

``submit`` sends an order **once**; retries and reconciliation belong to the router.
ccxt's exceptions reach core as core's order errors (``errors.order_error``): one raised
before anything left the process is ``OrderNotSent``, one that leaves the order's fate
open ``OutcomeUnknown``. Before the entry, the margin mode and leverage are set when asked
(an exchange's "already set" is fine; a failure there sends no order).

Orders go over the WebSocket API (``create_order_ws``) where the account asks for it and
ccxt supports it; an order whose WebSocket message provably never left
(``websocket.WsOrderGate``) goes over REST instead, and after a connection failure every
order does for ``WS_PAUSE_SECONDS``; one whose answer was lost is an unknown outcome —
never sent twice. ccxt's throttle is credited with the time it sat idle (``throttle``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ccxt

from core.errors import Unprocessable
from core.pipeline.models import OrderRequest, OrderResult, decimal_str
from core.trading.venue import order_status
from plugins.exchanges.ccxt.errors import key_refusal, not_sent, order_error
from plugins.exchanges.ccxt.lifecycle import ClientLifecycle
from plugins.exchanges.ccxt.lookup import class_names
from plugins.exchanges.ccxt.throttle import credit_idle_time, mark_idle, throttlers

log = logging.getLogger(__name__)

# Exchanges whose contract trigger orders need params['triggerDirection'] (above/below).
TRIGGER_DIRECTION = frozenset({"bybit"})
# What exchanges answer when a leverage or margin mode is already what was asked.
ALREADY_SET = ("No need to change", "not modified", "110043", "110026", "-4046")
# After the WebSocket API could not be reached, orders go over REST for this long.
WS_PAUSE_SECONDS = 15.0


class SendOrders(ClientLifecycle):
    """``submit``: configure, send over REST or WebSocket, then protect the entry."""

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
            if order.stop_loss is None and order.take_profit is None:
                return result  # no stop-loss or take-profit to place or report
            return await self._protect(order, result, raw)

    def _throttlers(self) -> list[Any]:
        """ccxt's REST throttle and those of its WebSocket connections (when it throttles)."""
        return throttlers(self.client)

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
            and self._market_buy_requires_price()
        ):
            price = float(order.reference_price)  # the exchange sizes market buys by cost
        if order.stop_price is not None:
            params["triggerPrice"] = float(order.stop_price)
            if class_names(self.client) & TRIGGER_DIRECTION and order.market_type != "spot":
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
            return order.symbol, float(order.cost), params  # float(text) == float(Decimal(text)): both exact
        assert order.amount is not None
        return order.symbol, kind, order.side, float(order.amount), price, params

    def _market_buy_requires_price(self) -> bool:
        """Whether the client sizes market buys by cost (asked once per client: an option
        of its exchange class or of the account, fixed when the client is built)."""
        client = self.client
        known = self._market_buy_price_of
        if known is None or known[0] is not client:
            # ccxt internal: options["createOrder"]["createMarketBuyOrderRequiresPrice"] (bitget) or
            # options["createMarketBuyOrderRequiresPrice"] (gate, htx, ...), as ccxt's handle_option reads it.
            needed = client.handle_option("createOrder", "createMarketBuyOrderRequiresPrice", False) is True
            known = self._market_buy_price_of = (client, needed)
        return known[1]

    async def _configure(self, order: OrderRequest) -> None:
        """Margin mode, then leverage, on the order's symbol; "already set" is fine. Nothing
        of the order has been sent when this fails."""
        if not (order.margin_mode or order.leverage):
            return
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
            info=info if isinstance(info := raw.get("info"), dict) else {},
        )
