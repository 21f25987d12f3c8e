"""A reference execution plugin: copy this file into your drop-in folder (``local_plugins/``)
and it trades. docs/plugins/execution.md explains every line; tests run it as is.

``PretendVenue`` stands in for your venue's client library (an HTTP API, an SDK): it books
orders in memory and can be asked for an order by its client order id. Replace it with the
real client; keep the rest.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

from pydantic import SecretStr

from core.config import PluginOptions
from core.errors import CredentialsRefused, OrderNotSent, OrderRejected, OutcomeUnknown, Unprocessable, VenueBusy
from core.hooks.manager import hookimpl
from core.pipeline.models import Alert, NothingToDo, OrderRequest, OrderResult
from core.trading.execution import Executor, LookupResult
from core.trading.markets import MarketBook, prepare_order
from core.trading.venue import Market, MarketLimits, order_status


class PretendVenue:
    """Your venue's client. Its own exceptions: Refused, Busy, Unreachable, TimedOut."""

    class Refused(Exception): ...

    class Busy(Exception): ...

    class Unreachable(Exception): ...  # the connection could not be opened: nothing was sent

    class TimedOut(Exception): ...  # sent, no answer: the order may exist

    def __init__(self, api_key: str):
        self.api_key = api_key
        self.orders: dict[str, dict] = {}  # client order id → order
        self._ids = itertools.count(1)

    async def instruments(self) -> list[dict]:
        return [
            {"ticker": "AAPL", "currency": "USD", "lot": "0.0001", "tick": "0.01", "min_qty": "0.0001"},
            {"ticker": "MSFT", "currency": "USD", "lot": "1", "tick": "0.01", "min_qty": "1"},
        ]

    async def place(self, ticker: str, side: str, qty: str, client_id: str) -> dict:
        if client_id in self.orders:  # like most venues: a client id is taken once
            raise self.Refused(f"duplicate client id {client_id}")
        if Decimal(qty) > 1000:
            raise self.Refused("insufficient buying power")
        self.orders[client_id] = {
            "id": str(next(self._ids)),
            "ticker": ticker,
            "side": side,
            "qty": qty,
            "client_id": client_id,
            "state": "FILLED",
            "avg_price": "190.5",
        }
        return self.orders[client_id]

    async def find(self, client_id: str) -> dict | None:
        return self.orders.get(client_id)


class ExampleExecutor(Executor):
    route = "rest"

    def __init__(self, account: str, venue: PretendVenue):
        super().__init__(account, "pretendvenue")
        self.venue = venue
        self.book = MarketBook(self.exchange, [])

    def matches_exchange(self, name: str) -> bool:
        # TradingView's {{exchange}} for these tickers (NASDAQ:AAPL) may reach this account.
        return name.lower() in ("pretendvenue", "nasdaq", "nyse")

    async def start(self) -> None:
        # Called once; a failure leaves the account "not ready" and is NOT retried by the
        # router. This venue's instruments are static, so one try is enough.
        self.book = MarketBook(
            self.exchange,
            [
                Market(
                    symbol=i["ticker"],
                    id=i["ticker"],
                    base=i["ticker"],
                    quote=i["currency"],
                    amount_step=Decimal(i["lot"]),
                    price_tick=Decimal(i["tick"]),
                    limits=MarketLimits(amount_min=Decimal(i["min_qty"])),
                )
                for i in await self.venue.instruments()
            ],
        )

    def lane_key(self, alert: Alert) -> str:
        try:  # NASDAQ:AAPL and AAPL are one market: one ordering lane
            return self.book.resolve(alert.symbol, alert.market_type, None).symbol
        except Exception:
            return alert.symbol.upper()

    async def prepare(self, alert: Alert, client_order_id: str) -> OrderRequest:
        if alert.action != "order":
            raise Unprocessable(f"{self.exchange} takes plain orders only (not {alert.action})", code="not_supported")
        if alert.stop_loss is not None or alert.take_profit is not None:
            raise Unprocessable("this venue places no stop-loss / take-profit orders", code="not_supported")
        order = prepare_order(self.book, alert, account=self.account, client_order_id=client_order_id)
        if order.side == "sell" and not any(o["ticker"] == order.symbol for o in self.venue.orders.values()):
            raise NothingToDo(f"nothing held on {order.symbol} to sell")
        return order

    async def submit(self, order: OrderRequest) -> OrderResult:
        try:
            placed = await self.venue.place(
                order.symbol, order.side or "buy", order.amount or "0", order.client_order_id
            )
        except PretendVenue.Refused as exc:
            if "duplicate client id" in str(exc):  # booked by an earlier send: let reconciliation find it
                raise OutcomeUnknown(str(exc)) from exc
            raise OrderRejected(str(exc)) from exc
        except PretendVenue.Busy as exc:
            raise VenueBusy(str(exc)) from exc
        except PretendVenue.Unreachable as exc:
            raise OrderNotSent(str(exc)) from exc
        except PretendVenue.TimedOut as exc:
            raise OutcomeUnknown(str(exc)) from exc
        except PermissionError as exc:
            raise CredentialsRefused(str(exc)) from exc
        return self._result(order, placed)

    async def lookup(self, order: OrderRequest) -> LookupResult:
        try:
            found = await self.venue.find(order.client_order_id)
        except (PretendVenue.Unreachable, PretendVenue.TimedOut, PretendVenue.Busy) as exc:
            return LookupResult.cannot_tell(str(exc))  # ask again later
        if found is None:
            return LookupResult.absent(f"no order {order.client_order_id}")  # the venue said so: safe to send again
        return LookupResult.found(self._result(order, found))

    def _result(self, order: OrderRequest, placed: dict) -> OrderResult:
        filled = order_status(placed["state"]) == "filled"
        return OrderResult(
            account=self.account,
            exchange=self.exchange,
            symbol=order.symbol,
            side=order.side,
            amount=placed["qty"],
            order_id=placed["id"],
            client_order_id=placed["client_id"],
            status=order_status(placed["state"]),
            filled=placed["qty"] if filled else "0",
            average=placed.get("avg_price"),
            route=self.route,
        )


class Plugin:
    class Options(PluginOptions):
        account: str = "example"
        api_key: SecretStr = SecretStr("")

    def __init__(self, options: Plugin.Options):
        self.options = options

    @hookimpl
    def register_executors(self, register, router) -> None:
        router.register_secret(self.options.api_key)  # never in a log line, an answer or the journal
        venue = PretendVenue(self.options.api_key.get_secret_value())
        register(self.options.account, ExampleExecutor(self.options.account, venue))
