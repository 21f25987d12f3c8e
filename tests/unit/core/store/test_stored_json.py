"""``core.store.journal.dumps``: the stored JSON is ``json.dumps(..., default=str,
separators=(",", ":"))`` of the value without its secret-named fields, through the C
encoder built once or, where there is none, through ``json.JSONEncoder``."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.observability.redaction import without_secrets
from core.store import journal
from core.store.journal import dumps

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: written as json.dumps writes them
    | st.text()
    | st.decimals(allow_nan=False).map(Decimal)
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(
            st.sampled_from(["a", "apiKey", "ü", "price", "secret"]) | st.text(max_size=4), inner, max_size=4
        )
    ),
)


def expected(value: object) -> str:
    return json.dumps(without_secrets(value), default=str, separators=(",", ":"))


@given(VALUES)
def test_the_same_text_as_json_dumps_of_the_value_without_secrets(value):
    assert dumps(value) == expected(value)


@pytest.mark.parametrize("value", [{"a": Decimal("0.10"), "é": [1, None, 2.5]}, "text", 3, [], {}])
def test_without_the_c_encoder_the_text_is_the_same(monkeypatch, value):
    with_c = dumps(value)
    monkeypatch.setattr(journal, "_C_ENCODE", None)
    assert dumps(value) == with_c == expected(value)
