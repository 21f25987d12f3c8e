"""The executor conformance kit (core.testing) against the built-in executors and a naive one.

* paper: the ledger, faults injected in-process around submit;
* ccxt: ccxt's real binance class against the emulator, faults injected by the emulator
  (the reply dropped after booking, the connection dropped before booking, a 429), so
  the ccxt plugin's translation of ccxt's exceptions is what is tested;
* a naive broker executor (prepare + submit only, tests/plugins/naive_broker.py) whose
  broker drops the connection after booking: it must pass every never-doubles case.

The kit must also be able to fail: a naive executor that does not pass the client order
id to a broker that refuses duplicates is caught by ``duplicate_client_order_id``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from core.store.sqlite.database import SqliteDatabase
from core.testing import ACCOUNT, CASES, NEVER_DOUBLES, ConformanceFailure, VenueAdapter
from core.trading.execution import Executor
from emulator.control import AsyncEmulatorControl
from plugins.exchanges.ccxt.accounts import AccountOptions
from plugins.exchanges.ccxt.plugin import CcxtExecutor
from plugins.exchanges.paper.plugin import SCHEMA, PaperExecutor
from plugins.exchanges.paper.plugin import Plugin as PaperPlugin
from tests.ccxt_support import emulator_account
from tests.plugins.naive_broker import NaiveBrokerExecutor
from tests.support import ROOT

pytest_plugins = ["core.testing.pytest_plugin"]


# ---------------------------------------------------------------- a line-based broker


class LineBroker:
    """A broker on a loopback TCP port: one JSON order per line, one JSON answer per line.
    ``drop_after_book`` books the next order(s) and closes the connection unanswered."""

    def __init__(self, *, refuse_duplicates: bool = True):
        self.orders: list[dict[str, Any]] = []
        self.drop_after_book = 0
        self.refuse_duplicates = refuse_duplicates
        self._ids = itertools.count(1)
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> LineBroker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def booked(self, client_id: str) -> int:
        return sum(1 for o in self.orders if o["client_id"] == client_id)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if not line:
                return
            order = json.loads(line)
            existing = next((o for o in self.orders if o["client_id"] == order["client_id"]), None)
            if existing is not None and self.refuse_duplicates:
                writer.write(json.dumps({"id": existing["id"], "duplicate": True}).encode() + b"\n")
                await writer.drain()
                return
            order["id"] = str(next(self._ids))
            self.orders.append(order)
            if self.drop_after_book:
                self.drop_after_book -= 1
                return  # booked; the answer is lost
            writer.write(json.dumps({"id": order["id"]}).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()


# ---------------------------------------------------------------- adapters


class NaiveAdapter(VenueAdapter):
    timeout = 15.0

    def __init__(self, broker: LineBroker):
        self.broker = broker

    async def make_executor(self, data_dir: Path) -> Executor:
        return NaiveBrokerExecutor(ACCOUNT, "127.0.0.1", self.broker.port)

    async def booked(self, client_order_id: str) -> int:
        return self.broker.booked(client_order_id)

    async def inject(self, fault: str) -> bool:
        if fault == "lose_reply":  # the real thing: the connection drops after booking
            self.broker.drop_after_book += 1
            return True
        return False


class PaperAdapter(VenueAdapter):
    def __init__(self) -> None:
        self.db: SqliteDatabase | None = None

    async def make_executor(self, data_dir: Path) -> Executor:
        self.db = SqliteDatabase(data_dir / "paper-conformance.sqlite3", schema=SCHEMA)
        return PaperExecutor(ACCOUNT, PaperPlugin.Options(), self.db)

    async def booked(self, client_order_id: str) -> int:
        assert self.db is not None
        return await self.db.run(
            lambda conn: conn.execute(
                "SELECT COUNT(*) FROM paper_orders WHERE account = ? AND client_order_id = ?",
                (ACCOUNT, client_order_id),
            ).fetchone()[0]
        )

    def refused_alert(self, alert_id: str) -> dict[str, Any]:
        return {**self.alert(alert_id), "amount": "1000"}  # 50M USDT of BTC: beyond the balance

    async def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


class CcxtEmulatorAdapter(VenueAdapter):
    """ccxt's binance class against the emulator; the emulator produces the faults."""

    def __init__(self, url: str):
        self.url = url
        self.control = AsyncEmulatorControl(url)

    async def make_executor(self, data_dir: Path) -> Executor:
        options = AccountOptions.model_validate(emulator_account("binance", self.url, market_types=["spot"]))
        return CcxtExecutor(ACCOUNT, options, use_websockets=False)

    async def booked(self, client_order_id: str) -> int:
        return len(await self.control.orders(client_order_id=client_order_id))

    def alert(self, alert_id: str) -> dict[str, Any]:
        return {"symbol": "BINANCE:BTCUSDT", "side": "buy", "amount": "0.001", "price": "50000"}

    def refused_alert(self, alert_id: str) -> dict[str, Any]:
        return {**self.alert(alert_id), "amount": "50"}  # 2.5M USDT of BTC: insufficient balance

    async def inject(self, fault: str) -> bool:
        kind = {"lose_reply": "drop_after_book", "not_sent": "drop_before_book", "rate_limit": "rate_limit"}.get(fault)
        if kind is None:
            return False
        await self.control.add_fault(kind, match={"route": "order.place"}, count=1)
        return True

    async def close(self) -> None:
        await self.control.clear_faults()


@pytest.fixture
async def broker():
    line_broker = await LineBroker().start()
    yield line_broker
    await line_broker.stop()


# ---------------------------------------------------------------- the built-ins pass


@pytest.mark.parametrize("case", CASES)
async def test_paper_executor_passes(conformance, case):
    report = await conformance.check(case, PaperAdapter())
    assert report.booked <= 1


@pytest.mark.parametrize("case", CASES)
async def test_ccxt_executor_against_the_emulator_passes(conformance, emulator, case):
    report = await conformance.check(case, CcxtEmulatorAdapter(emulator.url))
    assert report.booked <= 1
    if case in ("lost_reply_after_booking", "crash_between_send_and_journal"):
        # ccxt looks the order up by client order id: found, not merely "unknown".
        assert (report.state, report.booked) == ("reconciled", 1)
    if case in ("rate_limited", "timeout_before_sending", "resend_of_the_same_alert"):
        assert (report.state, report.booked) == ("filled", 1)


# ---------------------------------------------------------------- a naive executor


@pytest.mark.parametrize("case", NEVER_DOUBLES)
async def test_naive_executor_never_doubles_by_default(conformance, broker, case):
    report = await conformance.check(case, NaiveAdapter(broker))
    assert report.booked <= 1
    if case == "lost_reply_after_booking":
        # No lookup: the router cannot tell, so the alert stays unknown with its one order.
        assert (report.state, report.booked) == ("unknown", 1)


async def test_the_kit_catches_a_venue_that_books_a_client_order_id_twice(conformance):
    careless = await LineBroker(refuse_duplicates=False).start()
    try:
        with pytest.raises(ConformanceFailure, match="holds 2 orders with client order id"):
            await conformance.check("duplicate_client_order_id", NaiveAdapter(careless))
    finally:
        await careless.stop()


async def test_the_kit_catches_an_executor_that_answers_absent_without_knowing(conformance, broker):
    """An executor whose lookup claims "absent" while the order exists is resent: caught."""

    class Overconfident(NaiveBrokerExecutor):
        async def lookup(self, order):
            from core.trading.execution import LookupResult

            return LookupResult.absent("did not check")

    class Adapter(NaiveAdapter):
        async def make_executor(self, data_dir: Path) -> Executor:
            return Overconfident(ACCOUNT, "127.0.0.1", self.broker.port)

    broker.refuse_duplicates = False
    with pytest.raises(ConformanceFailure, match="placed more than once"):
        await conformance.check("lost_reply_after_booking", Adapter(broker))


# ---------------------------------------------------------------- the guide's example


def load_example():
    """docs/plugins/example_executor.py, imported from the docs as a reader would copy it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_executor", ROOT / "docs" / "plugins" / "example_executor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ExampleAdapter(VenueAdapter):
    def __init__(self) -> None:
        self.example = load_example()
        self.venue = self.example.PretendVenue("conformance-key")

    async def make_executor(self, data_dir: Path) -> Executor:
        return self.example.ExampleExecutor(ACCOUNT, self.venue)

    async def booked(self, client_order_id: str) -> int:
        return 1 if client_order_id in self.venue.orders else 0

    def alert(self, alert_id: str) -> dict[str, Any]:
        return {"symbol": "NASDAQ:AAPL", "side": "buy", "amount": "1.5", "price": "190"}

    def refused_alert(self, alert_id: str) -> dict[str, Any]:
        return {**self.alert(alert_id), "amount": "5000"}  # beyond the buying power

    def cancel_alert(self, alert_id: str) -> dict[str, Any]:
        return {"symbol": "AAPL", "action": "cancel", "order_id": "404"}


@pytest.mark.parametrize("case", CASES)
async def test_the_guides_example_executor_passes(conformance, case):
    report = await conformance.check(case, ExampleAdapter())
    assert report.booked <= 1
    if case in ("lost_reply_after_booking", "crash_between_send_and_journal"):
        assert (report.state, report.booked) == ("reconciled", 1)  # it implements lookup: found, not unknown
