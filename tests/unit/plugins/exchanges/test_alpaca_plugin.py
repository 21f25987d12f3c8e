"""The Alpaca plugin's parts: symbol resolution, error translation, and how alerts become
Alpaca orders (against the in-process Alpaca emulator, over real HTTP on 127.0.0.1)."""

from __future__ import annotations

import ast
import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from core.errors import (
    OrderNotSent,
    OrderRejected,
    OutcomeUnknown,
    Unprocessable,
    VenueBusy,
)
from core.observability.redaction import REDACTOR
from core.pipeline.models import Alert, NothingToDo
from core.pipeline.outcomes import classify_exception
from emulator import Emulator
from plugins.exchanges.alpaca import AccountOptions, Plugin
from plugins.exchanges.alpaca.assets import Asset, AssetBook
from plugins.exchanges.alpaca.client import LIVE_URL, PAPER_URL
from plugins.exchanges.alpaca.errors import from_response, from_transport
from plugins.exchanges.alpaca.executor import AlpacaExecutor
from tests.support import free_port, signed_headers

PLUGIN_DIR = Path(__file__).resolve().parents[4] / "plugins" / "exchanges" / "alpaca"


def asset(symbol: str, cls: str = "us_equity", **fields) -> Asset:
    row = {
        "symbol": symbol,
        "class": cls,
        "exchange": "NASDAQ" if cls == "us_equity" else "CRYPTO",
        "tradable": True,
        "fractionable": True,
        **fields,
    }
    return Asset.from_api(row)


BOOK = AssetBook(
    [
        asset("AAPL"),
        asset("SPY"),
        asset("BRK.B"),
        asset("BTC/USD", "crypto"),
        asset("BTC/USDT", "crypto"),
        asset("ETH/USD", "crypto"),
        asset("GONE", tradable=False),
    ]
)


# ---------------------------------------------------------------- symbol resolution


@pytest.mark.parametrize(
    "ticker,symbol",
    [
        ("NASDAQ:AAPL", "AAPL"),
        ("AAPL", "AAPL"),
        ("aapl", "AAPL"),
        ("AMEX:SPY", "SPY"),  # TradingView's exchange prefix is a hint only (Alpaca lists SPY on ARCA)
        ("BTCUSD", "BTC/USD"),
        ("COINBASE:BTCUSD", "BTC/USD"),
        ("BTC/USD", "BTC/USD"),
        ("btcusd", "BTC/USD"),
        ("BTCUSDT", "BTC/USDT"),
        ("ETHUSD", "ETH/USD"),
        ("NYSE:BRK.B", "BRK.B"),
        ("BRK/B", "BRK.B"),
        ("BRK-B", "BRK.B"),
    ],
)
def test_tradingview_tickers_resolve_from_the_asset_list(ticker, symbol):
    assert BOOK.resolve(ticker).symbol == symbol


@pytest.mark.parametrize("ticker", ["TSLA", "NASDAQ:TSLA", "BTCEUR", "GONE", "BTC", ""])
def test_tickers_not_in_the_asset_list_do_not_resolve(ticker):
    assert BOOK.resolve(ticker) is None


def test_resolution_uses_the_asset_list_not_string_rules():
    # The same ticker means different things on accounts listing different assets.
    assert AssetBook([asset("BTC/USDT", "crypto")]).resolve("BTCUSD") is None
    assert AssetBook([asset("BTCUSD")]).resolve("BTCUSD").asset_class == "us_equity"


def test_a_stock_and_a_crypto_pair_spelled_alike_resolve_to_the_exact_symbol_first():
    book = AssetBook([asset("BTCUSD"), asset("BTC/USD", "crypto")])
    assert book.resolve("BTCUSD").symbol == "BTCUSD"
    assert book.resolve("BTC/USD").symbol == "BTC/USD"


def test_asset_precision():
    stock, whole, coin = (
        asset("AAPL"),
        asset("BRK.A", fractionable=False),
        asset("BTC/USD", "crypto", min_trade_increment="0.0001", price_increment="1"),
    )
    assert stock.round_qty(Decimal("1.1234567899")) == Decimal("1.123456789")
    assert whole.round_qty(Decimal("2.9")) == Decimal(2)
    assert coin.round_qty(Decimal("0.00129")) == Decimal("0.0012")
    assert stock.round_price(Decimal("190.126")) == Decimal("190.13")
    assert stock.round_price(Decimal("0.51234")) == Decimal("0.5123")  # sub-dollar stocks: 4 decimals
    assert coin.round_price(Decimal("50000.6")) == Decimal(50001)


# ---------------------------------------------------------------- error translation


def answer(status: int, body: object) -> httpx.Response:
    request = httpx.Request("POST", "https://paper-api.alpaca.markets/v2/orders")
    return httpx.Response(status, json=body, request=request)


@pytest.mark.parametrize(
    "status,body,http,state,code",
    [
        (
            403,
            {"code": 40310000, "message": "insufficient buying power", "buying_power": "10"},
            422,
            "rejected",
            "exchange_rejected",
        ),
        (
            403,
            {"code": 40310000, "message": "insufficient qty available for order (requested: 5, available: 0)"},
            422,
            "rejected",
            "exchange_rejected",
        ),
        (422, {"code": 40010001, "message": "client_order_id must be unique"}, 422, "rejected", "exchange_rejected"),
        (422, {"code": 42210000, "message": "invalid crypto time_in_force"}, 422, "rejected", "exchange_rejected"),
        (404, {"code": 40410000, "message": "asset not found"}, 422, "rejected", "exchange_rejected"),
        (401, {"code": 40110000, "message": "request is not authorized"}, 502, "failed", "exchange_auth_failed"),
        (403, {"message": "forbidden"}, 502, "failed", "exchange_auth_failed"),
        (429, {"code": 42910000, "message": "rate limit exceeded"}, 503, "failed", "exchange_busy"),
        (500, {"message": "internal server error"}, 202, "unknown", "outcome_unknown"),
        (503, {"message": "service unavailable"}, 202, "unknown", "outcome_unknown"),
    ],
)
def test_alpaca_answers_become_the_routers_outcomes(status, body, http, state, code):
    outcome = classify_exception(from_response(answer(status, body), placing=True), sent=True)
    assert (outcome.status, outcome.state, outcome.code) == (http, state, code)
    if state == "rejected":
        assert body["message"] in outcome.message


def test_what_the_engine_retries_and_what_it_reconciles():
    busy = from_response(answer(429, {"code": 42910000, "message": "rate limit exceeded"}), placing=True)
    assert isinstance(busy, VenueBusy) and busy.retry and not busy.may_be_booked and busy.venue_code == "42910000"
    unsent = from_transport(httpx.ConnectError("refused"), placing=True)
    assert isinstance(unsent, OrderNotSent) and unsent.retry and not unsent.may_be_booked
    lost = from_transport(httpx.ReadTimeout("read"), placing=True)
    assert isinstance(lost, OutcomeUnknown) and lost.may_be_booked and not lost.retry
    refused = from_response(answer(403, {"code": 40310000, "message": "insufficient buying power"}), placing=True)
    assert isinstance(refused, OrderRejected) and not refused.retry and refused.venue_code == "40310000"
    # A read that fails has no side effect: never "may be booked".
    assert isinstance(from_response(answer(502, {}), placing=False), OrderNotSent)


@pytest.mark.parametrize(
    "exc,http,state",
    [
        (httpx.ConnectError("refused"), 503, "failed"),  # nothing left the process
        (httpx.ConnectTimeout("connect"), 503, "failed"),
        (httpx.PoolTimeout("pool"), 503, "failed"),
        (httpx.ReadTimeout("read"), 202, "unknown"),  # sent: the order may exist
        (httpx.RemoteProtocolError("closed"), 202, "unknown"),
        (httpx.ReadError("reset"), 202, "unknown"),
    ],
)
def test_transport_failures_are_unsent_only_before_the_connection(exc, http, state):
    outcome = classify_exception(from_transport(exc, placing=True), sent=True)
    assert (outcome.status, outcome.state) == (http, state)


def test_an_error_message_never_carries_a_registered_secret():
    REDACTOR.add("sk-alpaca-SECRET-0123456789", static=True)
    error = from_response(answer(422, {"message": "bad key sk-alpaca-SECRET-0123456789"}), placing=True)
    assert "sk-alpaca-SECRET-0123456789" not in str(error)


# ---------------------------------------------------------------- the plugin's surface


def test_the_plugin_never_imports_ccxt():
    for path in PLUGIN_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "ccxt" for n in names), f"{path.name} imports ccxt"


def test_loading_the_plugin_loads_no_ccxt():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[4]
    code = (
        "import sys, plugins.exchanges.alpaca, plugins.exchanges.alpaca.executor; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ccxt'))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(root), "PATH": ""},
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def test_core_does_not_know_the_plugin():
    core = Path(__file__).resolve().parents[4] / "core"
    for path in core.glob("*.py"):
        text = path.read_text()
        assert "plugins.exchanges.alpaca" not in text and "AlpacaExecutor" not in text, path.name


def test_paper_and_live_endpoints_and_the_override():
    keys = {"api_key": "PKTEST000000000000", "secret": "secret-key-0123456789"}
    assert AccountOptions(**keys).endpoint == PAPER_URL
    assert AccountOptions(**keys, paper=False).endpoint == LIVE_URL
    assert (
        AccountOptions(**keys, paper=False, base_url="http://127.0.0.1:9/alpaca/").endpoint
        == "http://127.0.0.1:9/alpaca"
    )
    with pytest.raises(ValueError):
        AccountOptions(**keys, base_url="paper-api.alpaca.markets")
    with pytest.raises(ValueError):
        AccountOptions(**keys, asset_classes=["options"])


def test_registering_an_account_registers_its_keys_as_secrets():
    plugin = Plugin(
        Plugin.Options(
            accounts={"stocks": AccountOptions(api_key="PKREGISTER00000001", secret="registered-secret-value-1")}
        )
    )
    registered, secrets = {}, []

    class Host:  # the part of core.hooks.host.PluginHost the hook uses
        def register_secret(self, value):
            secrets.append(value)

    plugin.register_executors(lambda name, executor: registered.update({name: executor}), router=Host())
    assert isinstance(registered["stocks"], AlpacaExecutor)
    assert sorted(secrets) == ["PKREGISTER00000001", "registered-secret-value-1"]


# ---------------------------------------------------------------- alerts → orders


@pytest.fixture
async def emulator():
    async with Emulator() as emu:
        yield emu


@pytest.fixture
async def executor(emulator):
    options = AccountOptions(
        api_key="emu-key-1", secret="emu-secret-1", base_url=emulator.base_url + "/alpaca", clock_max_age=0, timeout=10
    )
    executor = AlpacaExecutor("alpaca", options)
    await executor.start()
    yield executor
    await executor.close()


def make_alert(**fields) -> Alert:
    return Alert.model_validate({"symbol": "AAPL", "side": "buy", "amount": "1", "alert_id": "a1", **fields})


async def test_start_loads_the_account_assets(executor):
    assert executor.assets.resolve("BTCUSD").symbol == "BTC/USD"
    assert executor.assets.resolve("DLSTD") is None  # listed but not tradable
    assert executor.lane_key(make_alert(symbol="NASDAQ:AAPL")) == executor.lane_key(make_alert(symbol="AAPL"))


async def test_wrong_keys_fail_start_as_refused_credentials(emulator):
    options = AccountOptions(api_key="emu-key-1", secret="wrong-secret-000", base_url=emulator.base_url + "/alpaca")
    executor = AlpacaExecutor("alpaca", options)
    try:
        with pytest.raises(Exception) as refused:
            await executor.start()
        assert classify_exception(refused.value, sent=False).code == "exchange_auth_failed"
    finally:
        await executor.close()


async def test_an_unknown_symbol_is_refused_with_a_suggestion(executor):
    with pytest.raises(Unprocessable) as refused:
        await executor.prepare(make_alert(symbol="AAPLX"), "c1")
    assert refused.value.code == "unknown_symbol" and "AAPL" in refused.value.message


async def test_quote_amounts(executor):
    market = await executor.prepare(make_alert(amount="99.999", amount_type="quote"), "c1")
    assert (market.cost, market.amount, market.time_in_force) == ("99.99", None, "day")
    limit = await executor.prepare(
        make_alert(amount="1000", amount_type="quote", order_type="limit", price="300"), "c2"
    )
    assert (limit.cost, limit.amount, limit.price) == (None, "3.333333333", "300")
    with pytest.raises(Unprocessable, match="minimum"):
        await executor.prepare(make_alert(symbol="BTCUSD", amount="5", amount_type="quote"), "c3")


async def test_fractional_rules(executor):
    with pytest.raises(Unprocessable, match="day orders"):
        await executor.prepare(make_alert(amount="0.5", time_in_force="GTC"), "c1")
    whole = await executor.prepare(make_alert(amount="2", time_in_force="GTC"), "c2")
    assert (whole.amount, whole.time_in_force) == ("2", "gtc")
    with pytest.raises(Unprocessable, match="below the minimum 1 for BRK.A"):  # whole shares only
        await executor.prepare(make_alert(symbol="BRK.A", amount="0.5"), "c3")
    with pytest.raises(Unprocessable, match="quotes no price"):  # not fractionable: no dollar amount as notional
        await executor.prepare(make_alert(symbol="BRK.A", amount="100", amount_type="quote"), "c4")
    with pytest.raises(Unprocessable, match="below the minimum 1 for BRK.A"):
        await executor.prepare(make_alert(symbol="BRK.A", amount="100", amount_type="quote", price="600000"), "c4")
    assert (await executor.prepare(make_alert(symbol="BRK.A", amount="1.7"), "c5")).amount == "1"


async def test_crypto_rules(executor):
    order = await executor.prepare(make_alert(symbol="BTCUSD", amount="0.0012345678912"), "c1")
    assert (order.symbol, order.amount, order.time_in_force, order.market_type) == (
        "BTC/USD",
        "0.001234567",
        "gtc",
        "spot",
    )
    assert (
        await executor.prepare(make_alert(symbol="BTCUSD", amount="0.01", time_in_force="IOC"), "c2")
    ).time_in_force == "ioc"
    with pytest.raises(Unprocessable, match="gtc and ioc"):
        await executor.prepare(make_alert(symbol="BTCUSD", amount="0.01", time_in_force="FOK"), "c3")
    with pytest.raises(Unprocessable, match="not stop orders"):
        await executor.prepare(make_alert(symbol="BTCUSD", amount="0.01", order_type="stop", stop_price="60000"), "c4")
    with pytest.raises(Unprocessable, match="below the minimum 0.0001 for BTC/USD"):
        await executor.prepare(make_alert(symbol="BTCUSD", amount="0.00001"), "c5")


async def test_brackets_are_checked_before_sending(executor):
    bracket = await executor.prepare(make_alert(amount="2", price="190", stop_loss="180", take_profit="200"), "c1")
    assert bracket.params["order_class"] == "bracket"
    oto = await executor.prepare(make_alert(amount="2", price="190", stop_loss="180"), "c2")
    assert oto.params["order_class"] == "oto" and oto.take_profit is None
    with pytest.raises(Unprocessable, match="whole shares"):
        await executor.prepare(make_alert(amount="2.5", stop_loss="180"), "c3")
    with pytest.raises(Unprocessable, match="stop_loss 195 must be below the long entry at 190"):
        await executor.prepare(make_alert(amount="2", price="190", stop_loss="195", take_profit="200"), "c4")


async def test_unsupported_alert_fields_are_refused(executor):
    for fields in ({"post_only": True}, {"reduce_only": True}, {"leverage": 2}, {"market_type": "swap"}):
        with pytest.raises(Unprocessable):
            await executor.prepare(make_alert(**fields), "c1")


async def test_market_hours_follow_the_clock(executor, emulator):
    emulator.alpaca.set_clock(False)
    with pytest.raises(Unprocessable) as refused:
        await executor.prepare(make_alert(), "c1")
    assert refused.value.code == "market_closed"
    extended = await executor.prepare(make_alert(order_type="limit", price="190", raw={"extended_hours": "true"}), "c2")
    assert extended.params == {"time_in_force": "day", "extended_hours": True}
    assert (await executor.prepare(make_alert(symbol="ETHUSD", amount="0.1"), "c3")).symbol == "ETH/USD"
    emulator.alpaca.set_clock(True)
    assert (await executor.prepare(make_alert(), "c4")).params == {"time_in_force": "day"}


async def test_percentages_and_close(executor):
    await executor.submit(await executor.prepare(make_alert(amount="10"), "buy-10"))
    half = await executor.prepare(make_alert(side="sell", amount="50", amount_type="percent_of_position"), "c1")
    assert (half.side, half.amount, half.position_before) == ("sell", "5", "10")
    share = await executor.prepare(make_alert(amount="1", amount_type="percent_of_balance"), "c2")
    assert share.cost == "981"  # 1% of the 98100 USD left after buying 10 AAPL at 190
    close = await executor.prepare(make_alert(action="close", side=None, amount=None), "c3")
    assert (close.side, close.amount) == ("sell", "10")
    result = await executor.submit(close)
    assert result.status == "filled"
    with pytest.raises(NothingToDo):
        await executor.prepare(make_alert(action="close", side=None, amount=None), "c4")


async def test_submit_then_lookup_by_client_order_id(executor, emulator):
    order = await executor.prepare(make_alert(amount="1.5"), "tvlookup1")
    assert (await executor.lookup(order)).is_absent  # Alpaca says for sure it does not exist
    result = await executor.submit(order)
    assert (result.status, result.filled, result.client_order_id) == ("filled", "1.5", "tvlookup1")
    found = await executor.lookup(order)
    assert found.is_found and found.result.order_id == result.order_id and found.result.status == "filled"
    with pytest.raises(OrderRejected, match="client_order_id must be unique"):
        await executor.submit(order)
    assert len(emulator.orders(client_order_id="tvlookup1")) == 1


async def test_cancel_and_cancel_all(executor, emulator):
    resting = await executor.submit(
        await executor.prepare(make_alert(order_type="limit", price="150", time_in_force="GTC"), "rest1")
    )
    await executor.submit(
        await executor.prepare(make_alert(order_type="limit", price="151", time_in_force="GTC"), "rest2")
    )
    assert resting.status == "open"
    cancel = await executor.prepare(
        make_alert(action="cancel", side=None, amount=None, cancel_client_order_id="rest1"), "c1"
    )
    assert (await executor.submit(cancel)).status == "canceled"
    assert (await executor.lookup(cancel)).result.status == "canceled"
    everything = await executor.prepare(make_alert(action="cancel_all", side=None, amount=None), "c2")
    assert [c["client_order_id"] for c in (await executor.submit(everything)).children] == ["rest2"]
    assert (await executor.lookup(everything)).result.status == "canceled"
    assert [o["status"] for o in emulator.orders(venue="alpaca")] == ["CANCELED", "CANCELED"]
    with pytest.raises(Unprocessable, match="no order nope on AAPL"):
        await executor.submit(
            await executor.prepare(make_alert(action="cancel", side=None, amount=None, order_id="nope"), "c3")
        )


def test_the_commented_plugins_yaml_example_is_a_valid_configuration():
    import re

    import yaml

    text = (Path(__file__).resolve().parents[4] / "plugins.yaml").read_text()
    assert "# modules: [plugins.exchanges.alpaca]" in text
    start = text.index("# alpaca:\n")
    block = []
    for line in text[start:].splitlines():
        if not line.startswith("#"):
            break
        block.append(line[2:])
    example = yaml.safe_load(re.sub(r"\$\{(\w+)\}", r"value-of-\1", "\n".join(block)))
    options = Plugin.Options.model_validate(example["alpaca"])
    assert options.accounts["stocks"].endpoint == PAPER_URL


async def test_extended_hours_is_read_in_any_spelling(executor, emulator):
    emulator.alpaca.set_clock(False)
    for raw in ({"extendedHours": True}, {"EXTENDED_HOURS": "yes"}):
        order = await executor.prepare(make_alert(order_type="limit", price="190", raw=raw), "c1")
        assert order.params["extended_hours"] is True
    order = await executor.prepare(make_alert(order_type="limit", price="190", params={"extended_hours": 1}), "c2")
    assert order.params["extended_hours"] is True
    with pytest.raises(Unprocessable, match="closed"):
        await executor.prepare(make_alert(order_type="limit", price="190", raw={"extended_hours": False}), "c3")


async def test_an_account_down_at_startup_becomes_ready_by_itself():
    port = free_port()
    options = AccountOptions(
        api_key="emu-key-1", secret="emu-secret-1", base_url=f"http://127.0.0.1:{port}/alpaca", retry_seconds=0.02
    )
    executor = AlpacaExecutor("alpaca", options)
    try:
        with pytest.raises(Exception) as down:
            await executor.start()
        assert classify_exception(down.value, sent=False).code == "exchange_unreachable"
        executor.ready = False  # as the router's registry marks it
        executor.start_maintenance()
        emu = Emulator()
        await emu.start(port=port)
        try:
            deadline = time.monotonic() + 20
            while not executor.ready:
                assert time.monotonic() < deadline, executor.error
                await asyncio.sleep(0.02)  # polling the executor's readiness, bounded
        finally:
            await emu.stop()
        assert executor.assets.resolve("AAPL") is not None and executor.error is None
    finally:
        await executor.close()


async def test_a_lookup_alpaca_cannot_answer_is_never_absent(executor, emulator):
    order = await executor.prepare(make_alert(amount="1"), "tvlookup2")
    emulator.add_fault(
        "http_error", status=502, match={"venue": "alpaca", "route": "GET /v2/orders:by_client_order_id"}
    )
    with pytest.raises(OrderNotSent):  # the engine reads a raise as "cannot tell, ask again"
        await executor.lookup(order)
    assert (await executor.lookup(order)).is_absent


def test_an_asset_is_a_core_market():
    coin = asset("BTC/USD", "crypto", min_order_size="0.0001", min_trade_increment="0.000000001", price_increment="1")
    market = coin.to_market()
    assert (market.symbol, market.base, market.quote, market.type, market.contract) == (
        "BTC/USD",
        "BTC",
        "USD",
        "spot",
        False,
    )
    assert (market.amount_step, market.price_tick, market.aliases) == (Decimal("0.000000001"), Decimal(1), ("BTCUSD",))
    assert (market.limits.amount_min, market.buys_by_cost) == (Decimal("0.0001"), True)
    assert coin.min_notional == Decimal(10)  # checked by the plugin, for buys only
    whole = asset("BRK.A", fractionable=False).to_market()
    assert (whole.amount_step, whole.price_tick, whole.limits.amount_min, whole.buys_by_cost) == (
        Decimal(1),
        Decimal("0.0001"),
        Decimal(1),
        False,
    )


async def test_an_alpaca_account_named_by_default_exchange_is_the_default_account(
    app_client, write_plugins_yaml, emulator
):
    write_plugins_yaml(f"""
router:
  modules: [plugins.exchanges.alpaca]
alpaca:
  accounts:
    alpaca: {{api_key: emu-key-1, secret: emu-secret-1, base_url: "{emulator.base_url}/alpaca", clock_max_age: 0}}
""")
    async with app_client(DEFAULT_EXCHANGE="alpaca") as (client, app):
        for alert_id, fields in (("no-account", {}), ("by-exchange", {"exchange": "NASDAQ"})):
            body = json.dumps(
                {"symbol": "NASDAQ:AAPL", "side": "buy", "amount": "1", "id": alert_id, **fields}
            ).encode()
            response = await client.post("/webhook", data=body, headers=signed_headers(body))
            assert response.status_code == 200, await response.get_json()
            assert (await response.get_json())["order"]["exchange"] == "alpaca"
    assert len(emulator.orders(venue="alpaca")) == 2


async def test_target_alerts_move_the_holding_through_cores_sizing(executor):
    await executor.submit(await executor.prepare(make_alert(amount="10"), "hold-10"))
    target = make_alert(action="target", side=None, amount=None, target_position="4")
    order = await executor.prepare(target, "t1")
    assert (order.side, order.amount, order.position_before) == ("sell", "6", "10")
    await executor.submit(order)
    with pytest.raises(NothingToDo, match="already"):
        await executor.prepare(target, "t2")
    with pytest.raises(Unprocessable, match="cannot go short"):
        await executor.prepare(make_alert(action="target", side=None, amount=None, target_position="-1"), "t3")
    with pytest.raises(Unprocessable, match="flip needs a derivatives market"):
        await executor.prepare(make_alert(action="flip", side=None, amount=None), "t4")


async def test_cancels_of_what_is_not_open_are_answered_before_sending(executor, emulator):
    filled = await executor.submit(await executor.prepare(make_alert(amount="1"), "done1"))
    with pytest.raises(NothingToDo, match="already filled"):
        await executor.prepare(make_alert(action="cancel", side=None, amount=None, order_id=filled.order_id), "c1")
    with pytest.raises(NothingToDo, match="no open orders"):
        await executor.prepare(make_alert(action="cancel_all", side=None, amount=None), "c2")
    assert [o["status"] for o in emulator.orders(venue="alpaca")] == ["FILLED"]


async def test_a_usdt_pair_is_sized_from_the_usdt_held(executor):
    await executor.submit(await executor.prepare(make_alert(symbol="ETHUSD", amount="1"), "eth1"))
    with pytest.raises(NothingToDo, match="no BTC held"):
        await executor.prepare(
            make_alert(symbol="BTCUSD", side="sell", amount="50", amount_type="percent_of_position"), "p1"
        )
    with pytest.raises(Unprocessable, match="nothing to trade"):  # 10% of no USDT
        await executor.prepare(make_alert(symbol="BTCUSDT", amount="10", amount_type="percent_of_balance"), "p2")
    half = await executor.prepare(
        make_alert(symbol="ETHUSD", side="sell", amount="50", amount_type="percent_of_position"), "p3"
    )
    assert (half.symbol, half.amount) == ("ETH/USD", "0.5")


async def test_the_clock_is_kept_until_its_next_change(emulator):
    options = AccountOptions(
        api_key="emu-key-1", secret="emu-secret-1", base_url=emulator.base_url + "/alpaca", clock_max_age=3600
    )
    executor = AlpacaExecutor("alpaca", options)
    try:
        assert await executor.client.market_is_open() is True
        emulator.alpaca.set_clock(False)
        # The emulator says the market closes in 6 h: the open clock is not asked again before.
        assert await executor.client.market_is_open() is True
    finally:
        await executor.close()
    fresh = AlpacaExecutor("alpaca", options.model_copy(update={"clock_max_age": 0}))
    try:
        assert await fresh.client.market_is_open() is False
    finally:
        await fresh.close()
