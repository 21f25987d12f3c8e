"""A naive broker plugin, as a plugin author might first write one: ``prepare`` and
``submit`` only — no ``lookup``, no typed errors. Its broker is a line-based TCP service
(``tests.unit.plugins.exchanges.test_conformance.LineBroker``) that books each order and answers with one JSON line.

The point of the tests that use it: doing the least the contract asks must not double an
order. When the broker books an order and the connection drops before the answer, this
executor raises a plain ``ConnectionResetError``; the router must leave the alert
``unknown`` (or reconciled), never send it again.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

from core.config import PluginOptions
from core.errors import Unprocessable
from core.hooks.manager import hookimpl
from core.pipeline.models import Alert, OrderRequest, OrderResult
from core.trading.execution import Executor


class NaiveBrokerExecutor(Executor):
    def __init__(self, account: str, host: str, port: int):
        super().__init__(account, "naivebroker")
        self.host, self.port = host, port

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        if alert.action != "order" or alert.amount is None:
            raise Unprocessable("the naive broker takes plain orders only", code="not_supported")
        symbol = alert.symbol.split(":")[-1].upper()
        return OrderRequest(
            account=self.account,
            exchange=self.exchange,
            symbol=symbol,
            market_type="spot",
            side=alert.side,
            amount=format(Decimal(alert.amount), "f"),
            client_order_id=client_order_id,
        )

    async def submit(self, order: OrderRequest) -> OrderResult:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(
                json.dumps(
                    {
                        "symbol": order.symbol,
                        "side": order.side,
                        "qty": order.amount,
                        "client_id": order.client_order_id,
                    }
                ).encode()
                + b"\n"
            )
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        if not line:
            raise ConnectionResetError("the broker closed the connection without an answer")
        booked = json.loads(line)
        return OrderResult(
            account=self.account,
            exchange=self.exchange,
            symbol=order.symbol,
            side=order.side,
            amount=order.amount,
            order_id=booked["id"],
            client_order_id=order.client_order_id,
            status="filled",
            filled=order.amount,
        )


class Plugin:
    class Options(PluginOptions):
        host: str = "127.0.0.1"
        port: int

    def __init__(self, options: Plugin.Options):
        self.options = options

    @hookimpl
    def register_executors(self, register) -> None:
        register("naive", NaiveBrokerExecutor("naive", self.options.host, self.options.port))
