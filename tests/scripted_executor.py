"""A scripted executor for unit tests of the engine (not a stand-in for ccxt: the
end-to-end tests drive ccxt's real classes against the emulator)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from core.hooks.manager import hookimpl
from core.pipeline.models import Alert, OrderRequest, OrderResult
from core.trading.execution import Executor, LookupResult
from core.trading.markets import MarketBook, prepare_order
from plugins.exchanges.paper.plugin import DEFAULT_MARKETS, paper_market


class ScriptedExecutor(Executor):
    """Books orders in memory. ``script`` is a list of actions consumed one per submit:
    ``"ok"``, an exception to raise before booking, ``("book_then_raise", exc)``, or
    ``("wait", event)`` to block until the test sets the event."""

    route = "rest"

    def __init__(self, account: str = "script"):
        super().__init__(account, "scripted")
        self.script: list[Any] = []
        self.booked: dict[str, OrderResult] = {}
        self.calls: list[OrderRequest] = []
        self.lookups = 0
        self.started_calls: list[str] = []
        self.call_started = asyncio.Event()
        self._ids = itertools.count(1)
        self.markets = MarketBook("scripted", [paper_market(s, m) for s, m in DEFAULT_MARKETS.items()])
        self.on_submit: Callable[[OrderRequest], None] | None = None

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        return prepare_order(self.markets, alert, account=self.account, client_order_id=client_order_id)

    def _book(self, order: OrderRequest) -> OrderResult:
        result = OrderResult(
            account=self.account,
            exchange="scripted",
            symbol=order.symbol,
            side=order.side,
            order_type=order.order_type,
            amount=order.amount,
            order_id=str(next(self._ids)),
            client_order_id=order.client_order_id,
            status="filled",
            filled=order.amount,
            average="50000",
            route="rest",
        )
        self.booked[order.client_order_id + f"#{len(self.booked)}"] = result
        return result

    async def submit(self, order: OrderRequest) -> OrderResult:
        self.calls.append(order)
        self.started_calls.append(order.client_order_id)
        self.call_started.set()
        action = self.script.pop(0) if self.script else "ok"
        if isinstance(action, tuple) and action[0] == "wait":
            await action[1].wait()
            action = "ok"
        if isinstance(action, BaseException):
            raise action
        if isinstance(action, tuple) and action[0] == "book_then_raise":
            self._book(order)
            raise action[1]
        return self._book(order)

    async def lookup(self, order: OrderRequest) -> LookupResult:
        self.lookups += 1
        found = next((r for r in self.booked.values() if r.client_order_id == order.client_order_id), None)
        return LookupResult.found(found) if found else LookupResult.absent()

    def orders_for(self, client_order_id: str) -> list[OrderResult]:
        return [r for r in self.booked.values() if r.client_order_id == client_order_id]


class ScriptedPlugin:
    def __init__(self, executor: ScriptedExecutor):
        self.executor = executor

    @hookimpl
    def register_executors(self, register):
        register(self.executor.account, self.executor)
