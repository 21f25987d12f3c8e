"""The webhook's contract on the embedded default (paper): statuses, bodies, the ledger."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import STATE_BACKENDS
from tests.support import MONITOR, alert_body, signed_headers

pytestmark = pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)


async def test_health_lists_plugins_and_accounts(app_client):
    async with app_client() as (client, app):
        response = await client.get("/", headers=MONITOR)
        assert response.status_code == 200
        health = await response.get_json()
    assert health["status"] == "ok"
    assert health["accounts"]["paper"] == {"exchange": "paper", "ready": True, "route": "paper"}
    assert {"hmac", "tradingview", "paper", "json_payload"} <= {p["name"] for p in health["plugins"]}
    assert health["default_account"] == "paper"


async def test_signed_alert_fills_on_paper_and_lands_in_ledger(app_client, data_dir):
    body = alert_body(id="a-1")
    async with app_client() as (client, app):
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        answer = await response.get_json()
        journaled = await app.extensions["router"].journal.get("a-1")
    assert response.status_code == 200, answer
    assert answer["status"] == "filled" and answer["alert_id"] == "a-1"
    order = answer["order"]
    assert (order["symbol"], order["side"], order["amount"], order["average"]) == ("BTC/USDT", "buy", "0.001", "50000")
    rows = (
        sqlite3.connect(data_dir / "paper.sqlite3")
        .execute("SELECT client_order_id, symbol, amount FROM paper_orders")
        .fetchall()
    )
    assert rows == [(order["client_order_id"], "BTC/USDT", "0.001")]
    assert journaled["state"] == "filled"
    assert [(o["state"], o["client_order_id"]) for o in journaled["orders"]] == [("filled", order["client_order_id"])]


async def test_text_plain_json_is_accepted(app_client):
    body = alert_body(id="plain-1")
    headers = signed_headers(body) | {"Content-Type": "text/plain; charset=utf-8"}
    async with app_client() as (client, app):
        response = await client.post("/webhook", data=body, headers=headers)
    assert response.status_code == 200


async def test_bad_inputs_get_clear_json_errors(app_client):
    # Bodies are parsed only once the request has authenticated: a signed sender learns
    # what is wrong with its body, an anonymous one only that it has no credentials.
    cases = [
        (b"{not json", {"Content-Type": "application/json"}, 400, "bad_request"),
        (b"\xff\xfe{}", {"Content-Type": "application/json"}, 400, "bad_request"),
        (b"[" * 5000 + b"]" * 5000, {"Content-Type": "application/json"}, 400, "bad_request"),
        (b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        (b"x" * 70000, {"Content-Type": "application/json"}, 413, "payload_too_large"),
    ]
    anonymous = [
        (b"{not json", {"Content-Type": "application/json"}, 401, "unauthorized"),
        (b"x" * 70000, {"Content-Type": "application/json"}, 413, "payload_too_large"),  # before the body is read
        (alert_body(), {"Content-Type": "application/json"}, 401, "unauthorized"),
    ]
    async with app_client() as (client, app):
        for signed, (body, headers, status, code) in [(True, case) for case in cases] + [
            (False, case) for case in anonymous
        ]:
            if signed:
                headers = signed_headers(body) | headers
            response = await client.post("/webhook", data=body, headers=headers)
            answer = await response.get_json()
            assert response.status_code == status, (body[:20], answer)
            assert answer["error"]["code"] == code
            assert "Traceback" not in json.dumps(answer)


async def test_untradable_alerts_are_422_naming_the_field(app_client):
    cases = [
        ("amount", alert_body(amount="0")),
        ("amount", alert_body(amount=-1)),
        ("amount", alert_body(amount="1e400")),
        ("side", alert_body(side="hold")),
        ("price", alert_body(price="NaN")),
        ("symbol", alert_body(symbol="BTC USDT; DROP TABLE")),
        ("symbol", alert_body(symbol="BTC\u0000USDT")),
        ("price", alert_body(price="{{close}}")),
        ("symbol", alert_body(symbol="DOGEPEPE")),
    ]
    async with app_client() as (client, app):
        for field, body in cases:
            response = await client.post("/webhook", data=body, headers=signed_headers(body))
            answer = await response.get_json()
            assert response.status_code == 422, (field, body, answer)
            assert field in answer["error"]["message"], answer


async def test_minimum_amount_refusal_explains_itself(app_client):
    body = alert_body(amount="0.000001")
    async with app_client() as (client, app):
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        answer = await response.get_json()
    assert response.status_code == 422
    # BINANCE:BTCUSDT on paper: Binance's market (paper's venue snapshot), named as paper's.
    assert (
        answer["error"]["message"]
        == "amount 0.000001 BTC is below the minimum 0.00001 for BTC/USDT on paper (binance markets)"
    )


async def test_unknown_route_is_json_404(app_client):
    async with app_client() as (client, app):
        response = await client.get("/nope")
        assert response.status_code == 404
        assert (await response.get_json())["error"]["code"] == "not_found"
