"""Several server processes sharing one deployment's state (issue: scale out on Redis).

Two real servers, A and B, on different ports, in two modes:

* ``redis``: separate DATA_DIRs (as on two machines), one Redis (STATE_URL);
* ``sqlite``: one DATA_DIR shared by both (as the workers of one machine).

Both trade on one emulated exchange through ccxt's real binance class. And a
``hypercorn --workers 2`` server on SQLite for the same guarantees inside one server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from core.pipeline.ids import journal_key
from tests.ccxt_support import EmulatorProcess, alert_status, emulator_account, plugins_yaml
from tests.conftest import REDIS_TEST_URL, redis_answers
from tests.support import MONITOR, ROOT, ServerProcess, base_env, free_port, signed_headers

pytestmark = pytest.mark.slow

ROUTER = {
    "worker_heartbeat": 0.2,
    "worker_stale_after": 1.0,
    "reconcile_interval": 0.1,
    "reconcile_max_delay": 0.5,
    "resubmit_after": 30,
    "response_budget": 2.5,
}


@pytest.fixture
def emulator(emulator):
    """The module's emulator process (tests/conftest.py), back to its start configuration
    (accounts, balances, no orders, no faults) for every test: one process start per module."""
    emulator.control.reset()
    return emulator


def require_redis() -> None:
    if not redis_answers():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Redis is not answering (CI starts it in .ci/run)")
        pytest.skip("Redis is not answering")


class Deployment:
    """Servers sharing state, and what they booked on the emulator."""

    def __init__(self, mode: str, tmp_path: Path, emulator: EmulatorProcess, state_prefix: str):
        self.mode, self.tmp, self.emulator = mode, tmp_path, emulator
        self.prefix = state_prefix
        self.servers: list[ServerProcess] = []

    def data_dir(self, name: str) -> Path:
        path = self.tmp / ("shared" if self.mode == "sqlite" else name)
        path.mkdir(exist_ok=True)
        (path / "plugins.yaml").write_text(
            plugins_yaml({"emu": emulator_account("binance", self.emulator.url)}, router=ROUTER)
        )
        return path

    def env(self, name: str, **extra: str) -> dict[str, str]:
        env = base_env(
            self.data_dir(name),
            STATE_URL=REDIS_TEST_URL if self.mode == "redis" else "sqlite",
            STATE_PREFIX=self.prefix,
            **extra,
        )
        return env

    def start(self, name: str, *, workers: int = 1, **extra: str) -> ServerProcess:
        server = ServerProcess(self.env(name, **extra), self.tmp, workers=workers)
        self.servers.append(server)
        return server.start()

    def orders(self, client_order_id: str | None = None) -> list[dict]:
        rows = self.emulator.control.orders()
        return [r for r in rows if client_order_id is None or r["client_order_id"] == client_order_id]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(params=["redis", "sqlite"])
def deployment(request, tmp_path, emulator, state_prefix):
    if request.param == "redis":
        require_redis()
    dep = Deployment(request.param, tmp_path, emulator, state_prefix)
    yield dep
    dep.stop()
    if request.param == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_TEST_URL)
        keys = list(client.scan_iter(match=f"{state_prefix}:*"))
        if keys:
            client.delete(*keys)


def alert(alert_id: str, side: str = "buy", **extra) -> bytes:
    return json.dumps(
        {
            "account": "emu",
            "symbol": "BTCUSDT",
            "side": side,
            "amount": "0.001",
            "price": "50000",
            "id": alert_id,
            **extra,
        }
    ).encode()


def client_id(alert_id: str) -> str:
    from core.trading.execution import client_order_id

    return client_order_id(alert_id, "emu")


def post(server: ServerProcess, body: bytes, headers: dict | None = None) -> httpx.Response:
    return httpx.post(server.url + "/webhook", content=body, headers=headers or signed_headers(body), timeout=15)


def test_a_request_accepted_by_one_server_is_a_replay_on_the_other(deployment):
    a, b = deployment.start("a"), deployment.start("b")
    body = alert("replay-1")
    headers = signed_headers(body)
    assert post(a, body, headers).status_code == 200
    refused = post(b, body, headers)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert len(deployment.orders(client_id("replay-1"))) == 1


def test_a_token_revoked_through_one_server_is_refused_by_the_other(deployment):
    a, b = deployment.start("a"), deployment.start("b")

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage_tokens.py", *args],
            cwd=ROOT,
            env=deployment.env("a"),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    token = manage("issue", "--label", "tv", "--account", "emu").splitlines()[0].strip()  # the alerts name "emu"
    assert (
        post(
            a, json.dumps({"token": token, **json.loads(alert("tok-1"))}).encode(), {"Content-Type": "text/plain"}
        ).status_code
        == 200
    )
    assert len(deployment.orders(client_id(journal_key("token:tv", "tok-1")))) == 1  # the token's own id namespace
    manage("revoke", token)
    refused = post(
        b, json.dumps({"token": token, **json.loads(alert("tok-2"))}).encode(), {"Content-Type": "text/plain"}
    )
    assert refused.status_code == 401
    assert deployment.orders(client_id(journal_key("token:tv", "tok-2"))) == []


def test_rate_limit_counts_across_both_servers(deployment):
    a, b = deployment.start("a", RATE_LIMIT="3/minute"), deployment.start("b", RATE_LIMIT="3/minute")
    statuses = [post(server, alert(f"rl-{i}")).status_code for i, server in enumerate((a, b, a))]
    assert statuses == [200, 200, 200]
    fourth = post(b, alert("rl-3"))
    if deployment.mode == "sqlite":
        # Two single-worker servers: each counts in its own memory (core.store.factory); the
        # workers of one server share DATA_DIR/ratelimit.sqlite3 (test_two_workers_on_sqlite_...).
        assert fourth.status_code == 200, "B has counted two of its own"
        assert [post(a, alert(f"rl-{i}")).status_code for i in (4, 5)] == [200, 429]
        return
    assert fourth.status_code == 429 and int(fourth.headers["Retry-After"]) >= 1
    assert deployment.orders(client_id("rl-3")) == []


def test_the_same_alert_sent_to_both_at_once_is_one_order(deployment):
    a, b = deployment.start("a"), deployment.start("b")
    body = alert("twice-1")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda server: post(server, body), [a, b, a, b, a, b]))
    assert all(r.status_code in (200, 202) for r in answers), [r.text for r in answers]
    assert len(deployment.orders(client_id("twice-1"))) == 1


def test_alternating_alerts_split_across_servers_execute_in_arrival_order(deployment):
    a, b = deployment.start("a"), deployment.start("b")
    ids = [f"flip-{i:02d}" for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: post((a, b)[i % 2], alert(ids[i], side=("buy", "sell")[i % 2])), range(20)))
    assert all(r.status_code in (200, 202) for r in answers), [r.text for r in answers]
    deadline = time.monotonic() + 30
    while len(deployment.orders()) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the emulator for the last orders, bounded
    booked = sorted(deployment.orders(), key=lambda r: r["seq"])
    arrival = sorted(ids, key=lambda i: alert_status(a.url, i)["seq"])
    assert [r["client_order_id"] for r in booked] == [client_id(i) for i in arrival]


def test_kill_9_with_an_order_in_flight_is_reconciled_by_the_other_server(deployment):
    a, b = deployment.start("a"), deployment.start("b")
    deployment.emulator.control.add_fault("delay_after_book", seconds=30, match={"route": "order.place"})
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            lambda: httpx.post(
                a.url + "/webhook", content=alert("inflight-1"), headers=signed_headers(alert("inflight-1")), timeout=10
            )
        )
        deadline = time.monotonic() + 10
        while not deployment.orders(client_id("inflight-1")) and time.monotonic() < deadline:
            time.sleep(0.02)  # waiting for the emulator to book it (its reply is held back)
        assert deployment.orders(client_id("inflight-1")), "the emulator never booked the order"
        a.kill()
        try:
            pending.result()
        except httpx.HTTPError:
            pass  # the server died mid-request, as intended
    deployment.emulator.control.clear_faults()
    deadline = time.monotonic() + 20
    state = None
    while time.monotonic() < deadline:
        state = alert_status(b.url, "inflight-1").get("state")
        if state in ("reconciled", "filled"):
            break
        time.sleep(0.1)  # B claims A's alert once A's heartbeat is stale, then reconciles it
    assert state == "reconciled"
    assert len(deployment.orders(client_id("inflight-1"))) == 1


def test_redis_outage_refuses_new_alerts_with_503_and_recovers_by_itself(tmp_path, emulator, state_prefix):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    cmd = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--dir",
        str(redis_dir),
        "--daemonize",
        "no",
    ]

    def start_redis() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not redis_answers(f"redis://127.0.0.1:{port}/0") and time.monotonic() < deadline:
            time.sleep(0.02)  # until it answers PING, bounded
        return proc

    redis_proc = start_redis()
    server = None
    try:
        data = tmp_path / "data"
        data.mkdir()
        (data / "plugins.yaml").write_text(
            plugins_yaml({"emu": emulator_account("binance", emulator.url)}, router=ROUTER)
        )
        server = ServerProcess(
            base_env(data, STATE_URL=f"redis://127.0.0.1:{port}/0", STATE_PREFIX=state_prefix), tmp_path
        )
        server.start()
        assert post(server, alert("before-outage")).status_code == 200

        redis_proc.send_signal(signal.SIGKILL)
        redis_proc.wait(10)
        refused = post(server, alert("during-outage"))
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "state_store_unavailable"
        health = httpx.get(server.url + "/", headers=MONITOR, timeout=10).json()
        assert health["status"] == "degraded" and health["state"]["ok"] is False and "Redis" in health["state"]["error"]
        assert emulator.control.orders(client_order_id=client_id("during-outage")) == []

        redis_proc = start_redis()  # same port, same append-only file
        deadline = time.monotonic() + 15
        answer = None
        while time.monotonic() < deadline:
            answer = post(server, alert("after-outage"))
            if answer.status_code != 503:
                break
            time.sleep(0.1)  # redis-py reconnects on the next command; retrying like TradingView would
        assert answer is not None and answer.status_code == 200, answer.text
        assert httpx.get(server.url + "/", headers=MONITOR, timeout=10).json()["state"]["ok"] is True
        # The alert accepted before the outage is still known (replay refused, journal intact).
        assert alert_status(server.url, "before-outage")["state"] == "filled"
    finally:
        if server is not None:
            server.stop()
        redis_proc.kill()


def test_two_workers_on_sqlite_share_replay_dedup_limits_and_order(tmp_path, emulator):
    data = tmp_path / "data"
    data.mkdir()
    (data / "plugins.yaml").write_text(plugins_yaml({"emu": emulator_account("binance", emulator.url)}, router=ROUTER))
    server = ServerProcess(base_env(data, RATE_LIMIT="1000/minute"), tmp_path, workers=2).start()
    try:
        # Replay: the same signed request on fresh connections (either worker may take it).
        body = alert("w-replay")
        headers = signed_headers(body)
        statuses = sorted(post(server, body, headers).status_code for _ in range(4))
        assert statuses == [200, 401, 401, 401]
        # Dedup: one alert sent five times at once → one order.
        body = alert("w-same")
        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(lambda _: post(server, body), range(5)))
        assert all(r.status_code in (200, 202) for r in answers)
        assert len(emulator.control.orders(client_order_id=client_id("w-same"))) == 1
        # Order: 20 alternating alerts at once execute in arrival order.
        ids = [f"w-flip-{i:02d}" for i in range(20)]
        with ThreadPoolExecutor(20) as pool:
            list(pool.map(lambda i: post(server, alert(ids[i], side=("buy", "sell")[i % 2])), range(20)))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            booked = [r for r in emulator.control.orders() if r["client_order_id"] in {client_id(i) for i in ids}]
            if len(booked) == 20:
                break
            time.sleep(0.05)  # polling the emulator for the last orders, bounded
        arrival = sorted(ids, key=lambda i: alert_status(server.url, i)["seq"])
        assert [r["client_order_id"] for r in sorted(booked, key=lambda r: r["seq"])] == [client_id(i) for i in arrival]
    finally:
        server.stop()


def test_two_workers_on_sqlite_count_one_rate_limit(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProcess(base_env(data, RATE_LIMIT="3/minute"), tmp_path, workers=2).start()
    try:
        statuses = []
        for i in range(4):
            with httpx.Client() as fresh:  # a new connection each time: the kernel spreads them over the workers
                body = json.dumps(
                    {"symbol": "BTCUSDT", "side": "buy", "amount": "0.001", "price": "50000", "id": f"wrl-{i}"}
                ).encode()
                statuses.append(
                    fresh.post(server.url + "/webhook", content=body, headers=signed_headers(body)).status_code
                )
        assert statuses == [200, 200, 200, 429]
    finally:
        server.stop()
