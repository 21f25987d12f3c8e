"""The ccxt executor against ccxt's real classes and the emulator, in-process: routes,
the WebSocket send gate and REST fallback, "not sent" proofs, lookup by client order id,
the credential cache, and the plugin's configuration."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path
from types import SimpleNamespace

import ccxt
import pytest
from pydantic import SecretStr

from core.config import PluginsFile, Settings
from core.errors import ConfigError, CredentialsRefused, OrderNotSent, OrderRejected, OutcomeUnknown
from core.pipeline.models import Alert, Credentials, OrderRequest
from core.trading.execution import client_order_id
from emulator import Emulator, ccxt_config
from plugins.exchanges.ccxt.accounts import AccountOptions, client_id_rule
from plugins.exchanges.ccxt.plugin import (
    CcxtExecutor,
    CredentialClients,
    Plugin,
    credentials_fingerprint,
)
from plugins.exchanges.ccxt.websocket import WsOrderGate
from tests.support import free_port


@pytest.fixture
async def emu():
    async with Emulator() as emulator:
        yield emulator


def account(
    base_url: str, venue: str = "binance", key: str = "emu-key-1", secret: str = "emu-secret-1", **options
) -> AccountOptions:
    config = ccxt_config(venue, base_url, api_key=key, secret=secret, timeout_on_exit=0, **options.pop("ccxt", {}))
    if "market_types" in options:
        del config["options"]["fetchMarkets"]  # the account's market_types decide
    options.setdefault("rate_limit", False)
    return AccountOptions(
        exchange=venue, api_key=config.pop("apiKey"), secret=config.pop("secret"), ccxt=config, **options
    )


@pytest.fixture
async def executor(emu):
    """``await executor(websocket=False, **account options)``: a started executor, closed after."""
    made: list[CcxtExecutor] = []

    async def make(
        *, websocket: bool = False, name: str = "acct", venue: str = "binance", start: bool = True, **options
    ):
        ex = CcxtExecutor(name, account(emu.base_url, venue, **options), use_websockets=websocket)
        made.append(ex)
        if start:
            await ex.start()
            ex.ready = True
        return ex

    yield make
    for ex in made:
        await ex.close()


async def place(ex: CcxtExecutor, symbol: str = "BTCUSDT", alert_id: str = "a-1", **fields):
    alert = Alert.model_validate({"symbol": symbol, "side": "buy", "amount": "0.01", "alert_id": alert_id, **fields})
    order = await ex.prepare(alert, client_order_id(alert_id, ex.account))
    return order, await ex.submit(order)


async def eventually(predicate, timeout: float = 5.0):
    """Poll a condition of this process (not the emulator's state) until it holds, bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


def closed_port_ws(base_url: str) -> dict:
    """urls that send the WebSocket API to a port where nothing listens (connection refused)."""
    dead = f"ws://127.0.0.1:{free_port()}"
    return {"urls": {"api": {"ws": {"ws-api": {"spot": dead + "/ws-api/v3", "linear": dead + "/ws-fapi/v1"}}}}}


# ------------------------------------------------------------------ routes and results


async def test_rest_and_websocket_routes_place_one_order_each(executor, emu):
    rest = await executor()
    ws = await executor(websocket=True, name="ws")
    assert (rest.route, ws.route) == ("rest", "websocket")
    _, by_rest = await place(rest, "BINANCE:BTCUSDT", "r-1", amount="0.0123456")
    order, by_ws = await place(ws, "BTCUSDT.P", "w-1", amount="0.0123456")
    assert (by_rest.route, by_rest.symbol, by_rest.amount, by_rest.status, by_rest.filled, by_rest.average) == (
        "rest",
        "BTC/USDT",
        "0.01234",
        "filled",
        "0.01234",
        "50000",
    )
    assert (by_ws.route, by_ws.symbol, by_ws.amount, by_ws.status, by_ws.filled) == (
        "websocket",
        "BTC/USDT:USDT",
        "0.012",
        "filled",
        "0.012",
    )
    assert by_ws.order_id and by_ws.client_order_id == order.client_order_id == client_order_id("w-1", "ws")
    booked = emu.orders()
    assert [(o["market_type"], o["transport"], o["quantity"], o["client_order_id"]) for o in booked] == [
        ("spot", "rest", "0.01234", client_order_id("r-1", "acct")),
        ("linear", "ws", "0.012", client_order_id("w-1", "ws")),
    ]


async def test_websocket_requested_where_ccxt_cannot_place_orders_over_it():
    ex = CcxtExecutor("cb", AccountOptions(exchange="coinbase", websocket=True, public=True), use_websockets=False)
    try:
        assert ex.route == "rest"
        assert "cannot place coinbase orders over WebSocket" in ex.status()["route_note"]
    finally:
        await ex.close()


async def test_use_websockets_setting_is_the_default_and_the_account_overrides_it():
    on = CcxtExecutor("a", AccountOptions(exchange="binance", public=True), use_websockets=True)
    off = CcxtExecutor("b", AccountOptions(exchange="binance", websocket=False, public=True), use_websockets=True)
    try:
        assert (on.route, off.route) == ("websocket", "rest")
        assert isinstance(on.client, ccxt.pro.binance) and not isinstance(off.client, ccxt.pro.binance)
    finally:
        await on.close()
        await off.close()


async def test_bybit_acknowledgement_is_completed_with_the_order_state(executor, emu):
    bybit = await executor(venue="bybit")
    _, result = await place(bybit, "BYBIT:BTCUSDT.P", "by-1")
    assert (result.symbol, result.status, result.filled, result.average) == ("BTC/USDT:USDT", "filled", "0.01", "50000")
    assert emu.orders()[0]["client_order_id"] == result.client_order_id


async def test_limit_order_rests_open(executor, emu):
    ex = await executor()
    _, result = await place(ex, "BTCUSDT", "l-1", order_type="limit", price="40000.01")
    assert (result.status, result.price, result.filled) == ("open", "40000.01", "0")
    assert emu.orders()[0]["type"] == "LIMIT" and emu.orders()[0]["price"] == "40000.01"


# ------------------------------------------------------------------ WebSocket: never twice


async def test_websocket_refused_falls_back_to_rest_with_one_order(executor, emu):
    ex = await executor(websocket=True, ccxt=closed_port_ws(emu.base_url))
    order, result = await place(ex, "BTCUSDT", "fb-1")
    assert result.route == "rest" and result.status == "filled"
    assert [(o["transport"], o["client_order_id"]) for o in emu.orders()] == [("rest", order.client_order_id)]
    status = ex.status()
    assert status["route"] == "websocket" and status["websocket_fallbacks"] == 1
    assert "orders go over REST" in status["route_note"]
    # While the WebSocket API is known to be down, orders go straight over REST.
    _, second = await place(ex, "BTCUSDT", "fb-2")
    assert second.route == "rest" and ex.ws_fallbacks == 1


async def test_websocket_dropped_after_sending_is_an_unknown_outcome_not_a_resend(executor, emu):
    ex = await executor(websocket=True)
    emu.add_fault("drop_after_book", match={"route": "ws order.place"})
    with pytest.raises(OutcomeUnknown) as info:
        await place(ex, "BTCUSDT", "drop-1")
    assert isinstance(info.value.__cause__, ccxt.NetworkError)
    assert len(emu.orders()) == 1 and ex.ws_fallbacks == 0
    alert = Alert(symbol="BTCUSDT", side="buy", amount="0.01", alert_id="drop-1")
    answer = await ex.lookup(await ex.prepare(alert, client_order_id("drop-1", ex.account)))
    found = answer.result
    assert answer.is_found and found.status == "filled" and found.order_id == emu.orders()[0]["order_id"]


async def test_websocket_answer_never_comes(executor, emu):
    ex = await executor(websocket=True, ccxt={"timeout": 300})
    emu.add_fault("delay_after_book", seconds=2, match={"route": "ws order.place"})
    with pytest.raises(OutcomeUnknown) as info:
        await place(ex, "BTCUSDT", "slow-1")
    assert isinstance(info.value.__cause__, ccxt.RequestTimeout)
    assert len(emu.orders()) == 1 and ex.ws_fallbacks == 0


async def test_websocket_exchange_refusal_is_not_retried_over_rest(executor, emu):
    ex = await executor(websocket=True)
    with pytest.raises(OrderRejected) as info:
        await place(ex, "BTCUSDT", "poor-1", amount="50")  # 2.5M USDT of BTC
    assert isinstance(info.value.__cause__, ccxt.InsufficientFunds) and info.value.status == 422
    assert ex.ws_fallbacks == 0 and emu.orders() == []
    assert [r["transport"] for r in emu.requests()] == ["ws"]


class FakeSocket:
    def __init__(self):
        self.sent: list[str] = []
        self.is_closed = False

    def closed(self) -> bool:
        return self.is_closed

    async def send(self, message):
        if self.is_closed:
            raise ConnectionError("Cannot Send Message: Connection closed before send")
        self.sent.append(json.dumps(message))


def gated(gate: WsOrderGate) -> FakeSocket:
    socket = FakeSocket()
    exchange = SimpleNamespace(client=lambda url: socket)
    gate.attach(exchange)
    assert exchange.client("ws://x") is socket
    return socket


async def test_gate_marks_an_order_sent_only_when_its_message_reaches_an_open_socket():
    gate = WsOrderGate()
    socket = gated(gate)
    ticket = gate.track("tvabc")
    await socket.send({"method": "auth"})
    assert not ticket.sent
    await socket.send({"method": "order.place", "params": {"newClientOrderId": "tvabc"}})
    assert ticket.sent and ticket.settle() is True

    closed = gate.track("tvclosed")
    socket.is_closed = True
    with pytest.raises(ConnectionError):
        await socket.send({"params": {"newClientOrderId": "tvclosed"}})
    assert not closed.sent and closed.settle() is False


async def test_gate_never_sends_an_abandoned_order_later():
    """A connection that comes up after the order went over REST must not carry it too."""
    gate = WsOrderGate()
    socket = gated(gate)
    ticket = gate.track("tvlate")
    assert ticket.settle() is False  # given up before sending: the executor uses REST now
    await socket.send({"method": "order.place", "params": {"newClientOrderId": "tvlate"}})
    await socket.send({"method": "order.place", "params": {"newClientOrderId": "tvother"}})
    assert socket.sent == [json.dumps({"method": "order.place", "params": {"newClientOrderId": "tvother"}})]


async def test_throttle_paces_bursts_but_not_the_first_order_after_a_pause(executor, emu):
    """ccxt's leaky bucket alone makes every binance WebSocket order wait ~250 ms, idle or not."""
    ex = await executor(websocket=True, rate_limit=True)
    await place(ex, "BTCUSDT", "thr-1")
    started = time.perf_counter()
    await place(ex, "BTCUSDT", "thr-2")  # right after the first: ccxt's pacing applies
    assert time.perf_counter() - started > 0.15
    for throttler in ex._throttlers():  # as if the account had been idle for a second
        throttler._router_idle_since -= 1000
    started = time.perf_counter()
    await place(ex, "BTCUSDT", "thr-3")
    assert time.perf_counter() - started < 0.15
    assert len(emu.orders()) == 3


# ------------------------------------------------------------------ REST: not sent, or maybe


async def test_rest_connection_refused_is_marked_not_sent(executor, emu):
    dead = f"http://127.0.0.1:{free_port()}"
    ex = await executor()
    ex.client.urls["api"]["private"] = dead + "/api/v3"  # markets loaded; the order endpoint is gone
    with pytest.raises(OrderNotSent) as info:
        await place(ex, "BTCUSDT", "refused-1")
    assert isinstance(info.value.__cause__, ccxt.NetworkError) and info.value.retry
    assert emu.requests() == []


async def test_rest_timeout_after_sending_may_be_booked(executor, emu):
    ex = await executor(ccxt={"timeout": 300})
    emu.add_fault("delay_after_book", seconds=2)
    with pytest.raises(OutcomeUnknown) as info:
        await place(ex, "BTCUSDT", "late-1")
    assert isinstance(info.value.__cause__, ccxt.RequestTimeout) and info.value.may_be_booked
    assert len(emu.orders()) == 1


async def test_key_refused_is_an_authentication_error(executor, emu):
    ex = await executor()
    emu.add_fault("key_error", match={"key": "emu-key-1"})
    with pytest.raises(CredentialsRefused) as info:
        await place(ex, "BTCUSDT", "key-1")
    assert isinstance(info.value.__cause__, ccxt.AuthenticationError) and info.value.status == 502
    assert emu.orders() == []


# ------------------------------------------------------------------ lookup


@pytest.mark.parametrize(
    "venue,symbol", [("binance", "BTCUSDT"), ("binance", "BTCUSDT.P"), ("bybit", "ETHUSDT.P"), ("bybit", "ETHUSDT")]
)
async def test_lookup_by_client_order_id(executor, emu, venue, symbol):
    ex = await executor(venue=venue)
    order, placed = await place(ex, symbol, f"look-{venue}-{symbol}", amount="0.05")
    answer = await ex.lookup(order)
    assert answer.is_found
    found = answer.result
    assert (found.order_id, found.client_order_id, found.status) == (placed.order_id, order.client_order_id, "filled")
    absent = order.model_copy(update={"client_order_id": client_order_id("never-sent", ex.account)})
    assert (await ex.lookup(absent)).is_absent


# ------------------------------------------------------------------ startup and markets


async def test_exchange_down_at_startup_then_back(executor, emu):
    emu.add_fault("down")
    ex = await executor(start=False, retry_seconds=0.05)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await ex.start()
    ex.ready = False
    ex.start_maintenance()
    emu.clear_faults()
    await eventually(lambda: ex.ready)
    assert ex.error is None and ex.status()["markets"] == 5


def count_market_loads(*executors: CcxtExecutor) -> list[str]:
    """The accounts whose client asked the exchange for its markets, one entry per request."""
    loads: list[str] = []
    for ex in executors:
        original = ex.client.fetch_markets

        async def counting(*args, _original=original, _account=ex.account, **kwargs):
            loads.append(_account)
            return await _original(*args, **kwargs)

        ex.client.fetch_markets = counting
    return loads


async def test_accounts_starting_together_on_one_market_source_load_the_markets_once(executor, emu):
    rest = await executor(start=False)
    ws = await executor(start=False, websocket=True, name="ws", key="emu-key-2", secret="emu-secret-2")
    other = await executor(start=False, name="perps", market_types=["swap"])
    loads = count_market_loads(rest, ws, other)
    await asyncio.gather(rest.start(), ws.start(), other.start())
    assert sorted(loads) == ["acct", "perps"] or sorted(loads) == ["perps", "ws"]
    (loaded,) = [ex for ex in (rest, ws) if ex.account in loads]
    (adopted,) = [ex for ex in (rest, ws) if ex is not loaded]
    assert adopted.client.markets is loaded.client.markets  # shared, not copied
    assert adopted.markets_loaded_at == loaded.markets_loaded_at
    assert {m["type"] for m in other.client.markets.values()} == {"swap"}
    for ex, alert_id in ((rest, "share-r"), (ws, "share-w")):
        ex.ready = True
        _, result = await place(ex, "BINANCE:BTCUSDT", alert_id)
        assert result.status == "filled" and len(emu.orders(client_order_id=result.client_order_id)) == 1


async def test_an_account_whose_shared_market_load_failed_loads_on_its_own(executor, emu):
    first = await executor(start=False)
    second = await executor(start=False, name="second")
    loads = count_market_loads(first, second)
    emu.add_fault("down")
    failed = asyncio.ensure_future(first.start())
    await eventually(lambda: loads)  # the first load is in flight: the second waits for it
    waiting = asyncio.ensure_future(second.start())
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await failed
    emu.clear_faults()
    await waiting
    assert loads == ["acct", "second"] and second.client.markets


async def test_clients_of_the_process_share_one_ssl_context(executor):
    first = await executor(start=False)
    second = await executor(start=False, websocket=True, name="ws")
    assert isinstance(first.client.ssl_context, ssl.SSLContext)
    assert second.client.ssl_context is first.client.ssl_context


async def test_only_configured_market_types_are_loaded(executor):
    spot_only = await executor(market_types=["spot"])
    assert {m["type"] for m in spot_only.client.markets.values()} == {"spot"}
    perps = await executor(name="perps", market_types=["swap"])
    assert {m["type"] for m in perps.client.markets.values()} == {"swap"}
    assert perps.client.options["fetchMarkets"]["types"] == ["linear"]
    assert perps.status()["market_types"] == ["swap"]
    # BTCUSDT on a perpetuals-only account is the perpetual.
    _, result = await place(perps, "BINANCE:BTCUSDT", "p-1")
    assert result.symbol == "BTC/USDT:USDT"


async def test_lane_key_is_the_resolved_market(executor):
    ex = await executor()
    keys = {ex.lane_key(Alert(symbol=s, side="buy", amount="1")) for s in ("BTCUSDT", "BINANCE:BTCUSDT", "BTC/USDT")}
    assert keys == {"BTC/USDT"}
    assert ex.lane_key(Alert(symbol="BTCUSDT.P", side="buy", amount="1")) == "BTC/USDT:USDT"
    assert ex.lane_key(Alert(symbol="NOPE", side="buy", amount="1")) == "NOPE"


def test_client_order_id_rules_per_exchange():
    assert client_id_rule("binance").for_alert("a-1", "acct", client_order_id("a-1", "acct")) == client_order_id(
        "a-1", "acct"
    )
    kraken = client_id_rule("kraken").for_alert("a-1", "acct", client_order_id("a-1", "acct"))
    assert len(kraken) == 32 and all(c in "0123456789abcdef" for c in kraken)  # kraken's short-UUID form
    gate = client_id_rule("gate").for_alert("a-1", "acct", client_order_id("a-1", "acct"))
    assert gate.startswith("t-") and len(gate) == 28
    assert client_id_rule("coinbase").param == "client_order_id"
    assert client_id_rule("bybit").param == "clientOrderId"


def test_matches_tradingview_exchange_names():
    usdm = CcxtExecutor("u", AccountOptions(exchange="binanceusdm", public=True), use_websockets=False)
    assert (
        usdm.matches_exchange("BINANCE") and usdm.matches_exchange("binanceusdm") and not usdm.matches_exchange("BYBIT")
    )


# ------------------------------------------------------------------ credentials from alerts


def creds(key: str, secret: str) -> Credentials:
    return Credentials(api_key=SecretStr(key), secret=SecretStr(secret))


async def test_credential_cache_is_keyed_by_hash_bounded_and_closes_evicted(emu):
    made: list[CcxtExecutor] = []

    def maker(key: str):
        async def make():
            ex = CcxtExecutor(f"payload-{key[:6]}", account(emu.base_url), use_websockets=False)
            made.append(ex)
            return ex

        return make

    cache = CredentialClients(size=2)
    keys = [credentials_fingerprint("binance", creds(f"key-{i}", f"secret-{i}")) for i in range(3)]
    assert all("secret" not in k and len(k) == 64 for k in keys)
    first = await cache.get(keys[0], maker(keys[0]))
    assert await cache.get(keys[0], maker(keys[0])) is first and len(made) == 1
    await cache.get(keys[1], maker(keys[1]))
    await cache.get(keys[2], maker(keys[2]))  # evicts keys[0], the least recently used
    assert len(cache) == 2
    await eventually(lambda: first._closed)
    # Concurrent first uses of the same new credentials share one client.
    key = credentials_fingerprint("binance", creds("key-9", "secret-9"))
    both = await asyncio.gather(cache.get(key, maker(key)), cache.get(key, maker(key)))
    assert both[0] is both[1] and len(made) == 4
    await cache.close_all()


async def test_retired_executor_in_use_closes_after_the_order_and_reopens_for_a_lookup(executor, emu):
    ex = await executor()
    order, _ = await place(ex, "BTCUSDT", "ret-1")
    ex.retire()
    await eventually(lambda: ex._closed)
    found = await ex.lookup(order)  # a late reconciliation still works
    assert found.is_found
    await eventually(lambda: ex._closed)


# ------------------------------------------------------------------ the plugin's configuration


def load_plugin(tmp_path: Path, yaml_text: str, **env: str):
    path = tmp_path / "plugins.yaml"
    path.write_text(yaml_text)
    settings = Settings.from_env(env_file=None, environ={"DATA_DIR": str(tmp_path), **env})
    plugins_file = PluginsFile.load(path, settings.environ)
    plugin = Plugin(plugins_file.validate("ccxt", Plugin.Options))
    registered: dict = {}
    secrets: list[str] = []
    # Only what core.hooks.host.PluginHost offers: a plugin must need nothing else of the router.
    router = SimpleNamespace(settings=settings, config_path=path, register_secret=secrets.append)
    plugin.register_executors(lambda name, ex: registered.setdefault(name, ex), router)
    plugin.secrets = secrets
    return plugin, registered


async def test_default_account_from_the_environment(tmp_path):
    plugin, registered = load_plugin(
        tmp_path, "", DEFAULT_EXCHANGE="bybit", DEFAULT_API_KEY="env-key-123", DEFAULT_API_SECRET="env-secret-456"
    )
    default = registered["default"]
    assert {"env-key-123", "env-secret-456"} <= set(plugin.secrets)  # registered with the host's redactor
    assert (default.exchange, default.client.apiKey, default.client.secret) == (
        "bybit",
        "env-key-123",
        "env-secret-456",
    )
    assert "env-secret-456" not in json.dumps(default.status()) and "env-secret-456" not in repr(default.options)
    await default.close()
    _, none = load_plugin(tmp_path, "", DEFAULT_EXCHANGE="paper")
    assert none == {}
    _, keyless = load_plugin(tmp_path, "", DEFAULT_EXCHANGE="binance")
    assert keyless == {}  # no keys, no default account (payload credentials still work)
    _, configured = load_plugin(
        tmp_path,
        "ccxt:\n  accounts:\n    default: {exchange: okx, public: true}\n",
        DEFAULT_EXCHANGE="binance",
        DEFAULT_API_KEY="k" * 8,
        DEFAULT_API_SECRET="s" * 8,
    )
    assert configured["default"].exchange == "okx"
    for ex in configured.values():
        await ex.close()


async def test_accounts_from_plugins_yaml_with_env_credentials(tmp_path):
    text = """
ccxt:
  accounts:
    main:
      exchange: binance
      api_key: ${MAIN_KEY}
      secret: ${MAIN_SECRET}
      market_types: [spot, swap]
      rate_limit: false
      ccxt: {timeout: 1234, options: {recvWindow: 7000}}
"""
    _, registered = load_plugin(tmp_path, text, MAIN_KEY="main-key-1", MAIN_SECRET="main-secret-1")
    main = registered["main"]
    assert (main.client.apiKey, main.client.secret, main.client.timeout) == ("main-key-1", "main-secret-1", 1234)
    assert main.client.enableRateLimit is False and main.client.options["recvWindow"] == 7000
    assert main.client.options["fetchMarkets"]["types"] == ["spot", "linear"]
    assert "main-secret-1" not in repr(main.options)
    await main.close()


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "ccxt:\n  accounts:\n    a: {exchange: binanse}\n",
            "field 'accounts.a.exchange': Value error, unknown ccxt exchange 'binanse' (did you mean 'binance'?)",
        ),
        (
            "ccxt:\n  accounts:\n    a: {exchange: kraken, sandbox: true, public: true}\n",
            "field 'accounts.a.sandbox': ccxt knows no testnet for kraken",
        ),
        (
            "ccxt:\n  accounts:\n    a: {exchange: kraken, market_types: [option], public: true}\n",
            "field 'accounts.a.market_types': market type 'option' is not available on kraken",
        ),
        ("ccxt:\n  accounts:\n    a: {exchange: binance, market_types: [stocks]}\n", "field 'accounts.a.market_types'"),
        ("ccxt:\n  accounts:\n    a: {exchange: binance, apikey: x}\n", "field 'accounts.a.apikey': no such option"),
        (
            "ccxt:\n  accounts:\n    a: {exchange: binance, api_key: x}\n",
            "field 'accounts.a': expected secret (an account without keys cannot trade",
        ),
        (
            "ccxt:\n  accounts:\n    a: {exchange: binance, api_key: '', secret: ''}\n",
            "field 'accounts.a': expected api_key",
        ),
    ],
)
def test_configuration_mistakes_stop_startup_with_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_plugin(tmp_path, text)
    assert message in str(info.value) and "plugins.yaml" in str(info.value)


def test_default_exchange_must_be_paper_or_ccxt(tmp_path):
    with pytest.raises(
        ConfigError, match="DEFAULT_EXCHANGE: expected paper or a ccxt exchange id: unknown ccxt exchange 'nope'"
    ):
        load_plugin(tmp_path, "", DEFAULT_EXCHANGE="nope", DEFAULT_API_KEY="k" * 8, DEFAULT_API_SECRET="s" * 8)
    # A typo stops startup even without keys, and names the exchange meant.
    with pytest.raises(ConfigError, match=r"unknown ccxt exchange 'binanse' \(did you mean 'binance'\?\)"):
        load_plugin(tmp_path, "", DEFAULT_EXCHANGE="binanse")


async def test_an_exchange_that_cannot_be_asked_by_client_id_never_proves_an_order_absent():
    """Where ccxt can only list recent orders, "not among them" cannot tell: no resend on it."""
    from core.pipeline.models import OrderRequest

    ex = CcxtExecutor("scan", AccountOptions(exchange="cryptocom", public=True), use_websockets=False)
    assert not ex._asks_by_client_id()
    listed: list[dict] = []

    async def recent(symbol, since=None, limit=None, params=None):
        return listed

    ex.client.fetchOpenOrders = ex.client.fetchClosedOrders = recent  # the listing, without the network
    ex.client.has = {**ex.client.has, "fetchOpenOrders": True, "fetchClosedOrders": True}
    order = OrderRequest(
        account="scan",
        exchange="cryptocom",
        symbol="BTC/USDT",
        market_type="spot",
        side="buy",
        amount="0.01",
        client_order_id="tv" + "5" * 30,
    )
    try:
        answer = await ex.lookup(order)
        assert (answer.kind, answer.ask_again) == ("cannot_tell", True) and "recent orders" in answer.reason
        listed.append(
            {
                "id": "77",
                "clientOrderId": order.client_order_id,
                "status": "closed",
                "symbol": "BTC/USDT",
                "amount": 0.01,
                "filled": 0.01,
            }
        )
        found = await ex.lookup(order)
        assert found.is_found and (found.result.order_id, found.result.status) == ("77", "filled")
    finally:
        await ex.close()


@pytest.mark.parametrize(("exchange", "priced"), [("bitget", True), ("gate", True), ("binance", False)])
async def test_a_market_buy_carries_its_price_where_the_exchange_sizes_it_by_cost(exchange, priced):
    """ccxt refuses such a market buy without a price unless told its cost: bitget says so in
    options['createOrder'], gate in options (both read through ccxt's handle_option)."""
    ex = CcxtExecutor("acct", AccountOptions(exchange=exchange, public=True), use_websockets=False)
    order = OrderRequest(
        account="acct",
        exchange=exchange,
        symbol="BTC/USDT",
        market_type="spot",
        side="buy",
        amount="0.01",
        reference_price="50000",
        client_order_id="tv" + "0" * 30,
    )
    try:
        args = ex._order_args(order)
        assert args[4] == (50000.0 if priced else None)
        assert args[:4] == ("BTC/USDT", "market", "buy", 0.01)  # the amount as ccxt takes it, a float
    finally:
        await ex.close()
