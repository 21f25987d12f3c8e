"""Property: whatever arrives at POST /webhook — any body, any headers, with or without
valid credentials — the answer is never a 5xx, and no order is ever placed without valid
authentication; and a validly signed alert with any value of any type in any field is
answered (never a 5xx, never a hang). Derandomized, so every run sends the same examples."""

from __future__ import annotations

import asyncio
import faulthandler
import itertools
import json
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.pipeline.models import Alert
from core.web.app import create_app
from plugins.auth.hmac_auth import sign
from plugins.transforms.tradingview import Plugin as TradingView
from tests.abuse_support import client_from, issue_token, issue_token_async, ledger_count, running_server
from tests.support import SECRET, signed_headers

AUTH_MODES = ["none", "wrong-signature", "stale-signature", "bound", "body-only", "token", "bogus-token"]
VALID_MODES = {"bound", "body-only", "token"}

header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)
header_name = st.one_of(
    st.sampled_from(
        [
            "X-Signature",
            "X-Timestamp",
            "Content-Type",
            "Content-Encoding",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "Authorization",
            "X-Token",
            "Token",
            "Remote-Addr",
            "Host",
            "Transfer-Encoding",
            "Expect",
        ]
    ),
    st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z"),
)
content_type = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/json; charset=latin-1",
        "",
        "application/xml",
        "multipart/form-data",
        "text/html",
        "application/x-www-form-urlencoded",
    ]
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["{{close}}", "NaN", "-1", "0", "1e400", "BTCUSDT", "buy", "sell"]),
)
alert_like = st.fixed_dictionaries(
    {},
    optional={
        "symbol": st.one_of(st.sampled_from(["BINANCE:BTCUSDT", "BTCUSDT", "BTC/USDT", "ETHUSDT.P"]), scalar),
        "side": st.one_of(st.sampled_from(["buy", "sell", "long", "short"]), scalar),
        "amount": st.one_of(st.sampled_from(["0.001", "0.01", 1]), scalar),
        "price": st.one_of(st.sampled_from(["50000", 3000]), scalar),
        "order_type": st.one_of(st.sampled_from(["market", "limit"]), scalar),
        "account": scalar,
        "exchange": scalar,
        "id": scalar,
        "apiKey": scalar,
        "secret": scalar,
        "token": scalar,
        "extra": st.recursive(
            scalar,
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=10,
        ),
    },
)
tradable = st.integers(0, 10**12).map(
    lambda i: {"symbol": "BINANCE:BTCUSDT", "side": "buy", "amount": "0.001", "price": "50000", "id": f"prop-{i}"}
)
mutated = st.tuples(tradable, alert_like).map(lambda pair: {**pair[0], **pair[1]})
raw_body = st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode), st.just(b""))


@st.composite
def requests(draw):
    structured = draw(st.booleans())
    alert = draw(st.one_of(tradable, mutated, alert_like)) if structured else None
    mode = draw(st.sampled_from(AUTH_MODES))
    headers = draw(st.dictionaries(header_name, header_value, max_size=6))
    if draw(st.booleans()):
        headers["Content-Type"] = draw(content_type)
    elif not any(n.lower() == "content-type" for n in headers):
        headers["Content-Type"] = "application/json"
    if alert is not None and structured and draw(st.booleans()):
        alert.setdefault("id", f"prop-{draw(st.integers(0, 10**9))}")
    return alert, None if structured else draw(raw_body), mode, headers


def authenticate(alert, raw, mode: str, headers: dict[str, str], token: str) -> tuple[bytes, dict[str, str]]:
    """The request to send: ``mode`` decides the credentials, applied last."""
    if alert is not None:
        if mode == "token":
            alert = {**alert, "token": token}
        elif mode == "bogus-token":
            alert = {**alert, "token": "bogus-" + token[6:]}
        body = json.dumps(alert).encode()
    else:
        body = raw
    headers = dict(headers)
    now = str(int(time.time()))
    if mode in ("bound", "body-only", "wrong-signature", "stale-signature"):
        for name in [n for n in headers if n.lower() in ("x-signature", "x-timestamp")]:
            del headers[name]
        stamp = str(int(now) - 10_000) if mode == "stale-signature" else now
        secret = "wrong-secret" if mode == "wrong-signature" else SECRET
        headers["X-Timestamp"] = stamp
        headers["X-Signature"] = sign(secret, body, None if mode == "body-only" else stamp)
    elif mode == "token":
        for name in [n for n in headers if n.lower() in ("x-signature",)]:
            del headers[name]
    return body, headers


def check(status: int, mode: str, orders_before: int, orders_after: int, answer: str) -> None:
    assert status < 500, (status, answer)
    if mode not in VALID_MODES:
        assert status not in (200, 202), (status, answer)
        assert orders_after == orders_before, "an order without valid authentication"
    assert orders_after - orders_before in (0, 1)
    assert "Traceback" not in answer and SECRET not in answer


PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_any_request_in_process_never_5xx_never_an_unauthenticated_order(make_settings, data_dir):
    app = create_app(make_settings())
    loop = asyncio.new_event_loop()
    test_app = app.test_app()
    loop.run_until_complete(test_app.startup())
    client = test_app.test_client()
    token = loop.run_until_complete(issue_token_async(data_dir, label="property"))
    seen_orders = []

    async def send(body: bytes, headers: dict[str, str]):
        response = await client.post("/webhook", data=body, headers=headers)
        return response.status_code, await response.get_data(as_text=True)

    @PROPERTY
    @given(requests())
    def property_holds(request):
        alert, raw, mode, headers = request
        body, headers = authenticate(alert, raw, mode, headers, token)
        before = ledger_count(data_dir)
        status, answer = loop.run_until_complete(send(body, headers))
        after = ledger_count(data_dir)
        check(status, mode, before, after, answer)
        seen_orders.append(after - before)

    try:
        property_holds()
    finally:
        loop.run_until_complete(test_app.shutdown())
        loop.close()
    assert sum(seen_orders) > 0, "the generator must also produce valid alerts"


def test_any_request_to_the_real_server_never_5xx_never_an_unauthenticated_order(tmp_path):
    with running_server(tmp_path) as server, client_from(base_url=server.url) as http:
        token = issue_token(server.data_dir, label="property")

        @settings(PROPERTY, max_examples=100)
        @given(requests())
        def property_holds(request):
            alert, raw, mode, headers = request
            body, headers = authenticate(alert, raw, mode, headers, token)
            wire = {
                name: value.encode("latin-1")
                for name, value in headers.items()
                if name.lower() not in ("host", "transfer-encoding", "content-length", "expect", "content-encoding")
            }
            before = ledger_count(server.data_dir)
            try:
                response = http.post("/webhook", content=body, headers=wire)
            except httpx.LocalProtocolError:
                return  # a header the client library itself refuses to send
            check(response.status_code, mode, before, ledger_count(server.data_dir), response.text)

        property_holds()
        assert "Traceback" not in server.log()


# ------------------------------------------------------------------ signed alerts, any fields
# Issue 11: with a valid signature, any value of any type in any field of the alert model
# (its aliases, the TradingView fields, the secrets) is answered — never a 5xx, never a
# hang. Hypothesis profile "ci" (CI=true) runs 3,000 cases, "dev" 300 (tests/conftest.py).

NUMBERS = ["0.001", "0.01", "1", 1, 0.5, "50000", 3000, "-0.01", "0", 0, "10%", "5x", " 2 ", "1e-5", "1E3", ".5", "5."]
HOSTILE_NUMBERS = [
    "1e999999999",
    "-1e999999999",
    "1e-300000000",
    "1E+999999",
    "1_000",
    "1,000",
    "١",
    "١٠",
    "１",
    "٣.٥",
    "0x10",
    "NaN",
    "nan",
    "Infinity",
    "-inf",
    "sNaN",
    "9" * 60,
    "0." + "0" * 80 + "1",
    "1e31",
    "1e-31",
    "1 000",
    "½",
    "--1",
    "1e",
    "\u00a01",
    "1\u200b",
    "%",
    "x",
    "1e1000%",
]
VALID = {
    "symbol": ["BTCUSDT", "BINANCE:BTCUSDT", "ETHUSDT", "BTC/USDT", "BTCUSDT.P", "ETH/USDT:USDT", "SOL/USDT", "NOPE"],
    "side": ["buy", "sell", "long", "short", "BUY", " Sell "],
    "action": [
        "order",
        "target",
        "close",
        "flip",
        "cancel",
        "cancel_all",
        "exit",
        "reverse",
        "buy",
        "sell",
        "cancel-all",
    ],
    "amount_type": ["base", "quote", "percent_of_balance", "percent_of_position", "percent", "usdt", "contracts"],
    "order_type": ["market", "limit", "stop", "stop_limit", "stop-limit", "LMT"],
    "market_type": ["spot", "swap", "future", "perp", "linear"],
    "market_position": ["long", "short", "flat", "Long"],
    "time_in_force": ["GTC", "IOC", "FOK", "PO", "gtx", "post_only"],
    "margin_mode": ["cross", "isolated", "crossed"],
    "reduce_only": [True, False, "true", "no", 1, 0],
    "post_only": [True, False, "yes", 0],
    "account": ["paper", ["paper"], "nope", ["paper", "paper"], []],
    "exchange": ["paper", "binance", ""],
    "order_id": ["123", 456, "x" * 70],
    "cancel_client_order_id": ["abc", "tv" + "0" * 30],
    "params": [{}, {"clientOrderId": "x"}, {"leverage": "1e999999999"}, {"nested": {"apiKey": "k"}}],
    "leverage": [1, 5, "5x", "20", "200", 201, "1e999999999x"],
}
ALERT_KEYS = [name for name in Alert.model_fields if name not in ("principal", "received_at", "credentials", "raw")]
KEYS = sorted(
    {
        *ALERT_KEYS,
        *TradingView.Options().aliases,
        "market_position_size",
        "id",
        "apiKey",
        "secret",
        "password",
        "passphrase",
        "api_key",
        "apiSecret",
        "token",
        "comment",
    }
)

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**80), 10**80),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(NUMBERS + HOSTILE_NUMBERS),
)
json_any = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def field_value(key: str):
    canonical = TradingView.Options().aliases.get(key, key)
    valid = VALID.get(canonical) or (
        NUMBERS
        if canonical
        in ("amount", "price", "stop_price", "stop_loss", "take_profit", "target_position", "market_position_size")
        else None
    )
    if not valid:
        return st.one_of(json_any, st.sampled_from(HOSTILE_NUMBERS))
    # A valid value half of the time: one field wrong at a time reaches further.
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), json_any, st.sampled_from(HOSTILE_NUMBERS))


def key_spelling(key: str):
    return st.sampled_from([key, key.upper(), key.capitalize()])


# Each key's strategies built once (building a strategy, and the TradingView options behind
# field_value, costs more than drawing from it): the same draws, thousands of times cheaper.
FIELD_VALUES = {key: field_value(key) for key in KEYS}
KEY_SPELLINGS = {key: key_spelling(key) for key in KEYS}


@st.composite
def signed_alerts(draw) -> dict:
    # Mostly a tradable alert to start from, so that changed fields reach execution too.
    alert = draw(
        st.sampled_from(
            [
                {},
                {"symbol": "BTCUSDT", "side": "buy", "amount": "0.001"},
                {"symbol": "BINANCE:BTCUSDT", "side": "sell", "amount": "0.01", "price": "50000"},
                {"symbol": "ETHUSDT", "action": "target", "target_position": "0.01"},
            ]
        )
    )
    alert = dict(alert)
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=5, unique=True)):
        alert[draw(KEY_SPELLINGS[key])] = draw(FIELD_VALUES[key])
    return alert


def test_signed_alerts_with_any_field_values_and_types_never_5xx_never_hang(make_settings, write_plugins_yaml):
    write_plugins_yaml("router:\n  journal_synchronous: NORMAL\n")
    app = create_app(make_settings(RATE_LIMIT="100000/second"))
    # Hang detectors, far above any answer: the app runs on a loop of its own thread, so a
    # request that never completes fails the test after 60 s; a hang inside C code that
    # holds the GIL (int(Decimal("1e999999999"))) stops even that thread, so faulthandler's
    # watchdog (a C thread) then prints every thread's stack and ends the run after 90 s.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    test_app = app.test_app()
    run(test_app.startup())
    client = test_app.test_client()
    nonce = itertools.count()
    statuses: dict[int, int] = {}
    hung: list[bytes] = []

    async def send(body: bytes):
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        return response.status_code, await response.get_data(as_text=True)

    armed = [0.0]

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(signed_alerts())
    def property_holds(alert):
        assert not hung, f"the app hung earlier on {hung[0][:300]!r}"
        body = json.dumps({**alert, "n": next(nonce)}).encode()  # unique: never refused as a replay
        if time.monotonic() - armed[0] > 1:
            # (Re)armed at most once a second, not per case (each arming starts a thread): a
            # case that holds the GIL stops the re-arming too, so it is caught within 91 s.
            faulthandler.dump_traceback_later(90, exit=True)
            armed[0] = time.monotonic()
        try:
            status, answer = run(send(body), timeout=60)
        except FutureTimeout:
            hung.append(body)
            raise AssertionError(f"no answer within 60 s (a hang) to {body[:300]!r}") from None
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, answer, body)
        assert "Traceback" not in answer and SECRET not in answer
        if status >= 400:
            assert json.loads(answer)["error"]["code"], answer

    try:
        property_holds()
    finally:
        faulthandler.cancel_dump_traceback_later()
        if not hung:
            run(test_app.shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    # The generator reaches execution as well as refusals.
    assert statuses.get(200, 0) > 0 and statuses.get(422, 0) > 0, statuses
