"""Notifiers against a loopback receiver: what they post (generic JSON, Discord, Slack,
Telegram's sendMessage), that a receiver which never answers or fails changes nothing
about the webhook's answer or the order, the events filter, the bounded queue, and that
no secret reaches a message or a log line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import get_args

import ccxt
import httpx
import pytest
from aiohttp import web

from core.config import PluginsFile
from core.errors import ConfigError, OrderRejected, Unprocessable
from core.hooks.manager import create_plugin_manager
from core.pipeline.events import EVENT_STATES, AlertEvent, event_from_error, event_from_result
from core.pipeline.models import Alert, OrderRequest, OrderResult
from core.pipeline.outcomes import AlertExpired, OutcomeStillUnknown
from core.store.states import GAVE_UP
from plugins.exchanges.ccxt.errors import order_error
from plugins.notifiers.notifier import EventState, NotifierOptions, format_message
from plugins.notifiers.webhook_notify import detect_format, payload
from tests.scripted_executor import ScriptedExecutor, ScriptedPlugin
from tests.support import MONITOR, SECRET, alert_body, signed_headers

ROUTER = """
router:
  response_budget: 2.0
  retry_base_delay: 0.01
  retry_max_delay: 0.05
"""
WAIT = 10  # seconds: a bound on waiting for a condition, never a synchronisation


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request.

    ``answer``: a status to answer with, or ``None`` to hold every request open until the
    test ends (a destination that never answers)."""

    def __init__(self, answer: int | None = 200):
        self.answer = answer
        self.requests: list[dict] = []
        self.answered = 0
        self.held: list[web.BaseRequest] = []
        self.release = asyncio.Event()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)  # the receiver is not the code under test
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._changed:
            self.requests.append({"path": request.path, "json": json.loads(body), "headers": dict(request.headers)})
            if self.answer is None:
                self.held.append(request)
            self._changed.notify_all()
        if self.answer is None:
            await self.release.wait()
        self.answered += 1
        return web.json_response({"ok": self.answer == 200}, status=self.answer or 200)

    async def wait_for(self, count: int) -> list[dict]:
        """The first ``count`` requests, once they have arrived."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.requests) >= count), WAIT)
        return self.requests[:count]

    def still_waiting(self, request: web.BaseRequest) -> bool:
        """The notifier is still connected, waiting for this request's answer."""
        transport = request.transport
        return transport is not None and not transport.is_closing()


@pytest.fixture
async def receiver() -> AsyncIterator:
    started: list[Receiver] = []

    async def start(answer: int | None = 200) -> Receiver:
        started.append(await Receiver(answer).start())
        return started[-1]

    yield start
    for r in started:
        await r.stop()


@pytest.fixture
def scripted() -> ScriptedExecutor:
    return ScriptedExecutor()


def notifier(app, name: str):
    return app.extensions["router"].plugins.get(name)


async def post(client, **fields) -> tuple[int, dict]:
    body = alert_body(account="script", **fields)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    return response.status_code, await response.get_json()


# ---------------------------------------------------------------- inert unless configured


async def test_unconfigured_notifiers_are_loaded_and_inert(app_client):
    async with app_client() as (client, app):
        health = await (await client.get("/", headers=MONITOR)).get_json()
        body = alert_body(id="quiet-1")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        for name in ("webhook_notify", "telegram"):
            assert name in {p["name"] for p in health["plugins"]}
            assert notifier(app, name).queue is None  # no queue, no session, no task


# ---------------------------------------------------------------- webhook_notify


async def test_webhook_notify_posts_what_happened_to_each_alert(app_client, write_plugins_yaml, receiver, scripted):
    sink = await receiver()
    write_plugins_yaml(ROUTER + f"webhook_notify:\n  urls: {sink.url}/hook\n")
    scripted.script = ["ok", OrderRejected(f"scripted: balance too low for key {SECRET}")]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, _app):
        assert (await post(client, id="n-filled"))[0] == 200
        assert (await post(client, id="n-rejected", side="sell", amount="0.5"))[0] == 422
        filled, rejected = await sink.wait_for(2)
    assert filled["path"] == "/hook"
    assert filled["json"]["text"] == filled["json"]["content"]  # Discord's and Slack's key
    text = filled["json"]["text"]
    assert text.startswith("Filled: buy 0.001 BTC/USDT on scripted (account script)")
    assert "average price 50000" in text and "alert n-filled" in text
    event = filled["json"]["event"]
    assert (event["state"], event["alert_id"], event["symbol"], event["side"], event["amount"], event["average"]) == (
        "filled",
        "n-filled",
        "BTC/USDT",
        "buy",
        "0.001",
        "50000",
    )
    text = rejected["json"]["text"]
    assert text.startswith("Rejected: sell 0.5 BTC/USDT on scripted (account script)")
    assert "exchange_rejected: the exchange refused the order" in text and "alert n-rejected" in text
    assert rejected["json"]["event"]["error_type"] == "OrderRejected"
    everything = json.dumps(sink.requests)
    assert SECRET not in everything and "***" in text


async def test_discord_format_disables_mentions(app_client, write_plugins_yaml, receiver):
    sink = await receiver()
    write_plugins_yaml(f"webhook_notify:\n  urls: [{sink.url}/api/webhooks/1/abc]\n  format: discord\n")
    async with app_client() as (client, _app):
        body = alert_body(id="@everyone")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        (request,) = await sink.wait_for(1)
    assert set(request["json"]) == {"content", "allowed_mentions"}
    assert request["json"]["allowed_mentions"] == {"parse": []}
    assert "Filled: buy 0.001 BTC/USDT on paper (account paper)" in request["json"]["content"]


def test_formats_by_destination():
    assert detect_format("https://discord.com/api/webhooks/1/x") == "discord"
    assert detect_format("https://discordapp.com/api/webhooks/1/x") == "discord"
    assert detect_format("https://hooks.slack.com/services/T/B/x") == "slack"
    assert detect_format("https://example.com/hook") == "generic"
    event = AlertEvent(
        state="rejected",
        alert_id="<!channel>",
        account="main",
        exchange="binance",
        symbol="BTC/USDT",
        side="buy",
        amount="1",
        order_type="market",
        error_code="exchange_rejected",
        error_message="no",
    )
    slack = payload(event, "slack")
    assert set(slack) == {"text"} and "&lt;!channel&gt;" in slack["text"] and "<!channel>" not in slack["text"]


def test_messages_say_what_happened():
    filled = AlertEvent(
        state="filled",
        alert_id="a-1",
        account="main",
        exchange="binance",
        symbol="ETH/USDT",
        side="sell",
        amount="2",
        order_type="limit",
        price="3000",
        order_id="42",
        order_status="filled",
        filled="2",
        average="3001.5",
        route="rest",
    )
    assert format_message(filled) == (
        "Filled: sell 2 ETH/USDT limit 3000 on binance (account main)\n"
        "average price 3001.5, filled 2, order id 42\nalert a-1"
    )
    unknown = AlertEvent(
        state="unknown",
        alert_id="a-2",
        account="main",
        exchange="binance",
        symbol="ETH/USDT",
        side="buy",
        amount="1",
        order_type="market",
        error_code="outcome_unknown_gave_up",
        error_message="order tv123 not found at the exchange after 300s; check the exchange",
    )
    assert format_message(unknown).splitlines() == [
        "Outcome unknown: check the exchange: buy 1 ETH/USDT on binance (account main)",
        "outcome_unknown_gave_up: order tv123 not found at the exchange after 300s; check the exchange",
        "alert a-2",
    ]


def test_the_events_option_knows_every_event_state():
    """The notifiers' ``events`` type lists exactly the states events carry, all on by default."""
    assert get_args(EventState) == EVENT_STATES
    assert NotifierOptions().events == list(EVENT_STATES)


def test_events_carry_the_state_the_engine_journals():
    alert = Alert(alert_id="e-1", symbol="BTCUSDT", side="buy", amount="1")
    order = OrderRequest(
        account="main",
        exchange="binance",
        symbol="BTC/USDT",
        market_type="spot",
        side="buy",
        order_type="market",
        amount="1",
        client_order_id="tv1",
    )
    router = SimpleNamespace(engine=SimpleNamespace(phase={}))
    for error, built, state, code in [
        (AlertExpired("too old to send"), None, "expired", "expired"),
        (OutcomeStillUnknown("not found after 300s"), order, "unknown", GAVE_UP),
        (order_error(ccxt.InsufficientFunds("binance: balance"), sent=True), order, "rejected", "exchange_rejected"),
        (order_error(ccxt.AuthenticationError("binance: bad key"), sent=True), order, "failed", "exchange_auth_failed"),
        (order_error(ccxt.RateLimitExceeded("binance: slow down"), sent=True), order, "failed", "exchange_busy"),
        (Unprocessable("amount below the minimum"), None, "rejected", "unprocessable"),
    ]:
        event = event_from_error(alert, built, error, state, router)
        # The type reported is the venue client's exception the order error translated.
        assert (event.state, event.error_code, event.error_type) == (
            state,
            code,
            type(error.__cause__ or error).__name__,
        ), error
        assert event.exchange_error == (error.__cause__ is not None)
    result = OrderResult(
        account="main",
        exchange="binance",
        symbol="BTC/USDT",
        side="buy",
        order_type="market",
        amount="1",
        client_order_id="tv1",
        status="filled",
        average="50000",
    )
    for state in ("filled", "submitted", "reconciled", "canceled"):
        assert event_from_result(alert, order, result, state).state == state


# ---------------------------------------------------------------- never delay, never change


async def test_a_receiver_that_never_answers_does_not_delay_the_answer(
    app_client, write_plugins_yaml, receiver, scripted, all_log_text
):
    hold = await receiver(answer=None)
    write_plugins_yaml(
        ROUTER + f"webhook_notify:\n  urls: [{hold.url}/hook]\n  timeout: 120\n  retries: 0\n  drain_timeout: 0.2\n"
    )
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        first = await post(client, id="slow-sink-1")
        await hold.wait_for(1)
        # The receiver holds the first notification; the notifier is still waiting for it
        # (its timeout is two minutes), and the answer is already here.
        assert first[0] == 200 and first[1]["status"] == "filled"
        assert hold.still_waiting(hold.held[0]) and hold.answered == 0
        # More alerts while it is held: answered at once, their notifications queue behind it.
        later = [await post(client, id=f"slow-sink-{i}") for i in (2, 3)]
        assert [status for status, _ in later] == [200, 200]
        assert hold.still_waiting(hold.held[0]) and hold.answered == 0
        assert notifier(app, "webhook_notify").queue.qsize() == 2
    # Shutdown gave up on them after drain_timeout, with the receiver still holding the first.
    assert hold.answered == 0 and len(hold.requests) == 1
    assert len(scripted.calls) == 3 and all(a["order"]["status"] == "filled" for _, a in [first, *later])
    assert "3 notification(s) not sent at shutdown" in all_log_text()


async def test_a_failing_receiver_changes_nothing(app_client, write_plugins_yaml, receiver, scripted, all_log_text):
    failing = await receiver(answer=500)
    write_plugins_yaml(
        ROUTER + f"webhook_notify:\n  urls: [{failing.url}/secret-path-0123456789]\n  retries: 2\n  retry_delay: 0.01\n"
    )
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        status, answer = await post(client, id="failing-sink-1")
        attempts = await failing.wait_for(3)  # the first try and two retries
        await asyncio.wait_for(notifier(app, "webhook_notify").queue.join(), WAIT)
    assert status == 200 and answer["status"] == "filled" and answer["order"]["client_order_id"]
    assert len(scripted.calls) == 1
    assert [a["json"]["event"]["alert_id"] for a in attempts] == ["failing-sink-1"] * 3
    logs = all_log_text()
    assert (
        "url #1 (127.0.0.1, generic) did not take the notification of alert failing-sink-1 after 3 attempt(s): HTTP 500"
        in logs
    )
    assert "secret-path-0123456789" not in logs


async def test_events_filter_and_bounded_queue(app_client, write_plugins_yaml, receiver, scripted, all_log_text):
    hold = await receiver(answer=None)
    write_plugins_yaml(
        ROUTER + f"webhook_notify:\n  urls: [{hold.url}/hook]\n  events: rejected, failed\n"
        "  queue_size: 1\n  drain_timeout: 0\n"
    )
    scripted.script = ["ok"] + [OrderRejected("scripted: bad order")] * 3
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        assert (await post(client, id="f-filled"))[0] == 200  # not one of the events: never queued
        assert (await post(client, id="f-rejected-1"))[0] == 422
        (first,) = await hold.wait_for(1)  # taken by the sender, held by the receiver
        assert (await post(client, id="f-rejected-2"))[0] == 422  # waits in the queue (size 1)
        assert (await post(client, id="f-rejected-3"))[0] == 422  # queue full: dropped
        plugin = notifier(app, "webhook_notify")
        assert plugin.dropped == 1 and plugin.queue.qsize() == 1
    # FIFO: had the filled alert been queued, it would have been posted first.
    assert first["json"]["event"]["alert_id"] == "f-rejected-1"
    assert "queue full (1); dropped the notification of alert f-rejected-3 (rejected)" in all_log_text()


# ---------------------------------------------------------------- telegram


async def test_telegram_sends_to_every_chat_through_its_base_url(
    app_client, write_plugins_yaml, receiver, all_log_text
):
    api = await receiver()
    token = "123456:TEST-bot-token-abcdefghijk"
    write_plugins_yaml(
        f"telegram:\n  bot_token: ${{TELEGRAM_BOT_TOKEN}}\n  chat_ids: ${{TELEGRAM_CHAT_IDS}}\n  base_url: {api.url}/\n"
    )
    async with app_client(TELEGRAM_BOT_TOKEN=token, TELEGRAM_CHAT_IDS="111, -100222") as (client, _app):
        body = alert_body(id="tg-1")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        requests = await api.wait_for(2)
    assert [r["path"] for r in requests] == [f"/bot{token}/sendMessage"] * 2
    assert sorted(r["json"]["chat_id"] for r in requests) == ["-100222", "111"]
    message = requests[0]["json"]
    assert message["text"].startswith("Filled: buy 0.001 BTC/USDT on paper (account paper)")
    assert "alert tg-1" in message["text"] and message["disable_notification"] is False
    assert "parse_mode" not in message
    assert token not in all_log_text()


async def test_telegram_failures_never_log_the_token(app_client, write_plugins_yaml, receiver, all_log_text):
    api = await receiver(answer=403)
    token = "654321:TEST-secret-bot-token-xyz"
    write_plugins_yaml(f"telegram:\n  bot_token: '{token}'\n  chat_ids: [42]\n  base_url: {api.url}\n")
    async with app_client() as (client, app):
        body = alert_body(id="tg-denied")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        await api.wait_for(1)
        await asyncio.wait_for(notifier(app, "telegram").queue.join(), WAIT)
    logs = all_log_text()
    assert "telegram chat 42 did not take the notification of alert tg-denied after 1 attempt(s): HTTP 403" in logs
    assert token not in logs and "TEST-secret" not in logs


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "section, message",
    [
        ("telegram:\n  bot_token: '1:abc'\n", "plugin 'telegram': field 'chat_ids': .*name the chats"),
        ("telegram:\n  chat_ids: [1]\n", "plugin 'telegram': field 'chat_ids': .*bot_token is empty"),
        ("telegram:\n  bot_token: 'https://api.telegram.org/bot1:abc'\n  chat_ids: [1]\n", "field 'bot_token'"),
        ("webhook_notify:\n  urls: [ftp://example.com/x]\n", "plugin 'webhook_notify': field 'urls'"),
        ("webhook_notify:\n  events: [filled, exploded]\n", "plugin 'webhook_notify': field 'events.1'"),
    ],
)
def test_notifier_mistakes_stop_startup_naming_the_plugin(tmp_path, section, message):
    import yaml

    plugins_file = PluginsFile(tmp_path / "plugins.yaml", yaml.safe_load(section), {})
    with pytest.raises(ConfigError, match=message):
        create_plugin_manager(plugins_file)


@pytest.mark.slow
def test_a_real_server_answers_while_its_notifier_is_held(server_factory, data_dir):
    """The same through hypercorn: the notifier runs in the worker process, configured
    from the environment; the answer comes while the receiver holds the notification."""
    arrived, release = threading.Event(), threading.Event()
    bodies: list[dict] = []

    class Hold(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            arrived.set()
            release.wait(30)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    sink = ThreadingHTTPServer(("127.0.0.1", 0), Hold)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        (data_dir / "plugins.yaml").write_text(
            "webhook_notify:\n  urls: ${NOTIFY_WEBHOOK_URLS}\n  timeout: 60\n  retries: 0\n  drain_timeout: 0.5\n"
        )
        server = server_factory(NOTIFY_WEBHOOK_URLS=f"http://127.0.0.1:{sink.server_address[1]}/hook")
        first = alert_body(id="real-held-1")
        assert (
            httpx.post(server.url + "/webhook", content=first, headers=signed_headers(first), timeout=30).status_code
            == 200
        )
        assert arrived.wait(WAIT)  # the notification is at the receiver, which holds it
        second = alert_body(id="real-held-2")
        answer = httpx.post(server.url + "/webhook", content=second, headers=signed_headers(second), timeout=30)
        assert answer.status_code == 200 and answer.json()["status"] == "filled"
        assert not release.is_set() and len(bodies) == 1  # still held while the second alert was answered
        assert bodies[0]["event"]["alert_id"] == "real-held-1"
        # hypercorn's master tells its workers to shut down gracefully (a SIGTERM to the
        # whole process group would end the worker at once): the notifier drains for
        # drain_timeout, then gives up on the held notification.
        os.kill(server.proc.pid, signal.SIGTERM)
        assert server.proc.wait(30) == 0, server.log()
        assert "notification(s) not sent at shutdown" in server.log()
    finally:
        release.set()
        sink.shutdown()
        sink.server_close()
