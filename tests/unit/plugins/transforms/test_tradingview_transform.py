"""The TradingView transform: the classic payload and TradingView's message forms → Alert fields."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.errors import Unprocessable


def test_seed_payload_with_filled_placeholders(transform):
    alert = transform({"exchange": "BINANCE", "symbol": "BTCUSDT", "side": "buy", "amount": "0.01", "price": "50000.5"})
    assert (alert.exchange, alert.symbol, alert.side, alert.amount, alert.price) == (
        "BINANCE",
        "BTCUSDT",
        "buy",
        Decimal("0.01"),
        Decimal("50000.5"),
    )
    assert alert.order_type == "market"


def test_strategy_alert_form(transform):
    """The message a strategy alert sends: ticker, {{strategy.order.action}}, contracts, id."""
    alert = transform(
        {
            "ticker": "BINANCE:BTCUSDT.P",
            "action": "SELL",
            "contracts": " 0.002 ",
            "price": "64123.1",
            "id": "LongExit-1718000000",
            "type": "LIMIT",
            "marketType": "Perpetual",
        }
    )
    assert alert.symbol == "BINANCE:BTCUSDT.P"
    assert alert.side == "sell"
    assert alert.amount == Decimal("0.002")
    assert alert.order_type == "limit" and alert.price == Decimal("64123.1")
    assert alert.market_type == "swap"
    assert alert.alert_id == "LongExit-1718000000"


@pytest.mark.parametrize(
    "side,expected",
    [
        ("buy", "buy"),
        ("BUY", "buy"),
        ("Buy", "buy"),
        (" long ", "buy"),
        ("LONG", "buy"),
        ("sell", "sell"),
        ("SELL", "sell"),
        ("Short", "sell"),
        ("short", "sell"),
    ],
)
def test_sides_and_aliases_in_any_case(transform, side, expected):
    assert transform({"symbol": "BTCUSDT", "side": side, "amount": "1"}).side == expected


@pytest.mark.parametrize("key", ["side", "action", "order_action"])
def test_side_field_aliases(transform, key):
    assert transform({"symbol": "BTCUSDT", key: "Sell", "amount": "1"}).side == "sell"


@pytest.mark.parametrize("key", ["amount", "contracts", "qty", "quantity", "size"])
def test_amount_field_aliases_accept_strings_and_numbers(transform, key):
    assert transform({"symbol": "BTCUSDT", "side": "buy", key: "0.5"}).amount == Decimal("0.5")
    assert transform({"symbol": "BTCUSDT", "side": "buy", key: 0.5}).amount == Decimal("0.5")


def test_of_two_aliases_of_one_field_the_first_in_the_alias_table_wins_whatever_the_payloads_order(transform):
    # "contracts" comes before "qty" and "size" in the table; "Ticker" is found in any case.
    alert = transform({"size": "3", "qty": "2", "Ticker": "BTCUSDT", "side": "buy", "contracts": "1"})
    assert (alert.amount, alert.symbol) == (Decimal("1"), "BTCUSDT")
    alert = transform({"size": "3", "qty": "2", "symbol": "BTCUSDT", "side": "buy"})
    assert alert.amount == Decimal("2")
    alert = transform({"qty": "2", "amount": "5", "symbol": "BTCUSDT", "side": "buy"})
    assert alert.amount == Decimal("5")  # the field itself over any alias


def test_an_alias_of_an_alias_in_plugins_yaml_is_followed_when_it_comes_first():
    from plugins.transforms.tradingview import Plugin

    chained = Plugin(Plugin.Options(aliases={"lots": "units", "units": "amount", "ticker": "symbol"}))
    payload = {"ticker": "BTCUSDT", "side": "buy", "lots": "3"}
    chained.transform_payload(payload)
    assert payload == {"symbol": "BTCUSDT", "side": "buy", "amount": "3"}
    backwards = Plugin(Plugin.Options(aliases={"units": "amount", "lots": "units"}))
    payload = {"symbol": "BTCUSDT", "side": "buy", "lots": "3"}
    backwards.transform_payload(payload)
    assert payload == {"symbol": "BTCUSDT", "side": "buy", "units": "3"}  # one pass, in the table's order


@pytest.mark.parametrize(
    "ticker",
    [
        "BINANCE:BTCUSDT",
        "BTCUSDT",
        "BTCUSDT.P",
        "BTC/USDT",
        "BTC/USDT:USDT",
        "XBTUSD",
        "BYBIT:ETHUSDT.P",
        "KRAKEN:XBTUSD",
    ],
)
def test_ticker_forms_pass_through_for_market_resolution(transform, ticker):
    # Resolution against the account's markets happens later (core.trading.markets).
    assert transform({"ticker": f" {ticker} ", "side": "buy", "amount": "1"}).symbol == ticker


@pytest.mark.parametrize(
    "given,expected",
    [
        ("spot", "spot"),
        ("SPOT", "spot"),
        ("swap", "swap"),
        ("perp", "swap"),
        ("Perpetual", "swap"),
        ("linear", "swap"),
        ("future", "future"),
        ("Futures", "future"),
    ],
)
def test_market_type_override(transform, given, expected):
    alert = transform({"symbol": "BTCUSDT", "side": "buy", "amount": "1", "market_type": given})
    assert alert.market_type == expected


def test_unknown_market_type_is_refused_naming_the_field(transform):
    with pytest.raises(Exception, match="market_type"):
        transform({"symbol": "BTCUSDT", "side": "buy", "amount": "1", "market_type": "options-ish"})


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"symbol": "BTCUSDT", "side": "buy", "amount": "1", "price": "{{close}}"}, "price"),
        ({"symbol": "{{ticker}}", "side": "buy", "amount": "1"}, "symbol"),
        ({"symbol": "BTCUSDT", "side": "{{strategy.order.action}}", "amount": "1"}, "side"),
        ({"symbol": "BTCUSDT", "side": "buy", "contracts": "{{strategy.order.contracts}}"}, "contracts"),
        ({"symbol": "BTCUSDT", "side": "buy", "amount": "1", "params": {"note": "x {{plot_0}}"}}, "params.note"),
    ],
)
def test_unreplaced_placeholder_is_refused_naming_the_field(transform, payload, field):
    with pytest.raises(Unprocessable) as info:
        transform(payload)
    assert info.value.status == 422
    assert f"'{field}'" in info.value.message and "placeholder" in info.value.message


@pytest.mark.parametrize("side", ["hold", "flat", "", "buy sell"])
def test_unknown_side_is_refused(transform, side):
    with pytest.raises(Unprocessable, match="side"):
        transform({"symbol": "BTCUSDT", "side": side, "amount": "1"})


@pytest.mark.parametrize("amount", ["1,000", "abc", "NaN", "-1", "0"])
def test_bad_amounts_are_refused_naming_the_field(transform, amount):
    with pytest.raises(Exception, match="amount"):
        transform({"symbol": "BTCUSDT", "side": "buy", "amount": amount})


def test_field_names_in_any_case(transform):
    alert = transform(
        {"Ticker": "BINANCE:BTCUSDT", "Action": "Buy", "Contracts": "0.5", "PRICE": "50000", "Exchange": "BINANCE"}
    )
    assert (alert.symbol, alert.side, alert.amount, alert.price, alert.exchange) == (
        "BINANCE:BTCUSDT",
        "buy",
        Decimal("0.5"),
        Decimal("50000"),
        "BINANCE",
    )


def test_exact_field_wins_over_another_case(transform):
    alert = transform({"symbol": "BTCUSDT", "Symbol": "ETHUSDT", "side": "buy", "amount": "1"})
    assert alert.symbol == "BTCUSDT" and alert.raw == {"Symbol": "ETHUSDT"}


def test_numeric_alert_id_becomes_a_string(transform):
    assert transform({"symbol": "BTCUSDT", "side": "buy", "amount": "1", "id": 12345}).alert_id == "12345"


def test_empty_exchange_is_dropped(transform):
    assert transform({"symbol": "BTCUSDT", "side": "buy", "amount": "1", "exchange": ""}).exchange is None


def test_each_value_form_touches_its_own_field_only():
    """The value forms (plugins.transforms.tradingview.VALUE_FORMS) are applied in no fixed
    order: each changes its own field, leaves what it does not understand as it is, and a
    field absent stays absent."""
    from plugins.transforms.tradingview import VALUE_FORMS, Plugin

    plugin = Plugin(Plugin.Options())
    odd = {"nested": [1]}
    payload = {key: odd for key in VALUE_FORMS if key not in ("amount", "account")} | {"side": "buy"}
    plugin.transform_payload(payload)
    assert all(payload[key] is odd for key in VALUE_FORMS if key not in ("amount", "account"))
    assert "amount" not in payload and "account" not in payload
    payload = {"symbol": " BTCUSDT ", "side": "Long", "qty": " 10% ", "leverage": " 5X ", "order_id": 7, "id": 8}
    plugin.transform_payload(payload)
    assert payload == {
        "symbol": "BTCUSDT",
        "side": "buy",
        "leverage": "5",
        "order_id": "7",
        "amount": "10",
        "alert_id": "8",
        "amount_type": "percent_of_balance",
    }
