"""Risk limits and the kill switch through the app on the paper exchange (fast, in process):
each limit's refusal and the order just inside it, halts and resume over the signed
control endpoint, the closing order that always passes, configuration errors, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import pytest

from core.config import PluginsFile
from core.errors import ConfigError
from core.pipeline.killswitch import is_reducing
from core.pipeline.models import Alert, OrderRequest
from core.web.app import control_signature_message, read_signature_message
from tests.support import MONITOR, ROOT, SECRET, signed_headers


def risk_yaml(**defaults) -> str:
    import yaml

    return yaml.safe_dump({"risk": {"defaults": defaults}})


async def send(client, **fields):
    body = json.dumps({"symbol": "BTCUSDT.P", "side": "buy", "amount": "0.01", "price": "50000", **fields}).encode()
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    return response.status_code, await response.get_json()


async def control(client, action: str, **payload):
    body = json.dumps(payload).encode() if payload else b""
    headers = signed_headers(control_signature_message(action, body))
    response = await client.post(f"/control/{action}", data=body, headers=headers)
    return response.status_code, await response.get_json()


async def journaled(client, alert_id: str) -> dict:
    response = await client.get(f"/alerts/{alert_id}", headers=signed_headers(read_signature_message(alert_id)))
    return await response.get_json()


@pytest.mark.parametrize(
    "limits,inside,outside,named",
    [
        (
            {"max_order_notional": 1000},
            {"amount": "0.02"},
            {"amount": "0.021"},
            "max_order_notional: the order is worth 1050.00 USDT, above the limit 1000.00 USDT",
        ),
        (
            {"max_position_notional": 1500},
            {"amount": "0.03"},
            {"amount": "0.002"},
            "max_position_notional: the position after the order would be 0.032 BTC/USDT:USDT worth 1600.00 USDT, "
            "above the limit 1500.00 USDT",
        ),
        ({"max_leverage": 5}, {"leverage": 5}, {"leverage": 6}, "max_leverage: leverage 6 is above the limit 5"),
        (
            {"max_price_deviation": 2},
            {"price": "51000"},
            {"price": "51001"},
            "max_price_deviation: the alert's price 51001.00 is 2.00% from the last price 50000.00, "
            "above the limit 2.00%",
        ),
        (
            {"symbols": ["BTC/USDT:USDT"]},
            {},
            {"symbol": "ETHUSDT.P", "amount": "0.1", "price": "3000"},
            "symbols: ETH/USDT:USDT is not in the allow-list BTC/USDT:USDT",
        ),
        ({"trading_hours": {"sun": ["00:00-00:01"]}}, None, {}, "trading_hours: "),
    ],
)
async def test_each_limit_refuses_the_alert_that_breaks_it(
    app_client, write_plugins_yaml, limits, inside, outside, named
):
    write_plugins_yaml(risk_yaml(**limits))
    async with app_client() as (client, app):
        if inside is not None:
            status, body = await send(client, alert_id="inside", **inside)
            assert status == 200, body
        status, body = await send(client, alert_id="outside", **outside)
        assert status == 422, body
        assert body["error"]["code"] == "risk_limit" and body["error"]["limit"] in named
        assert named in body["error"]["message"]
        row = await journaled(client, "outside")
        assert row["state"] == "refused" and row["orders"] == [] and row["error_code"] == "risk_limit"
        ledger = await app.extensions["router"].executors.get("paper").orders()
        assert len(ledger) == (1 if inside is not None else 0)


async def test_max_orders_per_minute_counts_opening_orders_only(app_client, write_plugins_yaml):
    write_plugins_yaml(risk_yaml(max_orders_per_minute=2))
    async with app_client() as (client, app):
        assert (await send(client, alert_id="o1"))[0] == 200
        assert (await send(client, alert_id="o2"))[0] == 200
        status, body = await send(client, alert_id="o3")
        assert (
            status == 422
            and "max_orders_per_minute: 2 opening orders were sent on account 'paper' in the last 60 s; the limit is 2"
            in body["error"]["message"]
        )
        status, body = await send(client, alert_id="close", action="close")
        assert status == 200, body  # a closing order is never refused by a limit


async def test_per_account_overrides_and_daily_loss_halts_until_resumed(app_client, write_plugins_yaml):
    import yaml

    write_plugins_yaml(
        yaml.safe_dump(
            {
                "paper": {"accounts": ["paper", "strict"]},
                "risk": {"defaults": {"max_order_notional": 100000}, "accounts": {"strict": {"max_daily_loss": 10}}},
            }
        )
    )
    async with app_client() as (client, app):
        status, body = await send(client, alert_id="a1", account="strict", amount="0.1")  # baseline taken; fee 5 USDT
        assert status == 200, body
        status, body = await send(client, alert_id="a2", account="strict", amount="0.1")  # another 5 USDT fee: loss 5
        assert status == 200, body
        status, body = await send(client, alert_id="a3", account="strict", amount="0.2")  # loss 10 reached
        assert status == 422 and "max_daily_loss" in body["error"]["message"], body
        status, body = await send(client, alert_id="a4", account="strict", amount="0.01")
        assert status == 422 and "halted (max_daily_loss" in body["error"]["message"], body
        assert (await send(client, alert_id="a5", account="paper", amount="0.01"))[0] == 200  # other accounts trade
        health = await (await client.get("/", headers=MONITOR)).get_json()
        assert health["halts"]["strict"]["by"] == "max_daily_loss" and health["halts"]["strict"]["until"]
        assert (await control(client, "resume", account="strict"))[1]["accounts"] == ["strict"]
        status, body = await send(client, alert_id="a6", account="strict", amount="0.01")
        assert status == 200, body  # resumed by hand: trades again today


async def test_halt_over_http_refuses_opening_orders_and_lets_closing_ones_through(app_client):
    async with app_client() as (client, app):
        assert (await send(client, alert_id="open-1", amount="0.02"))[0] == 200
        status, body = await control(client, "halt", account="paper", reason="news")
        assert status == 200 and body["status"] == "halted", body
        status, body = await send(client, alert_id="open-2")
        assert status == 422 and body["error"]["code"] == "risk_limit", body
        assert body["error"]["message"].startswith("refused by halt: account 'paper' is halted (news; by http:hmac")
        status, body = await send(client, alert_id="reduce", side="sell", amount="0.01", reduce_only=True)
        assert status == 200, body
        status, body = await send(client, alert_id="close", action="close")
        assert status == 200 and body["order"]["amount"] == "0.01", body
        metrics = (await (await client.get("/metrics", headers=MONITOR)).get_data()).decode()
        assert 'account_halted{account="paper"} 1.0' in metrics
        status, body = await control(client, "resume", account="paper")
        assert status == 200 and body["accounts"] == ["paper"]
        assert (await send(client, alert_id="open-3"))[0] == 200


async def test_control_needs_a_signature_over_its_request_line(app_client):
    async with app_client() as (client, app):
        body = b'{"account": "paper"}'
        for headers in (signed_headers(body), signed_headers(control_signature_message("resume", body)), {}):
            response = await client.post("/control/halt", data=body, headers=headers)
            assert response.status_code == 401
        assert (await control(client, "halt", account="nope"))[0] == 422
        health = await (await client.get("/", headers=MONITOR)).get_json()
        assert health["halts"] == {}


async def test_a_control_body_over_2_kib_is_413_before_it_is_parsed(app_client):
    async with app_client() as (client, app):
        body = json.dumps({"account": "paper", "reason": "x" * 3000}).encode()
        response = await client.post(
            "/control/halt", data=body, headers=signed_headers(control_signature_message("halt", body))
        )
        assert response.status_code == 413 and (await response.get_json())["error"]["code"] == "payload_too_large"
        assert (await app.extensions["router"].kill_switch.halts()) == {}  # nothing changed


async def test_flatten_on_paper_cancels_orders_and_closes_positions_once(app_client):
    async with app_client() as (client, app):
        assert (await send(client, alert_id="p1", amount="0.02", stop_loss="45000"))[0] == 200
        assert (await send(client, alert_id="p2", symbol="ETHUSDT.P", side="sell", amount="1", price="3000"))[0] == 200
        status, body = await control(client, "flatten", account="paper")
        assert status == 202, body
        router = app.extensions["router"]
        task = router.kill_switch._running.get(body["flatten_id"])
        if task is not None:
            await task
        paper = router.executors.get("paper")
        assert await paper.fetch_positions() == {} and await paper.fetch_open_orders() == {}
        [record] = (await router.kill_switch.status())["flattens"]
        assert record["state"] == "done" and len(record["steps"]) == 3, record
        for step_id in record["steps"]:
            assert (await journaled(client, step_id))["state"] in ("filled", "canceled")
        assert (await journaled(client, f"flatten-{record['flatten_id']}"))["steps"] == record["steps"]
        assert (await send(client, alert_id="after"))[0] == 422  # flatten halts


def test_reducing_orders():
    alert = Alert(symbol="X", side="sell", amount=Decimal(1))
    order = OrderRequest(
        account="a",
        exchange="e",
        symbol="X",
        market_type="swap",
        side="sell",
        amount="1",
        client_order_id="c",
        position_before="2",
    )
    assert is_reducing(alert, order)
    assert not is_reducing(alert, order.model_copy(update={"amount": "3"}))
    assert not is_reducing(alert, order.model_copy(update={"position_before": None}))
    assert is_reducing(alert, order.model_copy(update={"action": "cancel_all"}))


@pytest.mark.parametrize(
    "section,field",
    [
        ({"defaults": {"max_leverage": 0}}, "defaults.max_leverage"),
        ({"defaults": {"max_notional": 1}}, "defaults.max_notional"),
        ({"accounts": {"x": {"trading_hours": {"mon": ["10:00-09:00"]}}}}, "accounts.x.trading_hours"),
        ({"strategies": {"s": {"on_mismatch": "panic"}}}, "strategies.s.on_mismatch"),
    ],
)
def test_risk_section_errors_name_the_file_and_field(tmp_path, section, field):
    import yaml

    from core.hooks.manager import create_plugin_manager

    path = tmp_path / "plugins.yaml"
    path.write_text(yaml.safe_dump({"risk": section}))
    with pytest.raises(ConfigError) as info:
        create_plugin_manager(PluginsFile.load(path, {}))
    assert str(info.value).startswith(f"{path}: plugin 'risk': field '{field}")


def test_cli_halt_status_resume(data_dir):
    env = {
        "WEBHOOK_SECRET": SECRET,
        "DATA_DIR": str(data_dir),
        "PLUGINS_FILE": str(data_dir / "plugins.yaml"),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "core", "risk", *args],
            env=env,
            cwd=data_dir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run("halt", "--account", "Paper", "--reason", "manual") == "halted paper\n"
    assert json.loads(run("status"))["halts"]["paper"]["reason"] == "manual"
    assert run("resume") == "resumed paper\n"
    assert json.loads(run("status"))["halts"] == {}


class FakeBotApi:
    """Telegram's getUpdates (long poll) and sendMessage, on 127.0.0.1."""

    def __init__(self, token: str):
        self.token = token
        self.updates: list[dict] = []
        self.sent: list[dict] = []
        self.changed = None
        self.runner = None
        self.url = ""

    async def start(self) -> FakeBotApi:
        import asyncio

        from aiohttp import web

        self.changed = asyncio.Condition()
        app = web.Application()
        app.router.add_get(f"/bot{self.token}/getUpdates", self._updates)
        app.router.add_post(f"/bot{self.token}/sendMessage", self._send)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = "http://{}:{}".format(*self.runner.addresses[0][:2])
        return self

    async def _updates(self, request):
        import asyncio
        import contextlib

        from aiohttp import web

        offset = int(request.query.get("offset") or 0)
        async with self.changed:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
            if not self.updates:  # a long poll: answer when an update arrives or the poll times out
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.changed.wait_for(lambda: self.updates), int(request.query["timeout"]) or 0.01
                    )
            return web.json_response({"ok": True, "result": list(self.updates)})

    async def _send(self, request):
        from aiohttp import web

        body = await request.json()
        async with self.changed:
            self.sent.append(body)
            self.changed.notify_all()
        return web.json_response({"ok": True})

    async def command(self, update_id: int, chat: int, text: str) -> None:
        async with self.changed:
            self.updates.append({"update_id": update_id, "message": {"chat": {"id": chat}, "text": text}})
            self.changed.notify_all()

    async def replies(self, count: int) -> list[dict]:
        import asyncio

        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.sent) >= count), 10)
        return self.sent[:count]


async def test_telegram_commands_from_configured_chats_only(app_client, write_plugins_yaml):
    token = "123456:TEST-commands-token-abcdef"
    api = await FakeBotApi(token).start()
    try:
        write_plugins_yaml(
            f"telegram:\n  bot_token: '{token}'\n  chat_ids: [111]\n  base_url: {api.url}\n"
            "  poll_timeout: 5\n  events: [filled]\n"
        )
        async with app_client() as (client, app):
            switch = app.extensions["router"].kill_switch
            await api.command(1, 999, "/halt")  # a stranger: ignored, no answer
            await api.command(2, 111, "/halt@my_bot paper market is crazy")
            [reply] = await api.replies(1)
            assert reply == {"chat_id": 111, "text": "halted paper: opening orders are refused until /resume"}
            assert (await switch.halts())["paper"]["reason"] == "market is crazy"
            assert (await switch.halts())["paper"]["by"] == "telegram:111"
            status, body = await send(client, alert_id="tg-refused")
            assert status == 422 and "halted (market is crazy; by telegram:111" in body["error"]["message"]
            await api.command(3, 111, "/status")
            await api.command(4, 111, "/resume")
            _, status_reply, resume_reply = await api.replies(3)
            assert status_reply["text"].startswith("halts: paper: market is crazy (by telegram:111)")
            assert resume_reply["text"] == "resumed paper"
            assert await switch.halts() == {}
    finally:
        await api.runner.cleanup()


class ScopedAuth:
    """A throwaway auth plugin: X-Test-Credential "ops" carries the control scope, "viewer" none."""

    from core.hooks.manager import hookimpl

    @hookimpl
    def authenticate(self, request):
        from core.pipeline.models import AuthResult

        credential = request.header("x-test-credential")
        if credential == "ops":
            return AuthResult.accept("token:ops", scopes=("control",))
        if credential == "viewer":
            return AuthResult.accept("token:viewer")
        return None


async def test_control_needs_the_control_scope_unless_signed_with_the_webhook_secret(app_client):
    async with app_client(extra_plugins=[("scoped", ScopedAuth())]) as (client, app):
        body = b'{"account": "paper"}'
        response = await client.post("/control/halt", data=body, headers={"X-Test-Credential": "viewer"})
        assert response.status_code == 403
        assert await app.extensions["router"].kill_switch.halts() == {}
        response = await client.post("/control/halt", data=body, headers={"X-Test-Credential": "ops"})
        assert response.status_code == 200
        assert (await app.extensions["router"].kill_switch.halts())["paper"]["by"] == "http:token:ops"


@pytest.mark.slow
def test_a_flatten_requested_from_the_command_line_is_carried_out_by_the_running_server(server_factory, data_dir):
    import time

    import httpx

    server = server_factory()
    for alert_id, fields in (
        ("cli-1", {"stop_loss": "45000"}),
        ("cli-2", {"symbol": "ETHUSDT.P", "side": "sell", "amount": "1", "price": "3000"}),
    ):
        body = json.dumps(
            {"symbol": "BTCUSDT.P", "side": "buy", "amount": "0.01", "price": "50000", "alert_id": alert_id, **fields}
        ).encode()
        assert httpx.post(server.url + "/webhook", content=body, headers=signed_headers(body)).status_code == 200
    env = dict(server.env)
    done = subprocess.run(
        [sys.executable, "-m", "core", "risk", "halt", "--account", "paper", "--flatten"],
        env=env,
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "flatten" in done.stdout, done.stderr
    deadline = time.monotonic() + 30
    while True:  # the server takes it up within router.worker_heartbeat seconds
        body = b""
        status = httpx.post(
            server.url + "/control/status",
            content=body,
            headers=signed_headers(control_signature_message("status", body)),
        ).json()
        if status["flattens"] and status["flattens"][0]["state"] in ("done", "failed"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)  # polling the real condition, bounded
    record = status["flattens"][0]
    assert record["state"] == "done" and record["by"] == "cli" and len(record["steps"]) == 3, record
    assert status["halts"]["paper"]["by"] == "cli"


async def test_the_gate_refuses_only_halts_in_force_the_accounts_own_or_every_accounts(monkeypatch):
    """A halt whose ``until`` has passed (a daily-loss halt the next day) no longer refuses."""
    import time
    from types import SimpleNamespace

    from core.errors import RiskLimitExceeded
    from core.pipeline.killswitch import KillSwitch
    from core.store.risk import ALL

    class Store:
        records: dict = {}

        async def halts(self):
            return dict(self.records)

    async def no_check_risk(hook, **_kwargs):
        return []

    monkeypatch.setattr("core.pipeline.killswitch.call_hook", no_check_risk)
    switch = KillSwitch(SimpleNamespace(hook=SimpleNamespace(check_risk=None)))
    switch.store = Store()
    alert = Alert(symbol="BTC/USDT", side="buy", amount=Decimal("1"))
    order = OrderRequest(
        account="main",
        exchange="paper",
        symbol="BTC/USDT",
        market_type="spot",
        side="buy",
        amount="1",
        client_order_id="c1",
    )
    executor = SimpleNamespace(account="Main")
    now = time.time()
    for records, refused_by in [
        ({}, None),
        ({"main": {"reason": "over", "until": now - 1}}, None),
        ({"main": {"reason": "day", "until": now + 60}}, "main"),
        ({"main": {"reason": "manual", "until": None}}, "main"),
        ({"main": {"reason": "over", "until": now - 1}, ALL: {"reason": "all", "until": None}}, ALL),
        ({"other": {"reason": "not ours"}}, None),
    ]:
        Store.records = records
        expected = None if refused_by is None else (refused_by, records[refused_by])
        assert await switch.halted("Main") == expected, records
        if refused_by is None:
            await switch.check(alert, executor, order)
        else:
            with pytest.raises(RiskLimitExceeded, match=records[refused_by]["reason"]):
                await switch.check(alert, executor, order)
        in_force = {k for k, v in records.items() if not v.get("until") or v["until"] > now}
        assert set(await switch.halts()) == in_force
