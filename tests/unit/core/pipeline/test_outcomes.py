"""The money rules of ``core.pipeline.outcomes``: how an order's result or error becomes the
alert's final state and the HTTP answer.

The rule that matters: once an order may have reached the exchange the answer is never a
5xx (TradingView would resend it and the order could be doubled); a 5xx, with
Retry-After, only where nothing can have been booked.
"""

from __future__ import annotations

import pytest

from core.errors import (
    BadRequest,
    CredentialsRefused,
    OrderError,
    OrderNotSent,
    OrderRejected,
    OutcomeUnknown,
    RiskLimitExceeded,
    ServiceUnavailable,
    Unprocessable,
    VenueBusy,
)
from core.observability.redaction import MASK, Redactor
from core.pipeline import outcomes
from core.pipeline.models import OrderRequest, OrderResult
from core.pipeline.outcomes import (
    Outcome,
    as_order_error,
    classify_exception,
    describe,
    done_state,
    may_be_booked,
    retries,
)


@pytest.fixture(autouse=True)
def redactor(monkeypatch):
    """A redactor of this test's own: secrets registered here do not leak into other tests."""
    fresh = Redactor()
    monkeypatch.setattr(outcomes, "REDACTOR", fresh)
    return fresh


# ---------------------------------------------------------------- order errors → state and answer


@pytest.mark.parametrize(
    ("error", "status", "code", "state", "message"),
    [
        (
            OrderRejected("insufficient balance"),
            422,
            "exchange_rejected",
            "rejected",
            "the exchange refused the order: insufficient balance",
        ),
        (
            CredentialsRefused("invalid api key"),
            502,
            "exchange_auth_failed",
            "failed",
            "the exchange refused the account's credentials: invalid api key",
        ),
        (
            VenueBusy("429 too many requests"),
            503,
            "exchange_busy",
            "failed",
            "the exchange is not accepting orders now: 429 too many requests",
        ),
        (
            OrderNotSent("connection refused"),
            503,
            "exchange_unreachable",
            "failed",
            "the exchange could not be reached; nothing was sent: connection refused",
        ),
        (
            OutcomeUnknown("read timeout"),
            202,
            "outcome_unknown",
            "unknown",
            "the order's outcome is unknown and is being reconciled: read timeout",
        ),
    ],
)
@pytest.mark.parametrize("sent", [True, False])
def test_each_order_error_has_its_state_status_and_message(error, status, code, state, message, sent):
    outcome = classify_exception(error, sent=sent, alert_id="a-1")
    assert (outcome.status, outcome.code, outcome.state, outcome.message) == (status, code, state, message)
    assert outcome.body == {"error": {"code": code, "message": message}, "status": state, "alert_id": "a-1"}


def test_a_refusal_after_nothing_was_sent_says_when_to_retry():
    assert classify_exception(VenueBusy("slow down", retry_after=12), sent=True).headers == {"Retry-After": "12"}
    assert classify_exception(OrderNotSent("refused"), sent=True).headers == {"Retry-After": "5"}
    assert classify_exception(OrderRejected("no"), sent=True).headers == {}


def test_a_venue_message_that_already_says_it_is_not_prefixed_twice():
    outcome = classify_exception(OrderRejected("the exchange refused the order: min notional"), sent=True)
    assert outcome.message == "the exchange refused the order: min notional"


def test_an_order_error_code_of_its_own_is_kept():
    outcome = classify_exception(OrderRejected("market closed", code="market_closed"), sent=True)
    assert (outcome.status, outcome.code, outcome.state) == (422, "market_closed", "rejected")


# ---------------------------------------------------------------- exceptions that are not order errors


def test_any_other_exception_once_the_order_may_have_left_is_an_unknown_outcome_never_a_5xx():
    outcome = classify_exception(ConnectionResetError("peer reset"), sent=True, alert_id="a-2")
    assert (outcome.status, outcome.code, outcome.state) == (202, "outcome_unknown", "unknown")
    assert outcome.message == (
        "the order's outcome is unknown and is being reconciled: ConnectionResetError: peer reset"
    )


def test_any_other_exception_before_anything_was_sent_is_a_500_that_says_so():
    outcome = classify_exception(KeyError("oops"), sent=False, alert_id="a-3")
    assert (outcome.status, outcome.code, outcome.state) == (500, "internal_error", "failed")
    assert outcome.message == "internal error; nothing was sent to the exchange"
    assert "oops" not in str(outcome.body)


@pytest.mark.parametrize(
    ("error", "status", "code", "state"),
    [
        (Unprocessable("amount must be > 0", code="invalid_alert"), 422, "invalid_alert", "rejected"),
        (RiskLimitExceeded("max_order_notional", "too big"), 422, "risk_limit", "rejected"),
        (BadRequest("bad"), 400, "bad_request", "failed"),
        (ServiceUnavailable("account not ready", code="account_not_ready"), 503, "account_not_ready", "failed"),
    ],
)
@pytest.mark.parametrize("sent", [True, False])
def test_the_routers_own_errors_keep_their_status(error, status, code, state, sent):
    outcome = classify_exception(error, sent=sent)
    assert (outcome.status, outcome.code, outcome.state, outcome.message) == (status, code, state, error.message)
    assert "alert_id" not in outcome.body


ALL_ERRORS = [
    OrderRejected("x"),
    CredentialsRefused("x"),
    VenueBusy("x"),
    OrderNotSent("x"),
    OutcomeUnknown("x"),
    OrderError("x"),
    TimeoutError("x"),
    ConnectionResetError("x"),
    RuntimeError("x"),
]


@pytest.mark.parametrize("error", ALL_ERRORS, ids=lambda e: type(e).__name__)
def test_no_5xx_for_an_order_that_may_be_booked(error):
    """A 5xx asks TradingView to resend: only where the error proves nothing was booked."""
    outcome = classify_exception(error, sent=True)
    if outcome.status >= 500:
        assert isinstance(error, OrderError) and not error.may_be_booked
    assert (outcome.state == "unknown") == (outcome.status == 202)


def test_as_order_error_keeps_the_original_as_its_cause():
    original = TimeoutError("read timed out")
    translated = as_order_error(original, sent=True)
    assert isinstance(translated, OutcomeUnknown)
    assert translated.__cause__ is original
    assert str(translated) == "TimeoutError: read timed out"
    assert as_order_error(original, sent=False) is original
    rejected = OrderRejected("no")
    assert as_order_error(rejected, sent=True) is rejected


# ---------------------------------------------------------------- secrets and length


def test_messages_pass_the_redactor(redactor):
    redactor.add("sk-live-1234567890", static=True)
    outcome = classify_exception(OrderRejected("bad key sk-live-1234567890"), sent=True)
    assert outcome.message == f"the exchange refused the order: bad key {MASK}"
    assert "sk-live" not in str(outcome.body)


def test_the_routers_own_error_messages_pass_the_redactor_too(redactor):
    redactor.add("pa55phrase-from-the-alert")
    outcome = classify_exception(Unprocessable("bad password pa55phrase-from-the-alert"), sent=False)
    assert outcome.message == f"bad password {MASK}"
    assert outcome.body["error"]["message"] == f"bad password {MASK}"


def test_a_long_venue_message_is_cut_to_300_characters():
    outcome = classify_exception(OrderRejected("x" * 1000), sent=True)
    assert outcome.message == "the exchange refused the order: " + "x" * 300


# ---------------------------------------------------------------- what the engine may do with an error


@pytest.mark.parametrize(
    ("error", "retried", "booked"),
    [
        (VenueBusy("x"), True, False),
        (OrderNotSent("x"), True, False),
        (OrderRejected("x"), False, False),
        (CredentialsRefused("x"), False, False),
        (OutcomeUnknown("x"), False, True),
        (TimeoutError("x"), False, False),  # not translated yet: the engine translates first
        (Unprocessable("x"), False, False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_what_an_error_lets_the_engine_do(error, retried, booked):
    assert (retries(error), may_be_booked(error)) == (retried, booked)


def test_an_error_that_may_be_booked_is_never_retried_whatever_its_flag():
    class ResendMe(OrderError):  # a venue plugin's confused error class
        retry = True
        may_be_booked = True

    assert (retries(ResendMe("x")), may_be_booked(ResendMe("x"))) == (False, True)


def test_describe_names_the_class_and_cuts_the_message():
    assert describe(VenueBusy("429")) == "VenueBusy: 429"
    assert describe(ValueError("y" * 400)) == "ValueError: " + "y" * 300


# ---------------------------------------------------------------- a successful answer


def _order(action: str = "create") -> OrderRequest:
    return OrderRequest(
        account="a", exchange="paper", symbol="BTC/USDT", market_type="spot", action=action, client_order_id="c"
    )


def _result(status: str) -> OrderResult:
    return OrderResult(account="a", exchange="paper", symbol="BTC/USDT", client_order_id="c", status=status)


@pytest.mark.parametrize(
    ("action", "status", "state"),
    [
        ("create", "filled", "filled"),
        ("create", "closed", "filled"),  # ccxt's word for filled
        ("create", "open", "submitted"),
        ("create", "partially_filled", "submitted"),
        ("create", "weird", "submitted"),  # an unknown word: resting, never "filled"
        ("cancel", "canceled", "canceled"),
        ("cancel_all", "open", "canceled"),
    ],
)
def test_what_a_successful_answer_means(action, status, state):
    assert done_state(_order(action), _result(status)) == state


# ---------------------------------------------------------------- the answer rebuilt from the journal


def test_a_journal_row_that_succeeded_answers_200_with_the_order():
    row = {"alert_id": "a-1", "state": "filled", "result": {"order_id": "9"}, "error_code": None}
    outcome = Outcome.from_journal(row)
    assert (outcome.status, outcome.state) == (200, "filled")
    assert outcome.body == {"status": "filled", "alert_id": "a-1", "order": {"order_id": "9"}}


def test_a_journal_row_that_failed_answers_its_status_and_error():
    row = {
        "alert_id": "a-1",
        "state": "failed",
        "error_code": "exchange_busy",
        "error_message": "429",
        "http_status": 503,
    }
    outcome = Outcome.from_journal(row)
    assert (outcome.status, outcome.code, outcome.state) == (503, "exchange_busy", "failed")
    assert outcome.body == {"error": {"code": "exchange_busy", "message": "429"}, "status": "failed", "alert_id": "a-1"}
    # an error row without a status (written before the status was journaled) answers 422
    row = {"alert_id": "a-1", "state": "rejected", "error_code": "exchange_rejected"}
    assert Outcome.from_journal(row).status == 422


@pytest.mark.parametrize("state", ["received", "submitting", "unknown"])
def test_a_journal_row_still_executing_answers_202(state):
    outcome = Outcome.from_journal({"alert_id": "a-1", "state": state})
    assert (outcome.status, outcome.state) == (202, state)
    assert outcome.body["message"] == "execution continues; see GET /alerts/a-1"


def test_a_result_of_a_state_that_is_not_a_success_is_not_an_order():
    # a row "unknown" that carries a result (the attempt's answer) is still executing
    outcome = Outcome.from_journal({"alert_id": "a-1", "state": "unknown", "result": {"order_id": "9"}})
    assert outcome.status == 202 and "order" not in outcome.body


def test_an_empty_row_is_unknown_and_executing():
    assert (Outcome.from_journal({}).status, Outcome.from_journal({}).state) == (202, "unknown")
