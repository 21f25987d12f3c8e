"""``core.store.journal.dumps``: the stored JSON is compact and holds what
``json.dumps(..., default=str)`` of the value without its secret-named fields holds (orjson
writes it; what orjson refuses goes through the standard library's encoder); NaN and
infinities are written as null, so that every stored text is strict JSON."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.observability.redaction import without_secrets
from core.store.journal import dumps

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: orjson refuses them, the fallback writes them
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()  # lone surrogates too: the fallback escapes them as json.dumps does
    | st.decimals(allow_nan=False).map(Decimal)
)
KEYS = st.sampled_from(["a", "apiKey", "ü", "price", "secret"]) | st.text(max_size=4) | st.integers(-5, 5)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(KEYS, inner, max_size=4),
)


def strict(text: str) -> object:
    """``text`` parsed as strict JSON: NaN, Infinity and -Infinity refused."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def standard(value: object) -> str:
    return json.dumps(without_secrets(value), default=str, separators=(",", ":"))


@given(VALUES)
def test_the_same_json_as_json_dumps_of_the_value_without_secrets(value):
    assert strict(dumps(value)) == json.loads(standard(value))


def test_the_text_is_compact_utf8_with_decimals_as_strings():
    value = {"amount": Decimal("0.10"), "note": "é", "params": {"apiKey": "k-1", "tif": "GTC"}, "at": [1, None]}
    value[2] = True
    assert dumps(value) == '{"amount":"0.10","note":"é","params":{"tif":"GTC"},"at":[1,null],"2":true}'


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_written_as_null(number):
    assert strict(dumps({"price": number, "at": [number]})) == {"price": None, "at": [None]}


def test_values_orjson_refuses_are_written_by_the_standard_encoder():
    big = 2**70
    assert dumps({"n": big}) == f'{{"n":{big}}}'
    assert dumps(["\ud800"]) == '["\\ud800"]'  # a lone surrogate, escaped as json.dumps does
    deep: list = []
    for _ in range(300):  # deeper than orjson's limit
        deep = [deep]
    assert json.loads(dumps(deep)) == json.loads(json.dumps(deep))


class Side(enum.Enum):
    BUY = "buy"


@dataclasses.dataclass
class Point:
    x: int


def test_other_objects_are_written_as_their_str_like_json_dumps_with_default_str():
    moment = datetime.datetime(2026, 12, 7, 18, 0, tzinfo=datetime.UTC)
    value = {"at": moment, "day": moment.date(), "point": Point(1), "when": {1.5: "x"}}
    assert strict(dumps(value)) == json.loads(json.dumps(value, default=str))
    assert strict(dumps({"side": Side.BUY})) == {"side": "buy"}  # an enum member: its value
