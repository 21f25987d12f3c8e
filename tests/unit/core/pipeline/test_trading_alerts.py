"""The trading fields of an alert: TradingView's aliases and value forms, and every template
of docs/tradingview.md (moved there from the README's "Trading features"), filled as
TradingView fills it, validated as an alert and executed on the paper account."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest

from core.errors import Unprocessable
from tests.support import ROOT, signed_headers


def test_action_is_the_side_or_the_routers_action(transform):
    assert transform({"symbol": "BTCUSDT", "action": "Sell", "amount": "1"}).side == "sell"
    assert transform({"symbol": "BTCUSDT", "action": "CLOSE"}).action == "close"
    assert transform({"symbol": "BTCUSDT", "action": "cancel-all"}).action == "cancel_all"
    assert transform({"symbol": "BTCUSDT", "action": "reverse"}).action == "flip"
    assert transform({"symbol": "BTCUSDT", "action": "buy", "side": "long", "amount": "1"}).side == "buy"
    with pytest.raises(Unprocessable, match="disagree"):
        transform({"symbol": "BTCUSDT", "action": "buy", "side": "sell", "amount": "1"})


def test_strategy_positions_make_a_target_alert(transform):
    alert = transform({"symbol": "BTCUSDT.P", "market_position": "Long", "market_position_size": "2"})
    assert (alert.action, alert.market_position, alert.amount, alert.target) == (
        "target",
        "long",
        Decimal("2"),
        Decimal("2"),
    )
    flat = transform({"symbol": "BTCUSDT.P", "marketPosition": "flat", "marketPositionSize": "0"})
    assert (flat.action, flat.target, flat.amount) == ("target", Decimal(0), None)
    signed = transform({"symbol": "BTCUSDT.P", "position_size": "-0.5"})
    assert (signed.action, signed.target) == ("target", Decimal("-0.5"))
    # With a side it stays an order; the position fields are carried along.
    assert transform({"symbol": "BTCUSDT.P", "side": "buy", "amount": "1", "position_size": "3"}).action == "order"


@pytest.mark.parametrize(
    "given,expected",
    [
        ("stop", "stop"),
        ("STOP-MARKET", "stop"),
        ("stop_market", "stop"),
        ("stop-limit", "stop_limit"),
        ("Stop Limit", "stop_limit"),
        ("stoplimit", "stop_limit"),
        ("LMT", "limit"),
    ],
)
def test_order_types(transform, given, expected):
    alert = transform(
        {"symbol": "BTCUSDT", "side": "buy", "amount": "1", "type": given, "price": "1", "stopPrice": "2"}
    )
    assert alert.order_type == expected and alert.stop_price == Decimal("2")


def test_flags_prices_and_settings(transform):
    alert = transform(
        {
            "symbol": "BTCUSDT.P",
            "side": "buy",
            "amount": "1",
            "reduceOnly": "true",
            "postOnly": "False",
            "tif": "gtx",
            "sl": "45000",
            "TP": "55000",
            "leverage": "5x",
            "marginMode": "Crossed",
        }
    )
    assert (alert.reduce_only, alert.post_only, alert.time_in_force) == (True, False, "PO")
    assert (alert.stop_loss, alert.take_profit, alert.leverage, alert.margin_mode) == (
        Decimal("45000"),
        Decimal("55000"),
        5,
        "cross",
    )
    assert transform({"symbol": "BTCUSDT", "side": "buy", "amount": "1", "reduce_only": 1}).reduce_only is True


def test_amount_types(transform):
    assert transform({"symbol": "BTCUSDT", "side": "buy", "amount": "12.5%"}).amount_type == "percent_of_balance"
    percent = transform({"symbol": "BTCUSDT", "side": "buy", "amount": "12.5 %", "amount_type": "percent_of_position"})
    assert (percent.amount, percent.amount_type) == (Decimal("12.5"), "percent_of_position")
    assert transform({"symbol": "BTCUSDT", "side": "buy", "amount": "100", "amountType": "USDT"}).amount_type == "quote"
    with pytest.raises(Exception, match="at most 100"):
        transform({"symbol": "BTCUSDT", "side": "buy", "amount": "150%"})


def test_cancel_fields(transform):
    alert = transform({"symbol": "BTCUSDT", "action": "cancel", "clientOrderId": " tvabc "})
    assert (alert.action, alert.cancel_client_order_id) == ("cancel", "tvabc")
    assert transform({"symbol": "BTCUSDT", "action": "cancel", "orderId": 12345}).order_id == "12345"
    with pytest.raises(Exception, match="order_id or cancel_client_order_id"):
        transform({"symbol": "BTCUSDT", "action": "cancel"})


# ------------------------------------------------------------------ the docs' templates


def readme_templates() -> list[str]:
    text = (ROOT / "docs" / "tradingview.md").read_text()
    section = text[text.index("<!-- trading:start -->") : text.index("<!-- trading:end -->")]
    blocks = re.findall(r"```json\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


FILLED = {  # what TradingView puts in for a short strategy on BTCUSDT.P at 50000
    "{{ticker}}": "BINANCE:BTCUSDT.P",
    "{{exchange}}": "BINANCE",
    "{{timenow}}": "2024-06-01T12:00:00Z",
    "{{strategy.order.id}}": "Short",
    "{{strategy.order.action}}": "sell",
    "{{strategy.order.contracts}}": "0.5",
    "{{close}}": "50000",
    "{{strategy.position_size}}": "-0.5",
    "{{strategy.market_position}}": "short",
    "{{strategy.market_position_size}}": "0.5",
    "{{plot_0}}": "52000",
    "{{plot_1}}": "45000",
}


def fill(template: str, n: int) -> dict:
    for placeholder, value in FILLED.items():
        template = template.replace(placeholder, value)
    payload = json.loads(template)
    payload.pop("token")
    payload["id"] = f"{payload['id']}-{n}"
    return payload


def test_the_readme_has_a_template_for_every_feature():
    joined = "\n".join(readme_templates())
    for feature in (
        '"amount_type": "quote"',
        '"10%"',
        "percent_of_position",
        '"action": "target"',
        "market_position",
        '"action": "close"',
        '"action": "flip"',
        '"type": "stop"',
        '"stop-limit"',
        "post_only",
        '"tif"',
        "reduce_only",
        '"sl"',
        '"tp"',
        '"leverage"',
        "margin_mode",
        '"action": "cancel"',
        '"cancel_all"',
    ):
        assert feature in joined, feature


@pytest.mark.parametrize("n,template", list(enumerate(readme_templates())))
def test_readme_template_is_a_valid_alert(transform, n, template):
    assert "{{" not in json.dumps(fill(template, n))
    transform(fill(template, n))


async def test_readme_templates_run_on_the_paper_account(app_client):
    """In order, on one paper account: every template is answered 200 (an order, or nothing to do)."""
    answers = []
    async with app_client() as (client, app):
        for n, template in enumerate(readme_templates()):
            payload = fill(template, n)
            if payload.get("action") == "cancel":  # the stop order the stop template placed
                payload["client_order_id"] = answers[
                    [a.get("order", {}).get("order_type") for a in answers].index("stop")
                ]["order"]["client_order_id"]
            body = json.dumps(payload).encode()
            response = await client.post("/webhook", data=body, headers=signed_headers(body))
            answer = await response.get_json()
            assert response.status_code == 200, (template, answer)
            answers.append(answer)
    states = [a["status"] for a in answers]
    assert "nothing_to_do" in states and "canceled" in states and "filled" in states and "submitted" in states
