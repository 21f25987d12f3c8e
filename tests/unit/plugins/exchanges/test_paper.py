"""The paper exchange, the embedded default: market and limit orders, balances per asset,
the fee, perpetual positions, refusals, and the same alert/order contract as ccxt accounts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.errors import Unprocessable
from core.pipeline.models import Alert, OrderResult
from core.store.sqlite.database import SqliteDatabase
from core.trading.execution import client_order_id
from plugins.exchanges.paper.plugin import SCHEMA, PaperExecutor, Plugin
from tests.support import alert_body, signed_headers


@pytest.fixture
async def paper(tmp_path):
    executors = []

    async def make(**options) -> PaperExecutor:
        db = SqliteDatabase(tmp_path / f"paper-{len(executors)}.sqlite3", schema=SCHEMA)
        executor = PaperExecutor("paper", Plugin.Options(**options), db)
        await executor.start()
        executors.append(executor)
        return executor

    yield make
    for executor in executors:
        executor.db.close()


async def trade(executor: PaperExecutor, alert_id: str, **fields) -> OrderResult:
    alert = Alert.model_validate(
        {"symbol": "BINANCE:BTCUSDT", "side": "buy", "amount": "0.1", "price": "50000", "alert_id": alert_id, **fields}
    )
    order = await executor.prepare(alert, client_order_id(alert_id, executor.account))
    return await executor.submit(order)


def D(text: str) -> Decimal:
    return Decimal(text)


async def test_market_buy_moves_balances_and_charges_the_fee(paper):
    ex = await paper(fee_rate="0.001")
    result = await trade(ex, "m-1")
    assert (
        result.symbol,
        result.side,
        result.order_type,
        result.amount,
        result.status,
        result.filled,
        result.average,
    ) == ("BTC/USDT", "buy", "market", "0.1", "filled", "0.1", "50000")
    balances = await ex.balances()
    assert D(balances["USDT"]) == D("100000") - D("5000") - D("5")  # notional and 0.1 % fee in the quote currency
    assert D(balances["BTC"]) == D("1.1")


async def test_limit_sell_fills_at_its_price(paper):
    ex = await paper(fee_rate="0")
    result = await trade(ex, "l-1", side="sell", amount="0.5", order_type="limit", price="60000.01")
    assert (result.order_type, result.price, result.average) == ("limit", "60000.01", "60000.01")
    balances = await ex.balances()
    assert D(balances["BTC"]) == D("0.5") and D(balances["USDT"]) == D("100000") + D("30000.005")


async def test_configurable_initial_balances_and_refusal_beyond_them(paper):
    ex = await paper(initial_balances={"USDT": "1000"})
    with pytest.raises(Unprocessable) as info:
        await trade(ex, "poor-1", amount="0.1")
    assert info.value.message == "insufficient USDT balance on paper account 'paper': need 5005, have 1000"
    with pytest.raises(Unprocessable, match="insufficient BTC balance"):
        await trade(ex, "poor-2", side="sell", amount="0.1")
    assert await ex.balances() == {"USDT": "1000"}


async def test_perpetual_position_opens_flips_and_closes_with_pnl(paper):
    ex = await paper(fee_rate="0")
    await trade(ex, "p-1", symbol="BTCUSDT.P", amount="0.01", price="50000")
    assert await ex.positions() == {"BTC/USDT:USDT": {"contracts": "0.01", "entry_price": "50000"}}
    await trade(ex, "p-2", symbol="BTCUSDT.P", side="sell", amount="0.02", price="51000")  # +10 USDT, then short 0.01
    position = (await ex.positions())["BTC/USDT:USDT"]
    assert D(position["contracts"]) == D("-0.01") and D(position["entry_price"]) == D("51000")
    await trade(ex, "p-3", symbol="BTCUSDT.P", amount="0.01", price="50500")  # +5 USDT, flat
    assert await ex.positions() == {}
    assert D((await ex.balances())["USDT"]) == D("100015")  # margin back, PnL 10 + 5


async def test_reduce_only_refused_without_a_position(paper):
    ex = await paper()
    with pytest.raises(Unprocessable, match="reduce-only order would not reduce"):
        await trade(ex, "r-1", symbol="BTCUSDT.P", side="sell", amount="0.01", params={"reduceOnly": True})


async def test_same_client_order_id_books_once_and_lookup_finds_it(paper):
    ex = await paper()
    alert = Alert(symbol="BTCUSDT", side="buy", amount="0.1", price="50000", alert_id="dup-1")
    order = await ex.prepare(alert, client_order_id("dup-1", "paper"))
    first = await ex.submit(order)
    again = await ex.submit(order)
    assert again.order_id == first.order_id
    assert (await ex.lookup(order)).result.order_id == first.order_id
    assert D((await ex.balances())["BTC"]) == D("1.1")
    other = order.model_copy(update={"client_order_id": client_order_id("never", "paper")})
    assert (await ex.lookup(other)).is_absent


async def test_lane_key_is_the_resolved_market(paper):
    ex = await paper()
    assert {
        ex.lane_key(Alert(symbol=s, side="buy", amount="1")) for s in ("BTCUSDT", "BINANCE:BTCUSDT", "BTC/USDT")
    } == {"BTC/USDT"}
    assert ex.lane_key(Alert(symbol="BTCUSDT.P", side="buy", amount="1")) == "BTC/USDT:USDT"


async def test_fee_from_plugins_yaml_and_the_answer_contract(app_client, write_plugins_yaml):
    write_plugins_yaml("paper:\n  fee_rate: 0.002\n")
    body = alert_body(id="fee-1", amount="0.1", price="50000")
    async with app_client() as (client, app):
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        answer = await response.get_json()
        executor = app.extensions["router"].executors.get("paper")
        balances = await executor.balances()
    assert response.status_code == 200, answer
    # The same fields a ccxt account answers with.
    assert set(answer["order"]) == set(OrderResult.model_fields) - {"info"}
    assert answer["order"]["route"] == "paper" and answer["order"]["order_id"]
    assert D(balances["USDT"]) == D("100000") - D("5000") - D("10")
