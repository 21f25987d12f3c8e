"""One alert, several accounts: each order executed and journaled on its own."""

from __future__ import annotations

import json

import httpx
import pytest

from core.pipeline.ids import fan_out_id
from core.trading.execution import client_order_id
from tests.ccxt_support import EmulatorProcess, alert_status, emulator_account, plugins_yaml
from tests.support import ServerProcess, alert_body, base_env, signed_headers


async def test_fan_out_to_two_paper_accounts_places_two_orders(app_client, write_plugins_yaml, data_dir):
    write_plugins_yaml("paper:\n  accounts: [alice, bob]\n")
    body = alert_body(id="fan-1", account=["alice", "bob"])
    async with app_client() as (client, app):
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        answer = await response.get_json()
        again = await (await client.post("/webhook", data=body, headers=signed_headers(body))).get_json()
        rows = {
            name: await app.extensions["router"].journal.get(fan_out_id("fan-1", name)) for name in ("alice", "bob")
        }
    assert response.status_code == 200 and answer["status"] == "fanout" and answer["alert_id"] == "fan-1"
    ids = {name: answer["accounts"][name]["order"]["client_order_id"] for name in ("alice", "bob")}
    assert ids == {
        "alice": client_order_id(fan_out_id("fan-1", "alice"), "alice"),
        "bob": client_order_id(fan_out_id("fan-1", "bob"), "bob"),
    }
    assert ids["alice"] != ids["bob"]
    assert all(rows[name]["state"] == "filled" and rows[name]["account"] == name for name in rows)
    assert all(again["accounts"][name]["duplicate"] is True for name in ("alice", "bob"))  # a resend places nothing


async def test_fan_out_with_an_unknown_account_still_trades_on_the_other(app_client, write_plugins_yaml):
    write_plugins_yaml("paper:\n  accounts: [alice]\n")
    body = alert_body(id="fan-2", account=["alice", "nobody"])
    async with app_client() as (client, app):
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        answer = await response.get_json()
    assert response.status_code == 200
    assert answer["accounts"]["alice"]["status"] == "filled"
    assert answer["accounts"]["nobody"]["error"]["code"] == "unknown_account"


async def test_account_list_must_be_distinct_names(app_client):
    body = alert_body(account=["paper", "PAPER"])
    async with app_client() as (client, app):
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status_code == 422 and "account" in (await response.get_json())["error"]["message"]


@pytest.mark.slow
def test_fan_out_through_ccxt_one_refused_key_does_not_block_the_other(tmp_path, data_dir):
    emulator = EmulatorProcess(tmp_path).start()
    try:
        accounts = {
            "main": emulator_account("binance", emulator.url),
            "sub": emulator_account("binance", emulator.url, key="emu-key-2", secret="emu-secret-2"),
        }
        (data_dir / "plugins.yaml").write_text(plugins_yaml(accounts))
        with ServerProcess(base_env(data_dir), tmp_path) as server:
            emulator.control.add_fault("key_error", match={"key": "emu-key-2"}, count=None)
            body = json.dumps(
                {
                    "id": "fan-3",
                    "account": ["main", "sub"],
                    "symbol": "BTCUSDT",
                    "side": "buy",
                    "amount": "0.001",
                    "price": "50000",
                }
            ).encode()
            response = httpx.post(server.url + "/webhook", content=body, headers=signed_headers(body), timeout=15)
            answer = response.json()
            assert response.status_code == 200, answer
            assert answer["accounts"]["main"]["status"] == "filled"
            assert answer["accounts"]["sub"]["error"]["code"] == "exchange_auth_failed"
            booked = emulator.control.orders()
            assert [(o["account_key"], o["client_order_id"]) for o in booked] == [
                ("emu-key-1", client_order_id(fan_out_id("fan-3", "main"), "main"))
            ]
            assert alert_status(server.url, fan_out_id("fan-3", "sub"))["state"] == "failed"
    finally:
        emulator.stop()
