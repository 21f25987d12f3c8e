"""Testnet accounts (issue 15): ``sandbox: true`` switches ccxt to its sandbox URLs
(``urls['test']``, here the emulator) and every order of the account is marked as such in
``GET /``, the webhook's answer and the journal."""

from __future__ import annotations

import time

import httpx

from emulator import ccxt_config
from tests.ccxt_support import alert_status, emulator_account, plugins_yaml, send_alert, tradingview_alert
from tests.support import MONITOR, ServerProcess, base_env, free_port


def sandbox_account(emulator_url: str) -> dict:
    """An account whose live URLs lead nowhere and whose testnet URLs are the emulator's:
    an order can only be booked if ccxt switched to the sandbox."""
    account = emulator_account("binance", emulator_url, market_types=["spot"], sandbox=True)
    testnet = account["ccxt"]["urls"]["api"]
    live_nowhere = ccxt_config("binance", f"http://127.0.0.1:{free_port()}")["urls"]["api"]
    account["ccxt"]["urls"] = {"api": live_nowhere, "test": testnet}
    return account


def test_a_sandbox_accounts_orders_go_to_the_testnet_and_are_marked(tmp_path, emulator):
    emulator.control.reset()
    (tmp_path / "plugins.yaml").write_text(
        plugins_yaml(
            {
                "testnet": sandbox_account(emulator.url),
                "live": emulator_account("binance", emulator.url, market_types=["spot"]),
            }
        )
    )
    with ServerProcess(base_env(tmp_path), tmp_path) as server:
        health = httpx.get(server.url + "/", headers=MONITOR, timeout=5).json()
        assert health["accounts"]["testnet"]["sandbox"] is True and health["accounts"]["testnet"]["ready"] is True
        assert "sandbox" not in health["accounts"]["live"]

        alert_id = f"sandbox-{time.monotonic_ns()}"
        response = send_alert(server.url, tradingview_alert("BINANCE:BTCUSDT", alert_id, account="testnet"))
        assert response.status_code == 200, response.text
        assert response.json()["order"]["sandbox"] is True
        booked = emulator.control.orders(symbol="BTCUSDT")
        assert len(booked) == 1 and booked[0]["status"] == "FILLED"

        row = alert_status(server.url, alert_id)
        assert row["result"]["sandbox"] is True
        assert row["orders"] and all(attempt["request"]["sandbox"] is True for attempt in row["orders"])

        live_id = f"live-{time.monotonic_ns()}"
        assert send_alert(server.url, tradingview_alert("BINANCE:BTCUSDT", live_id, account="live")).status_code == 200
        live_row = alert_status(server.url, live_id)
        assert live_row["result"]["sandbox"] is False
        assert all(attempt["request"]["sandbox"] is False for attempt in live_row["orders"])
