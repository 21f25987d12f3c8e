"""The states a journaled alert and a flatten go through: one enum each, every list derived.

An alert's state moves along

    received → submitting → submitted | filled | canceled | rejected | failed | unknown
    received → skipped (nothing to do: a target already reached, close when flat)
    received → refused (a risk limit or a halt refused it; nothing was sent)
    unknown → reconciled (found at the exchange) | failed (proven absent, not retried)
    received/submitting (left by a crash, too old) → expired
    failed with nothing sent (answered 5xx) → received again when the sender resends
    unfinished, but its row cannot be read (bad JSON, bad fields) → quarantined

Reconciliation that gave up leaves an alert ``unknown`` with the error code ``GAVE_UP``:
it no longer holds its lane and is not recovered again (a human checks the exchange), so
it counts as final (``is_final``) although ``unknown`` is otherwise unfinished.
"""

from __future__ import annotations

from enum import StrEnum


class AlertState(StrEnum):
    """The state of an alert in the journal (its ``state`` column / field)."""

    RECEIVED = "received"
    SUBMITTING = "submitting"
    FILLED = "filled"
    SUBMITTED = "submitted"
    CANCELED = "canceled"
    RECONCILED = "reconciled"
    REJECTED = "rejected"
    FAILED = "failed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REFUSED = "refused"
    SKIPPED = "skipped"
    QUARANTINED = "quarantined"  # also the error code of a row set aside because it cannot be read


# The error code of an ``unknown`` alert whose reconciliation gave up (see the module docstring).
GAVE_UP = "outcome_unknown_gave_up"

# Still to be executed or settled: these hold their lane and are recovered after a crash.
UNFINISHED_STATES: tuple[AlertState, ...] = (AlertState.RECEIVED, AlertState.SUBMITTING, AlertState.UNKNOWN)
# Finished as asked: the journal keeps the exchange's answer as the alert's result.
SUCCESS_STATES: frozenset[AlertState] = frozenset(
    {AlertState.FILLED, AlertState.SUBMITTED, AlertState.CANCELED, AlertState.RECONCILED, AlertState.SKIPPED}
)
# Did not trade as asked (the dashboard's "problems" filter).
PROBLEM_STATES: frozenset[AlertState] = (
    frozenset(AlertState)
    - SUCCESS_STATES
    - {
        AlertState.RECEIVED,
        AlertState.SUBMITTING,
    }
)
# The outcomes the engine reports to ``after_execute`` / ``on_error``, in the docs' order.
REPORTED_STATES: tuple[AlertState, ...] = tuple(
    s
    for s in AlertState
    if s not in (AlertState.RECEIVED, AlertState.SUBMITTING, AlertState.SKIPPED, AlertState.QUARANTINED)
)
_FINAL_STATES = frozenset(AlertState) - frozenset(UNFINISHED_STATES)


def is_final(state: str | None, error_code: str | None = None) -> bool:
    """Whether nothing more will happen to an alert in ``state`` (``None``: no such row)."""
    return state in _FINAL_STATES or (state == AlertState.UNKNOWN and error_code == GAVE_UP)


def holds_lane(state: str, error_code: str | None = None) -> bool:
    """Whether an alert in ``state`` still holds its lane (and is recovered after a crash)."""
    return state in UNFINISHED_STATES and not (state == AlertState.UNKNOWN and error_code == GAVE_UP)


def alert_state(state: str) -> AlertState:
    """``state`` as an ``AlertState``; ``ValueError`` naming it when it is none."""
    try:
        return AlertState(state)
    except ValueError:
        raise ValueError(f"not an alert state: {state!r}") from None


class FlattenState(StrEnum):
    """The state of a flatten (``core.pipeline.killswitch``): open while pending or running."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


OPEN_FLATTEN_STATES: tuple[FlattenState, ...] = (FlattenState.PENDING, FlattenState.RUNNING)
