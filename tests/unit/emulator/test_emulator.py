"""The exchange emulator, exercised through ccxt's real, unmodified exchange classes.

Every test starts its own emulator on 127.0.0.1:0 and talks to it with
``ccxt.async_support`` / ``ccxt.pro`` instances configured only by
``ccxt_config`` (rate limiter off so ccxt does not throttle between calls).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest
import pytest_asyncio

from emulator import AsyncEmulatorControl, Emulator, EmulatorControl, ccxt_config

REPO_ROOT = Path(__file__).resolve().parents[3]
SPOT, PERP = "BTC/USDT", "BTC/USDT:USDT"


@pytest_asyncio.fixture
async def emu():
    emulator = Emulator()
    await emulator.start("127.0.0.1", 0)
    yield emulator
    await emulator.stop()


@pytest_asyncio.fixture
async def connect(emu):
    """Factory for ccxt instances bound to the emulator; all are closed at teardown."""
    opened = []

    async def make(venue="binance", *, pro=False, load=True, **kwargs):
        module = ccxt_pro if pro else ccxt_async
        kwargs.setdefault("enableRateLimit", False)
        kwargs.setdefault("timeout_on_exit", 0)  # ccxt otherwise sleeps 250 ms in close()
        exchange = getattr(module, venue)(ccxt_config(venue, emu.base_url, **kwargs))
        opened.append(exchange)
        if load:
            await exchange.load_markets()
        return exchange

    yield make
    await asyncio.gather(*(exchange.close() for exchange in opened))


@pytest_asyncio.fixture
async def control(emu):
    async with AsyncEmulatorControl(emu.base_url) as client:
        yield client


# --------------------------------------------------------------------------- markets
async def test_binance_load_markets_spot_and_linear(connect):
    exchange = await connect("binance")
    spot, perp = exchange.markets[SPOT], exchange.markets[PERP]
    assert spot["spot"] and perp["swap"] and perp["linear"] and perp["settle"] == "USDT"
    assert spot["precision"]["amount"] == 0.00001 and spot["precision"]["price"] == 0.01
    assert spot["limits"]["amount"]["min"] == 0.00001 and spot["limits"]["cost"]["min"] == 5
    assert perp["precision"]["amount"] == 0.001 and perp["precision"]["price"] == 0.1
    assert perp["limits"]["amount"]["min"] == 0.001 and perp["limits"]["cost"]["min"] == 100
    assert {m["symbol"] for m in exchange.markets_by_id["BTCUSDT"]} == {SPOT, PERP}
    assert {"ETH/USDT", "SOL/USDT", "ETH/USDT:USDT"} <= set(exchange.markets)


async def test_binanceusdm_and_bybit_load_markets(connect, emu):
    usdm = await connect("binanceusdm")
    assert set(usdm.markets) == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    bybit = await connect("bybit")
    assert bybit.markets[SPOT]["precision"] == {"amount": 0.000001, "price": 0.01}
    assert bybit.markets[PERP]["precision"]["amount"] == 0.001
    assert bybit.markets[PERP]["limits"]["cost"]["min"] == 5
    assert emu.state.unhandled == []


def test_ccxt_config_points_every_url_at_the_emulator():
    base = "http://127.0.0.1:1234"

    def urls(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from urls(value)
        elif isinstance(node, str):
            yield node

    for venue in ("binance", "binanceusdm", "bybit"):
        found = list(urls(ccxt_config(venue, base)["urls"]))
        assert found and all(u.startswith((base, "ws://127.0.0.1:1234")) for u in found), venue
    ws_api = ccxt_config("binance", base)["urls"]["api"]["ws"]["ws-api"]
    assert ws_api["spot"] == "ws://127.0.0.1:1234/ws-api/v3" and ws_api["linear"] == "ws://127.0.0.1:1234/ws-fapi/v1"
    # ccxt picks its USD-M error map by the production host name; the config restores that mapping
    assert ccxt_async.binanceusdm(ccxt_config("binanceusdm", base)).exceptions["exact"]["-4164"] is ccxt.InvalidOrder
    plain = ccxt_async.binanceusdm(ccxt_config("binanceusdm", base, match_production_errors=False))
    assert "-4164" not in plain.exceptions["exact"]


# ------------------------------------------------------------------- REST orders
async def test_spot_market_and_limit_orders(connect, emu):
    exchange = await connect("binance")
    bought = await exchange.create_order(SPOT, "market", "buy", 0.01, params={"clientOrderId": "spot-m1"})
    assert (bought["status"], bought["filled"], bought["amount"], bought["average"]) == ("closed", 0.01, 0.01, 50000)
    assert bought["clientOrderId"] == "spot-m1" and bought["fee"]["currency"] == "BTC"
    resting = await exchange.create_order(SPOT, "limit", "buy", 0.01, 40000, params={"clientOrderId": "spot-l1"})
    assert (resting["status"], resting["filled"], resting["price"]) == ("open", 0.0, 40000)

    balance = await exchange.fetch_balance()
    assert balance["BTC"]["total"] == pytest.approx(10.00999)
    assert balance["USDT"]["used"] == pytest.approx(400) and balance["USDT"]["total"] == pytest.approx(99500)
    assert [o["id"] for o in await exchange.fetch_open_orders(SPOT)] == [resting["id"]]
    assert [o["id"] for o in await exchange.fetch_closed_orders(SPOT)] == [bought["id"]]
    trades = await exchange.fetch_my_trades(SPOT)
    assert [(t["order"], t["price"], t["amount"]) for t in trades] == [(bought["id"], 50000, 0.01)]
    booked = emu.orders(client_order_id="spot-l1")
    assert booked[0]["status"] == "NEW" and booked[0]["transport"] == "rest" and booked[0]["market_type"] == "spot"


async def test_usdm_market_limit_positions_and_reduce_only(connect, emu):
    exchange = await connect("binanceusdm")
    await exchange.set_leverage(10, PERP)
    await exchange.set_margin_mode("isolated", PERP)
    opened = await exchange.create_order(PERP, "market", "buy", 0.02, params={"clientOrderId": "perp-m1"})
    assert (opened["status"], opened["filled"], opened["average"], opened["symbol"]) == ("closed", 0.02, 50000, PERP)
    limit = await exchange.create_order(PERP, "limit", "sell", 0.01, 52000.5, params={"timeInForce": "GTC"})
    assert limit["status"] == "open" and limit["price"] == 52000.5

    positions = await exchange.fetch_positions([PERP])
    assert [(p["symbol"], p["contracts"], p["side"], p["entryPrice"]) for p in positions] == [
        (PERP, 0.02, "long", 50000)
    ]
    assert emu.positions("emu-key-1")[0]["leverage"] == 10

    with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # would flip the long into a short
        await exchange.create_order(PERP, "market", "sell", 0.03, params={"reduceOnly": True})
    closed = await exchange.create_order(PERP, "market", "sell", 0.02, params={"reduceOnly": True})
    assert closed["status"] == "closed" and closed["reduceOnly"] is True
    assert await exchange.fetch_positions([PERP]) == []
    with pytest.raises(ccxt.InvalidOrder, match="ReduceOnly Order is rejected"):
        await exchange.create_order(PERP, "market", "sell", 0.01, params={"reduceOnly": True})
    balance = await exchange.fetch_balance()
    assert balance["USDT"]["total"] == pytest.approx(100000 - 2 * 0.02 * 50000 * 0.0005)


async def test_conditional_orders_rest_and_fire_on_price_moves(connect, emu, control):
    perp = await connect("binanceusdm")
    await perp.create_order(PERP, "market", "buy", 0.01)
    stop = await perp.create_order(
        PERP, "market", "sell", 0.01, params={"stopLossPrice": 45000, "reduceOnly": True, "clientOrderId": "sl-1"}
    )
    assert (stop["status"], stop["triggerPrice"], stop["clientOrderId"]) == ("open", 45000, "sl-1")
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        await perp.create_order(PERP, "market", "sell", 0.01, params={"stopLossPrice": 55000})
    spot = await connect("binance")
    stop_limit = await spot.create_order(SPOT, "limit", "sell", 0.01, 44000, params={"stopLossPrice": 45000})
    assert stop_limit["status"] == "open" and stop_limit["info"]["type"] == "STOP_LOSS_LIMIT"
    resting = await spot.create_order(SPOT, "limit", "buy", 0.01, 43000)

    await control.set_price("BTCUSDT", 44000)  # every BTCUSDT market, both venues

    fired = await perp.fetch_order(None, PERP, {"trigger": True, "clientOrderId": "sl-1"})
    assert fired["status"] == "closed" and fired["info"]["actualOrderId"]
    assert await perp.fetch_positions([PERP]) == []
    assert (await spot.fetch_order(stop_limit["id"], SPOT))["status"] == "closed"
    assert (await spot.fetch_order(resting["id"], SPOT))["status"] == "open"
    await control.set_price("BTC/USDT", 42900)  # spot only
    filled = await spot.fetch_order(resting["id"], SPOT)
    assert (filled["status"], filled["average"]) == ("closed", 43000)


# ----------------------------------------------------------------- WebSocket API
async def test_ws_api_order_placement_spot_and_linear(connect, emu):
    exchange = await connect("binance", pro=True)
    spot = await exchange.create_order_ws(SPOT, "market", "buy", 0.01, params={"clientOrderId": "ws-spot"})
    assert (spot["status"], spot["filled"], spot["clientOrderId"], spot["symbol"]) == ("closed", 0.01, "ws-spot", SPOT)
    perp = await exchange.create_order_ws(PERP, "limit", "buy", 0.01, 49000, params={"clientOrderId": "ws-perp"})
    assert (perp["status"], perp["symbol"], perp["clientOrderId"]) == ("open", PERP, "ws-perp")
    # the WebSocket and REST books are one book
    assert (await exchange.fetch_order(perp["id"], PERP))["clientOrderId"] == "ws-perp"
    canceled = await exchange.cancel_order_ws(perp["id"], PERP)
    assert canceled["status"] == "canceled"
    with pytest.raises(ccxt.InsufficientFunds):
        await exchange.create_order_ws(SPOT, "limit", "buy", 5, 45000)
    assert [(o["client_order_id"], o["transport"]) for o in emu.orders()] == [("ws-spot", "ws"), ("ws-perp", "ws")]


async def test_ws_api_rejects_bad_signature(connect):
    exchange = await connect("binance", pro=True, secret="wrong-secret")
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        await exchange.create_order_ws(SPOT, "market", "buy", 0.01)


async def test_ws_api_envelope_ping_and_signature(emu):
    """The wire format, without ccxt: envelope, JSON ping, ping frames, HMAC over sorted params."""
    url = emu.base_url.replace("http", "ws") + "/ws-api/v3"
    async with aiohttp.ClientSession() as session, session.ws_connect(url, autoping=False) as ws:
        await ws.ping(b"hello")
        pong = await ws.receive(timeout=2)
        assert pong.type == aiohttp.WSMsgType.PONG and pong.data == b"hello"
        await ws.send_json({"id": "p1", "method": "ping", "params": {}})
        assert json.loads((await ws.receive(timeout=2)).data) == {
            "id": "p1",
            "status": 200,
            "result": {},
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000, "count": 1}
            ],
        }
        params = {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "MARKET",
            "quantity": "0.01",
            "apiKey": "emu-key-2",
            "timestamp": int(time.time() * 1000),
            "newClientOrderId": "raw-ws",
            "returnRateLimits": False,
        }
        payload = "&".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(params.items()))
        signed = {**params, "signature": hmac.new(b"emu-secret-2", payload.encode(), hashlib.sha256).hexdigest()}
        await ws.send_json({"id": 7, "method": "order.place", "params": signed})
        placed = json.loads((await ws.receive(timeout=2)).data)
        assert placed["id"] == 7 and placed["status"] == 200 and "rateLimits" not in placed
        assert placed["result"]["status"] == "FILLED" and placed["result"]["clientOrderId"] == "raw-ws"
        await ws.send_json({"id": 8, "method": "order.place", "params": {**signed, "signature": "00"}})
        assert json.loads((await ws.receive(timeout=2)).data) == {
            "id": 8,
            "status": 400,
            "error": {"code": -1022, "msg": "Signature for this request is not valid."},
        }
    assert emu.orders()[0]["account_key"] == "emu-key-2" and emu.orders()[0]["transport"] == "ws"


async def test_timestamps_checked_against_recv_window(connect):
    stale = await connect("binance", options={"timeDifference": 20000})  # ccxt signs 20 s in the past
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        await stale.fetch_balance()
    adjusted = await connect("binance", options={"adjustForTimeDifference": True})  # uses GET /api/v3/time
    assert (await adjusted.fetch_balance())["USDT"]["free"] == 100000
    bybit = await connect("bybit")
    bybit.options["timeDifference"] = 20000
    with pytest.raises(ccxt.InvalidNonce, match="10002"):
        await bybit.fetch_balance()


# ----------------------------------------------------------------------- refusals
async def test_filters_refuse_orders_with_binance_codes(connect, emu):
    spot = await connect("binance")
    with pytest.raises(ccxt.InvalidOrder, match="Filter failure: LOT_SIZE"):
        await spot.create_order(SPOT, "limit", "buy", 10000, 40000)
    with pytest.raises(ccxt.InvalidOrder, match="Filter failure: LOT_SIZE"):  # off-step quantity, sent raw
        await spot.private_post_order(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.000015",
                "price": "40000",
            }
        )
    with pytest.raises(ccxt.InvalidOrder, match="Filter failure: PRICE_FILTER"):
        await spot.create_order(SPOT, "limit", "buy", 0.01, 2000000)
    # ccxt maps -1013 NOTIONAL to BadRequest (not InvalidOrder), in production too
    with pytest.raises(ccxt.BadRequest, match="Filter failure: NOTIONAL"):
        await spot.create_order(SPOT, "limit", "buy", 0.0001, 40000)
    with pytest.raises(ccxt.BadRequest, match="-1111"):
        await spot.private_post_order(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.000000001",
                "price": "40000",
            }
        )
    with pytest.raises(ccxt.BadSymbol, match="-1121"):
        await spot.private_post_order({"symbol": "NOPEUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"})
    perp = await connect("binanceusdm")
    with pytest.raises(ccxt.InvalidOrder, match="-4164"):
        await perp.create_order(PERP, "limit", "buy", 0.001, 43000)
    with pytest.raises(ccxt.BadRequest, match="-4014"):
        await perp.fapiPrivatePostOrder(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.01",
                "price": "43000.05",
            }
        )
    assert emu.orders() == []
    refused = emu.requests(outcome="rejected")
    assert [r["error"]["code"] for r in refused] == [-1013, -1013, -1013, -1013, -1111, -1121, -4164, -4014]


async def test_insufficient_funds(connect):
    spot = await connect("binance")
    with pytest.raises(ccxt.InsufficientFunds):
        await spot.create_order(SPOT, "market", "buy", 3)
    with pytest.raises(ccxt.InsufficientFunds):
        await spot.create_order(SPOT, "market", "sell", 11)
    perp = await connect("binanceusdm")
    with pytest.raises(ccxt.InsufficientFunds, match="-2019"):
        await perp.create_order(PERP, "market", "buy", 100)


async def test_bad_key_and_bad_signature(connect, emu):
    unknown = await connect("binance", api_key="not-a-key")
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        await unknown.create_order(SPOT, "market", "buy", 0.01)
    forged = await connect("binance", secret="wrong-secret")
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        await forged.fetch_balance()
    bybit = await connect("bybit", api_key="not-a-key", load=False)
    with pytest.raises(ccxt.AuthenticationError, match="10003"):  # load_markets fetches currencies, signed
        await bybit.load_markets()
    bybit_forged = await connect("bybit", secret="wrong-secret", load=False)
    with pytest.raises(ccxt.AuthenticationError, match="10004"):
        await bybit_forged.load_markets()
    assert emu.orders() == []


async def test_client_order_id_rules(connect, emu):
    spot = await connect("binance")
    await spot.create_order(SPOT, "limit", "buy", 0.01, 40000, params={"clientOrderId": "dup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        await spot.create_order(SPOT, "limit", "buy", 0.01, 40000, params={"clientOrderId": "dup-1"})
    await spot.cancel_order(None, SPOT, {"origClientOrderId": "dup-1"})
    again = await spot.create_order(SPOT, "limit", "buy", 0.01, 40000, params={"clientOrderId": "dup-1"})
    assert again["status"] == "open"

    await spot.create_order(SPOT, "market", "buy", 0.01, params={"clientOrderId": "filled-1"})
    reused = await spot.create_order(SPOT, "market", "buy", 0.01, params={"clientOrderId": "filled-1"})
    assert reused["status"] == "closed"  # Binance accepts a client id whose order is no longer open
    assert [o["status"] for o in emu.orders(client_order_id="filled-1")] == ["FILLED", "FILLED"]

    perp = await connect("binanceusdm")
    await perp.create_order(PERP, "limit", "buy", 0.01, 45000, params={"clientOrderId": "perp-dup"})
    with pytest.raises(ccxt.InvalidOrder, match="-4116"):
        await perp.create_order(PERP, "limit", "buy", 0.01, 45000, params={"clientOrderId": "perp-dup"})
    generated = await spot.create_order(SPOT, "limit", "buy", 0.01, 40000)
    assert generated["clientOrderId"]  # ccxt generates one with its broker prefix


async def test_lookup_and_cancel_by_client_order_id(connect):
    spot = await connect("binance")
    placed = await spot.create_order(SPOT, "limit", "sell", 0.5, 60000, params={"clientOrderId": "find-me"})
    found = await spot.fetch_order(None, SPOT, {"origClientOrderId": "find-me"})
    assert (found["id"], found["status"], found["clientOrderId"]) == (placed["id"], "open", "find-me")
    canceled = await spot.cancel_order(None, SPOT, {"origClientOrderId": "find-me"})
    # Binance echoes the cancel request's own client id; the original comes back as origClientOrderId
    assert canceled["status"] == "canceled" and canceled["info"]["origClientOrderId"] == "find-me"
    with pytest.raises(ccxt.OrderNotFound):
        await spot.cancel_order(placed["id"], SPOT)
    with pytest.raises(ccxt.OrderNotFound):
        await spot.fetch_order(None, SPOT, {"origClientOrderId": "never-sent"})

    await spot.create_order(SPOT, "limit", "sell", 0.5, 60000, params={"clientOrderId": "generic"})
    assert (await spot.fetch_order_with_client_order_id("generic", SPOT))["status"] == "open"
    assert (await spot.cancel_order_with_client_order_id("generic", SPOT))["status"] == "canceled"

    perp = await connect("binanceusdm")
    await perp.create_order(PERP, "limit", "buy", 0.01, 45000, params={"clientOrderId": "perp-find"})
    assert (await perp.fetch_order(None, PERP, {"origClientOrderId": "perp-find"}))["status"] == "open"
    await perp.cancel_order(None, PERP, {"origClientOrderId": "perp-find"})
    assert (await perp.fetch_order(None, PERP, {"clientOrderId": "perp-find"}))["status"] == "canceled"
    await perp.create_order(PERP, "limit", "buy", 0.01, 45000)
    await perp.cancel_all_orders(PERP)
    assert await perp.fetch_open_orders(PERP) == []


# --------------------------------------------------------------------------- faults
async def test_fault_rate_limit(connect, emu, control):
    exchange = await connect("binance")
    await control.add_fault("rate_limit", match={"route": "POST /api/v3/order"})
    with pytest.raises(ccxt.DDoSProtection, match="429"):
        await exchange.create_order(SPOT, "market", "buy", 0.01)
    emu.add_fault("rate_limit", status=418, retry_after=7)
    with pytest.raises(ccxt.DDoSProtection, match="418"):
        await exchange.create_order(SPOT, "market", "buy", 0.01)
    assert emu.orders() == [] and [r["fault"] for r in emu.requests()] == ["rate_limit", "rate_limit"]
    assert (await exchange.create_order(SPOT, "market", "buy", 0.01))["status"] == "closed"


async def test_fault_delay_after_book_times_out_but_order_exists(connect, control):
    exchange = await connect("binance")
    exchange.timeout = 200  # ms, only for the order below
    await control.add_fault("delay_after_book", seconds=2, match={"route": "order.place"})
    with pytest.raises(ccxt.RequestTimeout):
        await exchange.create_order(SPOT, "market", "buy", 0.01, params={"clientOrderId": "slow-1"})
    booked = await control.orders(client_order_id="slow-1")
    assert [o["status"] for o in booked] == ["FILLED"]


async def test_fault_delay_before_book_books_late(connect, emu):
    exchange = await connect("binance")
    exchange.timeout = 100  # ms
    emu.add_fault("delay_before_book", seconds=0.3)
    with pytest.raises(ccxt.RequestTimeout):
        await exchange.create_order(SPOT, "market", "buy", 0.01, params={"clientOrderId": "late-1"})
    assert emu.orders() == []
    await emu.wait_for(lambda: emu.orders(client_order_id="late-1"), timeout=3)


async def test_fault_drops(connect, emu):
    exchange = await connect("binance")
    emu.add_fault("drop_after_book")
    with pytest.raises(ccxt.NetworkError):
        await exchange.create_order(SPOT, "market", "buy", 0.01, params={"clientOrderId": "dropped-after"})
    assert [o["client_order_id"] for o in emu.orders()] == ["dropped-after"]
    emu.add_fault("drop_before_book")
    with pytest.raises(ccxt.NetworkError):
        await exchange.create_order(SPOT, "market", "buy", 0.01, params={"clientOrderId": "dropped-before"})
    assert [o["client_order_id"] for o in emu.orders()] == ["dropped-after"]


async def test_fault_http_error_and_key_error(connect, emu):
    exchange = await connect("binanceusdm")
    emu.add_fault("http_error", status=502, match={"route": "POST /fapi/v1/order"})
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.create_order(PERP, "market", "buy", 0.01)
    emu.add_fault("http_error", status=504)
    with pytest.raises(ccxt.RequestTimeout):
        await exchange.create_order(PERP, "market", "buy", 0.01)
    emu.add_fault("key_error", match={"key": "emu-key-1"})
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        await exchange.create_order(PERP, "market", "buy", 0.01)
    assert emu.orders() == []


async def test_fault_down_at_startup(connect, emu, control):
    ws_client = await connect("binance", pro=True)  # markets loaded before the outage
    await control.add_fault("down")  # every request, until cleared
    exchange = await connect("binance", load=False)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.load_markets()
    with pytest.raises(ccxt.NetworkError):  # the WebSocket handshake is refused too
        await ws_client.create_order_ws(SPOT, "market", "buy", 0.01)
    assert (await control.clear_faults())["cleared"] == 1
    await exchange.load_markets()
    assert PERP in exchange.markets and emu.orders() == []


async def test_fault_down_reset_mode_and_fault_bookkeeping(connect, emu, control):
    # "reset" closes connections without an answer; aiohttp silently retries an idempotent request
    # (GET, DELETE) once after a disconnect, so it takes two drops for ccxt to see one
    fault = await control.add_fault("down", mode="reset", count=2)
    assert fault["remaining"] == 2 and fault["match"] == {}
    exchange = await connect("binanceusdm", load=False)
    with pytest.raises(ccxt.NetworkError):
        await exchange.load_markets()
    assert await control.faults() == []
    assert (await exchange.fetch_ticker(PERP))["last"] == 50000
    queued = await control.add_faults(
        [
            {"kind": "key_error", "match": {"key": "emu-key-2"}},
            {"kind": "http_error", "status": 503, "match": {"route": "*"}},
        ]
    )
    await control.clear_faults(queued[1]["id"])
    assert [f["kind"] for f in await control.faults()] == ["key_error"]
    await control.reset()
    assert await control.faults() == [] and await control.orders() == []
    with pytest.raises(Exception, match="unknown fault kind"):
        await control.add_fault("meteor")


async def test_ws_faults(connect, emu):
    exchange = await connect("binance", pro=True)
    emu.add_fault("rate_limit", match={"route": "ws order.place"})
    with pytest.raises(ccxt.RateLimitExceeded, match="-1003"):
        await exchange.create_order_ws(SPOT, "market", "buy", 0.01)
    emu.add_fault("drop_after_book", match={"route": "ws-fapi order.place"})
    with pytest.raises(ccxt.NetworkError):
        await exchange.create_order_ws(PERP, "market", "buy", 0.01, params={"clientOrderId": "ws-dropped"})
    assert [o["client_order_id"] for o in emu.orders()] == ["ws-dropped"]
    recovered = await exchange.create_order_ws(PERP, "market", "sell", 0.01)  # reconnects
    assert recovered["status"] == "closed"


# ----------------------------------------------------------------- accounts, bybit
async def test_two_accounts_are_recorded_per_order(connect, emu, control):
    first = await connect("binance")
    second = await connect("binance", api_key="emu-key-2", secret="emu-secret-2")
    await control.add_account("late-key", "late-secret", balances={"binance.spot": {"USDT": 1000}})
    third = await connect("binance", api_key="late-key", secret="late-secret")
    await first.create_order(SPOT, "market", "buy", 0.01, params={"clientOrderId": "same-id"})
    await second.create_order(SPOT, "market", "buy", 0.01, params={"clientOrderId": "same-id"})
    with pytest.raises(ccxt.InsufficientFunds):
        await third.create_order(SPOT, "market", "buy", 0.1)
    orders = await control.orders()
    assert [(o["account_key"], o["client_order_id"]) for o in orders] == [
        ("emu-key-1", "same-id"),
        ("emu-key-2", "same-id"),
    ]
    assert [r["account_key"] for r in await control.requests()] == ["emu-key-1", "emu-key-2", "late-key"]
    assert orders[1]["seq"] > orders[0]["seq"]
    balances = await control.balances()
    assert balances["emu-key-2"]["binance.spot"]["BTC"]["total"] == "10.00999"


async def test_bybit_orders_lookup_balance_positions(connect, emu):
    bybit = await connect("bybit")
    created = await bybit.create_order(PERP, "market", "buy", 0.01, params={"clientOrderId": "by-1"})
    assert created["id"] and created["clientOrderId"] == "by-1"  # bybit answers ids only
    by_link = await bybit.fetch_open_orders(PERP, params={"orderLinkId": "by-1"})  # realtime: recent closed too
    assert [(o["id"], o["status"], o["filled"], o["average"]) for o in by_link] == [
        (created["id"], "closed", 0.01, 50000)
    ]
    closed = await bybit.fetch_canceled_and_closed_orders(PERP, params={"orderLinkId": "by-1"})
    assert [o["clientOrderId"] for o in closed] == ["by-1"]
    by_id = await bybit.fetch_order(created["id"], PERP, {"acknowledged": True})
    assert (by_id["clientOrderId"], by_id["amount"], by_id["status"]) == ("by-1", 0.01, "closed")
    with pytest.raises(ccxt.InvalidOrder, match="110072"):  # orderLinkId can never be reused
        await bybit.create_order(PERP, "market", "buy", 0.01, params={"clientOrderId": "by-1"})

    limit = await bybit.create_order(SPOT, "limit", "buy", 0.01, 40000, params={"clientOrderId": "by-2"})
    assert [o["id"] for o in await bybit.fetch_open_orders(SPOT)] == [limit["id"]]
    await bybit.cancel_order(limit["id"], SPOT)
    positions = await bybit.fetch_positions()
    assert [(p["symbol"], p["contracts"], p["side"], p["entryPrice"]) for p in positions] == [
        (PERP, 0.01, "long", 50000)
    ]
    await bybit.set_leverage(5, PERP)
    balance = await bybit.fetch_balance()
    assert balance["USDT"]["total"] == pytest.approx(100000 - 0.01 * 50000 * 0.00055)
    with pytest.raises(ccxt.InsufficientFunds):
        await bybit.create_order(SPOT, "market", "sell", 20)
    assert {o["venue"] for o in emu.orders()} == {"bybit"}


# ------------------------------------------------------------------ standalone run
def test_standalone_process_serves_and_stops_on_sigterm():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0", "--price", "BTC/USDT=61000"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready, "emulator did not announce itself"
        line = process.stdout.readline().strip()
        assert line.startswith("emulator listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1]
        control = EmulatorControl(base_url)
        assert control.health()["ok"] is True
        prices = {(p["venue"], p["market_type"], p["symbol"]): p["price"] for p in control.prices()}
        assert prices[("binance", "spot", "BTCUSDT")] == "61000" and prices[("binance", "linear", "BTCUSDT")] == "50000"

        async def place() -> dict:
            exchange = ccxt_async.binance(ccxt_config("binance", base_url, enableRateLimit=False))
            try:
                return await exchange.create_order(SPOT, "market", "buy", 0.01)
            finally:
                await exchange.close()

        assert asyncio.run(place())["average"] == 61000
        assert [o["status"] for o in control.orders()] == ["FILLED"]
    finally:
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()
    assert code == 0 and time.monotonic() - started < 5


async def test_bybit_attached_stop_loss_take_profit_and_margin_mode(connect, emu):
    bybit = await connect("bybit")
    await bybit.set_margin_mode("isolated", PERP)
    created = await bybit.create_order(
        PERP,
        "market",
        "buy",
        0.01,
        params={"clientOrderId": "by-tpsl", "stopLoss": {"triggerPrice": 45000}, "takeProfit": {"triggerPrice": 55000}},
    )
    fetched = (await bybit.fetch_open_orders(PERP, params={"orderLinkId": "by-tpsl"}))[0]
    assert (fetched["id"], fetched["stopLossPrice"], fetched["takeProfitPrice"]) == (created["id"], 45000, 55000)
    [booked] = emu.orders()
    assert (booked["stop_loss"], booked["take_profit"]) == ("45000", "55000")
    [position] = emu.positions("emu-key-1")
    assert (position["stop_loss"], position["take_profit"], position["margin_type"]) == ("45000", "55000", "ISOLATED")
    [held] = await bybit.fetch_positions([PERP])
    assert (held["stopLossPrice"], held["takeProfitPrice"], held["info"]["tradeMode"]) == (45000, 55000, 1)
    with pytest.raises(ccxt.BadRequest, match="should lower than base_price"):  # a long's stop-loss above the price
        await bybit.create_order(PERP, "market", "buy", 0.01, params={"stopLoss": {"triggerPrice": 51000}})
