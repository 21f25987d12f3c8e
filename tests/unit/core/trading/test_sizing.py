"""The money rules of ``core.trading.sizing``: from an alert's action and amount type to one
order, on core's own markets with a scripted account — exact decimal amounts, the side,
reduce-only, the minimums and the precision, and what is refused or left undone.

Two markets: a spot BTC/USDT (step 0.0001 BTC, tick 0.01, minimum 0.0001 BTC and 5 USDT)
and a linear perpetual BTC/USDT:USDT whose contract is 0.01 BTC (step 1 contract, tick
0.1, minimum 1 contract and 5 USDT).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from core.errors import Unprocessable
from core.pipeline.models import Alert, NothingToDo, OrderRequest
from core.trading.markets import MarketBook
from core.trading.sizing import prepare_alert, show
from core.trading.venue import Market, MarketLimits

SPOT = Market(
    symbol="BTC/USDT",
    id="BTCUSDT",
    base="BTC",
    quote="USDT",
    amount_step=Decimal("0.0001"),
    price_tick=Decimal("0.01"),
    limits=MarketLimits(amount_min=Decimal("0.0001"), cost_min=Decimal(5)),
)
PERP = Market(
    symbol="BTC/USDT:USDT",
    id="BTCUSDT",
    base="BTC",
    quote="USDT",
    type="swap",
    settle="USDT",
    contract=True,
    linear=True,
    contract_size=Decimal("0.01"),
    amount_step=Decimal(1),
    price_tick=Decimal("0.1"),
    limits=MarketLimits(amount_min=Decimal(1), cost_min=Decimal(5)),
)
BOOK = MarketBook("testvenue", [SPOT, PERP])


class Account:
    """An ``AccountReader`` with fixed answers that records what was read."""

    def __init__(
        self,
        *,
        position: str = "0",
        balances: dict[str, tuple[str, str]] | None = None,
        price: str = "50000",
        by_cost: bool = False,
        order_state: str | None = "open",
        open_orders: int = 0,
    ):
        self._position = Decimal(position)
        self._balances = {k: (Decimal(f), Decimal(t)) for k, (f, t) in (balances or {}).items()}
        self._price = Decimal(price)
        self._by_cost = by_cost
        self._order_state = order_state
        self._open_orders = open_orders
        self.reads: list[str] = []

    async def position(self, market: Market) -> Decimal:
        self.reads.append(f"position {market.symbol}")
        return self._position

    async def balance(self, asset: str, market: Market) -> tuple[Decimal, Decimal]:
        self.reads.append(f"balance {asset}")
        return self._balances.get(asset, (Decimal(0), Decimal(0)))

    async def price(self, market: Market) -> Decimal:
        self.reads.append(f"price {market.symbol}")
        return self._price

    def buys_by_cost(self, market: Market) -> bool:
        return self._by_cost

    async def order_state(self, market: Market, order_id: str | None, client_order_id: str | None) -> str | None:
        self.reads.append(f"order {order_id or client_order_id}")
        return self._order_state

    async def open_orders(self, market: Market) -> list[dict[str, Any]]:
        self.reads.append(f"open orders {market.symbol}")
        return [{"id": str(i)} for i in range(self._open_orders)]


async def prepare(account: Account, *, account_leverage: int | None = None, **fields: Any) -> OrderRequest:
    """The order of an alert of ``fields`` on ``account`` (whose default leverage is ``account_leverage``)."""
    fields.setdefault("symbol", "BTC/USDT")
    return await prepare_alert(
        BOOK, Alert(**fields), account, account="acct", client_order_id="tv123", leverage=account_leverage
    )


async def refused(account: Account, **fields: Any) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        await prepare(account, **fields)
    return caught.value


async def nothing(account: Account, **fields: Any) -> str:
    with pytest.raises(NothingToDo) as caught:
        await prepare(account, **fields)
    return str(caught.value)


def sized(order: OrderRequest) -> tuple[Any, ...]:
    return order.side, order.amount, order.cost, order.reduce_only, order.position_before


# ---------------------------------------------------------------- base and quote amounts


async def test_a_base_amount_is_truncated_to_the_step_and_reads_nothing():
    account = Account()
    order = await prepare(account, side="buy", amount="0.12349")
    assert sized(order) == ("buy", "0.1234", None, False, None)
    assert (order.symbol, order.market_type, order.order_type, order.client_order_id) == (
        "BTC/USDT",
        "spot",
        "market",
        "tv123",
    )
    assert account.reads == []


async def test_a_quote_amount_of_a_limit_order_converts_at_the_limit_price():
    account = Account()
    order = await prepare(account, side="buy", amount="1000", amount_type="quote", order_type="limit", price="40000")
    assert sized(order) == ("buy", "0.025", None, False, None)
    assert (order.price, order.reference_price) == ("40000", "40000")
    assert account.reads == []


async def test_a_quote_market_buy_is_sent_as_a_cost_where_the_venue_takes_one():
    order = await prepare(Account(by_cost=True), side="buy", amount="1000.005", amount_type="quote")
    assert sized(order) == ("buy", None, "1000", False, None)  # truncated to the 0.01 tick


async def test_a_quote_market_order_otherwise_converts_at_the_current_price():
    account = Account(price="40000")
    order = await prepare(account, side="sell", amount="1000", amount_type="quote")
    assert sized(order) == ("sell", "0.025", None, False, None)
    assert order.reference_price == "40000"
    assert account.reads == ["price BTC/USDT"]


async def test_a_quote_stop_order_converts_at_the_stop_price():
    order = await prepare(
        Account(), side="buy", amount="100", amount_type="quote", order_type="stop", stop_price="25000"
    )
    assert sized(order) == ("buy", "0.004", None, False, None)
    assert order.stop_price == "25000"


async def test_a_quote_amount_on_derivatives_counts_contracts_of_their_size():
    # 1000 USDT at 50000 is 0.02 BTC: 2 contracts of 0.01 BTC
    order = await prepare(Account(), symbol="BTC/USDT:USDT", side="buy", amount="1000", amount_type="quote")
    assert sized(order) == ("buy", "2", None, False, None)


async def test_no_price_to_convert_at_is_refused():
    error = await refused(Account(price="0"), side="buy", amount="1000", amount_type="quote")
    assert error.code == "no_price"
    assert error.message == "testvenue has no price for BTC/USDT to convert 1000 USDT at"


# ---------------------------------------------------------------- percent of balance


async def test_percent_of_balance_of_a_spot_buy_is_of_the_free_quote_currency():
    account = Account(balances={"USDT": ("1234.56", "2000")})
    order = await prepare(
        account, side="buy", amount="10", amount_type="percent_of_balance", order_type="limit", price="50000"
    )
    # 10% of 1234.56 = 123.456 USDT / 50000 = 0.00246912 BTC, truncated to 0.0024
    assert sized(order) == ("buy", "0.0024", None, False, None)
    assert account.reads == ["balance USDT"]


async def test_percent_of_balance_of_a_spot_sell_is_of_the_free_base_currency():
    account = Account(balances={"BTC": ("0.12345", "0.2")})
    order = await prepare(account, side="sell", amount="50", amount_type="percent_of_balance")
    assert sized(order) == ("sell", "0.0617", None, False, None)  # 0.061725 truncated
    assert account.reads == ["balance BTC"]


async def test_percent_of_balance_on_derivatives_is_of_the_settlement_currency_times_the_leverage():
    account = Account(balances={"USDT": ("1000", "1000")}, price="25000")
    # 10% of 1000 USDT × 5 = 500 USDT at 25000 = 0.02 BTC = 2 contracts
    order = await prepare(
        account, symbol="BTC/USDT:USDT", side="buy", amount="10", amount_type="percent_of_balance", account_leverage=5
    )
    assert sized(order) == ("buy", "2", None, False, None)
    assert order.leverage == 5
    # the alert's leverage wins over the account's: 10% × 10 = 1000 USDT = 4 contracts
    order = await prepare(
        account,
        symbol="BTC/USDT:USDT",
        side="buy",
        amount="10",
        amount_type="percent_of_balance",
        account_leverage=5,
        leverage=10,
    )
    assert sized(order) == ("buy", "4", None, False, None)
    assert order.leverage == 10


async def test_a_refused_percentage_quotes_how_the_amount_was_reached():
    account = Account(balances={"USDT": ("100", "100")})
    error = await refused(
        account, side="buy", amount="1", amount_type="percent_of_balance", order_type="limit", price="50000"
    )
    # 1% of 100 = 1 USDT = 0.00002 BTC: below the 0.0001 minimum
    assert error.code == "amount_below_minimum"
    assert error.message == (
        "1% of 100 USDT free is 1 USDT = 0.00002 BTC at 50000, below the minimum 0.0001 for BTC/USDT on testvenue"
    )


async def test_a_percentage_of_nothing_is_refused():
    error = await refused(Account(), side="buy", amount="10", amount_type="percent_of_balance")
    assert error.code == "amount_below_minimum"
    assert error.message == "10% of 0 USDT free is 0 USDT: nothing to trade"


# ---------------------------------------------------------------- percent of position


async def test_percent_of_a_short_position_bought_back_is_reduce_only():
    account = Account(position="-7")
    order = await prepare(account, symbol="BTC/USDT:USDT", side="buy", amount="50", amount_type="percent_of_position")
    assert sized(order) == ("buy", "3", None, True, "-7")  # 3.5 contracts truncated to the step of 1
    assert account.reads == ["position BTC/USDT:USDT"]


async def test_percent_of_a_position_on_its_own_side_adds_to_it():
    order = await prepare(
        Account(position="4"), symbol="BTC/USDT:USDT", side="buy", amount="50", amount_type="percent_of_position"
    )
    assert sized(order) == ("buy", "2", None, False, "4")


async def test_percent_of_no_position_is_nothing_to_do():
    reason = await nothing(
        Account(), symbol="BTC/USDT:USDT", side="sell", amount="50", amount_type="percent_of_position"
    )
    assert reason == "no position on BTC/USDT:USDT to take 50% of"


async def test_percent_of_a_spot_holding_sells_of_the_free_and_buys_of_the_total():
    account = Account(balances={"BTC": ("0.3", "0.5")})
    order = await prepare(account, side="sell", amount="50", amount_type="percent_of_position")
    assert sized(order) == ("sell", "0.15", None, False, "0.5")
    order = await prepare(account, side="buy", amount="50", amount_type="percent_of_position")
    assert sized(order) == ("buy", "0.25", None, False, "0.5")


# ---------------------------------------------------------------- target


async def test_a_target_across_zero_is_one_order_not_reduce_only():
    order = await prepare(Account(position="3"), symbol="BTC/USDT:USDT", action="target", target_position="-2")
    assert sized(order) == ("sell", "5", None, False, "3")


async def test_a_target_toward_zero_is_reduce_only():
    order = await prepare(Account(position="3"), symbol="BTC/USDT:USDT", action="target", target_position="1")
    assert sized(order) == ("sell", "2", None, True, "3")
    order = await prepare(Account(position="-3"), symbol="BTC/USDT:USDT", action="target", market_position="flat")
    assert sized(order) == ("buy", "3", None, True, "-3")


async def test_a_target_with_market_position_and_amount():
    order = await prepare(
        Account(position="-1"), symbol="BTC/USDT:USDT", action="target", market_position="long", amount="2"
    )
    assert sized(order) == ("buy", "3", None, False, "-1")


async def test_a_target_already_reached_or_within_the_smallest_order_is_nothing_to_do():
    reason = await nothing(Account(position="2"), symbol="BTC/USDT:USDT", action="target", target_position="2")
    assert reason == "position is already 2 contracts long on BTC/USDT:USDT"
    reason = await nothing(Account(position="2"), symbol="BTC/USDT:USDT", action="target", target_position="2.5")
    assert reason == (
        "the position on BTC/USDT:USDT is 2 contracts long, 0.5 contracts from the target 2.5 contracts long: "
        "less than the smallest order (1)"
    )


async def test_a_spot_target_moves_the_holding_and_never_below_zero():
    order = await prepare(Account(balances={"BTC": ("0.1", "0.1")}), action="target", target_position="0.35")
    assert sized(order) == ("buy", "0.25", None, False, "0.1")
    error = await refused(Account(), action="target", target_position="-1")
    assert (error.code, error.message) == (
        "invalid_alert",
        "BTC/USDT is a spot market: the position cannot go short (target -1)",
    )


async def test_a_target_takes_only_base_amounts_and_no_stop_orders():
    error = await refused(Account(), action="target", target_position="1", amount_type="quote")
    assert error.message == "action target takes amount_type base, not quote"
    error = await refused(Account(), action="target", target_position="1", order_type="stop", stop_price="1")
    assert error.message == "action target places a market or limit order, not a stop order"


# ---------------------------------------------------------------- close and flip


async def test_close_sells_a_long_position_reduce_only():
    order = await prepare(Account(position="5"), symbol="BTC/USDT:USDT", action="close")
    assert sized(order) == ("sell", "5", None, True, "5")


async def test_close_a_part_in_base_or_percent_never_more_than_held():
    account = Account(position="-5")
    order = await prepare(
        account, symbol="BTC/USDT:USDT", action="close", amount="40", amount_type="percent_of_position"
    )
    assert sized(order) == ("buy", "2", None, True, "-5")
    order = await prepare(account, symbol="BTC/USDT:USDT", action="close", amount="9")
    assert sized(order) == ("buy", "5", None, True, "-5")


async def test_close_when_flat_is_nothing_to_do():
    assert await nothing(Account(), symbol="BTC/USDT:USDT", action="close") == "no position to close on BTC/USDT:USDT"


async def test_close_on_spot_sells_the_free_holding_and_skips_dust():
    order = await prepare(Account(balances={"BTC": ("0.5", "0.6")}), action="close")
    assert sized(order) == ("sell", "0.5", None, False, "0.5")
    reason = await nothing(Account(balances={"BTC": ("0.00005", "0.00005")}), action="close")
    assert reason == "no position to close on BTC/USDT: 0.00005 BTC free is less than the smallest order (0.0001)"
    # 0.0002 BTC at 10000 is 2 USDT, under the 5 USDT minimum value
    reason = await nothing(Account(balances={"BTC": ("0.0002", "0.0002")}, price="10000"), action="close")
    assert reason == (
        "no position to close on BTC/USDT: 0.0002 BTC is worth 2 USDT, less than the smallest order (5 USDT)"
    )


async def test_close_takes_no_stop_loss():
    error = await refused(Account(position="1"), symbol="BTC/USDT:USDT", action="close", stop_loss="1")
    assert (error.code, error.message) == ("invalid_alert", "action close takes no stop_loss/take_profit")


async def test_flip_reverses_the_position_or_goes_to_the_amount_on_the_other_side():
    order = await prepare(Account(position="3"), symbol="BTC/USDT:USDT", action="flip")
    assert sized(order) == ("sell", "6", None, False, "3")
    order = await prepare(Account(position="-3"), symbol="BTC/USDT:USDT", action="flip", amount="1")
    assert sized(order) == ("buy", "4", None, False, "-3")
    assert await nothing(Account(), symbol="BTC/USDT:USDT", action="flip") == "no position to flip on BTC/USDT:USDT"


async def test_flip_on_spot_is_refused():
    error = await refused(Account(), action="flip")
    assert error.code == "not_supported"


# ---------------------------------------------------------------- minimums, precision, reduce-only


async def test_an_amount_below_the_minimum_is_refused_with_the_numbers():
    error = await refused(Account(), side="buy", amount="0.00005")
    assert (error.code, error.message) == (
        "amount_below_minimum",
        "amount 0.00005 BTC is below the minimum 0.0001 for BTC/USDT on testvenue",
    )


async def test_an_order_worth_less_than_the_minimum_value_is_refused_unless_it_reduces_a_derivative():
    error = await refused(Account(), side="buy", amount="0.0004", order_type="limit", price="10000")
    assert (error.code, error.message) == (
        "cost_below_minimum",
        "order value 4 USDT is below the minimum 5 for BTC/USDT on testvenue",
    )
    # 1 contract of 0.01 BTC at 100 is worth 1 USDT: allowed, because it only reduces
    order = await prepare(
        Account(), symbol="BTC/USDT:USDT", side="sell", amount="1", reduce_only=True, order_type="limit", price="100"
    )
    assert sized(order) == ("sell", "1", None, True, None)
    error = await refused(Account(), symbol="BTC/USDT:USDT", side="sell", amount="1", order_type="limit", price="100")
    assert error.code == "cost_below_minimum"


async def test_a_limit_price_off_the_tick_is_refused_not_rounded():
    error = await refused(Account(), side="buy", amount="0.001", order_type="limit", price="50000.005")
    assert (error.code, error.message) == (
        "price_off_tick",
        "price 50000.005 is not a multiple of the tick 0.01 for BTC/USDT on testvenue",
    )


async def test_reduce_only_and_leverage_are_refused_on_spot():
    error = await refused(Account(), side="sell", amount="0.001", reduce_only=True)
    assert error.code == "not_supported"
    assert error.message.startswith("reduce_only applies to derivatives; BTC/USDT is a spot market")
    error = await refused(Account(), side="buy", amount="0.001", leverage=3)
    assert error.code == "not_supported"


# ---------------------------------------------------------------- cancels


async def test_cancel_an_open_order_and_nothing_to_do_for_a_finished_one():
    account = Account(order_state="open")
    order = await prepare(account, action="cancel", order_id="42")
    assert (order.action, order.cancel_id, order.side, order.amount) == ("cancel", "42", None, None)
    assert account.reads == ["order 42"]
    reason = await nothing(Account(order_state="filled"), action="cancel", order_id="42")
    assert reason == "order 42 on BTC/USDT is already filled"
    error = await refused(Account(order_state=None), action="cancel", cancel_client_order_id="c-1")
    assert (error.code, error.message) == ("order_not_found", "no order with client id c-1 on BTC/USDT at testvenue")


async def test_cancel_all_needs_an_open_order():
    order = await prepare(Account(open_orders=2), action="cancel_all")
    assert order.action == "cancel_all"
    assert await nothing(Account(), action="cancel_all") == "no open orders on BTC/USDT"


# ---------------------------------------------------------------- numbers in messages


@pytest.mark.parametrize(
    ("value", "shown"),
    [("0.00002000", "0.00002"), ("1E+3", "1000"), ("0.1234567890123456", "0.123456789012"), ("-7", "-7")],
)
def test_numbers_in_messages_are_plain_decimals(value, shown):
    assert show(Decimal(value)) == shown
