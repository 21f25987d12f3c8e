"""The Alpaca emulator (emulator/alpaca.py) over raw HTTP: what it answers is what the
plugin's tests rely on, so its rules are tested on their own."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from emulator import Emulator, EmulatorControl

KEYS = {"APCA-API-KEY-ID": "emu-key-1", "APCA-API-SECRET-KEY": "emu-secret-1"}


@pytest.fixture
async def emu():
    async with Emulator() as emulator:
        yield emulator


@pytest.fixture
async def api(emu):
    async with httpx.AsyncClient(base_url=emu.base_url + "/alpaca", headers=KEYS, timeout=5) as client:
        yield client


def order(**fields) -> dict:
    return {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day", **fields}


async def test_keys_are_checked(emu):
    async with httpx.AsyncClient(base_url=emu.base_url + "/alpaca", timeout=5) as anonymous:
        missing = await anonymous.get("/v2/account")
        assert (missing.status_code, missing.json()) == (
            401,
            {"code": 40110000, "message": "request is not authorized"},
        )
        unknown = await anonymous.get("/v2/account", headers={**KEYS, "APCA-API-KEY-ID": "nobody"})
        assert unknown.status_code == 401
        wrong = await anonymous.get("/v2/account", headers={**KEYS, "APCA-API-SECRET-KEY": "wrong"})
        assert (wrong.status_code, wrong.json()["message"]) == (403, "forbidden")
    assert emu.orders() == []


@pytest.mark.parametrize(
    "fields,status,message",
    [
        ({"client_order_id": "x" * 129}, 422, "client_order_id must be no more than 128 characters"),
        (
            {"qty": None, "notional": "100", "type": "limit", "limit_price": "190"},
            422,
            "notional orders are only supported for market orders",
        ),
        ({"qty": "1", "notional": "100"}, 422, "only one of qty or notional may be specified"),
        ({"qty": None}, 422, "qty or notional is required"),
        ({"symbol": "BTC/USD", "qty": "0.01", "time_in_force": "day"}, 422, "invalid crypto time_in_force"),
        (
            {"symbol": "BTC/USD", "qty": "0.01", "type": "stop", "stop_price": "60000", "time_in_force": "gtc"},
            422,
            "invalid order type for crypto order",
        ),
        ({"type": "limit", "limit_price": "190.123"}, 422, "sub-penny increment"),
        ({"type": "limit", "limit_price": "190", "stop_price": "180"}, 422, "limit orders must not have stop_price"),
        ({"extended_hours": True}, 422, "extended hours order must be DAY limit orders"),
        ({"qty": "0.5", "time_in_force": "gtc"}, 422, "fractional orders must be DAY orders"),
        ({"symbol": "BRK.A", "qty": "0.5"}, 422, "not fractionable"),
        ({"symbol": "DLSTD"}, 422, "not tradable"),
        ({"symbol": "NOPE"}, 422, 'asset "NOPE" not found'),
        (
            {"order_class": "bracket", "take_profit": {"limit_price": "180"}, "stop_loss": {"stop_price": "170"}},
            422,
            "take_profit.limit_price must be >= base_price + 0.01",
        ),
        ({"order_class": "bracket", "take_profit": {"limit_price": "200"}}, 422, "bracket orders require"),
        (
            {
                "symbol": "BTC/USD",
                "qty": "0.01",
                "time_in_force": "gtc",
                "order_class": "bracket",
                "take_profit": {"limit_price": "60000"},
                "stop_loss": {"stop_price": "40000"},
            },
            422,
            "crypto orders not allowed",
        ),
        ({"qty": "1000"}, 403, "insufficient buying power"),
        ({"side": "sell"}, 403, "insufficient qty available for order (requested: 1, available: 0)"),
        (
            {"symbol": "BTC/USD", "qty": "0.0001", "time_in_force": "gtc"},
            403,
            "cost basis must be >= minimal amount of order 10",
        ),
    ],
)
async def test_refusals_in_alpacas_shape(api, emu, fields, status, message):
    response = await api.post("/v2/orders", json={k: v for k, v in order(**fields).items() if v is not None})
    body = response.json()
    assert response.status_code == status and message in body["message"], body
    assert isinstance(body["code"], int) and len(str(body["code"])) == 8  # e.g. 40010001 (answered 422), 40310000
    assert emu.orders() == []


async def test_client_order_ids_are_unique_and_found(api, emu):
    first = await api.post("/v2/orders", json=order(client_order_id="c-1"))
    assert first.status_code == 200 and first.json()["status"] == "filled"
    again = await api.post("/v2/orders", json=order(client_order_id="c-1"))
    assert (again.status_code, again.json()["message"]) == (422, "client_order_id must be unique")
    found = await api.get("/v2/orders:by_client_order_id", params={"client_order_id": "c-1"})
    assert found.json()["id"] == first.json()["id"]
    missing = await api.get("/v2/orders:by_client_order_id", params={"client_order_id": "c-2"})
    assert (missing.status_code, missing.json()["code"]) == (404, 40410000)
    assert (await api.get(f"/v2/orders/{first.json()['id']}")).json()["client_order_id"] == "c-1"
    assert len(emu.orders(client_order_id="c-1")) == 1


async def test_orders_wait_for_the_open_while_the_market_is_closed(api, emu):
    emu.alpaca.set_clock(False)
    assert (await api.get("/v2/clock")).json()["is_open"] is False
    queued = (await api.post("/v2/orders", json=order())).json()
    assert queued["status"] == "accepted"
    extended = (await api.post("/v2/orders", json=order(type="limit", limit_price="191", extended_hours=True))).json()
    assert (extended["status"], extended["extended_hours"]) == ("filled", True)
    crypto = (await api.post("/v2/orders", json=order(symbol="BTC/USD", qty="0.01", time_in_force="gtc"))).json()
    assert crypto["status"] == "filled"
    assert [o["id"] for o in (await api.get("/v2/orders")).json()] == [queued["id"]]  # open: the queued one
    emu.alpaca.set_clock(True)
    assert (await api.get(f"/v2/orders/{queued['id']}")).json()["status"] == "filled"


async def test_the_clock_is_controlled_through_the_control_api(emu):
    control = EmulatorControl(emu.base_url)
    assert await asyncio.to_thread(control.alpaca_clock, False) == {"is_open": False}
    assert emu.alpaca.is_open is False
    assert await asyncio.to_thread(control.alpaca_clock) == {"is_open": False}
    await asyncio.to_thread(control.reset)
    assert emu.alpaca.is_open is True


async def test_positions_cancels_and_assets(api, emu):
    await api.post("/v2/orders", json=order(qty="2.5"))
    await api.post("/v2/orders", json=order(symbol="BTC/USD", qty="0.01", time_in_force="gtc"))
    positions = {p["symbol"]: p for p in (await api.get("/v2/positions")).json()}
    assert set(positions) == {"AAPL", "BTCUSD"}  # crypto positions without the slash, as Alpaca lists them
    assert (positions["AAPL"]["qty"], positions["AAPL"]["avg_entry_price"], positions["AAPL"]["side"]) == (
        "2.5",
        "190",
        "long",
    )
    assert (await api.get("/v2/positions/BTC/USD")).json()["qty"] == "0.01"
    closing = (await api.delete("/v2/positions/AAPL")).json()
    assert (closing["side"], closing["qty"], closing["status"]) == ("sell", "2.5", "filled")
    assert (await api.get("/v2/positions/AAPL")).status_code == 404

    resting = [
        (await api.post("/v2/orders", json=order(type="limit", limit_price=p, time_in_force="gtc"))).json()
        for p in ("100", "101")
    ]
    assert (await api.delete(f"/v2/orders/{resting[0]['id']}")).status_code == 204
    again = await api.delete(f"/v2/orders/{resting[0]['id']}")
    assert again.status_code == 422 and "not cancelable" in again.json()["message"]
    everything = await api.delete("/v2/orders")
    assert everything.status_code == 207 and [r["id"] for r in everything.json()] == [resting[1]["id"]]
    assert (await api.get("/v2/orders")).json() == []
    assert len((await api.get("/v2/orders", params={"status": "all"})).json()) == 5

    crypto = (await api.get("/v2/assets", params={"asset_class": "crypto"})).json()
    assert {a["symbol"] for a in crypto} == {"BTC/USD", "ETH/USD", "BTC/USDT"}
    aapl = (await api.get("/v2/assets/AAPL")).json()
    assert (aapl["class"], aapl["exchange"], aapl["fractionable"], aapl["tradable"]) == (
        "us_equity",
        "NASDAQ",
        True,
        True,
    )
    assert (await api.get("/v2/assets/NOPE")).status_code == 404


async def test_faults_apply_to_alpaca_routes(api, emu):
    emu.add_fault("rate_limit", match={"venue": "alpaca"})
    limited = await api.post("/v2/orders", json=order())
    assert (limited.status_code, limited.json()) == (429, {"code": 42910000, "message": "rate limit exceeded"})
    emu.add_fault("drop_after_book", match={"venue": "alpaca"})
    with pytest.raises(httpx.RemoteProtocolError):
        await api.post("/v2/orders", json=order(client_order_id="lost"))
    assert [o["status"] for o in emu.orders(client_order_id="lost")] == ["FILLED"]
    assert [r["outcome"] for r in emu.requests(venue="alpaca")] == ["fault", "booked"]
