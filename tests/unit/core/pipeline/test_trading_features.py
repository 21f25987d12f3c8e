"""Trading features end to end: the real server (hypercorn, a process) and the exchange
emulator (a process), ccxt's real binance / binanceusdm / bybit classes in between.

Sizing (quote, percent of balance, percent of position), positions (target, flip,
close), order types (stop, stop-limit, post-only, time in force), stop-loss and
take-profit (attached on bybit, separate orders on binance), leverage and margin mode
(per alert and per account), and cancels. Assertions are on what the emulator booked
and holds; every alert is a README template with its placeholders filled.
"""

from __future__ import annotations

import time

import pytest

from core.trading.execution import client_order_id
from tests.ccxt_support import alert_status, emulator_account, plugins_yaml, send_alert
from tests.support import ServerProcess, base_env

pytestmark = pytest.mark.slow

SMALL_KEY, SMALL_SECRET = "emu-small", "emu-small-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory, emulator):
    url = emulator.url
    accounts = {
        "spot": emulator_account("binance", url, market_types=["spot"]),
        "spot_nocost": emulator_account(
            "binance", url, market_types=["spot"], ccxt={"has": {"createMarketBuyOrderWithCost": False}}
        ),
        "perps": emulator_account("binanceusdm", url, market_types=["swap"]),
        "perps_isolated": emulator_account(
            "binanceusdm", url, market_types=["swap"], leverage=3, margin_mode="isolated"
        ),
        "small": emulator_account("binanceusdm", url, key=SMALL_KEY, secret=SMALL_SECRET, market_types=["swap"]),
        "bybit": emulator_account("bybit", url, market_types=["swap"]),
    }
    data = tmp_path_factory.mktemp("server")
    (data / "plugins.yaml").write_text(plugins_yaml(accounts))
    process = ServerProcess(base_env(data), data).start()
    yield process
    process.stop()


@pytest.fixture
def emu(emulator):
    control = emulator.control
    control.reset()
    return control


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def send(server, **alert) -> dict:
    """Send an alert (an "id" is added); the answer, which must be a 200."""
    alert.setdefault("id", unique(alert.get("action", "order")))
    response = send_alert(server.url, alert)
    assert response.status_code == 200, response.text
    return response.json()


def position(emu, venue: str = "binance", key: str = "emu-key-1") -> str:
    held = [
        p
        for p in emu.positions(key)
        if p["venue"] == venue and p["symbol"] == "BTCUSDT" and p["market_type"] == "linear"
    ]
    return held[0]["amount"] if held else "0"


def placed(emu) -> list[dict]:
    return [(o["side"], o["type"], o["quantity"], o["reduce_only"]) for o in emu.orders()]


# ------------------------------------------------------------------ sizing


def test_quote_amount_is_sent_as_a_cost_where_ccxt_can(server, emu):
    answer = send(server, symbol="BINANCE:BTCUSDT", side="buy", amount="100", amount_type="quote", account="spot")
    [order] = emu.orders()
    assert (order["type"], order["quote_quantity"], order["quantity"], order["status"]) == (
        "MARKET",
        "100",
        "0.002",
        "FILLED",
    )
    assert answer["order"]["filled"] == "0.002" and answer["order"]["average"] == "50000"


def test_quote_amount_is_converted_at_the_current_price_elsewhere(server, emu):
    emu.set_price("BTCUSDT", "40000")
    send(server, symbol="BINANCE:BTCUSDT", side="buy", amount="100", amount_type="quote", account="spot_nocost")
    send(server, symbol="BTCUSDT.P", side="sell", amount="1000", amount_type="quote", account="perps")
    spot, perp = emu.orders()
    assert (spot["market_type"], spot["quantity"], spot["quote_quantity"]) == ("spot", "0.0025", None)  # 100 / 40000
    assert (perp["market_type"], perp["side"], perp["quantity"]) == ("linear", "SELL", "0.025")  # 1000 / 40000


def test_percent_of_balance(server, emu):
    send(server, symbol="BINANCE:BTCUSDT", side="buy", amount="10%", account="spot")  # 10 % of 100000 USDT
    send(
        server,
        symbol="BTCUSDT.P",
        side="buy",
        amount="1",
        amount_type="percent_of_balance",
        leverage=2,
        account="perps",
    )
    spot, perp = emu.orders()
    assert (spot["quote_quantity"], spot["quantity"]) == ("10000", "0.2")
    assert perp["quantity"] == "0.04"  # 1 % of 100000 USDT × 2 leverage = 2000 USDT at 50000


def test_percent_of_balance_too_small_says_why_with_the_numbers(server, emu):
    emu.add_account(SMALL_KEY, SMALL_SECRET, {"binance.linear": {"USDT": "100"}})
    response = send_alert(
        server.url,
        {
            "id": unique("small"),
            "symbol": "BTCUSDT.P",
            "side": "buy",
            "amount": "10",
            "amount_type": "percent_of_balance",
            "account": "small",
        },
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == (
        "10% of 100 USDT free is 10 USDT = 0.0002 contracts at 50000, "
        "below the minimum 0.001 for BTC/USDT:USDT on binanceusdm"
    )
    assert emu.requests() == []


def test_percent_of_position_reduces_it(server, emu):
    send(server, symbol="BTCUSDT.P", action="target", target_position="0.02", account="perps")
    send(server, symbol="BTCUSDT.P", side="sell", amount="50", amount_type="percent_of_position", account="perps")
    assert placed(emu) == [("BUY", "MARKET", "0.02", False), ("SELL", "MARKET", "0.01", True)]
    assert position(emu) == "0.01"


# ------------------------------------------------------------------ positions


def test_target_position_sent_twice_changes_the_position_once(server, emu):
    alert = {"symbol": "BINANCE:BTCUSDT.P", "action": "target", "position_size": "1", "account": "perps"}
    first = send(server, **alert)
    assert first["status"] == "filled" and first["order"]["amount"] == "1"
    again = send(server, **alert)  # the same signal again, as a new alert
    assert again["status"] == "nothing_to_do"
    assert again["message"] == "position is already 1 contracts long on BTC/USDT:USDT"
    assert placed(emu) == [("BUY", "MARKET", "1", False)] and position(emu) == "1"
    assert alert_status(server.url, again["alert_id"])["state"] == "skipped"


def test_target_from_strategy_market_position(server, emu):
    send(server, symbol="BTCUSDT.P", market_position="short", market_position_size="0.5", account="perps")
    send(server, symbol="BTCUSDT.P", market_position="long", market_position_size="0.2", account="perps")
    answer = send(server, symbol="BTCUSDT.P", market_position="flat", market_position_size="0", account="perps")
    assert answer["order"]["side"] == "sell"
    assert placed(emu) == [
        ("SELL", "MARKET", "0.5", False),
        ("BUY", "MARKET", "0.7", False),
        ("SELL", "MARKET", "0.2", True),
    ]
    assert position(emu) == "0"


def test_flip_long_1_to_short_1_in_one_order(server, emu):
    send(server, symbol="BTCUSDT.P", action="target", target_position="1", account="perps")
    answer = send(server, symbol="BTCUSDT.P", action="flip", account="perps")
    assert (answer["order"]["side"], answer["order"]["amount"]) == ("sell", "2")
    assert placed(emu) == [("BUY", "MARKET", "1", False), ("SELL", "MARKET", "2", False)]
    assert position(emu) == "-1"


def test_close_on_a_flat_position_is_nothing_to_do(server, emu):
    answer = send(server, symbol="BTCUSDT.P", action="close", account="perps")
    assert answer["status"] == "nothing_to_do" and answer["message"] == "no position to close on BTC/USDT:USDT"
    assert emu.requests() == [] and emu.orders() == []


def test_close_a_long_is_one_reduce_only_order(server, emu):
    send(server, symbol="BTCUSDT.P", action="target", target_position="0.3", account="perps")
    answer = send(server, symbol="BTCUSDT.P", action="close", account="perps")
    assert answer["status"] == "filled"
    assert placed(emu) == [("BUY", "MARKET", "0.3", False), ("SELL", "MARKET", "0.3", True)]
    assert position(emu) == "0"


def test_spot_close_sells_what_is_held(server, emu):
    send(server, symbol="BINANCE:BTCUSDT", action="target", target_position="10.5", account="spot")  # holds 10 BTC
    send(server, symbol="BINANCE:BTCUSDT", action="close", account="spot")
    buy, sell = emu.orders()
    assert (buy["side"], buy["quantity"]) == ("BUY", "0.5")
    assert (sell["side"], sell["quantity"]) == ("SELL", "10.4995")  # all of it, the buy's fee paid in BTC gone
    assert emu.balances("emu-key-1")["emu-key-1"]["binance.spot"]["BTC"]["free"] == "0"
    response = send_alert(server.url, {"id": unique("flip"), "symbol": "BTCUSDT", "action": "flip", "account": "spot"})
    assert response.status_code == 422 and "flip needs a derivatives market" in response.json()["error"]["message"]


# ------------------------------------------------------------------ order types


def test_stop_and_stop_limit_orders_rest_until_triggered(server, emu):
    stop = send(server, symbol="BTCUSDT.P", side="buy", amount="0.01", type="stop", stop_price="52000", account="perps")
    send(
        server,
        symbol="BINANCE:BTCUSDT",
        side="sell",
        amount="0.01",
        type="stop-limit",
        stop_price="48000",
        price="47900",
        account="spot",
    )
    assert stop["status"] == "submitted" and stop["order"]["order_type"] == "stop"
    perp, spot = emu.orders()
    assert (perp["type"], perp["trigger_price"], perp["status"]) == ("STOP_MARKET", "52000", "NEW")
    assert (spot["type"], spot["trigger_price"], spot["price"], spot["status"]) == (
        "STOP_LOSS_LIMIT",
        "48000",
        "47900",
        "NEW",
    )
    emu.set_price("BTCUSDT", "53000", venue="binance", market_type="linear")
    assert position(emu) == "0.01"  # the stop fired: a market buy


def test_post_only(server, emu):
    send(
        server,
        symbol="BTCUSDT.P",
        side="buy",
        amount="0.01",
        type="limit",
        price="49000",
        post_only="true",
        account="perps",
    )
    send(
        server,
        symbol="BINANCE:BTCUSDT",
        side="buy",
        amount="0.01",
        type="limit",
        price="49000",
        postOnly=True,
        account="spot",
    )
    perp, spot = emu.orders()
    assert (perp["type"], perp["time_in_force"], perp["post_only"], perp["status"]) == ("LIMIT", "GTX", True, "NEW")
    assert (spot["type"], spot["post_only"], spot["status"]) == ("LIMIT_MAKER", True, "NEW")
    taker = send_alert(
        server.url,
        {
            "id": unique("po"),
            "symbol": "BTCUSDT.P",
            "side": "buy",
            "amount": "0.01",
            "type": "limit",
            "price": "51000",
            "post_only": True,
            "account": "perps",
        },
    )
    assert taker.status_code == 422 and taker.json()["error"]["code"] == "exchange_rejected"


def test_reduce_only(server, emu):
    refused = send_alert(
        server.url,
        {
            "id": unique("ro"),
            "symbol": "BTCUSDT.P",
            "side": "sell",
            "amount": "0.01",
            "reduce_only": "true",
            "account": "perps",
        },
    )
    assert refused.status_code == 422 and "ReduceOnly Order is rejected" in refused.json()["error"]["message"]
    send(server, symbol="BTCUSDT.P", side="buy", amount="0.02", account="perps")
    send(server, symbol="BTCUSDT.P", side="sell", amount="0.01", reduceOnly=True, account="perps")
    assert placed(emu) == [("BUY", "MARKET", "0.02", False), ("SELL", "MARKET", "0.01", True)]
    assert position(emu) == "0.01"


def test_time_in_force(server, emu):
    ioc = send(
        server, symbol="BTCUSDT.P", side="buy", amount="0.01", type="limit", price="49000", tif="IOC", account="perps"
    )
    send(
        server,
        symbol="BTCUSDT.P",
        side="buy",
        amount="0.01",
        type="limit",
        price="49000",
        time_in_force="GTC",
        account="perps",
    )
    first, second = emu.orders()
    assert (first["time_in_force"], first["status"]) == ("IOC", "EXPIRED")
    assert ioc["order"]["status"] == "expired"
    assert (second["time_in_force"], second["status"]) == ("GTC", "NEW")


# ------------------------------------------------------------------ stop-loss / take-profit


def test_stop_loss_and_take_profit_attached_on_bybit(server, emu):
    answer = send(server, symbol="BYBIT:BTCUSDT.P", side="buy", amount="0.01", sl="45000", tp="56000", account="bybit")
    [order] = emu.orders()
    assert (order["venue"], order["stop_loss"], order["take_profit"], order["status"]) == (
        "bybit",
        "45000",
        "56000",
        "FILLED",
    )
    assert answer["order"]["children"] == [
        {"type": "stop_loss", "trigger_price": "45000", "attached": True, "status": "attached"},
        {"type": "take_profit", "trigger_price": "56000", "attached": True, "status": "attached"},
    ]
    [held] = [p for p in emu.positions("emu-key-1") if p["venue"] == "bybit"]
    assert (held["amount"], held["stop_loss"], held["take_profit"]) == ("0.01", "45000", "56000")


def test_stop_loss_and_take_profit_as_separate_orders_on_binance(server, emu):
    alert = {
        "id": unique("sltp"),
        "symbol": "BTCUSDT.P",
        "side": "buy",
        "amount": "0.01",
        "stop_loss": "45000",
        "take_profit": "56000",
        "account": "perps",
    }
    answer = send(server, **alert)
    entry = client_order_id(alert["id"], "perps")
    orders = {o["client_order_id"]: o for o in emu.orders()}
    assert set(orders) == {entry, "sl" + entry[2:], "tp" + entry[2:]}
    stop_loss, take_profit = orders["sl" + entry[2:]], orders["tp" + entry[2:]]
    assert (
        stop_loss["side"],
        stop_loss["type"],
        stop_loss["quantity"],
        stop_loss["trigger_price"],
        stop_loss["reduce_only"],
    ) == ("SELL", "STOP_MARKET", "0.01", "45000", True)
    assert (take_profit["type"], take_profit["trigger_price"], take_profit["reduce_only"]) == (
        "TAKE_PROFIT_MARKET",
        "56000",
        True,
    )
    children = {c["type"]: c for c in answer["order"]["children"]}
    assert (
        children["stop_loss"]["client_order_id"] == "sl" + entry[2:]
        and children["stop_loss"]["order_id"] == stop_loss["order_id"]
    )
    assert (
        children["take_profit"]["status"] == "open" and children["take_profit"]["order_id"] == take_profit["order_id"]
    )
    resent = send_alert(server.url, alert)  # TradingView's resend: answered from the journal
    assert resent.json()["duplicate"] is True and len(emu.orders()) == 3
    emu.set_price("BTCUSDT", "44000", venue="binance", market_type="linear")
    assert position(emu) == "0"  # the stop-loss closed the position


def test_stop_loss_on_the_wrong_side_is_refused(server, emu):
    response = send_alert(
        server.url,
        {
            "id": unique("badsl"),
            "symbol": "BTCUSDT.P",
            "side": "buy",
            "amount": "0.01",
            "price": "50000",
            "stop_loss": "51000",
            "account": "perps",
        },
    )
    assert response.status_code == 422
    assert (
        response.json()["error"]["message"] == "stop_loss 51000 must be below the long entry at 50000 on BTC/USDT:USDT"
    )
    assert emu.orders() == []


# ------------------------------------------------------------------ leverage and margin mode


def test_leverage_and_margin_mode_per_alert(server, emu):
    send(
        server,
        symbol="BTCUSDT.P",
        action="target",
        target_position="0.1",
        leverage="7x",
        margin_mode="isolated",
        account="perps",
    )
    send(
        server, symbol="BYBIT:BTCUSDT.P", side="buy", amount="0.01", leverage=4, margin_mode="isolated", account="bybit"
    )
    held = {p["venue"]: p for p in emu.positions("emu-key-1")}
    assert (held["binance"]["leverage"], held["binance"]["margin_type"]) == (7, "ISOLATED")
    assert (held["bybit"]["leverage"], held["bybit"]["margin_type"]) == (4, "ISOLATED")
    # Already set: sent again, accepted, and the order goes through.
    send(
        server,
        symbol="BTCUSDT.P",
        action="target",
        target_position="0.2",
        leverage=7,
        margin_mode="isolated",
        account="perps",
    )
    assert position(emu) == "0.2"


def test_leverage_and_margin_mode_per_account(server, emu):
    send(server, symbol="BTCUSDT.P", side="buy", amount="0.01", account="perps_isolated")
    [held] = emu.positions("emu-key-1")
    assert (held["leverage"], held["margin_type"]) == (3, "ISOLATED")


def test_leverage_the_exchange_refuses_sends_no_order(server, emu):
    response = send_alert(
        server.url,
        {
            "id": unique("lev"),
            "symbol": "BYBIT:BTCUSDT.P",
            "side": "buy",
            "amount": "0.01",
            "leverage": 150,
            "account": "bybit",
        },
    )
    assert response.status_code == 422 and "refused leverage 150" in response.json()["error"]["message"]
    assert emu.orders() == []


# ------------------------------------------------------------------ cancels


def test_cancel_by_order_id_and_by_client_order_id(server, emu):
    resting_id = unique("rest")
    by_id = send(server, symbol="BTCUSDT.P", side="buy", amount="0.01", type="limit", price="45000", account="perps")
    send(
        server,
        id=resting_id,
        symbol="BTCUSDT.P",
        side="buy",
        amount="0.01",
        type="limit",
        price="44000",
        account="perps",
    )
    canceled = send(server, symbol="BTCUSDT.P", action="cancel", order_id=by_id["order"]["order_id"], account="perps")
    assert canceled["status"] == "canceled" and canceled["order"]["order_id"] == by_id["order"]["order_id"]
    coid = client_order_id(resting_id, "perps")
    canceled = send(server, symbol="BTCUSDT.P", action="cancel", client_order_id=coid, account="perps")
    assert canceled["status"] == "canceled" and canceled["order"]["children"][0]["client_order_id"] == coid
    assert [o["status"] for o in emu.orders()] == ["CANCELED", "CANCELED"]
    again = send(server, symbol="BTCUSDT.P", action="cancel", client_order_id=coid, account="perps")
    assert again["status"] == "nothing_to_do" and again["message"].endswith("is already canceled")


def test_cancel_all_for_a_symbol(server, emu):
    send(server, symbol="BTCUSDT.P", side="buy", amount="0.01", type="limit", price="45000", account="perps")
    send(server, symbol="BTCUSDT.P", side="sell", amount="0.01", type="stop", stop_price="40000", account="perps")
    send(server, symbol="ETHUSDT.P", side="buy", amount="0.1", type="limit", price="2500", account="perps")
    answer = send(server, symbol="BTCUSDT.P", action="cancel_all", account="perps")
    assert answer["status"] == "canceled" and len(answer["order"]["children"]) == 2
    assert {(o["symbol"], o["status"]) for o in emu.orders()} == {("BTCUSDT", "CANCELED"), ("ETHUSDT", "NEW")}
    again = send(server, symbol="BTCUSDT.P", action="cancel-all", account="perps")
    assert again["status"] == "nothing_to_do" and again["message"] == "no open orders on BTC/USDT:USDT"
    send(server, symbol="BYBIT:BTCUSDT.P", side="buy", amount="0.01", type="limit", price="45000", account="bybit")
    assert send(server, symbol="BYBIT:BTCUSDT.P", action="cancel_all", account="bybit")["status"] == "canceled"
    assert [o["status"] for o in emu.orders() if o["venue"] == "bybit"] == ["CANCELED"]


# ------------------------------------------------------------------ lost answers


def reconciled(server, alert_id: str) -> dict:
    deadline = time.monotonic() + 10
    while (row := alert_status(server.url, alert_id)).get("state") not in ("reconciled", "filled", "canceled"):
        assert time.monotonic() < deadline, row
        time.sleep(0.05)  # polling the journal's real state, bounded
    return row


def test_entry_whose_answer_was_lost_gets_its_stop_loss_once(server, emu):
    emu.add_fault("drop_after_book", match={"route": "POST /fapi/v1/order"})
    alert = {
        "id": unique("lost"),
        "symbol": "BTCUSDT.P",
        "side": "buy",
        "amount": "0.01",
        "stop_loss": "45000",
        "account": "perps",
    }
    response = send_alert(server.url, alert)
    assert response.status_code in (200, 202), response.text
    row = reconciled(server, alert["id"])
    entry = client_order_id(alert["id"], "perps")
    assert sorted(o["client_order_id"] for o in emu.orders()) == sorted([entry, "sl" + entry[2:]])
    assert [c["client_order_id"] for c in row["result"]["children"]] == ["sl" + entry[2:]]
    assert send_alert(server.url, alert).json()["duplicate"] is True and len(emu.orders()) == 2


def test_cancel_whose_answer_was_lost_is_canceled_once(server, emu):
    resting = send(server, symbol="BTCUSDT.P", side="buy", amount="0.01", type="limit", price="45000", account="perps")
    emu.add_fault("drop_after_book", match={"route": "DELETE /fapi/v1/order"})
    alert_id = unique("lostcancel")
    response = send_alert(
        server.url,
        {
            "id": alert_id,
            "symbol": "BTCUSDT.P",
            "action": "cancel",
            "order_id": resting["order"]["order_id"],
            "account": "perps",
        },
    )
    assert response.status_code in (200, 202), response.text
    row = reconciled(server, alert_id)  # the HTTP client resent the DELETE, or the engine looked the order up
    assert row["state"] in ("canceled", "reconciled") and row["result"]["status"] == "canceled"
    assert [o["status"] for o in emu.orders()] == ["CANCELED"]
