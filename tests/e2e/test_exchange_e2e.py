"""End to end on loopback: the real server (hypercorn, a process) and the exchange emulator
(a process), ccxt's real classes in between. Assertions are on what the emulator booked.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from core.trading.execution import client_order_id
from tests.ccxt_support import (
    alert_status,
    emulator_account,
    plugins_yaml,
    refused_websocket,
    send_alert,
    tradingview_alert,
)
from tests.support import MONITOR, ServerProcess, base_env, signed_headers


@pytest.fixture(scope="module")
def emu(emulator):
    return emulator.control


@pytest.fixture(scope="module")
def accounts(emulator) -> dict:
    url = emulator.url
    return {
        "rest": emulator_account("binance", url),
        "ws": emulator_account("binance", url, websocket=True),
        "second": emulator_account("binance", url, key="emu-key-2", secret="emu-secret-2"),
        "ws_refused": emulator_account("binance", url, websocket=True, ccxt=refused_websocket()),
        "throttled": emulator_account("binance", url, rate_limit=True),
        "bybit": emulator_account("bybit", url),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory, accounts):
    data = tmp_path_factory.mktemp("server")
    # Payload credentials are off by default; one test below trades with them.
    (data / "plugins.yaml").write_text(plugins_yaml(accounts, router={"allow_payload_credentials": True}))
    process = ServerProcess(base_env(data), data).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def fresh_emulator(request):
    if "emu" in request.fixturenames:
        request.getfixturevalue("emu").reset()


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


EXPECTED = {  # ticker → (unified symbol, emulator book, amount after precision for 0.0123456)
    "BINANCE:BTCUSDT": ("BTC/USDT", "spot", "0.01234"),
    "BTCUSDT": ("BTC/USDT", "spot", "0.01234"),
    "BTCUSDT.P": ("BTC/USDT:USDT", "linear", "0.012"),
    "BTC/USDT:USDT": ("BTC/USDT:USDT", "linear", "0.012"),
}


@pytest.mark.parametrize("account,transport", [("rest", "rest"), ("ws", "ws")])
@pytest.mark.parametrize("ticker", list(EXPECTED))
def test_tradingview_alerts_place_exactly_the_expected_order(server, emu, account, transport, ticker):
    alert_id = unique("tv")
    response = send_alert(server.url, tradingview_alert(ticker, alert_id, action="BUY", account=account))
    answer = response.json()
    assert response.status_code == 200, answer
    symbol, book, amount = EXPECTED[ticker]
    coid = client_order_id(alert_id, account)
    booked = emu.orders()
    assert len(booked) == 1
    order = booked[0]
    assert (order["symbol"], order["market_type"], order["side"], order["type"], order["quantity"]) == (
        "BTCUSDT",
        book,
        "BUY",
        "MARKET",
        amount,
    )
    assert (order["client_order_id"], order["account_key"], order["transport"]) == (coid, "emu-key-1", transport)
    assert answer["status"] == "filled" and answer["alert_id"] == alert_id
    result = answer["order"]
    assert (result["order_id"], result["status"], result["filled"], result["average"]) == (
        order["order_id"],
        "filled",
        amount,
        "50000",
    )
    assert (result["symbol"], result["amount"], result["client_order_id"]) == (symbol, amount, coid)
    assert result["route"] == ("websocket" if transport == "ws" else "rest")


@pytest.mark.parametrize("account", ["rest", "ws"])
def test_limit_alert_rests_on_the_book(server, emu, account):
    alert_id = unique("limit")
    response = send_alert(
        server.url,
        tradingview_alert(
            "BINANCE:ETHUSDT", alert_id, action="sell", contracts="0.5", price="3100.25", type="limit", account=account
        ),
    )
    assert response.status_code == 200, response.text
    result = response.json()["order"]
    [order] = emu.orders()
    assert (order["symbol"], order["side"], order["type"], order["quantity"], order["price"]) == (
        "ETHUSDT",
        "SELL",
        "LIMIT",
        "0.5",
        "3100.25",
    )
    assert (result["status"], result["order_id"], result["filled"]) == ("open", order["order_id"], "0")
    assert response.json()["status"] == "submitted"


@pytest.mark.parametrize("account", ["rest", "ws"])
@pytest.mark.parametrize(
    "alert,message",
    [
        (
            tradingview_alert("BINANCE:BTCUSDT", "", contracts="0.000001"),
            "amount 0.000001 BTC is below the minimum 0.00001 for BTC/USDT on binance",
        ),
        (
            tradingview_alert("BINANCE:BTCUSDT", "", contracts="0.00005"),
            "order value 2.5 USDT is below the minimum 5 for BTC/USDT on binance",
        ),
        (
            tradingview_alert("BTCUSDT.P", "", contracts="0.001"),
            "order value 50 USDT is below the minimum 100 for BTC/USDT:USDT on binance",
        ),
        (
            tradingview_alert("BINANCE:BTCUSDT", "", contracts="0.01", price="50000.005", type="limit"),
            "price 50000.005 is not a multiple of the tick 0.01 for BTC/USDT on binance",
        ),
    ],
)
def test_refusals_before_sending_say_why_and_send_nothing(server, emu, account, alert, message):
    response = send_alert(server.url, alert | {"id": unique("refuse"), "account": account})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == message
    assert emu.requests() == [] and emu.orders() == []


def test_exchange_refusal_is_422_with_the_exchanges_reason(server, emu):
    response = send_alert(
        server.url, tradingview_alert("BINANCE:BTCUSDT", unique("poor"), contracts="50", account="rest")
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "exchange_rejected" and "insufficient balance" in error["message"]
    assert emu.orders() == []


@pytest.mark.parametrize("account,route", [("rest", "POST /api/v3/order"), ("ws", "ws order.place")])
def test_rate_limited_order_is_retried_with_backoff_and_booked_once(server, emu, account, route):
    emu.add_fault("rate_limit", match={"route": route}, count=2)
    alert_id = unique("429")
    response = send_alert(server.url, tradingview_alert("BINANCE:BTCUSDT", alert_id, account=account))
    assert response.status_code == 200, response.text
    attempts = emu.requests()
    assert [r["fault"] for r in attempts] == ["rate_limit", "rate_limit", None]
    assert (
        attempts[2]["time"] - attempts[1]["time"] > 0.05 and attempts[1]["time"] - attempts[0]["time"] > 0.05
    )  # backoff
    assert [o["client_order_id"] for o in emu.orders()] == [client_order_id(alert_id, account)]


def test_refused_key_is_502_and_not_retried(server, emu):
    emu.add_fault("key_error", match={"key": "emu-key-1"})
    response = send_alert(server.url, tradingview_alert("BINANCE:BTCUSDT", unique("key"), account="rest"))
    assert response.status_code == 502, (
        response.text,
        [(r["fault"], r["outcome"], r["error"], r["account_key"]) for r in emu.requests()],
    )
    error = response.json()["error"]
    assert error["code"] == "exchange_auth_failed" and "credentials" in error["message"]
    assert "emu-secret-1" not in response.text and "emu-key-1" not in response.text
    assert len(emu.requests()) == 1 and emu.orders() == []


def test_websocket_connection_refused_goes_over_rest_once(server, emu):
    alert_id = unique("wsdown")
    response = send_alert(server.url, tradingview_alert("BINANCE:BTCUSDT", alert_id, account="ws_refused"))
    assert response.status_code == 200, response.text
    assert response.json()["order"]["route"] == "rest"
    assert [(o["transport"], o["client_order_id"]) for o in emu.orders()] == [
        ("rest", client_order_id(alert_id, "ws_refused"))
    ]
    assert httpx.get(server.url + "/", headers=MONITOR).json()["accounts"]["ws_refused"]["websocket_fallbacks"] >= 1


def test_websocket_dropped_after_sending_is_never_sent_twice(server, emu):
    emu.add_fault("drop_after_book", match={"route": "ws order.place"})
    alert_id = unique("wsdrop")
    alert = tradingview_alert("BINANCE:BTCUSDT", alert_id, account="ws")
    response = send_alert(server.url, alert)
    assert response.status_code in (200, 202), response.text  # reconciled in time, or still being reconciled
    deadline = time.monotonic() + 10
    while alert_status(server.url, alert_id).get("state") not in ("reconciled", "filled"):
        assert time.monotonic() < deadline, alert_status(server.url, alert_id)
        time.sleep(0.05)  # polling the journal's real state, bounded
    resent = send_alert(server.url, alert)  # TradingView's resend of the same alert
    assert resent.status_code == 200 and resent.json().get("duplicate") is True
    booked = emu.orders()
    assert [(o["transport"], o["client_order_id"]) for o in booked] == [("ws", client_order_id(alert_id, "ws"))]
    assert [r["transport"] for r in emu.requests()] == ["ws"]


def test_two_accounts_on_one_exchange_reach_it_with_their_own_keys(server, emu):
    first, second = unique("k1"), unique("k2")
    assert send_alert(server.url, tradingview_alert("BTCUSDT", first, account="rest")).status_code == 200
    assert send_alert(server.url, tradingview_alert("BTCUSDT", second, account="second")).status_code == 200
    booked = {o["client_order_id"]: o["account_key"] for o in emu.orders()}
    assert booked == {client_order_id(first, "rest"): "emu-key-1", client_order_id(second, "second"): "emu-key-2"}


def test_alert_with_its_own_credentials_trades_with_them(server, emu):
    alert = tradingview_alert(
        "BINANCE:BTCUSDT", unique("payload"), exchange="BINANCE", apiKey="emu-key-2", secret="emu-secret-2"
    )
    response = send_alert(server.url, alert)
    assert response.status_code == 200, response.text
    assert "emu-secret-2" not in response.text
    [order] = emu.orders()
    assert order["account_key"] == "emu-key-2"
    assert "emu-secret-2" not in server.log()


def test_bybit_account(server, emu):
    alert_id = unique("bybit")
    response = send_alert(
        server.url, tradingview_alert("BYBIT:ETHUSDT.P", alert_id, contracts="0.5", price="3000", account="bybit")
    )
    assert response.status_code == 200, response.text
    [order] = emu.orders()
    assert (order["venue"], order["market_type"], order["symbol"], order["quantity"]) == (
        "bybit",
        "linear",
        "ETHUSDT",
        "0.5",
    )
    assert response.json()["order"]["status"] == "filled" and response.json()["order"]["average"] == "3000"


def test_throttled_account_places_orders(server, emu):
    for n in range(3):
        assert (
            send_alert(server.url, tradingview_alert("BTCUSDT", unique(f"thr{n}"), account="throttled")).status_code
            == 200
        )
    assert len(emu.orders()) == 3
    assert (
        "rate_limit" not in httpx.get(server.url + "/", headers=MONITOR).json()["accounts"]["throttled"]
    )  # ccxt's throttle is on


def test_health_check_shows_each_accounts_route_and_no_secret(server):
    health = httpx.get(server.url + "/", headers=MONITOR).json()
    routes = {name: a["route"] for name, a in health["accounts"].items()}
    assert routes == {
        "paper": "paper",
        "rest": "rest",
        "ws": "websocket",
        "second": "rest",
        "ws_refused": "websocket",
        "throttled": "rest",
        "bybit": "rest",
    }
    assert all(a["ready"] for a in health["accounts"].values()), health
    assert {"ccxt", "paper"} <= {p["name"] for p in health["plugins"]}
    text = httpx.get(server.url + "/", headers=MONITOR).text
    assert "emu-secret" not in text and "emu-key" not in text


@pytest.mark.slow
def test_account_whose_exchange_is_down_at_startup(tmp_path, emulator, emu):
    emu.add_fault("down", match={"market_type": "linear"})  # USD-M is down; spot works
    accounts = {
        "spot": emulator_account("binance", emulator.url, market_types=["spot"]),
        "perps": emulator_account("binanceusdm", emulator.url, market_types=["swap"], retry_seconds=0.2),
    }
    (tmp_path / "plugins.yaml").write_text(plugins_yaml(accounts))
    server = ServerProcess(base_env(tmp_path), tmp_path).start()
    try:
        health = httpx.get(server.url + "/", headers=MONITOR).json()
        assert health["status"] == "degraded"
        assert (
            health["accounts"]["perps"]["ready"] is False
            and "ExchangeNotAvailable" in health["accounts"]["perps"]["error"]
        )
        assert health["accounts"]["spot"]["ready"] is True
        refused = send_alert(server.url, tradingview_alert("BTCUSDT.P", unique("down"), account="perps"))
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "account_not_ready"
        assert send_alert(server.url, tradingview_alert("BTCUSDT", unique("up"), account="spot")).status_code == 200
        emu.clear_faults()
        deadline = time.monotonic() + 10
        while not httpx.get(server.url + "/", headers=MONITOR).json()["accounts"]["perps"]["ready"]:
            assert time.monotonic() < deadline, "the account did not recover"
            time.sleep(0.05)  # polling the health check, bounded
        assert (
            send_alert(server.url, tradingview_alert("BTCUSDT.P", unique("back"), account="perps")).status_code == 200
        )
        assert [o["market_type"] for o in emu.orders()] == ["spot", "linear"]
    finally:
        server.stop()


@pytest.mark.slow
def test_200_alerts_at_concurrency_50_over_two_symbols(server, emu):
    before = httpx.get(server.url + "/", headers=MONITOR).json()["accounts"]
    tickers = ["BINANCE:BTCUSDT", "BINANCE:ETHUSDT"]
    ids = [unique(f"load{n}") for n in range(200)]

    latencies: list[float] = []

    async def run() -> list[httpx.Response]:
        limit = asyncio.Semaphore(50)
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as client:

            async def one(n: int) -> httpx.Response:
                alert = tradingview_alert(
                    tickers[n % 2], ids[n], contracts="0.01" if n % 2 == 0 else "0.1", account="rest"
                )
                body = json.dumps(alert).encode()
                async with limit:
                    sent = time.perf_counter()
                    response = await client.post(
                        server.url + "/webhook",
                        content=body,
                        headers=signed_headers(body) | {"Content-Type": "text/plain"},
                    )
                    latencies.append(time.perf_counter() - sent)
                    return response

            return await asyncio.gather(*(one(n) for n in range(200)))

    started = time.perf_counter()
    responses = asyncio.run(run())
    elapsed = time.perf_counter() - started
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 200, {s: statuses.count(s) for s in set(statuses)}
    booked = emu.orders()
    assert len(booked) == 200 and {o["client_order_id"] for o in booked} == {client_order_id(i, "rest") for i in ids}
    assert {o["symbol"] for o in booked} == {"BTCUSDT", "ETHUSDT"}
    after = httpx.get(server.url + "/", headers=MONITOR).json()["accounts"]
    assert after["rest"]["client"] == before["rest"]["client"]  # the same ccxt client all along
    assert after["rest"]["markets_loaded_at"] == before["rest"]["markets_loaded_at"]  # markets loaded once
    latencies.sort()
    print(
        f"\n200 alerts at concurrency 50: {elapsed:.2f}s ({200 / elapsed:.0f} alerts/s); "
        f"answer p50 {latencies[100] * 1000:.0f} ms, p99 {latencies[197] * 1000:.0f} ms"
    )
