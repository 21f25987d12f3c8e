"""core.trading.markets against real ccxt markets: TradingView tickers → markets, precision, limits.

The markets are ccxt's own, parsed by ccxt's real binance/binanceusdm/bybit classes from
the emulator's exchangeInfo/instruments (taken from the live venues), and kraken's from
a recorded AssetPairs answer, then translated into core's Market by the ccxt plugin
(plugins.exchanges.ccxt.markets): core itself never sees ccxt.
"""

from __future__ import annotations

import asyncio
import copy
from decimal import Decimal

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from core.errors import Unprocessable
from core.pipeline.models import Alert
from core.trading.markets import prepare_order
from emulator import Emulator, ccxt_config
from plugins.exchanges.ccxt.markets import market_book


async def _load_from_emulator() -> dict[str, dict]:
    async with Emulator() as emu:
        loaded = {}
        for venue in ("binance", "binanceusdm", "bybit"):
            client = getattr(ccxt_async, venue)(
                ccxt_config(venue, emu.base_url, enableRateLimit=False, timeout_on_exit=0)
            )
            try:
                loaded[venue] = await client.load_markets()
            finally:
                await client.close()
        return loaded


@pytest.fixture(scope="module")
def emulator_markets() -> dict[str, dict]:
    """Each venue's markets as ccxt parsed them from the emulator, loaded once per module."""
    return asyncio.run(_load_from_emulator())


@pytest.fixture
def load(emulator_markets):
    async def make(venue: str):
        client = getattr(ccxt, venue)()  # the same class, sync flavour: only markets and precision are used
        client.set_markets(copy.deepcopy(emulator_markets[venue]))
        return client

    return make


KRAKEN_ASSET_PAIRS = {
    "error": [],
    "result": {
        "XXBTZUSD": {
            "altname": "XBTUSD",
            "wsname": "XBT/USD",
            "aclass_base": "currency",
            "base": "XXBT",
            "aclass_quote": "currency",
            "quote": "ZUSD",
            "lot": "unit",
            "cost_decimals": 5,
            "pair_decimals": 1,
            "lot_decimals": 8,
            "lot_multiplier": 1,
            "leverage_buy": [2, 3],
            "leverage_sell": [2, 3],
            "fees": [[0, 0.4]],
            "fees_maker": [[0, 0.25]],
            "fee_volume_currency": "ZUSD",
            "margin_call": 80,
            "margin_stop": 40,
            "ordermin": "0.00005",
            "costmin": "0.5",
            "tick_size": "0.1",
            "status": "online",
        },
    },
}


@pytest.fixture
async def kraken():
    client = ccxt_async.kraken({"has": {"fetchCurrencies": False}})

    async def asset_pairs(params=None):
        return KRAKEN_ASSET_PAIRS

    client.publicGetAssetPairs = asset_pairs  # the recorded answer instead of the network
    await client.load_markets()
    yield client
    await client.close()


def order_for(client, symbol: str, *, default_type: str | None = None, **fields):
    alert = Alert.model_validate({"symbol": symbol, "side": "buy", "amount": "0.01", **fields})
    client._router_market_book = None  # tests edit the ccxt markets in place: translate them afresh
    return prepare_order(
        market_book(client), alert, account="acct", client_order_id="tv" + "0" * 30, default_type=default_type
    )


def resolve(client, symbol: str, market_type: str | None = None, default_type: str | None = None) -> str:
    return order_for(
        client, symbol, default_type=default_type, **({"market_type": market_type} if market_type else {})
    ).symbol


@pytest.mark.parametrize(
    "ticker,expected",
    [
        ("BINANCE:BTCUSDT", "BTC/USDT"),
        ("BTCUSDT", "BTC/USDT"),
        ("btcusdt", "BTC/USDT"),
        ("BTC/USDT", "BTC/USDT"),
        ("BTC-USDT", "BTC/USDT"),
        ("BINANCE:BTC/USDT", "BTC/USDT"),
        ("BTCUSDT.P", "BTC/USDT:USDT"),
        ("BINANCE:BTCUSDT.P", "BTC/USDT:USDT"),
        ("BTCUSDTPERP", "BTC/USDT:USDT"),
        ("BTC/USDT:USDT", "BTC/USDT:USDT"),
        ("ETHUSDT.P", "ETH/USDT:USDT"),
        ("SOLUSDT", "SOL/USDT"),
    ],
)
async def test_tradingview_tickers_resolve_on_binance_spot_and_perpetuals(load, ticker, expected):
    binance = await load("binance")
    assert resolve(binance, ticker) == expected


async def test_market_type_override_and_account_default_type(load):
    binance = await load("binance")
    assert resolve(binance, "BTCUSDT", market_type="swap") == "BTC/USDT:USDT"
    assert resolve(binance, "BINANCE:BTCUSDT", market_type="spot") == "BTC/USDT"
    # An account trading perpetuals by default: BTCUSDT means the perpetual...
    assert resolve(binance, "BTCUSDT", default_type="swap") == "BTC/USDT:USDT"
    # ...unless the alert says otherwise.
    assert resolve(binance, "BTCUSDT", market_type="spot", default_type="swap") == "BTC/USDT"


async def test_a_perpetuals_only_account_resolves_plain_tickers_to_perpetuals(load):
    usdm = await load("binanceusdm")
    assert resolve(usdm, "BINANCE:BTCUSDT") == "BTC/USDT:USDT"
    assert resolve(usdm, "BTCUSDT.P") == "BTC/USDT:USDT"
    with pytest.raises(Unprocessable) as info:
        resolve(usdm, "BTCUSDT", market_type="spot")
    assert info.value.message == "symbol 'BTCUSDT' is not a spot market on binanceusdm (found: BTC/USDT:USDT)"


async def test_bybit_tickers(load):
    bybit = await load("bybit")
    assert resolve(bybit, "BYBIT:ETHUSDT.P") == "ETH/USDT:USDT"
    assert resolve(bybit, "BYBIT:ETHUSDT") == "ETH/USDT"
    assert resolve(bybit, "BTC/USDT:USDT") == "BTC/USDT:USDT"


async def test_kraken_altnames(kraken):
    for ticker in ("XBTUSD", "KRAKEN:XBTUSD", "BTC/USD", "BTCUSD", "XXBTZUSD"):
        assert resolve(kraken, ticker) == "BTC/USD", ticker


async def test_kraken_altnames_without_ccxt_altname_index(kraken):
    # A client whose markets were copied (set_markets) has no options['marketsByAltname'].
    copy = ccxt.kraken()
    copy.set_markets(kraken.markets)
    assert resolve(copy, "XBTUSD") == "BTC/USD"


async def test_unknown_symbols_are_refused(load):
    binance = await load("binance")
    with pytest.raises(Unprocessable) as info:
        resolve(binance, "DOGEPEPE")
    assert info.value.message == "symbol 'DOGEPEPE' is not a market on binance"
    assert info.value.code == "unknown_symbol"
    with pytest.raises(Unprocessable, match="not a swap market on binance"):
        resolve(binance, "SOLUSDT.P")


async def test_amounts_and_prices_go_through_ccxt_precision(load):
    binance = await load("binance")
    spot = order_for(binance, "BTCUSDT", amount="0.0123456")
    assert (spot.symbol, spot.amount, spot.market_type) == ("BTC/USDT", "0.01234", "spot")
    perp = order_for(binance, "BTCUSDT.P", amount="0.0123456")
    assert (perp.symbol, perp.amount, perp.market_type) == ("BTC/USDT:USDT", "0.012", "swap")
    limit = order_for(binance, "BTCUSDT", amount="0.01", order_type="limit", price="49999.99")
    assert (limit.order_type, limit.price, limit.reference_price) == ("limit", "49999.99", "49999.99")
    market = order_for(binance, "BTCUSDT", price="50000")
    assert (market.price, market.reference_price) == (None, "50000")


@pytest.mark.parametrize(
    "symbol,fields,message",
    [
        (
            "BTCUSDT",
            {"amount": "0.000001", "price": "50000"},
            "amount 0.000001 BTC is below the minimum 0.00001 for BTC/USDT on binance",
        ),
        (
            "BTCUSDT.P",
            {"amount": "0.0001", "price": "50000"},
            "amount 0.0001 contracts is below the minimum 0.001 for BTC/USDT:USDT on binance",
        ),
        (
            "BTCUSDT",
            {"amount": "0.00005", "price": "50000"},
            "order value 2.5 USDT is below the minimum 5 for BTC/USDT on binance",
        ),
        (
            "BTCUSDT.P",
            {"amount": "0.001", "price": "50000"},
            "order value 50 USDT is below the minimum 100 for BTC/USDT:USDT on binance",
        ),
        (
            "BTCUSDT",
            {"amount": "0.01", "price": "50000.005", "order_type": "limit"},
            "price 50000.005 is not a multiple of the tick 0.01 for BTC/USDT on binance",
        ),
        (
            "BTCUSDT.P",
            {"amount": "0.01", "price": "50000.05", "order_type": "limit"},
            "price 50000.05 is not a multiple of the tick 0.1 for BTC/USDT:USDT on binance",
        ),
        (
            "BTCUSDT",
            {"amount": "121", "price": "50000"},
            "amount 121 BTC is above the maximum 120 for a market order on BTC/USDT on binance",
        ),
        (
            "BTCUSDT",
            {"amount": "9001", "price": "50000", "order_type": "limit"},
            "amount 9001 BTC is above the maximum 9000 for BTC/USDT on binance",
        ),
        (
            "BTCUSDT.P",
            {"amount": "0.01", "price": "200", "order_type": "limit"},
            "price 200 is below the minimum 261.1 for BTC/USDT:USDT on binance",
        ),
    ],
)
async def test_refusals_say_why(load, symbol, fields, message):
    binance = await load("binance")
    with pytest.raises(Unprocessable) as info:
        order_for(binance, symbol, **fields)
    assert info.value.message == message
    assert info.value.status == 422


async def test_market_orders_without_a_price_leave_the_cost_check_to_the_exchange(load):
    binance = await load("binance")
    order = order_for(binance, "BTCUSDT", amount="0.00005")
    assert order.amount == "0.00005" and order.reference_price is None


async def test_a_market_not_trading_is_refused(load):
    binance = await load("binance")
    binance.markets["ETH/USDT"]["active"] = False
    with pytest.raises(Unprocessable) as info:
        order_for(binance, "ETHUSDT")
    assert info.value.message == "market ETH/USDT is not trading on binance now"


def test_a_step_that_does_not_divide_the_minimum():
    client = ccxt.Exchange({"id": "venue"})
    client.precisionMode = ccxt.TICK_SIZE
    client.set_markets(
        [
            {
                "id": "ABCUSDT",
                "symbol": "ABC/USDT",
                "base": "ABC",
                "quote": "USDT",
                "baseId": "ABC",
                "quoteId": "USDT",
                "type": "spot",
                "spot": True,
                "swap": False,
                "future": False,
                "option": False,
                "contract": False,
                "active": True,
                "precision": {"amount": 0.00002, "price": 0.01},
                "limits": {
                    "amount": {"min": 0.00005, "max": None},
                    "cost": {"min": None, "max": None},
                    "price": {"min": None, "max": None},
                },
            }
        ]
    )
    with pytest.raises(Unprocessable) as info:
        order_for(client, "ABCUSDT", amount="0.000055")
    assert info.value.message == (
        "amount 0.000055 ABC rounds down to 0.00004 at the step 0.00002, "
        "below the minimum 0.00005 for ABC/USDT on venue"
    )
    assert order_for(client, "ABCUSDT", amount="0.00006").amount == "0.00006"


async def test_order_request_carries_client_order_id_and_params(load):
    binance = await load("binance")
    order = order_for(binance, "BTCUSDT.P", amount="0.01", params={"reduceOnly": True})
    assert order.client_order_id == "tv" + "0" * 30
    assert order.params == {"reduceOnly": True}
    assert (order.account, order.exchange, order.side) == ("acct", "binance", "buy")


async def test_a_price_far_below_any_tick_is_refused_not_an_underflow(load):
    """Issue 11, finding 5: ccxt's rounding raised decimal.Underflow (answered 500). The
    alert model refuses such a number already; the market check holds on its own too."""
    from decimal import Decimal

    binance = await load("binance")
    alert = Alert.model_validate(
        {"symbol": "BTCUSDT", "side": "buy", "amount": "0.01", "order_type": "limit", "price": "1"}
    )
    alert = alert.model_copy(update={"price": Decimal("1e-300000000")})
    with pytest.raises(Unprocessable) as info:
        prepare_order(market_book(binance), alert, account="acct", client_order_id="tv" + "0" * 30)
    assert info.value.status == 422 and "price" in info.value.message


def test_a_resolved_ticker_is_remembered_and_a_refusal_is_not(monkeypatch):
    """The book keeps what a ticker resolved to (the same market for the same ticker, type and
    default), never a refusal, and forgets everything past its bound rather than grow."""
    import core.trading.markets as markets
    from core.trading.venue import Market

    book = markets.MarketBook(
        "venue",
        [
            Market(symbol="BTC/USDT", id="BTCUSDT", base="BTC", quote="USDT"),
            Market(symbol="BTC/USDT:USDT", id="BTCUSDT", base="BTC", quote="USDT", type="swap", contract=True),
        ],
    )
    spot = book.resolve("BINANCE:BTCUSDT", None, None)
    assert spot.symbol == "BTC/USDT"
    assert book.resolve("BINANCE:BTCUSDT", None, None) is spot
    assert book.resolve("BINANCE:BTCUSDT", None, "swap").symbol == "BTC/USDT:USDT"
    assert book.resolve("BTCUSDT.P", None, None).symbol == "BTC/USDT:USDT"
    assert book.resolve("BINANCE:BTCUSDT", "swap", None).symbol == "BTC/USDT:USDT"
    for _ in range(2):
        with pytest.raises(Unprocessable, match="not a market"):
            book.resolve("ETHUSDT", None, None)
    monkeypatch.setattr(markets, "RESOLVED_KEPT", 3)
    for ticker in ("BTC/USDT", "BTCUSDT", "btcusdt", "BTC-USDT", "BTC_USDT"):
        assert book.resolve(ticker, None, None) is spot
        assert len(book._resolved) <= 3


def test_an_amount_that_rounds_to_nothing_is_refused_with_how_it_was_reached():
    from core.trading.markets import MarketBook, Sizing
    from core.trading.venue import Market

    book = MarketBook("venue", [Market(symbol="ABC/USDT", id="ABCUSDT", base="ABC", quote="USDT", amount_step="0.01")])
    alert = Alert.model_validate({"symbol": "ABCUSDT", "side": "buy", "amount": "0.004"})
    with pytest.raises(Unprocessable) as info:
        prepare_order(book, alert, account="acct", client_order_id="tv1")
    assert info.value.message == "amount 0.004 ABC rounds to 0 at ABC/USDT's step 0.01 on venue"
    assert info.value.code == "amount_below_minimum"
    story = "1% of 0.4 ABC free is 0.004 ABC"
    with pytest.raises(Unprocessable) as info:
        prepare_order(
            book, alert, account="acct", client_order_id="tv1", sizing=Sizing("sell", Decimal("0.004"), story=story)
        )
    assert info.value.message == f"{story}, which rounds to 0 at ABC/USDT's step 0.01 on venue"
    enough = Alert.model_validate({"symbol": "ABCUSDT", "side": "buy", "amount": "0.019"})
    assert prepare_order(book, enough, account="acct", client_order_id="tv1").amount == "0.01"
