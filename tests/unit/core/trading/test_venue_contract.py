"""The venue-neutral contract: plugins get a typed host, routes come through a hook, the
order errors and statuses are core's, the market model and its precision, and
reconciliation asks the plugin that placed the order. (That core imports no venue
library nor plugin is checked on the whole import graph: tests/unit/test_import_graph.py.)"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from core.errors import CredentialsRefused, OrderNotSent, OrderRejected, OutcomeUnknown, VenueBusy
from core.hooks.host import JournalReader, PluginHost
from core.hooks.manager import hookimpl
from core.pipeline.models import OrderResult
from core.pipeline.outcomes import classify_exception
from core.store.journal import AdmissionRequest
from core.store.states import GAVE_UP
from core.trading.execution import Executor, child_order_id, client_order_id
from core.trading.markets import MarketBook
from core.trading.venue import Market, MarketLimits, order_status
from tests.scripted_executor import ScriptedExecutor, ScriptedPlugin
from tests.support import MONITOR, ROOT, alert_body, signed_headers
from tests.unit.core.pipeline.test_engine import FAST

# "core imports no venue library and no plugin" is checked with the whole import graph
# (tests/unit/test_import_graph.py).


# ---------------------------------------------------------------- errors and statuses


@pytest.mark.parametrize(
    "error,status,code,state,retry,booked",
    [
        (OrderRejected("refused"), 422, "exchange_rejected", "rejected", False, False),
        (OrderNotSent("refused connection"), 503, "exchange_unreachable", "failed", True, False),
        (VenueBusy("429"), 503, "exchange_busy", "failed", True, False),
        (OutcomeUnknown("timeout"), 202, "outcome_unknown", "unknown", False, True),
        (CredentialsRefused("bad key"), 502, "exchange_auth_failed", "failed", False, False),
    ],
)
def test_each_order_error_says_what_the_router_answers_and_does(error, status, code, state, retry, booked):
    assert (error.status, error.code, error.state, error.retry, error.may_be_booked) == (
        status,
        code,
        state,
        retry,
        booked,
    )
    outcome = classify_exception(error, sent=True, alert_id="a-1")
    assert (outcome.status, outcome.code, outcome.state) == (status, code, state)
    assert ("Retry-After" in outcome.headers) == (status == 503)


def test_an_error_that_is_not_the_routers_after_sending_means_the_order_may_exist():
    for exc in (ConnectionResetError("reset"), TimeoutError(), RuntimeError("bug in a plugin")):
        outcome = classify_exception(exc, sent=True)
        assert (outcome.status, outcome.state) == (202, "unknown"), exc
    assert classify_exception(ConnectionResetError("reset"), sent=False).status == 500  # nothing was sent


def test_order_status_in_the_routers_words():
    assert [
        order_status(w)
        for w in (
            "closed",
            "FILLED",
            "new",
            "accepted",
            "partially_filled",
            "cancelled",
            "expired",
            "rejected",
            None,
            "weird",
        )
    ] == [
        "filled",
        "filled",
        "open",
        "open",
        "partially_filled",
        "canceled",
        "expired",
        "rejected",
        "unknown",
        "unknown",
    ]
    result = OrderResult(account="a", exchange="x", symbol="S", client_order_id="c", status="filled")
    assert result.status == "filled"


async def test_an_executor_without_lookup_cannot_tell_and_never_says_absent():
    class Minimal(Executor):
        async def prepare(self, alert, client_order_id):
            raise NotImplementedError

        async def submit(self, order):
            raise NotImplementedError

    answer = await Minimal("a", "x").lookup(None)  # type: ignore[arg-type]
    assert (answer.kind, answer.ask_again) == ("cannot_tell", False)
    assert not answer.is_absent and not answer.is_found


def test_child_order_ids_are_derived_distinct_and_stable():
    entry = client_order_id("alert-1", "acct")
    assert child_order_id(entry, "sl") == "sl" + entry[2:] and child_order_id(entry, "tp") != child_order_id(
        entry, "sl"
    )
    other = "my-venue-id-123"  # not the router's tv… form: a hash, never a prefix swap onto another order's id
    children = {child_order_id(other, "sl"), child_order_id(other, "tp")}
    assert len(children) == 2 and other not in children and child_order_id(other, "sl") == child_order_id(other, "sl")


# ---------------------------------------------------------------- market model


def test_market_book_precision_and_lookups():
    btc = Market(
        symbol="BTC/USDT",
        id="BTCUSDT",
        base="BTC",
        quote="USDT",
        amount_step=Decimal("0.00001"),
        price_tick=Decimal("0.5"),
        limits=MarketLimits(amount_min=Decimal("0.0001")),
    )
    perp = Market(
        symbol="BTC/USDT:USDT",
        id="BTCUSDT",
        base="BTC",
        quote="USDT",
        type="swap",
        settle="USDT",
        contract=True,
        linear=True,
        amount_step=Decimal("0.001"),
        price_tick=Decimal("0.1"),
    )
    aapl = Market(
        symbol="AAPL",
        id="AAPL",
        base="AAPL",
        quote="USD",
        amount_step=None,
        price_tick=Decimal("0.01"),
        aliases=("NASDAQ:AAPL",),
    )
    book = MarketBook("venue", [btc, perp, aapl])
    assert book.amount_to_precision(btc, "0.0123456") == "0.01234"  # truncated, never rounded up
    assert book.price_to_precision(btc, "100.25") == "100.5" and book.price_to_precision(btc, "100.24") == "100"
    assert book.amount_to_precision(aapl, "1.23456789") == "1.23456789"  # no step known: left as asked
    # The Decimal an order's checks use is the number its text says, digit for digit.
    for market, value in ((btc, "0.0123456"), (btc, "100"), (aapl, "1.23456789"), (aapl, "1" * 40), (btc, "0.000001")):
        assert book.amount_on_step(market, value) == Decimal(book.amount_to_precision(market, value))
    assert book.resolve("BINANCE:BTCUSDT", None, None) is btc
    assert book.resolve("BTCUSDT.P", None, None) is perp
    assert book.resolve("BTCUSDT", None, "swap") is perp
    assert book.resolve("NASDAQ:AAPL", None, None) is aapl and book.resolve("AAPL", None, None) is aapl
    assert (perp.unit, btc.unit) == ("contracts", "BTC")


# ---------------------------------------------------------------- the plugin host and routes


class HostUser:
    """A plugin that uses the host as documented."""

    def __init__(self) -> None:
        self.host = None

    @hookimpl
    def router_startup(self, router) -> None:
        self.host = router
        router.register_secret("host-registered-secret-value")
        router.plugin_state("host_user")["started"] = True
        router.logger("host_user").warning("leaking host-registered-secret-value into a log line")

    @hookimpl
    def register_routes(self, register, router) -> None:
        async def hello():
            return {"plugin": "host_user", "started": router.plugin_state("host_user").get("started")}

        register("/hello", hello)


async def test_plugins_get_a_typed_host_and_serve_routes_through_the_hook(app_client, caplog):
    plugin = HostUser()
    async with app_client(extra_plugins=[("host_user", plugin)]) as (client, app):
        response = await client.get("/hello")
        assert response.status_code == 200 and await response.get_json() == {"plugin": "host_user", "started": True}
        assert (await client.get("/metrics", headers=MONITOR)).status_code == 200  # the router's own routes still serve
    host = plugin.host
    assert isinstance(host, PluginHost) and isinstance(host.journal, (JournalReader, type(None)))
    assert host.data_dir.is_dir() and host.config_path.name == "plugins.yaml"
    lines = [r.getMessage() for r in caplog.records if r.name == "plugins.host_user"]
    assert lines and all("host-registered-secret-value" not in line for line in lines)


async def test_a_route_registered_twice_or_over_the_routers_own_stops_startup(app_client):
    class Taker:
        def __init__(self, path: str):
            self.path = path

        @hookimpl
        def register_routes(self, register) -> None:
            async def view():
                return {}

            register(self.path, view)

    with pytest.raises(Exception, match="register_routes: /mine is already registered by plugin '(first|second)'"):
        async with app_client(extra_plugins=[("first", Taker("/mine")), ("second", Taker("/mine"))]):
            pass
    with pytest.raises(Exception, match="plugin 'grabby': register_routes: /webhook is one of the router's own routes"):
        async with app_client(extra_plugins=[("grabby", Taker("/webhook"))]):
            pass


# ---------------------------------------------------------------- reconciliation asks the placer


class RoutesElsewhere:
    """Claims every order in execute_order and places it on another executor (e.g. a
    hedging account); with ``lookup`` it also implements lookup_order for those orders."""

    def __init__(self, target: ScriptedExecutor):
        self.target = target

    @hookimpl
    async def execute_order(self, order):
        return await self.target.submit(order)


class RoutesElsewhereAndLooksUp(RoutesElsewhere):
    @hookimpl
    async def lookup_order(self, order):
        return await self.target.lookup(order)


async def post(client, **fields):
    body = alert_body(account="script", **fields)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    return response.status_code, await response.get_json()


@pytest.mark.parametrize("implements_lookup", [True, False])
async def test_reconciliation_asks_the_plugin_that_placed_the_order(app_client, write_plugins_yaml, implements_lookup):
    write_plugins_yaml(FAST.format(budget=1.0, resubmit_after=0.2))
    routed, elsewhere = ScriptedExecutor("script"), ScriptedExecutor("elsewhere")
    elsewhere.script = [("book_then_raise", ConnectionResetError("reply lost"))]
    router_plugin = (RoutesElsewhereAndLooksUp if implements_lookup else RoutesElsewhere)(elsewhere)
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(routed)), ("hedger", router_plugin)]) as (
        client,
        app,
    ):
        await post(client, id=f"routed-{implements_lookup}")
        task = app.extensions["router"].engine.inflight.get(f"routed-{implements_lookup}")
        if task:
            await task
        await app.extensions["router"].engine.writes.settled()  # the outcome is written after the answer
        row = await app.extensions["router"].journal.get(f"routed-{implements_lookup}")
    assert (
        routed.lookups == 0 and not routed.calls
    )  # the account's own executor was never asked: it never had the order
    assert len(elsewhere.calls) == 1 and len(elsewhere.booked) == 1
    assert row["orders"][0]["response"] == {"placed_by": "hedger"}
    if implements_lookup:
        assert row["state"] == "reconciled" and elsewhere.lookups >= 1
    else:
        assert (row["state"], row["error_code"]) == ("unknown", GAVE_UP)
        assert "implements no lookup_order" in row["error_message"]


# ---------------------------------------------------------------- docs that cannot go stale


def test_the_hook_docs_name_every_hook_and_the_guide_every_promise():
    from core.hooks import specs as hookspecs
    from core.testing import CASES

    hooks_doc = (ROOT / "docs" / "plugins" / "hooks.md").read_text()
    guide = (ROOT / "docs" / "plugins" / "execution.md").read_text()
    specs = [name for name, fn in vars(hookspecs).items() if hasattr(fn, f"{hookspecs.PROJECT}_spec")]
    assert [name for name in specs if f"`{name}(" not in hooks_doc] == []
    for term in (
        "OrderRejected",
        "OrderNotSent",
        "VenueBusy",
        "OutcomeUnknown",
        "CredentialsRefused",
        "NothingToDo",
        "LookupResult.found",
        "LookupResult.absent",
        "LookupResult.cannot_tell",
        "lookup_order",
        "child_order_id",
        "order_status",
        "lane_key",
        "matches_exchange",
        "route",
        "register_secret",
        "start()",
        "concurrently",
        "MarketBook",
        "core.testing",
        "example_executor.py",
    ):
        assert term in guide, term
    from core.testing import conformance

    assert [case for case in CASES if f"``{case}``" not in (conformance.__doc__ or "")] == []
    phrases = {
        "lost_reply_after_booking": "lost reply after booking",
        "timeout_before_sending": "timeout before sending",
        "rejection": "rejection",
        "rate_limited": "rate limiting",
        "crash_between_send_and_journal": "crash between send and journal",
        "crash_before_send": "crash before sending",
        "cancel_of_unknown_order": "cancel of an unknown order",
        "resend_of_the_same_alert": "resends of the same alert",
        "duplicate_client_order_id": "duplicate client\norder id",
    }
    assert set(phrases) == set(CASES)
    assert [c for c, phrase in phrases.items() if phrase.replace("\n", " ") not in guide.replace("\n", " ")] == []


async def test_closing_dust_on_a_market_without_a_minimum_is_nothing_to_do():
    """A venue may publish no minimum order (None): the refusal still reads as a number."""
    from core.pipeline.models import Alert, NothingToDo
    from core.trading.sizing import prepare_alert

    stock = Market(
        symbol="AAPL", id="AAPL", base="AAPL", quote="USD", amount_step=Decimal("1"), price_tick=Decimal("0.01")
    )

    class Holding:  # an AccountReader holding a fraction of a share
        async def balance(self, asset, market):
            return Decimal("0.4"), Decimal("0.4")

    with pytest.raises(NothingToDo, match=r"0\.4 AAPL free is less than the smallest order \(0\)"):
        await prepare_alert(
            MarketBook("broker", [stock]),
            Alert(symbol="AAPL", action="close"),
            Holding(),
            account="a",
            client_order_id="tv" + "1" * 30,
        )


async def test_after_a_crash_mid_send_an_absent_from_the_executor_is_not_trusted_while_a_plugin_may_have_placed_it(
    app_client, write_plugins_yaml
):
    """The journal does not say who placed the order (the worker died mid-send) and a
    plugin claims orders without a lookup_order: the executor's "absent" proves nothing."""
    import hashlib
    import time

    from core.pipeline.models import Alert

    write_plugins_yaml(FAST.format(budget=1.0, resubmit_after=0.1))
    routed, elsewhere = ScriptedExecutor("script"), ScriptedExecutor("elsewhere")
    async with app_client(
        extra_plugins=[("scripted", ScriptedPlugin(routed)), ("hedger", RoutesElsewhere(elsewhere))]
    ) as (client, app):
        router = app.extensions["router"]
        alert = Alert(
            alert_id="crashed-1",
            account="script",
            symbol="BTCUSDT",
            side="buy",
            amount="0.001",
            price="50000",
            received_at=time.time(),
        )
        order = await routed.prepare(alert, client_order_id("crashed-1", "script"))
        await router.journal.heartbeat("dead-worker")
        await router.journal.admit(
            AdmissionRequest(
                explicit_id="crashed-1",
                body_hash=hashlib.sha256(b"crashed-1").hexdigest(),
                received_at=alert.received_at,
                dedup_window=60,
                principal="hmac",
                account="script",
                symbol="BTCUSDT",
                side="buy",
                amount="0.001",
                payload=alert.model_dump(mode="json", exclude={"credentials"}),
                owner="dead-worker",
                lane="script|BTC/USDT",
            )
        )
        await router.journal.order_started(
            "crashed-1",
            client_order_id=order.client_order_id,
            account="script",
            exchange="scripted",
            route="rest",
            request=order.model_dump(mode="json"),
        )
        await elsewhere.submit(order)  # the hedger had placed it when the worker died
        deadline = time.monotonic() + 10
        row = {}
        while time.monotonic() < deadline:
            row = await router.journal.get("crashed-1")
            if row["state"] == "unknown" and row["error_code"] == GAVE_UP:
                break
            await asyncio.sleep(0.02)  # recovery runs in the background: poll the journal, bounded
    assert (row["state"], row["error_code"]) == ("unknown", GAVE_UP), row
    assert "plugin(s) hedger" in row["error_message"]
    assert routed.lookups >= 1 and len(elsewhere.booked) == 1 and len(elsewhere.calls) == 1 and not routed.calls


def test_an_order_result_speaks_the_routers_words_whatever_the_plugin_wrote():
    """A plugin that copies its client's word (ccxt's "closed") still reports "filled", so the
    alert is journaled filled, not submitted."""

    def result(status: str) -> OrderResult:
        return OrderResult(account="a", exchange="x", symbol="S", client_order_id="c", status=status)

    assert [result(w).status for w in ("closed", "filled", "NEW", "Cancelled", "pending_cancel", "nonsense")] == [
        "filled",
        "filled",
        "open",
        "canceled",
        "open",
        "unknown",
    ]
