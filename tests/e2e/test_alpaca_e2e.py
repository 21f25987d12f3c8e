"""Alpaca end to end on loopback: the real server (hypercorn, a process) with the Alpaca
plugin loaded from plugins.yaml like any plugin, talking HTTP to the Alpaca emulator (a
process). Assertions are on what the emulator received and booked."""

from __future__ import annotations

import time

import httpx
import pytest
import yaml

from core.trading.execution import client_order_id
from tests.ccxt_support import EmulatorProcess, alert_status, send_alert
from tests.support import MONITOR, ServerProcess, base_env

ACCOUNT = "alpaca"
ROUTER = {
    "modules": ["plugins.exchanges.alpaca"],
    "reconcile_interval": 0.05,
    "reconcile_max_delay": 0.2,
    "retry_base_delay": 0.05,
    "resubmit_after": 0.3,
}


def alpaca_yaml(emulator_url: str, **account: object) -> str:
    options = {
        "api_key": "emu-key-1",
        "secret": "emu-secret-1",
        "base_url": emulator_url + "/alpaca",
        "clock_max_age": 0,
        "timeout": 4,
        **account,
    }
    return yaml.safe_dump({"router": ROUTER, "alpaca": {"accounts": {ACCOUNT: options}}}, sort_keys=False)


@pytest.fixture(scope="module")
def alpaca_emulator(tmp_path_factory):
    process = EmulatorProcess(tmp_path_factory.mktemp("alpaca-emulator")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def emu(alpaca_emulator):
    return alpaca_emulator.control


@pytest.fixture(scope="module")
def server(tmp_path_factory, alpaca_emulator):
    data = tmp_path_factory.mktemp("alpaca-server")
    (data / "plugins.yaml").write_text(alpaca_yaml(alpaca_emulator.url))
    process = ServerProcess(base_env(data), data).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def fresh_emulator(emu):
    emu.reset()  # also opens the market clock


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def alert(ticker: str, alert_id: str, **fields: object) -> dict:
    return {"ticker": ticker, "action": "buy", "contracts": "1", "id": alert_id, "account": ACCOUNT, **fields}


def sent(emu, alert_id: str) -> list[dict]:
    """What reached the emulator's POST /v2/orders for this alert (also refused attempts)."""
    return emu.requests(venue="alpaca", client_order_id=client_order_id(alert_id, ACCOUNT))


def booked(emu, alert_id: str) -> list[dict]:
    return emu.orders(venue="alpaca", client_order_id=client_order_id(alert_id, ACCOUNT))


def test_the_plugin_is_loaded_from_plugins_yaml_and_ready(server):
    health = httpx.get(server.url + "/", headers=MONITOR, timeout=5).json()
    assert {"name": "alpaca", "source": "module"} in health["plugins"]
    account = health["accounts"][ACCOUNT]
    assert account["exchange"] == "alpaca" and account["ready"] is True and account["assets"] > 0
    assert "emu-secret-1" not in str(health)


@pytest.mark.parametrize(
    "ticker,symbol", [("NASDAQ:AAPL", "AAPL"), ("AAPL", "AAPL"), ("BTCUSD", "BTC/USD"), ("COINBASE:BTCUSD", "BTC/USD")]
)
def test_tradingview_tickers_resolve_on_the_alpaca_account(server, emu, ticker, symbol):
    alert_id = unique("resolve")
    contracts = "0.001" if symbol == "BTC/USD" else "2"
    response = send_alert(server.url, alert(ticker, alert_id, contracts=contracts))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["order"]["symbol"] == symbol and answer["status"] == "filled"
    [order] = booked(emu, alert_id)
    assert order["symbol"] == symbol and order["quantity"] == contracts and order["side"] == "BUY"
    assert order["time_in_force"] == ("gtc" if symbol == "BTC/USD" else "day")


def test_a_fractional_notional_buy_arrives_with_the_right_fields(server, emu):
    alert_id = unique("notional")
    response = send_alert(server.url, alert("NASDAQ:AAPL", alert_id, contracts="250.75", amount_type="usd"))
    assert response.status_code == 200, response.text
    [request] = sent(emu, alert_id)
    assert request["notional"] == "250.75" and request["quantity"] is None
    assert (request["type"], request["time_in_force"], request["side"]) == ("market", "day", "buy")
    [order] = booked(emu, alert_id)
    assert order["quote_quantity"] == "250.75" and order["status"] == "FILLED"
    shares = order["executed_qty"]
    assert "." in shares and 1 < float(shares) < 2  # 250.75 / 190: a fraction of a share


def test_a_bracket_order_arrives_with_its_legs(server, emu):
    alert_id = unique("bracket")
    response = send_alert(
        server.url, alert("AAPL", alert_id, contracts="3", price="190", stop_loss="180.004", take_profit="210")
    )
    assert response.status_code == 200, response.text
    [request] = sent(emu, alert_id)
    assert request["order_class"] == "bracket" and request["quantity"] == "3"
    assert request["take_profit"] == {"limit_price": "210"}
    assert request["stop_loss"] == {"stop_price": "180"}  # rounded to the cent
    [order] = booked(emu, alert_id)
    assert (order["take_profit"], order["stop_loss"]) == ("210", "180")
    legs = response.json()["order"]["children"]
    assert sorted(leg["kind"] for leg in legs) == ["stop_loss", "take_profit"]


def test_crypto_has_no_bracket_orders_and_is_refused_before_sending(server, emu):
    alert_id = unique("crypto-bracket")
    response = send_alert(
        server.url, alert("BTCUSD", alert_id, contracts="0.001", price="50000", stop_loss="45000", take_profit="60000")
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "brackets_unsupported"
    assert sent(emu, alert_id) == []


def test_outside_market_hours_a_stock_order_is_refused_and_extended_hours_limit_is_accepted(server, emu):
    emu.alpaca_clock(False)
    refused_id = unique("closed")
    response = send_alert(server.url, alert("AAPL", refused_id, contracts="1"))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "market_closed"
    assert sent(emu, refused_id) == []

    extended_id = unique("extended")
    response = send_alert(
        server.url, alert("AAPL", extended_id, contracts="1", type="limit", price="191", extended_hours=True)
    )
    assert response.status_code == 200, response.text
    [request] = sent(emu, extended_id)
    assert (request["type"], request["time_in_force"], request["extended_hours"]) == ("limit", "day", True)
    assert request["price"] == "191"
    assert len(booked(emu, extended_id)) == 1

    market_id = unique("extended-market")
    response = send_alert(server.url, alert("AAPL", market_id, contracts="1", extended_hours=True))
    assert response.status_code == 422 and response.json()["error"]["code"] == "extended_hours_limit_only"

    crypto_id = unique("crypto-closed")
    response = send_alert(server.url, alert("BTCUSD", crypto_id, contracts="0.001"))
    assert response.status_code == 200, response.text  # crypto trades around the clock


def test_a_reply_lost_after_booking_ends_with_exactly_one_order(server, emu):
    emu.add_fault("drop_after_book", match={"venue": "alpaca", "route": "order.place"})
    alert_id = unique("lost")
    response = send_alert(server.url, alert("AAPL", alert_id, contracts="1"))
    assert response.status_code in (200, 202), response.text
    wait_for_state(server, alert_id, "reconciled")
    assert len(booked(emu, alert_id)) == 1
    assert [r["outcome"] for r in sent(emu, alert_id)] == ["booked"]
    # The same alert resent: answered from the journal, never sent again.
    again = send_alert(server.url, alert("AAPL", alert_id, contracts="1"))
    assert again.status_code in (200, 202), again.text
    assert len(booked(emu, alert_id)) == 1


def wait_for_state(server, alert_id: str, *states: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while (row := alert_status(server.url, alert_id)).get("state") not in states:
        assert time.monotonic() < deadline, {k: row.get(k) for k in ("state", "error_code", "error_message", "orders")}
        time.sleep(0.05)  # polling the journal's state, bounded
    return row


def test_a_request_dropped_before_booking_is_sent_again_once_alpaca_says_absent(server, emu):
    emu.add_fault("drop_before_book", match={"venue": "alpaca", "route": "order.place"})
    alert_id = unique("dropped")
    response = send_alert(server.url, alert("AAPL", alert_id, contracts="1"))
    assert response.status_code in (200, 202), response.text
    wait_for_state(server, alert_id, "filled")
    assert [r["outcome"] for r in sent(emu, alert_id)] == ["fault", "booked"]
    assert len(booked(emu, alert_id)) == 1


@pytest.mark.slow
def test_a_timeout_before_booking_ends_with_exactly_one_order(server, emu):
    # Alpaca books the first request only after the plugin gave up waiting (timeout 4 s).
    # Meanwhile the lookup said "absent" and the engine sent the order again with the same
    # client order id: whichever of the two arrives second is refused as a duplicate.
    emu.add_fault("delay_before_book", seconds=4.5, match={"venue": "alpaca", "route": "order.place"})
    alert_id = unique("slow")
    response = send_alert(server.url, alert("AAPL", alert_id, contracts="1"))
    assert response.status_code in (200, 202), response.text
    wait_for_state(server, alert_id, "reconciled", "filled")
    deadline = time.monotonic() + 10
    while any(r["outcome"] in ("pending", "fault") for r in sent(emu, alert_id)):
        assert time.monotonic() < deadline, sent(emu, alert_id)
        time.sleep(0.05)  # the delayed request is still being held by the emulator
    outcomes = sorted(r["outcome"] for r in sent(emu, alert_id))
    assert outcomes in (["booked"], ["booked", "rejected"]), sent(emu, alert_id)
    if len(outcomes) == 2:
        assert (
            next(r for r in sent(emu, alert_id) if r["outcome"] == "rejected")["error"]["msg"]
            == "client_order_id must be unique"
        )
    assert len(booked(emu, alert_id)) == 1


def test_a_rate_limited_order_is_retried_and_booked_once(server, emu):
    emu.add_fault("rate_limit", match={"venue": "alpaca", "route": "order.place"}, count=1)
    alert_id = unique("busy")
    response = send_alert(server.url, alert("AAPL", alert_id, contracts="1"))
    assert response.status_code == 200, response.text
    assert [r["outcome"] for r in sent(emu, alert_id)] == ["fault", "booked"]
    assert len(booked(emu, alert_id)) == 1


def test_a_refusal_by_alpaca_is_a_422_naming_the_reason(server, emu):
    alert_id = unique("too-big")
    response = send_alert(server.url, alert("AAPL", alert_id, contracts="100000"))
    assert response.status_code == 422, response.text
    assert "insufficient buying power" in response.json()["error"]["message"]
    assert booked(emu, alert_id) == []
