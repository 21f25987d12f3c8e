"""Issue 11, findings 4, 5 and 6: every number of an alert is read by one parser
(``core.pipeline.models.parse_decimal``) — ASCII decimal forms only, bounded digits and exponent —
and signed alerts that used to answer 500 (or hang) are refused with 422 naming the field."""

from __future__ import annotations

import json
from contextlib import nullcontext
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.pipeline.models import Alert, decimal_str, parse_decimal, parse_integer
from tests.support import alert_body, signed_headers


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0.01", "0.01"),
        ("-2", "-2"),
        ("+3.5", "3.5"),
        (".25", "0.25"),
        ("5.", "5"),
        ("1e-5", "0.00001"),
        ("2.5E3", "2500"),
        (" 7 ", "7"),
        (1, "1"),
        (0.1, "0.1"),
        (-0.0, "0"),
        ("0", "0"),
        ("1e30", "1e30"),
        ("1e-30", "1e-30"),
    ],
)
def test_ascii_decimal_forms_are_read(value, expected):
    assert parse_decimal(value, "amount") == Decimal(expected)


@pytest.mark.parametrize(
    "value",
    [
        "1_000",
        "1,000",
        "١",
        "٣.٥",
        "１",
        "৫",
        "0x10",
        "1e",
        "e5",
        "--1",
        "1.2.3",
        "NaN",
        "nan",
        "Infinity",
        "-inf",
        "sNaN",
        "1e999999999",
        "1e-300000000",
        "1e31",
        "1e-31",
        "1" * 41,
        "0." + "0" * 70 + "1",
        "1e10000",
        10**31,
        1e300,
        float("inf"),
        True,
        False,
        [],
        {},
        "1 000",
        "½",
        "\u00a01",
        "1\u2003",
        "\u200b1",
        "",
    ],
)
def test_anything_else_is_refused_naming_the_field(value):
    if value == "":
        assert parse_decimal(value, "amount") is None
        return
    with pytest.raises(ValueError, match="^price"):
        parse_decimal(value, "price")


def test_whole_numbers():
    assert (
        parse_integer("5", "leverage") == 5
        and parse_integer(5.0, "leverage") == 5
        and parse_integer("1e1", "leverage") == 10
    )
    with pytest.raises(ValueError, match="whole number"):
        parse_integer("2.5", "leverage")
    with pytest.raises(ValueError, match="out of range"):
        parse_integer("1e999999999", "leverage")


BOMBS = ["1e999999999", "1e999999999x", 1e308, "9" * 60, 10**4000]

CHILD = """
import json, sys
from plugins.transforms.tradingview import Plugin
from core.pipeline.models import Alert
plugin = Plugin(Plugin.Options())
for leverage in json.loads(sys.stdin.read()):
    payload = {"symbol": "BTCUSDT", "side": "buy", "amount": "1", "leverage": leverage}
    try:
        plugin.transform_payload(payload)
        Alert.model_validate(payload)
        print("accepted")
    except Exception as exc:
        print(str(exc).replace(chr(10), " "))
"""


def test_number_bombs_are_refused_at_once_naming_the_field():
    """Today's int(Decimal("1e999999999")) holds the GIL for minutes: run the transform and
    the model in a child process, so that a hang fails this test (after 60 s, a hang
    detector far above the milliseconds it takes) instead of wedging the run."""
    import subprocess
    import sys

    from tests.support import ROOT

    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD],
            input=json.dumps(BOMBS),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT)},
        )
    except subprocess.TimeoutExpired:
        pytest.fail("reading a number bomb did not finish within 60 s: a hang")
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == len(BOMBS), done.stderr[-2000:]
    assert all("leverage" in line and "accepted" not in line for line in lines), lines


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"leverage": "1_000"}, "leverage"),  # (the hang itself is proven bounded on the transform, above)
        ({"amount": "1e999999999"}, "amount"),
        ({"price": "1e-300000000", "order_type": "limit"}, "price"),
        ({"stop_price": "1E+999999", "order_type": "stop"}, "stop_price"),
        ({"amount": "1_000"}, "amount"),
        ({"amount": "١"}, "amount"),
        ({"amount": "\u00a01"}, "amount"),  # a no-break space is not an ASCII space
        ({"target_position": "١٠", "side": None, "action": "target"}, "target_position"),
        ({"market_position": "long", "side": None, "amount": None}, "amount"),  # no size: was a KeyError
        ({"apiKey": "k" * 12, "secret": "s" * 12, "password": 123456}, "password"),  # was an uncaught ValidationError
    ],
)
async def test_signed_alerts_that_answered_500_or_hung_are_422_naming_the_field(app_client, fields, field):
    async with app_client() as (client, app):
        app.extensions["router"].options.allow_payload_credentials = True  # to reach the password check
        body = alert_body(**fields)
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        answer = await response.get_json()
    assert response.status_code == 422, answer
    assert field in answer["error"]["message"], answer


def test_the_alert_model_reads_every_number_with_the_one_parser():
    numeric = {"amount", "price", "stop_price", "target_position", "stop_loss", "take_profit", "leverage"}
    for name in numeric:
        with pytest.raises(ValueError, match=name):
            Alert.model_validate({"symbol": "BTCUSDT", "side": "buy", "amount": "1", name: "1_000"})
    alert = Alert.model_validate(json.loads('{"symbol": "BTCUSDT", "side": "buy", "amount": "0.5", "leverage": "5"}'))
    assert alert.amount == Decimal("0.5") and alert.leverage == 5


@pytest.mark.parametrize(
    ("text", "digits"),
    [("1." + "0" * 39, 40), ("1" + "0" * 19 + "." + "0" * 20, 40), ("." + "5" * 40, 40), ("5" * 30 + ".", 30)],
)
def test_at_most_40_digits_however_the_point_splits_them(text, digits):
    assert parse_decimal(text, "amount") == Decimal(text)
    longer = text + "0" if "." in text else text + ".0"
    with pytest.raises(ValueError, match="^amount has more than 40 digits") if digits == 40 else nullcontext():
        parse_decimal(longer, "amount")


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 1.0, 100.0, 50000.0, 0.001, 1e-7, 1e16, 1e22, 123.456, -5.5, 0.1 + 0.2, 12345678901234567.0, 5e-324]
    + [10, 0, -3, 10**30, Decimal("1.500"), Decimal("1E+2"), "0.0100"],
)
def test_decimal_str_writes_every_number_as_its_decimal_reading(value):
    """A venue's floats and ints take a shortcut in ``decimal_str``; it writes what the Decimal of their
    text writes (plain digits, no exponent, no trailing zeros)."""
    assert decimal_str(value) == format(Decimal(str(value)).normalize(), "f")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), None])
def test_decimal_str_writes_no_number_for_what_is_not_one(value):
    assert decimal_str(value) is None


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers())
def test_decimal_str_of_any_float_or_int_is_its_decimal_reading(value):
    assert decimal_str(value) == format(Decimal(str(value)).normalize(), "f")
