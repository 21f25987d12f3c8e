"""The ccxt executor's trading features in-process, against ccxt's real classes and the
emulator: what it reads (positions, balances, prices), lookups after an unknown outcome
for every action, leverage / margin mode errors, and the stop-loss / take-profit ids."""

from __future__ import annotations

from decimal import Decimal

import ccxt
import pytest

from core.errors import OrderNotSent, Unprocessable
from core.pipeline.models import Alert, NothingToDo
from core.trading.execution import client_order_id
from emulator import Emulator
from plugins.exchanges.ccxt.accounts import ClientIdRule, client_id_rule
from plugins.exchanges.ccxt.plugin import CcxtExecutor
from tests.unit.plugins.exchanges.test_ccxt_executor import account


@pytest.fixture
async def emu():
    async with Emulator() as emulator:
        yield emulator


@pytest.fixture
async def executor(emu):
    made: list[CcxtExecutor] = []

    async def make(venue: str = "binanceusdm", name: str = "acct", **options) -> CcxtExecutor:
        options.setdefault("market_types", ["swap"])
        ex = CcxtExecutor(name, account(emu.base_url, venue, **options), use_websockets=False)
        await ex.start()
        ex.ready = True
        made.append(ex)
        return ex

    yield make
    for ex in made:
        await ex.close()


async def prepared(ex: CcxtExecutor, alert_id: str, **fields):
    alert = Alert.model_validate({"symbol": "BTCUSDT.P", "alert_id": alert_id, **fields})
    return await ex.prepare(alert, client_order_id(alert_id, ex.account))


async def test_reads_signed_positions_balances_and_prices(executor, emu):
    for venue in ("binanceusdm", "bybit"):
        ex = await executor(venue)
        market = ex.book.market("BTC/USDT:USDT")
        await ex.submit(await prepared(ex, f"{venue}-short", side="sell", amount="0.25"))
        assert await ex.position(market) == Decimal("-0.25")
        assert await ex.price(market) == Decimal("50000")
        free, total = await ex.balance("USDT", market)
        assert 0 < free <= total <= Decimal("100000")


async def test_lookup_of_a_cancel_and_of_a_cancel_all(executor):
    ex = await executor()
    resting = await ex.submit(
        await prepared(ex, "rest-1", side="buy", amount="0.01", order_type="limit", price="45000")
    )
    cancel = await prepared(ex, "cx-1", action="cancel", order_id=resting.order_id)
    assert (await ex.lookup(cancel)).is_absent  # not canceled yet: the engine may send it
    await ex.submit(cancel)
    found = (await ex.lookup(cancel)).result
    assert (found.status, found.order_id) == ("canceled", resting.order_id)
    await ex.submit(await prepared(ex, "stop-1", side="sell", amount="0.01", order_type="stop", stop_price="40000"))
    cancel_all = await prepared(ex, "ca-1", action="cancel_all")
    assert (await ex.lookup(cancel_all)).is_absent
    await ex.submit(cancel_all)
    assert (await ex.lookup(cancel_all)).result.status == "canceled"
    with pytest.raises(NothingToDo, match="no open orders"):
        await prepared(ex, "ca-2", action="cancel_all")


async def test_lookup_places_missing_protection_once(executor, emu):
    ex = await executor()
    order = await prepared(ex, "sl-1", side="buy", amount="0.02", stop_loss="45000", take_profit="55000")
    raw = await ex.client.create_order(
        order.symbol, "market", "buy", 0.02, None, {"clientOrderId": order.client_order_id}
    )
    # The entry was booked but its answer lost: the engine looks it up.
    first = (await ex.lookup(order)).result
    again = (await ex.lookup(order)).result
    assert first.order_id == raw["id"] and first.status == "filled"
    assert [c["client_order_id"] for c in first.children] == [
        "sl" + order.client_order_id[2:],
        "tp" + order.client_order_id[2:],
    ]
    assert [(c["order_id"], c["status"]) for c in again.children] == [(c["order_id"], "open") for c in first.children]
    assert len(emu.orders()) == 3


async def test_the_stop_loss_of_a_target_covers_the_whole_position(executor, emu):
    ex = await executor()
    await ex.submit(await prepared(ex, "t-1", action="target", target_position="0.1"))
    result = await ex.submit(await prepared(ex, "t-2", action="target", target_position="0.3", stop_loss="45000"))
    [stop_loss] = result.children
    assert (stop_loss["side"], stop_loss["amount"], stop_loss["status"]) == ("sell", "0.3", "open")


async def test_leverage_already_set_is_fine_and_a_network_failure_is_not_sent(executor, emu):
    bybit = await executor("bybit")
    await bybit.submit(
        await prepared(bybit, "lev-1", side="buy", amount="0.01", leverage=10)
    )  # bybit's default: 110043
    emu.add_fault("http_error", match={"route": "POST /fapi/v1/leverage"}, status=503)
    ex = await executor()
    with pytest.raises(OrderNotSent) as info:
        await ex.submit(await prepared(ex, "lev-2", side="buy", amount="0.01", leverage=5))
    assert isinstance(info.value.__cause__, ccxt.ExchangeNotAvailable)
    assert [o["venue"] for o in emu.orders()] == ["bybit"]


async def test_spot_stop_loss_and_take_profit_together_are_refused_where_they_would_be_two_orders(executor):
    ex = await executor("binance", market_types=["spot"])
    with pytest.raises(Unprocessable, match="send one of them"):
        await prepared(ex, "sp-1", symbol="BTCUSDT", side="buy", amount="0.01", stop_loss="45000", take_profit="55000")
    assert (
        await prepared(ex, "sp-2", symbol="BTCUSDT", side="buy", amount="0.01", stop_loss="45000")
    ).stop_loss == "45000"


async def test_the_cost_path_follows_ccxt(executor):
    spot = await executor("binance", market_types=["spot"])
    order = await prepared(spot, "c-1", symbol="BTCUSDT", side="buy", amount="25.5", amount_type="quote")
    assert (order.cost, order.amount) == ("25.5", None)
    sell = await prepared(spot, "c-2", symbol="BTCUSDT", side="sell", amount="25", amount_type="quote")
    assert (sell.cost, sell.amount, sell.reference_price) == (None, "0.0005", "50000")


def test_protective_client_ids_derive_from_the_entry():
    entry = client_order_id("alert-1", "acct")
    assert client_id_rule("binance").child(entry, "sl") == "sl" + entry[2:]
    gate = client_id_rule("gate").for_alert("alert-1", "acct", entry)
    assert (
        client_id_rule("gate").child(gate, "tp") == "t-tp" + gate[4:]
        and len(client_id_rule("gate").child(gate, "tp")) == 28
    )
    kraken = ClientIdRule(prefix="")
    child = kraken.child(entry, "sl")
    assert len(child) == len(entry) and child != kraken.child(entry, "tp") and child == kraken.child(entry, "sl")
