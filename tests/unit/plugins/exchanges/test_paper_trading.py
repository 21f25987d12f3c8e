"""Trading features on the paper exchange (the embedded default), with the semantics of the
ccxt accounts: sizing, target / close / flip, stop orders, stop-loss and take-profit,
leverage, cancels — and through the app, nothing-to-do answers and their journal state."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.errors import Unprocessable
from core.pipeline.models import Alert, NothingToDo, OrderResult
from core.store.sqlite.database import SqliteDatabase
from core.trading.execution import client_order_id
from plugins.exchanges.paper.plugin import SCHEMA, PaperExecutor, Plugin
from tests.support import signed_headers

D = Decimal


@pytest.fixture
async def paper(tmp_path):
    made = []

    async def make(**options) -> PaperExecutor:
        db = SqliteDatabase(tmp_path / f"paper-{len(made)}.sqlite3", schema=SCHEMA)
        executor = PaperExecutor("paper", Plugin.Options(**{"fee_rate": "0", **options}), db)
        await executor.start()
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.db.close()


async def send(ex: PaperExecutor, alert_id: str, **fields) -> OrderResult:
    alert = Alert.model_validate({"symbol": "BTCUSDT.P", "alert_id": alert_id, **fields})
    order = await ex.prepare(alert, client_order_id(alert_id, ex.account))
    return await ex.submit(order)


async def contracts(ex: PaperExecutor) -> Decimal:
    held = (await ex.positions()).get("BTC/USDT:USDT")
    return D(held["contracts"]) if held else D(0)


async def test_quote_and_percent_sizing(paper):
    ex = await paper()
    bought = await send(ex, "q-1", symbol="BTCUSDT", side="buy", amount="1000", amount_type="quote", price="40000")
    assert bought.amount == "0.025"  # 1000 USDT at the alert's price
    sold = await send(ex, "p-1", symbol="BTCUSDT", side="sell", amount="50", amount_type="percent_of_balance")
    assert sold.amount == "0.5125"  # half of 1.025 BTC free
    perp = await send(ex, "p-2", side="buy", amount="1", amount_type="percent_of_balance", leverage=5)
    balance_before = D("100000") - D("1000") + D("0.5125") * 50000
    assert D(perp.amount) == (balance_before * D("0.05") / 50000).quantize(D("0.001"), rounding="ROUND_DOWN")
    with pytest.raises(Unprocessable) as info:
        await send(ex, "p-3", symbol="BTCUSDT", side="buy", amount="0.000001", amount_type="percent_of_balance")
    assert info.value.message.startswith("0.000001% of ")
    assert (
        "= 0.00000000" not in info.value.message
        and "below the minimum 0.00001 for BTC/USDT on paper" in info.value.message
    )


async def test_target_twice_flip_and_close(paper):
    ex = await paper()
    await send(ex, "t-1", action="target", target_position="1")
    with pytest.raises(NothingToDo, match="position is already 1 contracts long on BTC/USDT:USDT"):
        await send(ex, "t-2", action="target", target_position="1")
    flipped = await send(ex, "f-1", action="flip")
    assert (flipped.side, flipped.amount) == ("sell", "2") and await contracts(ex) == -1
    half = await send(ex, "h-1", side="buy", amount="50", amount_type="percent_of_position")
    assert half.amount == "0.5" and await contracts(ex) == D("-0.5")
    closed = await send(ex, "c-1", action="close")
    assert (closed.side, closed.amount) == ("buy", "0.5") and await contracts(ex) == 0
    with pytest.raises(NothingToDo, match="no position to close on BTC/USDT:USDT"):
        await send(ex, "c-2", action="close")
    with pytest.raises(NothingToDo, match="no position to flip"):
        await send(ex, "f-2", action="flip")
    orders = await ex.orders()
    assert [(o["side"], o["amount"], o["details"].get("reduce_only", False)) for o in orders] == [
        ("buy", "1", False),
        ("sell", "2", False),
        ("buy", "0.5", True),
        ("buy", "0.5", True),
    ]


async def test_spot_positions_are_the_base_balance(paper):
    ex = await paper(initial_balances={"USDT": "10000", "BTC": "0.1"})
    await send(ex, "s-1", symbol="BTCUSDT", action="target", target_position="0.15", price="50000")
    assert D((await ex.balances())["BTC"]) == D("0.15")
    await send(ex, "s-2", symbol="BTCUSDT", action="close", price="50000")
    assert D((await ex.balances())["BTC"]) == 0
    with pytest.raises(NothingToDo, match="no position to close on BTC/USDT"):
        await send(ex, "s-3", symbol="BTCUSDT", action="close", price="50000")
    with pytest.raises(Unprocessable, match="cannot go short"):
        await send(ex, "s-4", symbol="BTCUSDT", action="target", target_position="-1")


async def test_stop_orders_rest_and_cancel(paper):
    ex = await paper()
    stop = await send(ex, "st-1", side="buy", amount="0.01", order_type="stop", stop_price="52000")
    stop_limit = await send(
        ex, "st-2", side="sell", amount="0.01", order_type="stop_limit", stop_price="48000", price="47900"
    )
    assert (stop.status, stop_limit.status, stop.filled) == ("open", "open", "0")
    assert await contracts(ex) == 0 and D((await ex.balances())["USDT"]) == D("100000")  # nothing filled, nothing moved
    canceled = await send(ex, "x-1", action="cancel", order_id=stop.order_id)
    assert canceled.status == "canceled" and canceled.order_id == stop.order_id
    with pytest.raises(NothingToDo, match="is already canceled"):
        await send(ex, "x-2", action="cancel", order_id=stop.order_id)
    with pytest.raises(Unprocessable, match="no order nope"):
        await send(ex, "x-3", action="cancel", order_id="nope")
    by_client = await send(ex, "x-4", action="cancel", cancel_client_order_id=client_order_id("st-2", "paper"))
    assert by_client.client_order_id == client_order_id("st-2", "paper")
    assert [o["status"] for o in await ex.orders()] == ["canceled", "canceled"]


async def test_stop_loss_and_take_profit_rest_as_their_own_orders(paper):
    ex = await paper()
    entry = await send(
        ex, "e-1", action="target", target_position="0.5", stop_loss="45000", take_profit="55000", price="50000"
    )
    coid = client_order_id("e-1", "paper")
    assert [
        (c["type"], c["client_order_id"], c["side"], c["amount"], c["trigger_price"], c["status"])
        for c in entry.children
    ] == [
        ("stop_loss", "sl" + coid[2:], "sell", "0.5", "45000", "open"),
        ("take_profit", "tp" + coid[2:], "sell", "0.5", "55000", "open"),
    ]
    order = await ex.prepare(Alert(symbol="BTCUSDT.P", side="buy", amount="1", alert_id="e-1"), coid)
    assert (await ex.lookup(order)).result.children == entry.children
    result = await send(ex, "ca-1", action="cancel_all")
    assert sorted(c["client_order_id"] for c in result.children) == sorted(["sl" + coid[2:], "tp" + coid[2:]])
    with pytest.raises(NothingToDo, match="no open orders on BTC/USDT:USDT"):
        await send(ex, "ca-2", action="cancel_all")


async def test_leverage_per_alert_and_per_account(paper):
    ex = await paper(leverage="2")
    await send(ex, "l-1", side="buy", amount="1", price="50000")
    assert D((await ex.balances())["USDT"]) == D("75000")  # 50000 at 2x holds 25000
    await send(ex, "l-2", side="buy", amount="0.002", price="50000", leverage=10, margin_mode="isolated")
    assert await ex.settings("BTC/USDT:USDT") == {"leverage": D("10"), "margin_mode": "isolated"}
    assert D((await ex.balances())["USDT"]) == D("75000") + D("20000") - D("10")  # the position's margin follows
    with pytest.raises(Unprocessable, match="leverage applies to derivatives"):
        await send(ex, "l-3", symbol="BTCUSDT", side="buy", amount="0.001", leverage=3)


async def test_nothing_to_do_through_the_app_is_200_and_journaled_skipped(app_client):
    async with app_client() as (client, app):
        for n in (1, 2):
            body = (
                f'{{"id": "tgt-{n}", "symbol": "BTCUSDT.P", "action": "target", '
                '"position_size": "0.01", "price": "50000"}'
            ).encode()
            response = await client.post("/webhook", data=body, headers=signed_headers(body))
            answer = await response.get_json()
        assert response.status_code == 200, answer
        assert answer == {
            "status": "nothing_to_do",
            "alert_id": "tgt-2",
            "message": "position is already 0.01 contracts long on BTC/USDT:USDT",
        }
        journal = app.extensions["router"].journal
        assert (await journal.get("tgt-1"))["state"] == "filled" and (await journal.get("tgt-2"))["state"] == "skipped"
        body = b'{"id": "flat-close", "symbol": "ETHUSDT.P", "action": "close"}'
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        assert (await response.get_json())["status"] == "nothing_to_do"
        assert len(await app.extensions["router"].executors.get("paper").orders()) == 1
