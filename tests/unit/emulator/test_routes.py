"""The venues' route tables and the pieces they share, pinned without a server: the Binance
WebSocket API methods derived from the REST table, the HTML pages Bybit's and Alpaca's
gateways answer, the symbol lookup and the instrument catalogue's defaults."""

from __future__ import annotations

import pytest

from emulator import binance_render as R
from emulator import faults as F
from emulator.alpaca import AlpacaVenue
from emulator.binance import BinanceVenue
from emulator.binance_ws import BinanceWsApi
from emulator.bybit import BybitVenue
from emulator.dispatch import CallRunner, Endpoint, RequestContext, VenueError, order_summary
from emulator.faults import Call, Fault
from emulator.markets import BINANCE, BYBIT, LINEAR, SPOT, D, default_markets
from emulator.state import ExchangeState, Order


async def _no_sleep(seconds: float) -> None:
    return None


@pytest.fixture
def state() -> ExchangeState:
    return ExchangeState()


def test_binance_websocket_methods_are_the_rest_handlers_under_their_ws_names(state):
    venue = BinanceVenue(state)
    runner = CallRunner(state, _no_sleep)
    spot, usdm = BinanceWsApi(venue, runner, SPOT), BinanceWsApi(venue, runner, LINEAR)
    assert spot.methods == {
        "ping": (spot._ping, F.PUBLIC, False),
        "time": (spot._time, F.PUBLIC, False),
        "order.place": (venue.spot_new_order, F.PLACE, True),
        "order.cancel": (venue.spot_cancel_order, F.CANCEL, True),
        "order.status": (venue.spot_query_order, F.STATUS, True),
        "openOrders.status": (venue.spot_open_orders, F.QUERY, True),
        "openOrders.cancelAll": (venue.spot_cancel_all, F.CANCEL, True),
        "allOrders": (venue.spot_all_orders, F.QUERY, True),
        "account.status": (venue.spot_account, F.QUERY, True),
    }
    assert usdm.methods == {
        "ping": (usdm._ping, F.PUBLIC, False),
        "time": (usdm._time, F.PUBLIC, False),
        "order.place": (venue.futures_new_order, F.PLACE, True),
        "order.cancel": (venue.futures_cancel_order, F.CANCEL, True),
        "order.status": (venue.futures_query_order, F.STATUS, True),
        "algoOrder.place": (venue.futures_new_algo_order, F.PLACE, True),
        "algoOrder.cancel": (venue.futures_cancel_algo, F.CANCEL, True),
        "account.position": (venue.futures_position_risk_v3, F.QUERY, True),
        "account.balance": (venue.futures_balance, F.QUERY, True),
        "account.status": (venue.futures_account_v3, F.QUERY, True),
    }


def test_every_venue_route_is_mounted_once_under_its_prefix(state):
    seen = set()
    for venue in (BinanceVenue(state), BybitVenue(state), AlpacaVenue(state)):
        for endpoint in venue.endpoints():
            route = (endpoint.method, venue.prefix + endpoint.path)
            assert route not in seen
            seen.add(route)
    assert ("POST", "/api/v3/order") in seen
    assert ("POST", "/bybit/v5/order/create") in seen
    assert ("DELETE", "/alpaca/v2/orders/{order_id}") in seen


def test_fault_matching_aliases_name_the_venue():
    async def handler(ctx: RequestContext):
        raise AssertionError

    assert Endpoint("POST", "/v5/order/create", handler, F.PLACE, alias="order.create").aliases(BYBIT) == (
        "bybit order.create",
    )
    assert Endpoint("POST", "/api/v3/order", handler, F.PLACE).aliases(BINANCE) == ()


@pytest.mark.parametrize("venue_class", [BybitVenue, AlpacaVenue])
def test_bybit_and_alpaca_gateways_answer_bare_html_pages(state, venue_class):
    venue = venue_class(state)
    ctx = RequestContext(call=Call(venue=venue.venue, route="GET /x", action=F.QUERY), params={})
    failed = venue.fault_reply(Fault(id=1, kind=F.HTTP_ERROR, status=502), ctx)
    assert (failed.status, failed.body) == (502, "<html><body><h1>502</h1></body></html>")
    down = venue.down_reply(Fault(id=2, kind=F.DOWN), ctx)
    assert (down.status, down.body) == (503, "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>")


def test_symbol_lookup_refuses_in_each_venues_words(state):
    binance, bybit = BinanceVenue(state), BybitVenue(state)
    assert binance._market(SPOT, {"symbol": "btcusdt"}).book == "binance.spot"
    assert binance._market(LINEAR, {}, required=False) is None
    with pytest.raises(VenueError) as missing:
        binance._market(SPOT, {})
    with pytest.raises(VenueError) as unknown:
        binance._market(SPOT, {"symbol": "NOPE"})
    assert (missing.value.code, unknown.value.code) == (-1102, -1121)
    assert missing.value.reply.body["msg"] == (
        "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
    )
    with pytest.raises(VenueError) as refused:
        bybit._market(LINEAR, {"symbol": "NOPE"})
    assert (refused.value.code, refused.value.message) == (10001, "params error: symbol invalid")


def test_catalogue_defaults_min_price_and_quantity_to_one_tick_and_step():
    markets = {(m.book, m.symbol): m for m in default_markets()}
    spot = markets[("binance.spot", "BTCUSDT")]
    assert (spot.min_price, spot.min_qty, spot.max_qty, spot.market_max_qty) == (D("0.01"), D("0.00001"), 9000, 120)
    usdm = markets[("binance.linear", "BTCUSDT")]
    assert (usdm.min_price, usdm.market_step_size, usdm.market_min_qty) == (D("261.10"), D("0.001"), D("0.001"))
    assert (usdm.taker_fee, usdm.maker_fee) == (D("0.0005"), D("0.0002"))
    bybit_spot = markets[("bybit.spot", "BTCUSDT")]
    assert (bybit_spot.min_qty, bybit_spot.market_max_qty) == (D("0.000048"), D("71.73956243"))
    assert bybit_spot.market_step_size == 0
    assert markets[("bybit.linear", "ETHUSDT")].max_leverage == 100


def test_placement_log_reads_each_field_from_the_first_parameter_with_a_value(state):
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "", "quoteOrderQty": "100"}
    assert order_summary(params, BinanceVenue.order_log_params) == {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "MARKET",
        "quantity": "100",
        "price": None,
        "client_order_id": None,
    }
    bybit = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01"}
    assert order_summary({**bybit, "price": "50000", "orderLinkId": "x"}, BybitVenue.order_log_params) == {
        "symbol": "BTCUSDT",
        "side": "Buy",
        "type": "Limit",
        "quantity": "0.01",
        "price": "50000",
        "client_order_id": "x",
    }
    assert list(order_summary({}, AlpacaVenue.order_log_params)) == [
        "symbol",
        "side",
        "type",
        "quantity",
        "notional",
        "price",
        "stop_price",
        "time_in_force",
        "extended_hours",
        "order_class",
        "take_profit",
        "stop_loss",
        "client_order_id",
    ]


def test_binance_spot_placement_and_cancel_answers_keep_their_field_order():
    # venue, market type, account, symbol, side, type, execution, quantity, price
    order = Order(BINANCE, SPOT, "k", "BTCUSDT", "BUY", "STOP_LOSS_LIMIT", "limit", D("0.01"), D("50000"))
    order.order_id, order.trigger_price = "7", D("49000")
    state_fields = ["price", "origQty", "executedQty", "origQuoteOrderQty", "cummulativeQuoteQty", "status"]
    state_fields += ["timeInForce", "type", "side", "stopPrice"]
    head = ["symbol", "orderId", "orderListId", "clientOrderId", "transactTime"]
    assert list(R.spot_order_result(order, "RESULT")) == head + state_fields + [
        "workingTime",
        "selfTradePreventionMode",
    ]
    assert list(R.spot_cancel_result(order, "c")) == [
        "symbol",
        "origClientOrderId",
        "orderId",
        "orderListId",
        "clientOrderId",
        "transactTime",
        *state_fields,
        "selfTradePreventionMode",
    ]
    assert R.spot_cancel_result(order, "c")["stopPrice"] == "49000.00000000"
