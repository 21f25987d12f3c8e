"""Paper accepts real tickers (issue 15): markets from the venue snapshots shipped with the
package, with the venue's precision and limits; an unknown ticker's 422 names close
matches; ``python -m core paper-markets refresh`` rebuilds a snapshot through ccxt's
public endpoints (here against the emulator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from emulator import ccxt_config
from plugins.exchanges.paper.markets import SNAPSHOT_DIR, load_snapshot
from tests.support import ROOT, signed_headers


async def post(client, **fields):
    body = json.dumps(fields).encode()
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    return response.status_code, await response.get_json()


@pytest.mark.parametrize(
    "ticker,side,amount,price,symbol,booked_amount,booked_price",
    [
        # binance spot DOGEUSDT: lot step 1, price tick 0.00001
        ("BINANCE:DOGEUSDT", "buy", "123.7", "0.15123", "DOGE/USDT", "123", "0.15123"),
        # bybit USDT perpetual ETHUSDT: qty step 0.01, tick 0.01
        ("BYBIT:ETHUSDT.P", "buy", "0.1234", "3001.24", "ETH/USDT:USDT", "0.12", "3001.24"),
        # no prefix, not a configured market: found on kraken (XXBTZUSD: 8 lot decimals, tick 0.1);
        # a sell, from paper's initial 1 BTC (it holds no USD)
        ("BTCUSD", "sell", "0.0123456789", "50000.1", "BTC/USD", "0.01234567", "50000.1"),
    ],
)
async def test_paper_fills_real_tickers_with_the_venues_precision(
    app_client, ticker, side, amount, price, symbol, booked_amount, booked_price
):
    async with app_client() as (client, app):
        status, answer = await post(
            client, symbol=ticker, side=side, amount=amount, price=price, order_type="limit", id=f"venue-{ticker}"
        )
        assert status == 200, answer
        order = answer["order"]
        assert (order["symbol"], order["amount"], order["price"], order["status"]) == (
            symbol,
            booked_amount,
            booked_price,
            "filled",
        )


async def test_paper_market_order_fills_at_the_alerts_price_on_a_venue_market(app_client):
    async with app_client() as (client, app):
        status, answer = await post(
            client, symbol="BINANCE:DOGEUSDT", side="buy", amount="100", price="0.2", id="doge-mkt"
        )
        assert status == 200, answer
        assert answer["order"]["average"] == "0.2" and answer["order"]["amount"] == "100"
        balances = await app.extensions["router"].executors.get("paper").balances()
        assert balances["DOGE"] == "100"


async def test_venue_limits_apply_on_paper(app_client):
    async with app_client() as (client, app):
        # binance's minimum notional of 5 USDT: 10 DOGE at 0.15 is 1.5 USDT
        status, answer = await post(
            client, symbol="BINANCE:DOGEUSDT", side="buy", amount="10", price="0.15", id="doge-small"
        )
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
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "DATA_DIR": str(tmp_path / "data"),
        "PLUGINS_FILE": str(tmp_path / "plugins.yaml"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "paper-markets",
            "refresh",
            "--exchange",
            "binance",
            "--ccxt",
            json.dumps(config),
            "--output",
            str(output),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
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
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "DATA_DIR": str(tmp_path / "data"),
        "PLUGINS_FILE": str(tmp_path / "plugins.yaml"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "paper-markets",
            "refresh",
            "--exchange",
            "binanse",
            "--output",
            str(tmp_path / "x.json"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        done.returncode == 1 and "did you mean 'binance'" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    )


async def test_a_venue_market_without_a_price_needs_the_alerts_price(app_client):
    async with app_client() as (client, app):
        # kraken's snapshot has no last price: a market order without the alert's price cannot be valued or filled
        status, answer = await post(client, symbol="KRAKEN:XBTUSD", side="sell", amount="0.01", id="kraken-no-price")
        assert status == 422 and answer["error"]["code"] == "price_required", answer
        assert "{{close}}" in answer["error"]["message"]
        status, answer = await post(
            client, symbol="KRAKEN:XBTUSD", side="sell", amount="0.01", price="50000", id="kraken-price"
        )
        assert status == 200 and answer["order"]["symbol"] == "BTC/USD", answer


async def test_refusals_on_a_venue_market_name_the_venue(app_client):
    async with app_client() as (client, app):
        # bybit's ETHUSDT perpetual: quantity minimum 0.01
        status, answer = await post(
            client, symbol="BYBIT:ETHUSDT.P", side="buy", amount="0.001", price="3000", id="eth-small"
        )
        assert status == 422 and "paper (bybit markets)" in answer["error"]["message"], answer


def test_snapshot_markets_become_core_markets_in_the_snapshots_precision_mode():
    import ccxt

    from plugins.exchanges.paper.plugin import venue_book

    raw = {
        "id": "XYZUSD",
        "symbol": "XYZ/USD",
        "base": "XYZ",
        "quote": "USD",
        "type": "spot",
        "spot": True,
        "precision": {"amount": 3, "price": 2},
        "limits": {"amount": {"min": 0.001}},
        "info": {"last": "12.5"},
    }
    book, prices = venue_book("somewhere", {"markets": [raw], "precision_mode": ccxt.DECIMAL_PLACES})
    market = book.resolve("SOMEWHERE:XYZUSD", None, "spot")
    assert (book.venue, market.amount_step, market.price_tick) == (
        "paper (somewhere markets)",
        Decimal("0.001"),
        Decimal("0.01"),
    )
    assert prices == {"XYZ/USD": Decimal("12.5")}
    book, _ = venue_book("somewhere", {"markets": [raw | {"precision": {"amount": 0.001, "price": 0.01}}]})  # TICK_SIZE
    assert book.resolve("XYZUSD", None, "spot").amount_step == Decimal("0.001")


@pytest.mark.parametrize(
    "options,fragment",
    [
        ({"venues": ["binanse"]}, "'binanse' is not a ccxt exchange id"),
        ({"venues": ["bybit"], "default_venue": "binance"}, "default_venue"),
    ],
)
def test_venue_options_are_checked(options, fragment):
    from pydantic import ValidationError

    from plugins.exchanges.paper.plugin import Plugin

    with pytest.raises(ValidationError, match=fragment):
        Plugin.Options(**options)


def test_a_missing_snapshot_stops_check_config_with_one_line(tmp_path):
    (tmp_path / "plugins.yaml").write_text(f"paper:\n  venues: [binance]\n  snapshot_dir: {tmp_path / 'none'}\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "DATA_DIR": str(tmp_path / "data"),
        "PLUGINS_FILE": str(tmp_path / "plugins.yaml"),
        "DEFAULT_EXCHANGE": "paper",
        "WEBHOOK_SECRET": "x" * 40,
    }
    done = subprocess.run(
        [sys.executable, "-m", "core", "check-config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert (
        "plugin 'paper'" in lines[0] and "no market snapshot for 'binance'" in lines[0] and "Traceback" not in lines[0]
    )
