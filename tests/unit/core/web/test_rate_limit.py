"""Rate limits: RATE_LIMIT per client address (or principal), the stricter budget of
requests refused before they authenticate, 429 with Retry-After; the server tests use
distinct loopback source addresses (127.0.0.x) as distinct clients."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import time

import pytest
from limits import RateLimitItemPerMinute

from core.config import Settings
from core.errors import ConfigError, RateLimited
from core.web.ratelimit import (
    IPV6_SITE_SCALE,
    LOGIN_LIMITS,
    BoundedMemoryStore,
    MemoryRateStorage,
    WebhookLimits,
    address_key,
    parse_rate_limits,
)
from tests.abuse_support import TEXT_PLAIN, client_from, issue_token_async, ledger_count, running_server, token_body
from tests.conftest import REDIS_TEST_URL, STATE_BACKENDS, redis_answers
from tests.support import alert_body, signed_headers
from tests.unit.core.web.race_support import RACE_LIMIT, race


class FakeClock:
    """``time.time`` for limits' storages and this project's code alike (both read it)."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(time, "time", fake)
    return fake


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10/minute", [(10, 60)]),
        ("3/second, 100/hour,1000/day", [(3, 1), (100, 3600), (1000, 86400)]),
        ("5 per minute", [(5, 60)]),
        ("2/Minutes", [(2, 60)]),
        ("off", []),
    ],
)
def test_rate_limit_forms(text, expected):
    assert [(limit.amount, limit.get_expiry()) for limit in parse_rate_limits(text)] == expected


@pytest.mark.parametrize(
    "text", ["10", "10/fortnight", "0/minute", "-1/minute", "ten/minute", "10/minute;5/second", "10/minute,"]
)
def test_bad_rate_limits_stop_startup_naming_the_variable(text):
    with pytest.raises(ConfigError, match="RATE_LIMIT"):
        Settings.from_env(env_file=None, environ={"RATE_LIMIT": text})
    with pytest.raises(ConfigError, match="AUTH_FAILURE_LIMIT"):
        Settings.from_env(env_file=None, environ={"AUTH_FAILURE_LIMIT": text})


def test_rate_limit_key_and_defaults():
    settings = Settings.from_env(env_file=None, environ={"RATE_LIMIT_KEY": "Principal"})
    assert (settings.rate_limit_key, settings.auth_failure_limit, settings.trusted_proxies) == (
        "principal",
        "5/minute,30/hour",
        "",
    )
    with pytest.raises(ConfigError, match="RATE_LIMIT_KEY"):
        Settings.from_env(env_file=None, environ={"RATE_LIMIT_KEY": "user"})


# ---------------------------------------------------------------- the budgets, with a clock


def limits(rate="3/minute", failures="2/minute", key_by="ip"):
    return WebhookLimits(parse_rate_limits(rate), parse_rate_limits(failures), key_by=key_by)


async def test_fourth_request_in_the_minute_is_refused_with_retry_after(clock):
    budget = limits()
    for _ in range(3):
        await budget.before_request("10.0.0.1")
    clock.now += 0.5
    with pytest.raises(RateLimited) as refused:
        await budget.before_request("10.0.0.1")
    assert refused.value.status == 429 and refused.value.code == "rate_limited"
    assert refused.value.headers["Retry-After"] == "60"  # a moving window: the first three leave it at +60 s
    await budget.before_request("10.0.0.2")  # another address is unaffected
    clock.now += 59
    with pytest.raises(RateLimited):  # at most 3 in any 60 s, never a 4th
        await budget.before_request("10.0.0.1")
    clock.now += 1
    for _ in range(3):
        await budget.before_request("10.0.0.1")
    with pytest.raises(RateLimited):
        await budget.before_request("10.0.0.1")


async def test_refused_requests_spend_nothing_on_any_of_their_limits(clock):
    # The minute's counter is hit first; when the second's refuses, that hit is refunded.
    budget = limits(rate="5/minute,1/second")
    await budget.before_request("10.0.0.1")
    for _ in range(50):
        with pytest.raises(RateLimited):
            await budget.before_request("10.0.0.1")
    for _ in range(4):
        clock.now += 1.5
        await budget.before_request("10.0.0.1")  # 5 in the minute: none of the 50 was counted
    clock.now += 1.5
    with pytest.raises(RateLimited):
        await budget.before_request("10.0.0.1")


async def test_several_limits_all_apply(clock):
    budget = limits(rate="2/second,3/minute")
    await budget.before_request("a")
    await budget.before_request("a")
    with pytest.raises(RateLimited) as per_second:
        await budget.before_request("a")
    assert per_second.value.headers["Retry-After"] == "1"
    clock.now += 1.5
    await budget.before_request("a")
    clock.now += 1
    with pytest.raises(RateLimited) as per_minute:
        await budget.before_request("a")
    assert per_minute.value.headers["Retry-After"] == "58"  # the first two leave the minute at +60 s


async def test_failure_budget_is_checked_always_charged_only_by_failures(clock):
    budget = limits(rate="100/second", failures="2/minute")
    for _ in range(10):
        await budget.before_request("10.0.0.1")  # successes never charge it
    await budget.failed("10.0.0.1")
    await budget.failed("10.0.0.1")
    clock.now += 30
    with pytest.raises(RateLimited) as refused:
        await budget.before_request("10.0.0.1")
    assert refused.value.headers["Retry-After"] == "30"
    await budget.before_request("10.0.0.9")
    clock.now += 30.5
    await budget.before_request("10.0.0.1")


async def test_principal_keying_applies_after_authentication_only(clock):
    budget = limits(rate="2/minute", key_by="principal")
    for _ in range(10):
        await budget.before_request("10.0.0.1")  # the address is not limited by RATE_LIMIT
    await budget.authenticated("token:a")
    await budget.authenticated("token:a")
    with pytest.raises(RateLimited):
        await budget.authenticated("token:a")
    await budget.authenticated("token:b")


def test_ipv6_clients_are_keyed_by_their_64():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:52.89.214.238") == "52.89.214.238"
    assert address_key("203.0.113.7") == "203.0.113.7"


async def test_memory_storage_is_bounded_and_swept_without_a_task_per_hit(clock):
    store = MemoryRateStorage(max_keys=100, sweep_every=10)
    budget = WebhookLimits(parse_rate_limits("1/second"), [], store=store)
    tasks = len(asyncio.all_tasks())
    for i in range(1000):
        await budget.before_request(f"10.0.{i // 256}.{i % 256}")
    assert len(store) <= 100
    assert len(asyncio.all_tasks()) == tasks, "limits' own sweep (a task walking every key) is replaced"
    clock.now += 10
    await budget.before_request("192.0.2.1")  # a sweep is due: what expired is dropped
    assert len(store) == 1
    with pytest.raises(RateLimited):
        await budget.before_request("192.0.2.1")  # the bound never forgets a live counter early


async def test_the_bound_drops_the_counters_hit_least_recently(clock):
    store = MemoryRateStorage(max_keys=10, sweep_every=3600)
    budget = WebhookLimits(parse_rate_limits("1/hour"), [], store=store)
    await budget.before_request("192.0.2.1")
    for i in range(30):
        clock.now += 1
        await budget.before_request(f"10.0.0.{i}")
    assert len(store) <= 10
    clock.now += 1
    await budget.before_request("192.0.2.1")  # its counter, the oldest, went first
    with pytest.raises(RateLimited):
        await budget.before_request("10.0.0.29")  # the newest is still counted


async def test_a_memory_window_holds_at_most_its_limit_and_refunds_its_newest_entry(clock):
    store = MemoryRateStorage(sweep_every=3600)  # no sweep: each hit trims its own window
    budget = WebhookLimits(parse_rate_limits("3/second"), [], store=store)
    for _ in range(200):
        await budget.before_request("10.0.0.1")
        clock.now += 0.4
    assert max(len(window) for window in store.windows.values()) <= 3
    assert await store.acquire_entry("k", 2, 60)
    clock.now += 10
    assert await store.acquire_entry("k", 2, 60)
    await store.refund("k")  # the newest goes: the window now starts at the first entry
    start, count = await store.get_moving_window("k", 2, 60)
    assert (start, count) == (clock.now - 10, 1)
    clock.now += 50.5
    assert (await store.get_moving_window("k", 2, 60))[1] == 0


def test_the_memory_budgets_check_and_charge_without_awaiting():
    """Nothing is awaited between a check and its charge on the memory storage: each call
    completes on its first step, so no other request can run in between (exact without a lock)."""
    budget = limits(rate="2/minute", failures="1/minute")

    def step(call) -> None:
        coroutine = call("10.0.0.1")
        with pytest.raises(StopIteration):
            coroutine.send(None)

    for call in (budget.before_request, budget.check_failures, budget.reserve_failure, budget.release_failure):
        step(call)
    step(budget.before_request)
    with pytest.raises(RateLimited):
        step(budget.before_request)


async def test_the_counters_of_each_client_are_built_once_and_bounded():
    budget = WebhookLimits(parse_rate_limits("1000/second"), parse_rate_limits("5/minute"), cache_size=50)
    for i in range(500):
        await budget.before_request(f"10.1.{i // 256}.{i % 256}")
        await budget.before_request(f"10.1.{i // 256}.{i % 256}")
    for i in range(100):  # the addresses of one /64 share its counters
        await budget.before_request(f"2001:db8:5:1::{i:x}")
    info = budget._counters_of_key.cache_info()
    assert info.currsize <= 50 and info.hits == 500 + 99


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_counters_are_the_ones_limits_keys_and_reads(kind, tmp_path, state_prefix):
    """The keys are limits' own (``key_for``): workers of another version sharing SQLite or
    Redis, and limits' ``MovingWindowRateLimiter``, see the same counts."""
    from limits.aio.strategies import MovingWindowRateLimiter

    from core.store.redis.client import redis_client
    from core.store.redis.rate import RedisRateStorage
    from core.store.sqlite.rate import SqliteRateStorage

    if kind == "redis" and not redis_answers():
        pytest.skip("Redis is not answering")
    client = redis_client(REDIS_TEST_URL) if kind == "redis" else None
    store = (
        MemoryRateStorage()
        if kind == "memory"
        else SqliteRateStorage(tmp_path / "rl.sqlite3")
        if client is None
        else RedisRateStorage(client, state_prefix)
    )
    try:
        (item,) = parse_rate_limits("4/minute")
        budget = WebhookLimits([], [item], store=store)
        await budget.failed("2001:db8:9:1::5")
        await budget.failed("2001:db8:9:1::6")
        await budget.reserve_failure("2001:db8:9:1::7")
        reader = MovingWindowRateLimiter(store)
        remaining = await reader.get_window_stats(item, "webhook", "auth-failures", "2001:db8:9:1::/64")
        assert remaining.remaining == 1
        site = await reader.get_window_stats(
            RateLimitItemPerMinute(4 * IPV6_SITE_SCALE), "webhook", "auth-failures", "2001:db8:9::/48"
        )
        assert site.remaining == 4 * IPV6_SITE_SCALE - 3
        await reader.hit(item, "webhook", "auth-failures", "2001:db8:9:1::/64")
        with pytest.raises(RateLimited):
            await budget.check_failures("2001:db8:9:1::8")
    finally:
        await store.after_serving()
        if client is not None:
            keys = [k async for k in client.scan_iter(match=f"{state_prefix}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


# ---------------------------------------------------------------- the backend, chosen once


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_memory_with_one_worker_shared_with_several_or_with_redis(make_settings, state_url, monkeypatch):
    from core.store.factory import StateBackend
    from core.store.redis.rate import RedisRateStorage
    from core.store.sqlite.rate import SqliteRateStorage
    from core.web import worker

    state = StateBackend(make_settings())
    try:
        assert worker.hypercorn_workers() == 1  # this process serves alone
        if state.is_redis:
            assert isinstance(state.rate_store(), RedisRateStorage)
            assert state.rate_store(durable=True) is state.rate_store()
            return
        assert isinstance(state.rate_store(), MemoryRateStorage)
        assert isinstance(state.rate_store(durable=True), SqliteRateStorage)  # the dashboard's logouts
        monkeypatch.setattr(worker, "hypercorn_workers", lambda: 2)
        assert state.rate_store() is state.rate_store(durable=True)
    finally:
        await state.aclose()


async def test_an_unreachable_redis_answers_503_nothing_sent():
    from core.errors import StoreUnavailable
    from core.store.redis.client import redis_client
    from core.store.redis.rate import RedisRateStorage

    client = redis_client("redis://127.0.0.1:1/0")  # nothing listens there
    budget = WebhookLimits(
        parse_rate_limits("3/minute"), parse_rate_limits("2/minute"), store=RedisRateStorage(client, "t")
    )
    try:
        for step in (budget.before_request, budget.reserve_failure, budget.release_failure, budget.failed):
            with pytest.raises(StoreUnavailable, match="ConnectionError"):
                await step("10.0.0.1")
    finally:
        await client.aclose()


# ---------------------------------------------------------------- atomic across processes


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_check_and_charge_are_atomic_across_processes(backend, tmp_path, state_prefix):
    """Two processes (as two workers) race 2 x 40 requests from one address at a limit of 7
    (tests/unit/core/web/race_support.py): exactly 7 are allowed, whichever process made them."""
    if backend == "redis" and not redis_answers():
        pytest.skip("Redis is not answering")
    location = str(tmp_path / "ratelimit.sqlite3") if backend == "sqlite" else f"{REDIS_TEST_URL}#{state_prefix}"
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Event(), spawn.Queue()
    workers = [spawn.Process(target=race, args=(backend, location, start, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        start.set()
        allowed = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
        if backend == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_TEST_URL)
            keys = list(client.scan_iter(match=f"{state_prefix}:*"))
            if keys:
                client.delete(*keys)
    assert sum(allowed) == RACE_LIMIT and len(allowed) == 2, allowed


# ---------------------------------------------------------------- quart-rate-limiter: the login brake


async def test_quart_rate_limiter_brakes_the_dashboard_login_form_per_address(app_client):
    async with app_client(DASHBOARD_PASSWORD="correct horse battery") as (client, _app):
        count = LOGIN_LIMITS[0].count
        answers = [
            (await client.post("/dashboard/login", form={}, scope_base={"client": ("203.0.113.5", 1)})).status_code
            for _ in range(count + 1)
        ]
        assert answers == [403] * count + [429]  # 403: no CSRF token; the brake counts every post
        refused = await client.post("/dashboard/login", form={}, scope_base={"client": ("203.0.113.5", 1)})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert (await refused.get_json())["error"]["code"] == "rate_limited"
        other = await client.post("/dashboard/login", form={}, scope_base={"client": ("203.0.113.6", 1)})
        assert other.status_code == 403, "another address has its own count"
        page = await client.get("/dashboard/login", scope_base={"client": ("203.0.113.5", 1)})
        assert page.status_code == 200, "only the form's posts are braked"


async def test_quart_rate_limiters_hooks_run_only_on_the_blueprint_of_a_limited_route(app_client):
    def limited(hooks: dict) -> set:
        return {name for name, funcs in hooks.items() if any("RateLimiter" in repr(f) for f in funcs)}

    async with app_client() as (_client, app):
        hooked, after = limited(app.before_request_funcs), limited(app.after_request_funcs)
        assert hooked == after == {"dashboard"}  # not None: the webhook's requests never run them
        assert "RateLimiter" in repr(app.before_request_funcs["dashboard"][0])  # before the dashboard's own guard


async def test_quart_rate_limiters_store_is_bounded():
    from datetime import UTC, datetime, timedelta

    store = BoundedMemoryStore(max_keys=100)
    future = datetime.now(UTC) + timedelta(minutes=1)
    for i in range(1000):
        await store.set(f"k{i}", future)
    assert len(store) <= 100
    assert await store.get("k999", datetime.fromtimestamp(0, UTC)) == future


# ---------------------------------------------------------------- in process: principal keying end to end


async def test_principal_keying_end_to_end(app_client, data_dir):
    first = await issue_token_async(data_dir, label="strategy-a")
    second = await issue_token_async(data_dir, label="strategy-b")
    async with app_client(RATE_LIMIT="2/minute", RATE_LIMIT_KEY="principal") as (client, app):

        async def send(token, alert_id):
            response = await client.post("/webhook", data=token_body(token, id=alert_id), headers=TEXT_PLAIN)
            return response.status_code, response.headers.get("Retry-After")

        assert [await send(first, f"a{i}") for i in range(2)] == [(200, None), (200, None)]
        status, retry_after = await send(first, "a3")
        assert status == 429 and int(retry_after) > 0
        assert (await send(second, "b1"))[0] == 200  # same address, another principal
        # Unauthenticated requests do not spend a principal's budget.
        for _ in range(5):
            assert (await client.post("/webhook", data=alert_body(), headers=TEXT_PLAIN)).status_code == 401
        assert (await send(second, "b2"))[0] == 200
    assert ledger_count(data_dir) == 4


# ---------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"RATE_LIMIT": "3/minute", "AUTH_FAILURE_LIMIT": "2/minute", "TRUSTED_PROXIES": "127.0.0.1"}
    with running_server(tmp_path_factory.mktemp("ratelimit"), **env) as server:
        yield server


_ids = itertools.count()


def post_signed(http, **headers):
    body = alert_body(id=f"rl-{next(_ids)}")
    return http.post("/webhook", content=body, headers=signed_headers(body) | headers)


def test_fourth_request_from_one_address_gets_429_another_address_is_unaffected(server):
    with (
        client_from("127.0.0.2", base_url=server.url) as first,
        client_from("127.0.0.3", base_url=server.url) as second,
    ):
        before = ledger_count(server.data_dir)
        assert [post_signed(first).status_code for _ in range(3)] == [200, 200, 200]
        limited = post_signed(first)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert ledger_count(server.data_dir) == before + 3, "a 429 executes nothing"
        assert post_signed(second).status_code == 200
        assert first.get("/").status_code == 200, "GET / is not rate limited"
    assert not (server.data_dir / "ratelimit.sqlite3").exists(), "one worker counts in its memory"


def test_forwarded_for_from_an_untrusted_peer_does_not_change_the_key(server):
    with client_from("127.0.0.4", base_url=server.url) as untrusted:
        statuses = [post_signed(untrusted, **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_forwarded_for_from_a_trusted_proxy_is_the_key(server):
    with client_from("127.0.0.1", base_url=server.url) as proxy:
        for client in ("203.0.113.1", "203.0.113.2"):
            statuses = [post_signed(proxy, **{"X-Forwarded-For": f"10.9.9.9, {client}"}).status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429], client
        # Spoofed entries to the left of the proxy's own are ignored: still 203.0.113.1.
        assert post_signed(proxy, **{"X-Forwarded-For": "1.2.3.4, 203.0.113.1"}).status_code == 429


def test_failed_authentication_has_its_own_stricter_budget(server):
    with (
        client_from("127.0.0.5", base_url=server.url) as attacker,
        client_from("127.0.0.6", base_url=server.url) as other,
    ):
        bad = alert_body(id="guess")
        assert [
            attacker.post("/webhook", content=bad, headers=signed_headers(bad, secret="guess")).status_code
            for _ in range(2)
        ] == [401, 401]
        before = ledger_count(server.data_dir)
        # Spent: refused before authentication, even with a valid signature.
        blocked = post_signed(attacker)
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
        assert ledger_count(server.data_dir) == before
        # Garbage bodies without credentials are refused (401, never parsed) and count as
        # failures too, and other addresses are unaffected.
        assert other.post("/webhook", content=b"{nope", headers={"Content-Type": "application/json"}).status_code == 401
        assert post_signed(other).status_code == 200
