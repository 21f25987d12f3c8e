"""The ccxt internals the ccxt plugin (and the emulator's ccxt configs) patch or rely on.

pyproject.toml pins ccxt to a minor range; within it, or when the range is moved, a ccxt
release that renames, reshapes or drops one of these fails here, by name, rather than
quietly in production (most of the patches degrade to a no-op when an internal is gone).
Each test names the module that relies on the internal. Behaviour is checked against the
emulator where a request is involved, else on ccxt's objects directly.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import ssl
import time

import aiohttp
import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest
from ccxt.async_support.base.throttler import Throttler
from ccxt.async_support.base.ws.client import Client as WsClient

from emulator import Emulator, ccxt_config
from plugins.exchanges.ccxt import accounts, errors, ids, markets
from plugins.exchanges.ccxt.lookup import FETCH_ORDER_BY_CLIENT_ID, LIST_ORDERS_BY_CLIENT_ID, SEPARATE_TRIGGER_BOOKS
from plugins.exchanges.ccxt.send import TRIGGER_DIRECTION
from plugins.exchanges.ccxt.throttle import credit_idle_time, mark_idle, throttlers
from plugins.exchanges.ccxt.websocket import WsOrderGate
from tests.support import free_port

WS_URL = "ws://127.0.0.1:9/ws-api/v3"  # never dialled: creating a connection object does not connect


def test_the_installed_ccxt_is_in_the_pinned_range():
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).parents[4] / "pyproject.toml").read_text())["project"]
    (pin,) = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "ccxt"]
    assert pin.specifier.contains(ccxt.__version__), (ccxt.__version__, str(pin))
    assert any(s.operator == "<" for s in pin.specifier), "ccxt needs an upper bound: its internals are patched"


@pytest.fixture
async def emu():
    async with Emulator() as emulator:
        yield emulator


async def until(predicate, rounds: int = 1000) -> None:
    """Yield to the event loop until ``predicate()`` holds (bounded; no clock involved)."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


# ------------------------------------------------------------------ throttle.py


async def test_rest_throttle_is_a_leaky_bucket_whose_state_is_in_config():
    """throttle.py reads and writes Exchange.throttler.config['tokens'|'capacity'|'refillRate']
    and Throttler.running; refillRate is in tokens per millisecond (1 / rateLimit)."""
    client = ccxt_async.binance({"enableRateLimit": True})
    try:
        throttler = client.throttler
        assert isinstance(throttler, Throttler)
        assert throttler.config["algorithm"] == "leakyBucket"
        for key in ("tokens", "capacity", "refillRate"):
            assert isinstance(throttler.config[key], (int, float)), key
        assert throttler.config["refillRate"] == pytest.approx(1 / client.rateLimit)
        assert throttler.running is False
        assert throttlers(client) == [throttler]
        client.enableRateLimit = False
        assert throttlers(client) == []
    finally:
        await client.close()


async def test_throttle_refills_only_while_a_request_waits_and_honours_tokens_written_to_config():
    """The behaviour credit_idle_time makes up for, and the lever it pulls."""
    throttler = Throttler({"refillRate": 1e-9, "capacity": 1, "tokens": 0, "delay": 0.001})
    await throttler(1)  # tokens 0 >= 0: passes at once, leaving -1
    await until(lambda: not throttler.running)
    assert throttler.config["tokens"] == -1  # idle: nothing refilled however long it sits

    blocked = asyncio.ensure_future(throttler(1))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(blocked), 0.05)  # waits for refill at 1e-9 per ms
    throttler.config["tokens"] = 0  # written from outside, read by the waiting loop
    await asyncio.wait_for(blocked, 5)

    await until(lambda: not throttler.running)
    throttler.config.update(tokens=-1, refillRate=0.001)
    throttler._router_idle_since = time.time() * 1000 - 10_000  # our attribute on ccxt's object
    credit_idle_time(throttler)
    assert throttler.config["tokens"] == 1  # 10 s at 0.001/ms, capped at the capacity
    mark_idle(throttler)
    assert throttler._router_idle_since == pytest.approx(time.time() * 1000, abs=1000)


async def test_websocket_connections_have_their_own_throttle_in_exchange_clients():
    """throttle.py credits the throttle of each connection in Exchange.clients (ccxt.pro)."""
    client = ccxt_pro.binance({"enableRateLimit": True})
    try:
        ws = client.client(WS_URL)
        assert client.clients[WS_URL] is ws
        assert isinstance(ws.throttle, Throttler) and ws.throttle is not client.throttler
        assert throttlers(client) == [client.throttler, ws.throttle]
    finally:
        await client.close()


def test_requests_and_websocket_messages_are_throttled_only_with_enable_rate_limit():
    base = ccxt_async.Exchange
    assert "if self.enableRateLimit:" in inspect.getsource(base.fetch2)
    assert "await client.throttle(cost)" in inspect.getsource(base.watch)


# ------------------------------------------------------------------ websocket.py


async def test_websocket_orders_go_through_self_client_and_the_connections_send(emu):
    """WsOrderGate replaces Exchange.client (an instance attribute over ccxt's method) and each
    connection's send(message); the gate sees the order's client id in the message on an open
    socket. If ccxt stopped calling self.client(url) or send(), the ticket would not be sent."""
    client = ccxt_pro.binance(ccxt_config("binance", emu.base_url, enableRateLimit=False, timeout_on_exit=0))
    gate = WsOrderGate()
    gate.attach(client)
    assert "client" in vars(client)
    try:
        await client.load_markets()
        ticket = gate.track("tvinternalswsgate00000000000001")
        order = await client.create_order_ws(
            "BTC/USDT", "market", "buy", 0.01, None, {"clientOrderId": "tvinternalswsgate00000000000001"}
        )
        assert ticket.sent and ticket.settle()
        assert order["clientOrderId"] == "tvinternalswsgate00000000000001"
        assert all(getattr(ws, "_router_order_gate", None) is gate for ws in client.clients.values())
    finally:
        await client.close()


async def test_a_websocket_send_on_a_closed_connection_raises_before_writing():
    """WsOrderGate marks an order sent only when ws.closed() is false: ccxt's send raises
    ConnectionError before writing on a closed connection."""
    assert inspect.iscoroutinefunction(WsClient.send)
    client = ccxt_pro.binance({})
    try:
        ws = client.client(WS_URL)
        assert ws.closed() is True
        with pytest.raises(ConnectionError):
            await ws.send({"id": "x"})
    finally:
        await client.close()


# ------------------------------------------------------------------ lifecycle.py, errors.py


async def test_a_closed_client_refuses_requests_until_closed_by_user_is_cleared(emu):
    """lifecycle.ClientLifecycle._use reopens a retired client with closed_by_user = False;
    errors.never_left reads ExchangeClosedByUser as "not sent"."""
    client = ccxt_async.binance(ccxt_config("binance", emu.base_url, timeout_on_exit=0))
    try:
        assert await client.fetch_time()
        await client.close()
        assert client.closed_by_user is True
        with pytest.raises(ccxt.ExchangeClosedByUser) as refused:
            await client.fetch_time()
        assert errors.never_left(refused.value)
        client.closed_by_user = False
        assert await client.fetch_time()
    finally:
        await client.close()


async def test_a_refused_connection_keeps_aiohttps_error_in_the_cause_chain():
    """errors.never_left walks __cause__/__context__ for aiohttp's ClientConnectorError."""
    client = ccxt_async.binance(ccxt_config("binance", f"http://127.0.0.1:{free_port()}", timeout_on_exit=0))
    try:
        with pytest.raises(ccxt.NetworkError) as failed:
            await client.fetch_time()
    finally:
        await client.close()
    chain, cause = [], failed.value
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    assert any(isinstance(c, aiohttp.ClientConnectorError) for c in chain)
    assert errors.never_left(failed.value)


async def test_set_markets_keeps_the_given_markets_with_the_currencies(emu):
    """lifecycle.ClientLifecycle keeps only the account's market types with set_markets."""
    client = ccxt_async.binance(ccxt_config("binance", emu.base_url, timeout_on_exit=0))
    try:
        markets = await client.load_markets()
        assert {m["type"] for m in markets.values()} >= {"spot", "swap"}
        client.set_markets([m for m in markets.values() if m["type"] == "spot"], client.currencies)
        assert {m["type"] for m in client.markets.values()} == {"spot"}
        assert client.market("BTC/USDT")["id"] == "BTCUSDT"
        with pytest.raises(ccxt.BadSymbol):
            client.market("BTC/USDT:USDT")
    finally:
        await client.close()


def test_the_exception_classes_the_translation_names_and_their_order():
    """errors.order_error checks busy (a NetworkError) before "maybe booked" (NetworkError):
    the hierarchy decides which applies."""
    for name in (
        "AuthenticationError PermissionDenied AccountSuspended AccountNotEnabled RateLimitExceeded "
        "DDoSProtection InvalidNonce DuplicateOrderId NetworkError BadResponse CancelPending OperationFailed "
        "ExchangeClosedByUser OrderNotFound NotSupported BadRequest RequestTimeout MarginModeAlreadySet "
        "NoChange InvalidOrder ExchangeError BadSymbol BaseError"
    ).split():
        assert issubclass(getattr(ccxt, name), ccxt.BaseError), name
    assert issubclass(ccxt.RateLimitExceeded, ccxt.NetworkError)
    assert issubclass(ccxt.DDoSProtection, ccxt.NetworkError)
    assert issubclass(ccxt.RequestTimeout, ccxt.NetworkError)
    assert issubclass(ccxt.NetworkError, ccxt.OperationFailed)
    assert issubclass(ccxt.OrderNotFound, ccxt.ExchangeError)
    assert issubclass(ccxt.AuthenticationError, ccxt.ExchangeError)
    assert not issubclass(ccxt.ExchangeError, ccxt.OperationFailed)


def test_binance_reads_minus_2015_as_a_ban_once_a_key_has_worked():
    """errors.key_refusal turns it back into an authentication error."""
    client = ccxt_async.binance()
    body = '{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'
    url = "https://api.binance.com/api/v3/order"

    def answer() -> None:
        client.handle_errors(401, "Unauthorized", url, "POST", {}, body, json.loads(body), {}, "")

    with pytest.raises(ccxt.AuthenticationError):
        answer()
    client.options["hasAlreadyAuthenticatedSuccessfully"] = True
    with pytest.raises(ccxt.DDoSProtection) as banned:
        answer()
    assert isinstance(errors.key_refusal(banned.value), ccxt.AuthenticationError)


def test_binance_says_a_margin_mode_already_set():
    """send.SendOrders._configure passes MarginModeAlreadySet (and binance's -4046)."""
    client = ccxt_async.binance()
    body = '{"code":-4046,"msg":"No need to change margin type."}'
    with pytest.raises(ccxt.MarginModeAlreadySet):
        client.handle_errors(
            400,
            "Bad Request",
            "https://fapi.binance.com/fapi/v1/marginType",
            "POST",
            {},
            body,
            json.loads(body),
            {},
            "",
        )


# ------------------------------------------------------------------ accounts.py


async def test_open_keeps_an_ssl_context_set_before_it():
    """accounts._share_ssl_context sets ssl_context (as open() would make it from cafile,
    verify and options['include_OS_certificates']); open() makes one only when none is set."""
    client = ccxt_async.binance()
    assert client.ssl_context is None and client.verify is True and client.cafile
    assert client.safe_bool(client.options, "include_OS_certificates", False) is False
    context = ssl.create_default_context(cafile=client.cafile)
    client.ssl_context = context
    client.open()
    try:
        assert client.ssl_context is context
    finally:
        await client.close()


async def test_markets_are_shared_from_a_client_that_loaded_them(emu):
    """lifecycle.adopt_markets: set_markets_from_exchange shares the markets (the same objects)
    and the options the exchange lists in marketHelperProps, across a REST and a pro client."""
    loaded = ccxt_async.binance(ccxt_config("binance", emu.base_url, timeout_on_exit=0))
    adopting = ccxt_pro.binance(ccxt_config("binance", emu.base_url, timeout_on_exit=0))
    try:
        await loaded.load_markets()
        adopting.set_markets_from_exchange(loaded)
        assert adopting.markets is loaded.markets and adopting.markets_by_id is loaded.markets_by_id
        assert adopting.symbols == loaded.symbols and adopting.market("BTC/USDT")["id"] == "BTCUSDT"
    finally:
        await loaded.close()
        await adopting.close()
    assert isinstance(ccxt_async.kraken().options.get("marketHelperProps"), list)


@pytest.mark.parametrize("exchange_id", ["binance", "binanceusdm", "bybit", "okx", "kraken"])
def test_describe_runs_on_an_instance_whose_constructor_never_ran(exchange_id):
    """accounts._describe reads has and options without building a client."""
    cls = getattr(ccxt_async, exchange_id)
    described = cls.describe(cls.__new__(cls))
    assert isinstance(described["has"], dict) and isinstance(described["options"], dict)
    assert described["has"]["spot"] in (True, False, None)


def test_binance_options_the_account_builder_sets():
    """accounts.build_client writes options['fetchMarkets']['types'] and options['fetchMargins']."""
    options = accounts._describe(ccxt_async.binance)["options"]
    assert set(options["fetchMarkets"]["types"]) >= {"spot", "linear"}
    assert options["fetchMargins"] is True
    built = accounts.build_client(
        accounts.AccountOptions(exchange="binance", public=True, market_types=["swap"]), use_websockets=False
    )
    assert built.client.options["fetchMarkets"]["types"] == ["linear"]
    assert built.client.options["fetchMargins"] is False


def test_has_given_to_the_constructor_is_merged_over_the_description():
    """accounts.build_client turns currency loading off with config has.fetchCurrencies."""
    client = ccxt_async.binance({"has": {"fetchCurrencies": False}})
    assert client.has["fetchCurrencies"] is False
    assert client.has["fetchOrder"] is True  # the rest of has is kept
    assert "self.has['fetchCurrencies']" in inspect.getsource(ccxt_async.Exchange.load_markets_helper)


def test_sandbox_mode_switches_to_the_testnet_or_fails():
    """accounts.build_client calls set_sandbox_mode(True) and refuses the account when it raises
    (NotSupported without urls['test']; kraken's urls['test'] is None and fails otherwise)."""
    client = ccxt_async.binance()
    client.set_sandbox_mode(True)
    assert "testnet" in json.dumps(client.urls["api"])
    with pytest.raises(accounts.AccountConfigError, match="no testnet"):
        accounts.build_client(
            accounts.AccountOptions(exchange="kraken", public=True, sandbox=True), use_websockets=False
        )


def test_pro_classes_say_whether_they_place_orders_over_websocket():
    """accounts.build_client routes over WebSocket where ccxt.pro's has['createOrderWs']."""
    assert accounts._has(ccxt_pro.binance, "createOrderWs")
    assert accounts._has(ccxt_pro.bybit, "createOrderWs")
    assert getattr(ccxt_pro, "bitstamp", None) is None or not accounts._has(ccxt_pro.bitstamp, "createOrderWs")


# ------------------------------------------------------------------ send.py, reads.py, lookup.py, cancel.py


def test_every_feature_flag_the_plugin_reads_is_one_ccxt_knows():
    """A renamed flag would read as "not supported" through has.get(...) everywhere."""
    known = ccxt_async.Exchange().describe()["has"]
    used = (
        "createOrderWithTakeProfitAndStopLoss createMarketBuyOrderWithCost setLeverage setMarginMode "
        "fetchPositions fetchPosition fetchOpenOrders fetchClosedOrders fetchOrders "
        "fetchCanceledAndClosedOrders fetchTime fetchTickers createOrderWs fetchCurrencies"
    ).split()
    assert [flag for flag in used if flag not in known] == []


async def test_binance_lists_open_orders_without_a_symbol_only_when_told(emu):
    """reads.AccountReads sets options['warnOnFetchOpenOrdersWithoutSymbol'] (and
    options['fetchOpenOrders']['warnWithoutSymbol']) before listing every market's orders."""
    client = ccxt_async.binance(ccxt_config("binance", emu.base_url, timeout_on_exit=0))
    try:
        await client.load_markets()
        assert client.options["fetchOpenOrders"]["warnWithoutSymbol"] is True
        with pytest.raises(ccxt.ExchangeError, match="warnWithoutSymbol"):
            await client.fetch_open_orders()
        client.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
        assert await client.fetch_open_orders() == []
        del client.options["warnOnFetchOpenOrdersWithoutSymbol"]
        client.options["fetchOpenOrders"]["warnWithoutSymbol"] = False
        assert await client.fetch_open_orders() == []
    finally:
        await client.close()


@pytest.mark.parametrize(("exchange_id", "where"), [("gate", "options"), ("bitget", "options['createOrder']")])
def test_market_buys_sized_by_cost_are_announced_in_options(exchange_id, where):
    """send.SendOrders passes a price to a market buy where the exchange sizes it by cost: ccxt's
    handle_option('createOrder', 'createMarketBuyOrderRequiresPrice') reads the option in either place."""
    client = getattr(ccxt_async, exchange_id)()
    holder = client.options if where == "options" else client.options["createOrder"]
    assert holder["createMarketBuyOrderRequiresPrice"] is True
    assert client.handle_option("createOrder", "createMarketBuyOrderRequiresPrice", False) is True
    assert ccxt_async.binance().handle_option("createOrder", "createMarketBuyOrderRequiresPrice", False) is False


async def test_an_order_is_fetched_by_its_client_order_id(emu):
    """lookup.FindOrders._find_client_id calls fetch_order_with_client_order_id."""
    client = ccxt_async.binance(ccxt_config("binance", emu.base_url, timeout_on_exit=0))
    try:
        await client.load_markets()
        placed = await client.create_order(
            "BTC/USDT", "limit", "buy", 0.01, 1000, {"clientOrderId": "tvinternalsbyclientid000000001"}
        )
        found = await client.fetch_order_with_client_order_id("tvinternalsbyclientid000000001", "BTC/USDT")
        assert found["id"] == placed["id"]
        with pytest.raises(ccxt.OrderNotFound):
            await client.fetch_order_with_client_order_id("tvinternalsnosuchorder00000001", "BTC/USDT")
    finally:
        await client.close()


@pytest.mark.parametrize("exchange_id", sorted(FETCH_ORDER_BY_CLIENT_ID))
def test_exchanges_listed_as_fetching_orders_by_client_id_read_it(exchange_id):
    """lookup.FETCH_ORDER_BY_CLIENT_ID: their fetchOrder takes params['clientOrderId']."""
    cls = getattr(ccxt_async, exchange_id)
    source = inspect.getsource(cls.fetch_order)
    if hasattr(cls, "fetch_order_request"):
        source += inspect.getsource(cls.fetch_order_request)
    assert "clientOrderId" in source


def test_bybit_filters_its_order_lists_by_client_id_and_order_id():
    """lookup.LIST_ORDERS_BY_CLIENT_ID and FindOrders._fetch_order's orderId filter."""
    assert LIST_ORDERS_BY_CLIENT_ID == {"bybit": "orderLinkId"}
    assert ccxt_async.bybit().has["fetchCanceledAndClosedOrders"] is True
    for method in (ccxt_async.bybit.fetch_open_orders, ccxt_async.bybit.fetch_canceled_and_closed_orders):
        source = inspect.getsource(method)
        assert "orderLinkId" in source or "fetch_orders_classic" in source or "fetchOrdersClassic" in source
    assert "orderLinkId" in inspect.getsource(ccxt_async.bybit.fetch_open_orders)


def test_binance_reaches_conditional_orders_with_the_trigger_param():
    """lookup.SEPARATE_TRIGGER_BOOKS: reads, cancels and lists take params {'trigger': True}."""
    assert SEPARATE_TRIGGER_BOOKS == frozenset({"binance"})
    for method in ("fetch_order", "fetch_open_orders", "cancel_order", "cancel_all_orders"):
        assert "'trigger'" in inspect.getsource(getattr(ccxt_async.binance, method)), method
    assert issubclass(ccxt_async.binanceusdm, ccxt_async.binance)  # lookup.class_names counts it as binance


def test_bybit_contract_stops_take_a_trigger_direction():
    """send.TRIGGER_DIRECTION: bybit's contract stop orders need params['triggerDirection']."""
    assert TRIGGER_DIRECTION == frozenset({"bybit"})
    assert "triggerDirection" in inspect.getsource(ccxt_async.bybit.create_order_request)


# ------------------------------------------------------------------ preflight.py, markets.py


def test_binance_signs_with_options_time_difference():
    """preflight.account_preflight compensates a skewed clock with options['timeDifference']."""
    client = ccxt_async.binance()
    client.options["timeDifference"] = 5000
    assert client.nonce() == pytest.approx(client.milliseconds() - 5000, abs=1000)


def test_the_implicit_api_methods_the_doctor_calls_exist():
    assert callable(ccxt_async.binance().sapi_get_account_apirestrictions)
    assert callable(ccxt_async.bybit().private_get_v5_user_query_api)


def test_kraken_indexes_its_markets_by_altname_in_options():
    """markets.market_book reads options['marketsByAltname'] for kraken's alternative names."""
    assert ccxt_async.kraken().options["marketsByAltname"] == {}
    assert "self.options['marketsByAltname']" in inspect.getsource(ccxt_async.kraken.fetch_markets)


def test_precision_modes_and_the_clients_mode():
    """markets.market_from_ccxt reads precisionMode against ccxt's constants (spelled out there)."""
    assert len({ccxt.TICK_SIZE, ccxt.DECIMAL_PLACES, ccxt.SIGNIFICANT_DIGITS}) == 3
    assert (markets.TICK_SIZE, markets.DECIMAL_PLACES, markets.SIGNIFICANT_DIGITS) == (
        ccxt.TICK_SIZE,
        ccxt.DECIMAL_PLACES,
        ccxt.SIGNIFICANT_DIGITS,
    )
    assert ccxt_async.binance().precisionMode == ccxt.TICK_SIZE


# ------------------------------------------------------------------ ids.py


def test_the_exchange_ids_read_from_the_package_are_ccxts_list():
    """ids.exchange_ids lists ccxt.async_support's modules instead of importing ccxt."""
    assert ids.exchange_ids() == frozenset(ccxt_async.exchanges) == frozenset(ccxt.exchanges)
    assert all(hasattr(ccxt_async, exchange_id) for exchange_id in ids.exchange_ids())


def test_clients_take_attributes_of_ours():
    """markets.market_book caches on client._router_market_book; WsOrderGate marks connections."""
    client = ccxt_async.binance()
    client._router_market_book = None
    assert "_router_market_book" in vars(client)


# ------------------------------------------------------------------ emulator/ccxt_config.py


def test_binance_picks_the_usdm_error_map_by_url_so_the_emulator_folds_it_in():
    """ccxt_config merges exceptions['linear'] into the common map: a loopback URL never
    matches the production hosts get_exceptions_by_url knows."""
    client = ccxt_async.binance()
    linear = client.exceptions["linear"]["exact"]
    assert linear and set(client.exceptions) >= {"exact", "broad", "linear"}
    assert client.get_exceptions_by_url("https://fapi.binance.com/fapi/v1/order", "exact") == linear
    assert client.get_exceptions_by_url("http://127.0.0.1:9000/fapi/v1/order", "exact") == {}
    config = ccxt_config("binance", "http://127.0.0.1:9000")
    assert set(linear) <= set(config["exceptions"]["exact"])


def test_rest_and_websocket_urls_are_nested_under_urls_api():
    """ccxt_config rewrites every URL of urls['api'], WebSocket ones under api['ws']."""
    api = ccxt_pro.binance().urls["api"]
    assert isinstance(api["ws"], dict) and "ws-api" in api["ws"]
    assert {"spot", "linear"} <= set(api["ws"]["ws-api"])
    assert api["fapiPrivate"].startswith("https://fapi.binance.com/")
