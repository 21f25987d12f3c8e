"""One test per hook (``test_hook_<name>``): each drives the real app (``create_app``, the
real pipeline, journal and built-in plugins) with a small plugin of its own and checks
the hook's contract as core/hooks/specs.py states it: when it is called, with what, and
what its return value (or exception) does. ``test_hookspecs.py`` fails when a hook has no
test here or no section in docs/plugins/hooks.md."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from core.errors import OrderRejected, RiskLimitExceeded, Unprocessable
from core.hooks.host import PluginHost
from core.hooks.manager import hookimpl
from core.pipeline.models import AuthResult, Credentials, InboundRequest, OrderRequest, OrderResult
from core.trading.execution import LookupResult
from core.web.app import control_signature_message
from tests.scripted_executor import ScriptedExecutor, ScriptedPlugin
from tests.support import MONITOR, alert_body, signed_headers
from tests.unit.core.pipeline.test_engine import FAST


async def post(client, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    response = await client.post("/webhook", data=body, headers=signed_headers(body) if headers is None else headers)
    return response.status_code, await response.get_json()


async def settle(app, alert_id: str) -> dict:
    """The alert's journal row once its execution (and any reconciliation) has finished."""
    router = app.extensions["router"]
    task = router.engine.inflight.get(alert_id)
    if task is not None:
        await task
    await router.engine.writes.settled()  # the outcome is written after the answer
    return await router.journal.get(alert_id)


def scripted_account(account: str = "script") -> tuple[ScriptedExecutor, ScriptedPlugin]:
    executor = ScriptedExecutor(account)
    return executor, ScriptedPlugin(executor)


# ---------------------------------------------------------------- startup


async def test_hook_register_executors(app_client):
    class StartsOrFails(ScriptedExecutor):
        def __init__(self, account: str, fail: bool):
            super().__init__(account)
            self.fail = fail
            self.starts = 0

        async def start(self) -> None:
            self.starts += 1
            if self.fail:
                raise ConnectionError("venue unreachable")

    class Accounts:
        def __init__(self) -> None:
            self.calls: list[tuple[object, object]] = []
            self.good = StartsOrFails("good", fail=False)
            self.down = StartsOrFails("down", fail=True)

        @hookimpl
        def register_executors(self, register, router):
            self.calls.append((register, router))
            register("good", self.good)
            register("down", self.down)

    plugin = Accounts()
    async with app_client(extra_plugins=[("accounts", plugin)]) as (client, app):
        assert len(plugin.calls) == 1 and isinstance(plugin.calls[0][1], PluginHost)  # once, at startup
        assert plugin.good.starts == plugin.down.starts == 1  # every executor started once
        health = await (await client.get("/", headers=MONITOR)).get_json()
        assert health["accounts"]["good"]["ready"] is True
        down = health["accounts"]["down"]
        assert down["ready"] is False and "venue unreachable" in down["error"]
        status, answer = await post(client, alert_body(account="good", id="reg-good"))
        assert status == 200 and answer["order"]["account"] == "good", answer  # the registered executor trades
        status, answer = await post(client, alert_body(account="down", id="reg-down"))
        assert status == 503 and answer["error"]["code"] == "account_not_ready", answer
        assert plugin.down.calls == []  # a not-ready account is never sent an order

    class Same:
        @hookimpl
        def register_executors(self, register):
            register("good", ScriptedExecutor("good"))

    with pytest.raises(Exception, match="account 'good' is registered by two plugins: '(accounts|same)' and"):
        async with app_client(extra_plugins=[("accounts", Accounts()), ("same", Same())]):
            pass


async def test_hook_register_routes(app_client):
    order: list[str] = []

    class Page:
        @hookimpl
        def register_routes(self, register, router):
            order.append("register_routes")
            assert isinstance(router, PluginHost)

            async def hello():
                return {"hello": "world"}

            async def echo():
                from quart import request

                return {"echo": (await request.get_json())["x"]}, 201

            register("/hello", hello)
            register("/echo", echo, methods=("POST",))

        @hookimpl
        def register_executors(self):
            order.append("register_executors")

        @hookimpl
        def router_startup(self):
            order.append("router_startup")

    async with app_client(extra_plugins=[("page", Page())]) as (client, _app):
        assert order == ["register_routes", "register_executors", "router_startup"]  # routes first, once
        assert await (await client.get("/hello")).get_json() == {"hello": "world"}
        echoed = await client.post("/echo", json={"x": 7})
        assert echoed.status_code == 201 and await echoed.get_json() == {"echo": 7}
        assert (await client.post("/hello")).status_code == 405  # only the methods registered

    class Grabs:
        @hookimpl
        def register_routes(self, register):
            async def view():
                return {}

            register("/metrics", view)

    with pytest.raises(Exception, match="plugin 'grabs': register_routes: /metrics is one of the router's own"):
        async with app_client(extra_plugins=[("grabs", Grabs())]):
            pass


async def test_hook_router_startup(app_client):
    executor, accounts = scripted_account()

    class Opens:
        def __init__(self) -> None:
            self.seen: list[dict] = []

        @hookimpl
        async def router_startup(self, router):
            self.seen.append(
                {
                    "host": isinstance(router, PluginHost),
                    "account_ready": executor.ready,  # executors are started before
                    "journal": router.journal is not None,
                }
            )
            router.plugin_state("opens")["resource"] = "open"

    plugin = Opens()
    async with app_client(extra_plugins=[("accounts", accounts), ("opens", plugin)]) as (client, app):
        assert plugin.seen == [{"host": True, "account_ready": True, "journal": True}]  # once, awaited
        assert app.extensions["router"].plugin_state("opens") == {"resource": "open"}
        status, _ = await post(client, alert_body(account="script", id="after-startup"))
        assert status == 200

    class Broken:
        @hookimpl
        def router_startup(self):
            raise RuntimeError("cannot open my store")

    with pytest.raises(Exception, match="plugin 'broken'.*cannot open my store"):
        async with app_client(extra_plugins=[("broken", Broken())]):
            pass


# ---------------------------------------------------------------- per alert, in pipeline order


async def test_hook_parse_payload(app_client):
    class FormParser:
        def __init__(self) -> None:
            self.calls: list[tuple[bytes, str]] = []

        @hookimpl
        def parse_payload(self, body, content_type, router):
            self.calls.append((body, content_type))
            if content_type != "application/x-www-form-urlencoded":
                return None  # pass: the built-in JSON parser takes it
            return dict(pair.split("=", 1) for pair in body.decode().split("&"))

    plugin = FormParser()
    async with app_client(extra_plugins=[("form", plugin)]) as (client, _app):
        form = b"symbol=BTCUSDT&side=buy&amount=0.001&id=form-1"
        headers = signed_headers(form) | {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        status, answer = await post(client, form, headers)
        assert status == 200 and answer["order"]["amount"] == "0.001", answer  # the claimed dict is the alert
        assert plugin.calls == [(form, "application/x-www-form-urlencoded")]  # raw bytes, media type only

        as_json = alert_body(id="json-1")
        status, _ = await post(client, as_json)
        assert status == 200  # None passed the body on to the built-in parser
        assert plugin.calls[-1] == (as_json, "application/json")

        status, answer = await post(client, b"not json", signed_headers(b"not json"))
        assert status == 400, answer  # nobody claimed it: the built-in refuses it

        unsigned = len(plugin.calls)
        response = await client.post(
            "/webhook", data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert response.status_code == 401 and len(plugin.calls) == unsigned  # never parsed before authentication


async def test_hook_authenticate(app_client):
    class Gatekeeper:
        def __init__(self) -> None:
            self.requests: list[tuple[InboundRequest, dict]] = []

        @hookimpl
        def authenticate(self, request, router):
            self.requests.append((request, dict(request.payload)))
            if request.headers.get("x-banned"):
                return AuthResult.reject("banned bot", status=403)
            if request.headers.get("x-bot-key") == "letmein":
                return AuthResult.accept("bot")
            return None  # abstain

    plugin = Gatekeeper()
    async with app_client(extra_plugins=[("gate", plugin)]) as (client, app):
        body = alert_body(id="signed-1")
        status, _ = await post(client, body)
        assert status == 200  # HMAC accepted, the plugin abstained
        request, payload_then = plugin.requests[-1]
        assert request.body == body and payload_then == {}  # the raw body, before it is parsed

        body = alert_body(id="banned-1")
        status, answer = await post(client, body, signed_headers(body) | {"X-Banned": "1"})
        assert status == 403, answer  # a rejection wins over HMAC's acceptance, with its status
        assert await app.extensions["router"].journal.get("banned-1") is None  # nothing journaled

        body = alert_body(id="bot-1")
        status, answer = await post(client, body, {"Content-Type": "application/json", "X-Bot-Key": "letmein"})
        assert status == 200, answer  # the plugin's acceptance alone authenticates
        assert answer["alert_id"].endswith("bot-1")

        body = alert_body(id="nobody-1")
        refused = await client.post("/webhook", data=body, headers={"Content-Type": "application/json"})
        assert refused.status_code == 401  # everyone abstained
        wrong_key = await client.post(
            "/webhook", data=body, headers={"Content-Type": "application/json", "X-Bot-Key": "guess"}
        )
        assert await wrong_key.get_json() == await refused.get_json()  # one 401 body, whatever the reason
    assert len(plugin.requests) == 5  # every implementation is called for every request


async def test_hook_transform_payload(app_client):
    class Halver:
        def __init__(self) -> None:
            self.seen: list[dict] = []

        @hookimpl
        def transform_payload(self, payload, request, router):
            self.seen.append(dict(payload))
            if payload.get("symbol") == "FORBIDDEN":
                raise Unprocessable("field 'symbol': this symbol is not traded here")
            payload["amount"] = str(Decimal(payload["amount"]) / 2)
            assert isinstance(request, InboundRequest)

    plugin = Halver()
    async with app_client(extra_plugins=[("halver", plugin)]) as (client, _app):
        status, answer = await post(client, alert_body(id="half-1", side="BUY", amount="0.004"))
        assert status == 200 and answer["order"]["amount"] == "0.002", answer  # the change reached the order
        assert plugin.seen[0]["side"] == "buy"  # the built-in TradingView normalization ran first

        status, answer = await post(client, alert_body(id="forbidden-1", symbol="FORBIDDEN"))
        assert status == 422 and "field 'symbol'" in answer["error"]["message"], answer


async def test_hook_executor_for_credentials(app_client, write_plugins_yaml):
    write_plugins_yaml("router:\n  allow_payload_credentials: true\n")

    class Venue:
        def __init__(self) -> None:
            self.calls: list[tuple[str, Credentials]] = []
            self.executor = ScriptedExecutor("venuex")
            self.executor.ready = True  # what the hook returns is already started

        @hookimpl
        def executor_for_credentials(self, exchange, credentials, router):
            self.calls.append((exchange, credentials))
            return self.executor if exchange == "venuex" else None

    plugin = Venue()
    async with app_client(extra_plugins=[("venue", plugin)]) as (client, _app):
        status, _ = await post(client, alert_body(id="plain-1"))
        assert status == 200 and plugin.calls == []  # only alerts that carry keys

        status, _ = await post(client, alert_body(id="paper-keys", exchange="paper", apiKey="k" * 12, secret="s" * 12))
        assert status == 200 and plugin.calls == []  # paper trading ignores keys

        body = alert_body(id="keys-1", exchange="VenueX", apiKey="key-123456", secret="secret-123456")
        status, answer = await post(client, body)
        assert status == 200, answer
        exchange, credentials = plugin.calls[-1]
        assert exchange == "venuex"  # lower-case
        assert credentials.api_key.get_secret_value() == "key-123456"  # wrapped secret values
        assert "secret-123456" not in repr(credentials)
        assert [o.client_order_id for o in plugin.executor.calls] == [answer["order"]["client_order_id"]]

        body = alert_body(id="keys-2", exchange="elsewhere", apiKey="key-123456", secret="secret-123456")
        status, answer = await post(client, body)
        assert status == 422 and answer["error"]["code"] == "unknown_exchange", answer  # nobody provided one


async def test_hook_check_risk(app_client, write_plugins_yaml):
    write_plugins_yaml(FAST.format(budget=1.0, resubmit_after=0.2))
    executor, accounts = scripted_account()

    class Cap:
        def __init__(self) -> None:
            self.calls: list[dict] = []

        @hookimpl
        def check_risk(self, alert, order, executor, reducing, router):
            self.calls.append({"alert": alert, "order": order, "executor": executor, "reducing": reducing})
            if not reducing and Decimal(order.amount) > Decimal("0.01"):
                raise RiskLimitExceeded("max_amount", "amount 0.02 is over the cap 0.01", value="0.01", figure="0.02")

    class Watcher:
        def __init__(self) -> None:
            self.errors: list[tuple[str, str]] = []

        @hookimpl
        def on_error(self, alert, error, state):
            self.errors.append((alert.alert_id, state, type(error).__name__))

    cap, watcher = Cap(), Watcher()
    plugins = [("accounts", accounts), ("cap", cap), ("watcher", watcher)]
    async with app_client(extra_plugins=plugins) as (client, app):
        status, answer = await post(client, alert_body(account="script", id="small", amount="0.005"))
        assert status == 200, answer
        call = cap.calls[-1]
        assert call["executor"] is executor and call["reducing"] is False
        assert isinstance(call["order"], OrderRequest) and call["order"].amount == "0.005"  # prepared, before sending

        status, answer = await post(client, alert_body(account="script", id="big", amount="0.02"))
        assert status == 422 and answer["error"]["code"] == "risk_limit" and answer["error"]["limit"] == "max_amount"
        assert len(executor.calls) == 1  # nothing sent for the refused order
        assert (await settle(app, "big"))["state"] == "refused"
        assert watcher.errors == [("big", "refused", "RiskLimitExceeded")]

        reducing = alert_body(
            account="script", id="big-reduce", symbol="BTC/USDT:USDT", amount="0.02", reduce_only=True
        )
        status, answer = await post(client, reducing)
        assert status == 200, answer  # called with reducing=True: the plugin lets it through
        assert cap.calls[-1]["reducing"] is True


async def test_hook_describe_risk_limits(app_client):
    executor, accounts = scripted_account()

    class Describes:
        def __init__(self) -> None:
            self.accounts: list[str] = []

        @hookimpl
        def describe_risk_limits(self, account, router):
            self.accounts.append(account)
            return [{"limit": "max_amount", "value": "0.01", "source": "cap", "used": None}]

    class SaysNothing:
        @hookimpl
        def describe_risk_limits(self, account):
            return None

    plugin = Describes()
    async with app_client(extra_plugins=[("accounts", accounts), ("cap", plugin), ("quiet", SaysNothing())]) as (
        client,
        _app,
    ):
        status, _ = await post(client, alert_body(account="script", id="no-describe"))
        assert status == 200 and plugin.accounts == []  # never on an alert's path
        response = await client.post(
            "/control/status", data=b"", headers=signed_headers(control_signature_message("status", b""))
        )
        assert response.status_code == 200
        limits = (await response.get_json())["limits"]
    assert sorted(plugin.accounts) == sorted(limits) and "script" in limits  # once per configured account
    assert {"limit": "max_amount", "value": "0.01", "source": "cap", "used": None} in limits["script"]
    assert all(isinstance(item, dict) for items in limits.values() for item in items)  # None adds nothing


async def test_hook_execute_order(app_client):
    executor, accounts = scripted_account()

    class DryRun:
        def __init__(self) -> None:
            self.calls: list[dict] = []

        @hookimpl
        def execute_order(self, order, executor, alert, router):
            self.calls.append({"order": order, "executor": executor, "alert": alert})
            if alert.raw.get("dry_run"):
                return OrderResult(
                    account=order.account,
                    exchange=order.exchange,
                    symbol=order.symbol,
                    side=order.side,
                    order_type=order.order_type,
                    amount=order.amount,
                    order_id="dry-1",
                    client_order_id=order.client_order_id,
                    status="filled",
                    filled=order.amount,
                    route="dry-run",
                )
            return None  # pass: the built-in sends it through the executor

    plugin = DryRun()
    async with app_client(extra_plugins=[("accounts", accounts), ("dry", plugin)]) as (client, app):
        status, answer = await post(client, alert_body(account="script", id="dry", dry_run=True))
        assert status == 200 and answer["order"]["order_id"] == "dry-1", answer  # the first non-None wins
        assert executor.calls == []  # the built-in was not called
        assert plugin.calls[-1]["executor"] is executor and plugin.calls[-1]["alert"].alert_id == "dry"
        row = await settle(app, "dry")
        assert row["state"] == "filled" and "dry-1" in json.dumps(row["orders"]), row  # journaled as its result

        status, answer = await post(client, alert_body(account="script", id="real"))
        assert status == 200 and len(executor.calls) == 1, answer  # None: the executor's submit placed it


async def test_hook_lookup_order(app_client, write_plugins_yaml):
    write_plugins_yaml(FAST.format(budget=1.0, resubmit_after=0.2))
    executor, accounts = scripted_account()

    class Claims:
        """Claims orders marked ``route_to`` with its own name; its send's reply is lost."""

        def __init__(self, name: str, answers: bool):
            self.name = name
            self.answers = answers
            self.lookups: list[dict] = []
            self.booked: dict[str, OrderResult] = {}

        def execute_order(self, order, alert):
            if alert.raw.get("route_to") != self.name:
                return None
            self.booked[order.client_order_id] = OrderResult(
                account=order.account,
                exchange=order.exchange,
                symbol=order.symbol,
                side=order.side,
                amount=order.amount,
                order_id=f"{self.name}-1",
                client_order_id=order.client_order_id,
                status="filled",
                filled=order.amount,
            )
            raise ConnectionResetError("the reply was lost")  # placed, but the outcome is unknown

    class Looks(Claims):
        @hookimpl
        def execute_order(self, order, alert):
            return super().execute_order(order, alert)

        @hookimpl
        def lookup_order(self, order, executor, alert, router):
            self.lookups.append({"order": order, "executor": executor, "alert": alert})
            found = self.booked.get(order.client_order_id)
            return LookupResult.found(found) if found else LookupResult.absent()

    class Blind(Claims):
        @hookimpl
        def execute_order(self, order, alert):
            return super().execute_order(order, alert)

    looks, blind = Looks("looks", True), Blind("blind", False)
    async with app_client(extra_plugins=[("accounts", accounts), ("looks", looks), ("blind", blind)]) as (client, app):
        await post(client, alert_body(account="script", id="via-looks", route_to="looks"))
        row = await settle(app, "via-looks")
        assert row["state"] == "reconciled", row  # its lookup found the order: never sent again
        assert [c["alert"].alert_id for c in looks.lookups] == ["via-looks"]
        assert looks.lookups[0]["executor"] is executor
        assert executor.lookups == 0 and executor.calls == []  # only the placer is asked

        await post(client, alert_body(account="script", id="via-blind", route_to="blind"))
        row = await settle(app, "via-blind")
        assert row["state"] == "unknown", row  # a placer without lookup_order: left for a human
        assert len(looks.lookups) == 1 and executor.lookups == 0 and executor.calls == []  # nobody else asked


async def test_hook_after_execute(app_client):
    executor, accounts = scripted_account()

    class Notes:
        def __init__(self) -> None:
            self.calls: list[dict] = []

        @hookimpl
        async def after_execute(self, alert, order, result, state, router):
            row = await router.journal.get(alert.alert_id)
            self.calls.append({"alert": alert, "order": order, "result": result, "state": state, "row": row})

    class Breaks:
        @hookimpl
        def after_execute(self):
            raise RuntimeError("notification service down")

    notes = Notes()
    async with app_client(extra_plugins=[("accounts", accounts), ("notes", notes), ("breaks", Breaks())]) as (
        client,
        _app,
    ):
        status, answer = await post(client, alert_body(account="script", id="noted"))
        assert status == 200 and answer["status"] == "filled", answer  # the error changed nothing
        executor.script = [OrderRejected("insufficient balance")]
        status, _ = await post(client, alert_body(account="script", id="not-noted"))
        assert status == 422
    assert len(notes.calls) == 1  # once, for the executed order only
    call = notes.calls[0]
    assert call["alert"].alert_id == "noted" and call["state"] == "filled"
    assert isinstance(call["result"], OrderResult) and call["result"].order_id == answer["order"]["order_id"]
    assert call["order"].client_order_id == call["result"].client_order_id
    assert call["row"]["state"] == "filled"  # journaled before the hook runs


async def test_hook_on_error(app_client):
    executor, accounts = scripted_account()

    class Alarms:
        def __init__(self) -> None:
            self.calls: list[dict] = []

        @hookimpl
        async def on_error(self, alert, order, error, state, router):
            row = await router.journal.get(alert.alert_id)
            self.calls.append({"alert": alert, "order": order, "error": error, "state": state, "row": row})

    class Breaks:
        @hookimpl
        def on_error(self):
            raise RuntimeError("pager down")

    alarms = Alarms()
    async with app_client(extra_plugins=[("accounts", accounts), ("alarms", alarms), ("breaks", Breaks())]) as (
        client,
        _app,
    ):
        executor.script = [OrderRejected("insufficient balance")]
        status, answer = await post(client, alert_body(account="script", id="refused-by-venue"))
        assert status == 422 and answer["error"]["code"] != "internal_error", answer  # the hook's error changed nothing
        status, answer = await post(client, alert_body(account="script", id="too-small", amount="0.0000001"))
        assert status == 422, answer
        status, _ = await post(client, alert_body(account="script", side="sideways"))
        assert status == 422  # invalid before it was accepted: not an accepted alert's failure
        status, _ = await post(client, alert_body(account="script", id="fine"))
        assert status == 200
    assert [(c["alert"].alert_id, c["state"]) for c in alarms.calls] == [
        ("refused-by-venue", "rejected"),
        ("too-small", "rejected"),
    ]
    venue, small = alarms.calls
    assert isinstance(venue["error"], OrderRejected) and isinstance(venue["order"], OrderRequest)
    assert small["order"] is None  # no order could be built
    assert venue["row"]["state"] == "rejected"  # journaled before the hook runs


# ---------------------------------------------------------------- shutdown


async def test_hook_router_shutdown(app_client):
    class Closing(ScriptedExecutor):
        closed = False

        async def close(self) -> None:
            self.closed = True

    executor = Closing("script")
    seen: list[tuple[str, bool, int]] = []

    class Closes:
        def __init__(self, name: str, fail: bool = False):
            self.name = name
            self.fail = fail

        @hookimpl
        async def router_shutdown(self, router):
            assert isinstance(router, PluginHost)
            inflight = len(router.engine.inflight)
            seen.append((self.name, executor.closed, inflight))
            if self.fail:
                raise RuntimeError("close failed")

    plugins = [
        ("accounts", ScriptedPlugin(executor)),
        ("first", Closes("first", fail=True)),
        ("second", Closes("second")),
    ]
    async with app_client(extra_plugins=plugins) as (client, _app):
        status, _ = await post(client, alert_body(account="script", id="before-shutdown"))
        assert status == 200
        assert seen == []  # not before shutdown
    # Once each, every implementation even after one raised, with nothing in flight and
    # before the executors are closed.
    assert sorted(seen) == [("first", False, 0), ("second", False, 0)]
    assert executor.closed
