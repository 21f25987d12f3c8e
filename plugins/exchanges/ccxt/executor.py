"""``CcxtExecutor``: one account on a ccxt exchange, made of its parts.

Each part is a module of this package:

* ``lifecycle.ClientLifecycle`` — the ccxt client, its markets, background refresh, close;
* ``reads.AccountReads`` — positions, balances, prices, open orders (what sizing reads);
* ``send.SendOrders`` — ``submit`` over REST or the WebSocket API, exactly once;
* ``protective.ProtectiveOrders`` — stop-loss / take-profit of an entry;
* ``cancel.CancelOrders`` — cancel one order or every open order of a symbol;
* ``lookup.FindOrders`` — orders by client id, and ``lookup`` for reconciliation.

This module adds what ties them to an alert: ``prepare`` (``core.trading.sizing``; it reads
and places nothing), the lane key, the health status and the doctor's preflight.
"""

from __future__ import annotations

import time
from typing import Any

from core.errors import Unprocessable
from core.pipeline.models import Alert, OrderRequest
from core.trading.sizing import prepare_alert
from plugins.exchanges.ccxt.cancel import CancelOrders
from plugins.exchanges.ccxt.errors import order_error
from plugins.exchanges.ccxt.lookup import FindOrders
from plugins.exchanges.ccxt.preflight import account_preflight
from plugins.exchanges.ccxt.protective import ProtectiveOrders
from plugins.exchanges.ccxt.reads import AccountReads
from plugins.exchanges.ccxt.send import SendOrders


class CcxtExecutor(SendOrders, ProtectiveOrders, CancelOrders, FindOrders, AccountReads):
    """One account on a ccxt exchange: its client, its markets and its order route."""

    async def preflight(self, symbols: list[str]) -> list[tuple[str, str]]:
        """Findings for ``python -m core doctor`` (``preflight.account_preflight``)."""
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
            (("leverage", order.leverage, "setLeverage"), ("margin_mode", order.margin_mode, "setMarginMode"))
            if order.leverage or order.margin_mode
            else ()
        ):
            if value and not self.client.has.get(feature):
                raise Unprocessable(
                    f"ccxt cannot set the {what.replace('_', ' ')} on {self.exchange}: set it on the exchange and "
                    f"leave {what} out of the alert and the account",
                    code="not_supported",
                )
        return order
