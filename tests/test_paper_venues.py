"""Paper accepts real tickers (issue 15): markets from the venue snapshots shipped with the
package, with the venue's precision and limits; an unknown ticker's 422 names close
matches; ``python -m core paper-markets refresh`` rebuilds a snapshot through ccxt's
public endpoints (here against the emulator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from plugins.exchanges.paper_markets import SNAPSHOT_DIR, load_snapshot
from tests.emulator import ccxt_config
from tests.support import ROOT, signed_headers


async def post(client, **fields):
    body = json.dumps(fields).encode()
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    return response.status_code, await response.get_json()


@pytest.mark.parametrize("ticker,side,amount,price,symbol,booked_amount,booked_price", [
    # binance spot DOGEUSDT: lot step 1, price tick 0.00001
    ("BINANCE:DOGEUSDT", "buy", "123.7", "0.15123", "DOGE/USDT", "123", "0.15123"),
    # bybit USDT perpetual ETHUSDT: qty step 0.01, tick 0.01
    ("BYBIT:ETHUSDT.P", "buy", "0.1234", "3001.24", "ETH/USDT:USDT", "0.12", "3001.24"),
    # no prefix, not a configured market: found on kraken (XXBTZUSD: 8 lot decimals, tick 0.1);
    # a sell, from paper's initial 1 BTC (it holds no USD)
    ("BTCUSD", "sell", "0.0123456789", "50000.1", "BTC/USD", "0.01234567", "50000.1"),
])
async def test_paper_fills_real_tickers_with_the_venues_precision(app_client, ticker, side, amount, price, symbol, booked_amount,
                                                                   booked_price):
    async with app_client() as (client, app):
        status, answer = await post(client, symbol=ticker, side=side, amount=amount, price=price, order_type="limit",
                                    id=f"venue-{ticker}")
        assert status == 200, answer
        order = answer["order"]
        assert (order["symbol"], order["amount"], order["price"], order["status"]) == (symbol, booked_amount, booked_price, "filled")


async def test_paper_market_order_fills_at_the_alerts_price_on_a_venue_market(app_client):
    async with app_client() as (client, app):
        status, answer = await post(client, symbol="BINANCE:DOGEUSDT", side="buy", amount="100", price="0.2", id="doge-mkt")
        assert status == 200, answer
        assert answer["order"]["average"] == "0.2" and answer["order"]["amount"] == "100"
        balances = await app.extensions["router"].executors.get("paper").balances()
        assert balances["DOGE"] == "100"


async def test_venue_limits_apply_on_paper(app_client):
    async with app_client() as (client, app):
        # binance's minimum notional of 5 USDT: 10 DOGE at 0.15 is 1.5 USDT
        status, answer = await post(client, symbol="BINANCE:DOGEUSDT", side="buy", amount="10", price="0.15", id="doge-small")
        assert status == 422 and "5" in answer["error"]["message"], answer


async def test_unknown_ticker_names_close_matches(app_client):
    async with app_client() as (client, app):
        status, answer = await post(client, symbol="BINANCE:DOGEUSD", side="buy", amount="100", price="0.2", id="typo")
        assert status == 422 and answer["error"]["code"] == "unknown_symbol"
        assert "did you mean" in answer["error"]["message"] and "DOGEUSDT" in answer["error"]["message"], answer


def test_shipped_snapshots_say_where_they_come_from():
    for name in ("binance", "bybit", "kraken"):
        data = load_snapshot(name)
        assert data["exchange"] == name and data["markets"]
        assert "NOT live data" in data["note"]  # built from the emulator / a recorded answer, and saying so


def test_refresh_through_ccxt_against_the_emulator(tmp_path, emulator):
    config = ccxt_config("binance", emulator.url, match_production_errors=False)
    for key in ("apiKey", "secret", "options"):
        config.pop(key)
    output = tmp_path / "binance.json"
    (tmp_path / "plugins.yaml").write_text("")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "DATA_DIR": str(tmp_path / "data"),
           "PLUGINS_FILE": str(tmp_path / "plugins.yaml")}
    done = subprocess.run([sys.executable, "-m", "core", "paper-markets", "refresh", "--exchange", "binance",
                           "--ccxt", json.dumps(config), "--output", str(output)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = load_snapshot("binance", tmp_path)
    markets = {m["symbol"]: m for m in data["markets"]}
    # What the emulator serves (its default catalogue), with ccxt's parsed precision, limits and prices.
    assert set(markets) == {"BTC/USDT", "ETH/USDT", "SOL/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT"}
    assert markets["BTC/USDT"]["precision"]["amount"] == 1e-05 and markets["BTC/USDT"]["limits"]["cost"]["min"] == 5
    assert markets["BTC/USDT"]["info"]["last"] and data["source"].startswith(emulator.url)
    assert "info" not in json.dumps(data["markets"][0]["info"])  # the raw exchange answer is not kept
    assert output.parent != SNAPSHOT_DIR


def test_refresh_of_an_unknown_exchange_fails_with_one_line(tmp_path):
    (tmp_path / "plugins.yaml").write_text("")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "DATA_DIR": str(tmp_path / "data"),
           "PLUGINS_FILE": str(tmp_path / "plugins.yaml")}
    done = subprocess.run([sys.executable, "-m", "core", "paper-markets", "refresh", "--exchange", "binanse",
                           "--output", str(tmp_path / "x.json")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "did you mean 'binance'" in done.stderr and len(done.stderr.strip().splitlines()) == 1
