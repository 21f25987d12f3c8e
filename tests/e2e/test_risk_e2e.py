"""Risk limits, the kill switch and strategy position sync end to end: the real server
(hypercorn), ccxt's real classes and the exchange emulator; prices and positions set
through the emulator's control API, assertions on what it booked."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from core.web.app import control_signature_message
from tests.ccxt_support import alert_status, emulator_account, send_alert
from tests.support import MONITOR, ServerProcess, base_env, signed_headers

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WAIT = 30  # seconds: a bound on waiting for a condition, never a synchronisation


class Sink:
    """A notification receiver on 127.0.0.1 (webhook_notify posts here), in a thread."""

    def __init__(self):
        self.events: list[dict] = []
        self.changed = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink.changed:
                    sink.events.append(json.loads(body))
                    sink.changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate) -> dict:
        with self.changed:
            assert self.changed.wait_for(lambda: next((e for e in self.events if predicate(e)), None), WAIT)
            return next(e for e in self.events if predicate(e))


def control(url: str, action: str, **payload) -> httpx.Response:
    body = json.dumps(payload).encode() if payload else b""
    return httpx.post(
        f"{url}/control/{action}",
        content=body,
        timeout=15,
        headers=signed_headers(control_signature_message(action, body)),
    )


def wait_until(predicate, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)  # polling the real condition, bounded


def risk_config(
    url: str, only: tuple[str, ...] = ("plain", "capped", "guarded", "closed", "rated", "lossy", "sync")
) -> dict:
    accounts = {name: emulator_account("binance", url) for name in only}
    return {
        "ccxt": {"accounts": accounts},
        "router": {"worker_heartbeat": 0.5, "worker_stale_after": 2, "resubmit_after": 1, "reconcile_interval": 0.2},
        "risk": {
            "accounts": {
                "capped": {"max_order_notional": 1000, "max_position_notional": 1500},
                "guarded": {"max_price_deviation": 1, "max_leverage": 5, "symbols": ["BTC/USDT:USDT"]},
                # Open only on the day three days from now: closed today (and tomorrow).
                "closed": {"trading_hours": {DAYS[(time.gmtime().tm_wday + 3) % 7]: ["00:00-24:00"]}},
                "rated": {"max_orders_per_minute": 2},
                "lossy": {"max_daily_loss": 10},
            },
            "strategies": {
                "s-notify": {},
                "s-correct": {"on_mismatch": "correct"},
                "s-halt": {"on_mismatch": "halt", "ratio": 2},
            },
        },
    }


@pytest.fixture(scope="module")
def sink():
    sink = Sink()
    yield sink
    sink.server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory, emulator, sink):
    data = tmp_path_factory.mktemp("risk-server")
    config = risk_config(emulator.url)
    config["webhook_notify"] = {"urls": [sink.url], "events": ["refused", "mismatch"], "retries": 0}
    (data / "plugins.yaml").write_text(yaml.safe_dump(config))
    process = ServerProcess(base_env(data), data).start()
    yield process
    process.stop()


@pytest.fixture
def emu(emulator):
    emulator.control.reset()
    return emulator.control


def alert(
    account: str, alert_id: str, ticker: str = "BTCUSDT.P", action: str = "buy", contracts: str = "0.01", **extra
) -> dict:
    return {"ticker": ticker, "action": action, "contracts": contracts, "id": alert_id, "account": account, **extra}


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def positions(emu) -> dict[str, str]:
    return {p["symbol"]: p["amount"] for p in emu.positions() if float(p.get("amount") or 0)}


@pytest.mark.parametrize(
    "account,inside,outside,message",
    [
        (
            "capped",
            [{"contracts": "0.02"}],
            {"contracts": "0.021"},
            "refused by max_order_notional: the order is worth 1050.00 USDT, above the limit 1000.00 USDT",
        ),
        (
            "capped",
            [{"contracts": "0.02"}, {"contracts": "0.01"}],
            {"contracts": "0.002"},
            (
                "refused by max_position_notional: the position after the order would be 0.032 BTC/USDT:USDT "
                "worth 1600.00 USDT, above the limit 1500.00 USDT"
            ),
        ),
        (
            "guarded",
            [{"price": "50500"}],
            {"price": "50501"},
            (
                "refused by max_price_deviation: the alert's price 50501.00 is 1.00% from the last price 50000.00, "
                "above the limit 1.00%"
            ),
        ),
        ("guarded", [{"leverage": 5}], {"leverage": 6}, "refused by max_leverage: leverage 6 is above the limit 5"),
        (
            "guarded",
            [{}],
            {"ticker": "ETHUSDT.P", "contracts": "0.1"},
            "refused by symbols: ETH/USDT:USDT is not in the allow-list BTC/USDT:USDT",
        ),
        ("closed", [], {}, "refused by trading_hours: "),
        (
            "rated",
            [{}, {}],
            {},
            "refused by max_orders_per_minute: 2 opening orders were sent on account 'rated' in the last 60 s",
        ),
    ],
)
def test_each_limit_refuses_the_alert_that_breaks_it_and_lets_the_one_inside_through(
    server, emu, sink, account, inside, outside, message
):
    for fields in inside:
        response = send_alert(server.url, alert(account, unique("in"), **fields))
        assert response.status_code == 200, response.text
    booked = len(emu.orders())
    assert booked == len(inside)
    refused_id = unique("out")
    response = send_alert(server.url, alert(account, refused_id, **outside))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "risk_limit" and error["message"].startswith(message), error
    assert len(emu.orders()) == booked  # nothing sent
    row = alert_status(server.url, refused_id)
    assert row["state"] == "refused" and row["orders"] == []
    event = sink.wait_for(lambda e: e["event"]["alert_id"] == refused_id)
    assert event["event"]["state"] == "refused" and event["text"].startswith("Refused by a risk limit")


def test_daily_loss_halts_the_account_until_resumed(server, emu):
    assert send_alert(server.url, alert("lossy", unique("d"), contracts="0.02")).status_code == 200
    emu.set_price("BTCUSDT", "49000", venue="binance", market_type="linear")
    try:
        response = send_alert(server.url, alert("lossy", unique("d"), contracts="0.003", price="49000"))
        assert (
            response.status_code == 422 and "refused by max_daily_loss: equity" in response.json()["error"]["message"]
        )
        response = send_alert(server.url, alert("lossy", unique("d"), contracts="0.003", price="49000"))
        assert "account 'lossy' is halted (max_daily_loss" in response.json()["error"]["message"]
        assert httpx.get(server.url + "/", headers=MONITOR).json()["halts"]["lossy"]["by"] == "max_daily_loss"
        response = send_alert(
            server.url,
            alert("lossy", unique("close"), action="sell", contracts="0.02", price="49000", reduce_only=True),
        )
        assert response.status_code == 200, response.text  # a reducing order passes the halt
    finally:
        assert control(server.url, "resume", account="lossy").status_code == 200


def test_a_closing_order_passes_while_halted_and_over_a_limit(server, emu):
    for contracts in ("0.02", "0.01"):  # at the position limit
        assert send_alert(server.url, alert("capped", unique("o"), contracts=contracts)).status_code == 200
    response = control(server.url, "halt", account="capped", reason="test")
    assert response.status_code == 200, response.text
    try:
        response = send_alert(server.url, alert("capped", unique("o"), contracts="0.002"))
        assert response.status_code == 422 and response.json()["error"]["message"].startswith(
            "refused by halt: account 'capped' is halted (test; by http:hmac"
        )
        metrics = httpx.get(server.url + "/metrics", headers=MONITOR).text
        assert 'account_halted{account="capped"} 1.0' in metrics and 'account_halted{account="plain"} 0.0' in metrics
        response = send_alert(
            server.url, {"ticker": "BTCUSDT.P", "action": "close", "id": unique("c"), "account": "capped"}
        )
        assert response.status_code == 200, response.text
        assert positions(emu) == {}
    finally:
        assert control(server.url, "resume", account="capped").json()["accounts"] == ["capped"]
    assert send_alert(server.url, alert("capped", unique("o"), contracts="0.002")).status_code == 200


def open_two_positions_and_three_orders(url: str, account: str) -> None:
    for fields in (
        {"contracts": "0.01"},
        {"ticker": "ETHUSDT.P", "action": "sell", "contracts": "0.5", "price": "3000"},
        {"contracts": "0.01", "type": "limit", "price": "40000"},
        {"contracts": "0.01", "type": "limit", "price": "41000"},
        {"ticker": "BINANCE:BTCUSDT", "contracts": "0.01", "type": "limit", "price": "40000"},
    ):
        response = send_alert(url, alert(account, unique("f"), **fields))
        assert response.status_code == 200, response.text


def flatten_done(url: str, flatten_id: str) -> dict | None:
    status = control(url, "status").json()
    record = next((f for f in status["flattens"] if f["flatten_id"] == flatten_id), None)
    return record if record and record["state"] in ("done", "failed") else None


def assert_flat_and_each_order_once(emu) -> None:
    assert positions(emu) == {}
    assert [o for o in emu.orders() if o["status"] in ("NEW", "PARTIALLY_FILLED")] == []
    client_ids = [o["client_order_id"] for o in emu.orders()]
    assert len(client_ids) == len(set(client_ids))
    assert len(emu.requests()) == len(client_ids)  # every placement attempt booked once


def test_flatten_cancels_every_order_and_closes_every_position_once(server, emu):
    open_two_positions_and_three_orders(server.url, "plain")
    assert len(positions(emu)) == 2
    response = control(server.url, "flatten", account="plain")
    assert response.status_code == 202, response.text
    record = wait_until(lambda: flatten_done(server.url, response.json()["flatten_id"]))
    try:
        assert record["state"] == "done", record
        assert_flat_and_each_order_once(emu)
        assert len(record["steps"]) == 4  # cancels on two markets, two closes
        for step_id, state in record["steps"].items():
            assert alert_status(server.url, step_id)["state"] == state
    finally:
        control(server.url, "resume", account="plain")


@pytest.mark.parametrize(
    "strategy,expected_state", [("s-notify", "notify"), ("s-correct", "correct"), ("s-halt", "halt")]
)
def test_strategy_position_sync_after_a_lost_alert(server, emu, sink, strategy, expected_state):
    # The strategy's first entry (position 0.01) never arrived; the second says 0.02.
    first = unique("s")
    response = send_alert(server.url, alert("sync", first, contracts="0.01", strategy=strategy, position_size="0.02"))
    assert response.status_code == 200, response.text
    event = sink.wait_for(lambda e: e["event"]["alert_id"] == first and e["event"]["state"] == "mismatch")
    text = event["text"]
    ratio = "2" if strategy == "s-halt" else "1"
    expected = "0.04" if strategy == "s-halt" else "0.02"
    assert (
        f"strategy '{strategy}' expects {expected} BTC/USDT:USDT on account 'sync' (position_size 0.02 × ratio "
        f"{ratio}.00) but the exchange holds 0.01"
    ) in text, text
    try:
        if expected_state == "notify":
            assert len(emu.orders()) == 1
        elif expected_state == "correct":
            assert f"correction {first}-sync: filled" in text
            assert [(o["side"], o["quantity"]) for o in emu.orders()] == [("BUY", "0.01"), ("BUY", "0.01")]
            assert alert_status(server.url, f"{first}-sync")["state"] == "filled"
        else:
            assert "account 'sync' halted" in text
            response = send_alert(server.url, alert("sync", unique("s"), contracts="0.01"))
            assert response.status_code == 422 and "halted (position mismatch" in response.json()["error"]["message"]
    finally:
        control(server.url, "resume", account="sync")


# ---------------------------------------------------------------- several workers and servers (slow)


def cli(env: dict, cwd, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "core", "risk", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("state_url", ["redis://127.0.0.1:6379/15"], indirect=True)
def test_a_halt_holds_across_workers_servers_on_one_redis_and_restarts(tmp_path, emulator, state_url, state_prefix):
    import concurrent.futures

    import redis

    emulator.control.reset()
    config = risk_config(emulator.url, only=("plain",))
    servers = []
    try:
        env = {"STATE_URL": state_url, "STATE_PREFIX": state_prefix}
        for name in ("a", "b"):
            data = tmp_path / name
            data.mkdir()
            (data / "plugins.yaml").write_text(yaml.safe_dump(config))
            servers.append(ServerProcess(base_env(data, **env), data, workers=2 if name == "a" else 1).start())
        a, b = servers
        assert control(a.url, "halt", account="plain").status_code == 200
        # Alerts to the two-worker server until both workers have refused one (the journal
        # row's owner names the worker), and one to the second server.
        journal = redis.Redis.from_url(state_url, decode_responses=True)
        workers: set[str] = set()

        def refused(url: str) -> str:
            alert_id = unique("h")
            response = send_alert(url, alert("plain", alert_id))  # a new connection each: any worker may take it
            assert response.status_code == 422 and response.json()["error"]["message"].startswith(
                "refused by halt: account 'plain' is halted"
            ), response.text
            return journal.hget(f"{state_prefix}:a:{alert_id}", "owner").split("-")[0]

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for _ in range(10):
                workers.update(pool.map(lambda _: refused(a.url), range(4)))
                if len(workers) == 2:
                    break
        assert len(workers) == 2
        refused(b.url)
        assert emulator.control.orders() == []
        b.stop()
        b.start()
        assert send_alert(b.url, alert("plain", unique("h"))).status_code == 422
        assert "plain" in json.loads(cli(base_env(tmp_path / "a", **env), tmp_path / "a", "status"))["halts"]
        assert cli(base_env(tmp_path / "a", **env), tmp_path / "a", "resume", "--account", "plain") == "resumed plain\n"
        assert send_alert(a.url, alert("plain", unique("h"))).status_code == 200
    finally:
        for server in servers:
            server.stop()


@pytest.mark.slow
def test_max_orders_per_minute_holds_across_two_workers_under_a_burst(tmp_path, emulator):
    import concurrent.futures

    emulator.control.reset()
    data = tmp_path / "burst"
    data.mkdir()
    (data / "plugins.yaml").write_text(yaml.safe_dump(risk_config(emulator.url, only=("rated",))))
    with (
        ServerProcess(base_env(data), data, workers=2) as server,
        httpx.Client(limits=httpx.Limits(max_connections=12)) as client,
        concurrent.futures.ThreadPoolExecutor(12) as pool,
    ):
        answers = list(
            pool.map(lambda i: send_alert(server.url, alert("rated", unique(f"b{i}")), client=client), range(12))
        )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 200] + [422] * 10, [r.text for r in answers]
    assert len(emulator.control.orders()) == 2


@pytest.mark.slow
def test_flatten_completes_exactly_once_after_kill_9_mid_way(tmp_path, emulator):
    emu = emulator.control
    emu.reset()
    data = tmp_path / "kill"
    data.mkdir()
    (data / "plugins.yaml").write_text(yaml.safe_dump(risk_config(emulator.url, only=("plain",))))
    server = ServerProcess(base_env(data), data).start()
    try:
        open_two_positions_and_three_orders(server.url, "plain")
        # The first close is booked but its answer held: the server dies with it in flight.
        emu.add_fault("delay_after_book", seconds=30, match={"route": "order.place"}, count=1)
        response = control(server.url, "flatten", account="plain")
        assert response.status_code == 202
        flatten_id = response.json()["flatten_id"]
        wait_until(lambda: len(emu.orders()) == 6)  # five from the setup, the first close
        server.kill()
        emu.clear_faults()
        server = ServerProcess(base_env(data), data).start()
        record = wait_until(lambda: flatten_done(server.url, flatten_id), timeout=60)
        assert record["state"] == "done", record
        assert_flat_and_each_order_once(emu)
    finally:
        server.stop()
