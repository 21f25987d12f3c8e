"""One ``AlertState`` enum; every list of states is derived from it, and says what it means."""

from __future__ import annotations

import pytest

from core.store.states import (
    GAVE_UP,
    OPEN_FLATTEN_STATES,
    PROBLEM_STATES,
    REPORTED_STATES,
    SUCCESS_STATES,
    UNFINISHED_STATES,
    AlertState,
    alert_state,
    holds_lane,
    is_final,
)


def test_every_state_is_unfinished_a_success_or_a_problem_exactly_once():
    groups = [set(UNFINISHED_STATES) - {AlertState.UNKNOWN}, set(SUCCESS_STATES), set(PROBLEM_STATES)]
    assert set().union(*groups) == set(AlertState)
    assert sum(len(g) for g in groups) == len(AlertState)
    assert AlertState.UNKNOWN in PROBLEM_STATES  # unfinished, and a problem to report


def test_the_reported_states_are_the_outcomes_hooks_see():
    assert [s.value for s in REPORTED_STATES] == [
        "filled",
        "submitted",
        "canceled",
        "reconciled",
        "rejected",
        "failed",
        "unknown",
        "expired",
        "refused",
    ]


@pytest.mark.parametrize(
    "state, code, final, holds",
    [
        ("received", None, False, True),
        ("submitting", None, False, True),
        ("unknown", "outcome_unknown", False, True),
        ("unknown", GAVE_UP, True, False),
        ("filled", None, True, False),
        ("refused", "max_orders", True, False),
        ("quarantined", "quarantined", True, False),
        (None, None, False, False),
        ("sideways", None, False, False),
    ],
)
def test_final_and_holding_the_lane(state, code, final, holds):
    assert is_final(state, code) is final
    if state is not None:
        assert holds_lane(state, code) is holds


def test_states_are_plain_strings_where_stored():
    assert AlertState.FILLED == "filled" and f"{AlertState.FILLED}" == "filled"
    assert alert_state("filled") is AlertState.FILLED
    with pytest.raises(ValueError, match="not an alert state: 'sideways'"):
        alert_state("sideways")
    assert [s.value for s in OPEN_FLATTEN_STATES] == ["pending", "running"]
