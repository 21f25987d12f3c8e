"""``without_secrets``: secret-named fields dropped at any depth, whether a dict's names were
seen before (the set of plain names, checked in C) or not; what has nothing to drop is
returned as it is, and nothing the caller passed is changed."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.observability import redaction
from core.observability.redaction import is_secret_name, without_secrets


def reference(value: Any) -> Any:
    """The definition, one field at a time."""
    if isinstance(value, dict):
        return {k: reference(v) for k, v in value.items() if not is_secret_name(k)}
    if isinstance(value, list):
        return [reference(v) for v in value]
    return value


@pytest.fixture(autouse=True)
def no_names_known_yet(monkeypatch):
    """Each test starts with no plain names known (other tests of the process add theirs)."""
    monkeypatch.setattr(redaction, "_PLAIN_NAMES", set())


NAMES = st.sampled_from(
    ["symbol", "amount", "apiKey", "api_secret", "X-Signature", "params", "token", "side", "ſecret"]
)
LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
VALUES = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAMES | st.text(max_size=6), inner, max_size=5)
)


@given(VALUES)
def test_the_same_as_deciding_each_field_alone_the_first_time_and_every_time_after(value):
    before = copy.deepcopy(value)
    assert without_secrets(value) == reference(value)
    assert without_secrets(value) == reference(value)  # its names are known plain now
    assert value == before, "the value passed is never changed"


def test_a_secret_below_known_plain_names_is_dropped_and_the_parents_are_copied():
    order = {"symbol": "BTC/USDT", "params": {"timeInForce": "GTC"}}
    assert without_secrets(order) == order  # its names decided one by one, the first time
    assert without_secrets(order) is order  # known plain names, nothing to drop: no copy
    dumped = {"symbol": "BTC/USDT", "params": {}, "children": [], "price": None, "amount": 0}
    without_secrets(dumped)
    assert without_secrets(dumped) is dumped  # empty dicts and lists inside: nothing to visit
    with_secret = {"symbol": "BTC/USDT", "params": {"timeInForce": "GTC", "apiKey": "k-1"}}
    cleaned = without_secrets(with_secret)
    assert cleaned == {"symbol": "BTC/USDT", "params": {"timeInForce": "GTC"}}
    assert with_secret["params"]["apiKey"] == "k-1"
    assert [1, {"secret": "s"}] != without_secrets([1, {"secret": "s"}]) == [1, {}]


def test_a_value_whose_truth_cannot_be_told_is_visited_like_any_other():
    class Ambiguous:  # like an array: bool() raises
        def __bool__(self) -> bool:
            raise ValueError("the truth value is ambiguous")

    odd = Ambiguous()
    value = {"symbol": "BTC/USDT", "weights": odd}
    without_secrets({"symbol": "x", "weights": 1})  # the names known plain
    assert without_secrets(value) is value
    assert without_secrets({"symbol": "BTC/USDT", "weights": odd, "nested": {"token": "t"}}) == {
        "symbol": "BTC/USDT",
        "weights": odd,
        "nested": {},
    }


def test_the_plain_names_are_bounded_and_start_again_at_the_bound(monkeypatch):
    monkeypatch.setattr(redaction, "_PLAIN_NAMES_MAX", 3)
    without_secrets({f"field{i}": i for i in range(10)})  # under the bound before, past it after
    assert len(redaction._PLAIN_NAMES) == 10
    order = {"more": 1, "other": 2}
    assert without_secrets(order) == order
    assert redaction._PLAIN_NAMES == {"more", "other"}  # started again with the names in use
    assert without_secrets(order) is order
    assert without_secrets({"more": 1, "secretKey": 2, "field1": 3}) == {"more": 1, "field1": 3}
    assert without_secrets({1: "int keys", "passphrase": "p"}) == {1: "int keys"}
    assert 1 not in redaction._PLAIN_NAMES  # only str names are remembered
