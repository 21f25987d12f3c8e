"""What a request without valid credentials can make the server do (issue 11, findings 3
and 12): its body is never parsed, and however many arrive at once from one address, no
more reach authentication than the failure budget allows; IPv6 /48s are bounded."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from core.errors import RateLimited
from core.hooks.manager import hookimpl
from core.store.sqlite.rate import SqliteRateStorage
from core.web.ratelimit import (
    IPV6_SITE_SCALE,
    MemoryRateStorage,
    WebhookLimits,
    address_keys,
    parse_rate_limits,
)
from plugins.auth.token_auth import MISSING, extract_token
from tests.abuse_support import issue_token_async, token_body
from tests.conftest import STATE_BACKENDS
from tests.support import alert_body, signed_headers


class Counting:
    """Counts the bodies parsed and the requests that reached authentication."""

    def __init__(self) -> None:
        self.parsed = 0
        self.authenticating = 0

    @hookimpl(tryfirst=True)
    def parse_payload(self, body, content_type, router):
        self.parsed += 1
        # the built-in parser decides

    @hookimpl
    async def authenticate(self, request, router):
        self.authenticating += 1
        await asyncio.sleep(0)  # a real check awaits its store: others run meanwhile


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_a_bad_signature_or_unknown_token_gets_401_without_the_body_being_parsed(app_client, data_dir):
    counting = Counting()
    async with app_client(extra_plugins=[("counting", counting)]) as (client, app):
        costly = ("[" * 31 + ",".join(["1"] * 20000) + "]" * 31).encode()[:60000]
        forged = await client.post("/webhook", data=costly, headers=signed_headers(costly, secret="guess"))
        assert forged.status_code == 401
        unknown = await client.post("/webhook", data=token_body("not-a-token"), headers=JSON)
        assert unknown.status_code == 401
        anonymous = await client.post("/webhook", data=costly, headers=JSON)
        assert anonymous.status_code == 401
        assert counting.parsed == 0, "nothing is parsed for a request without valid credentials"
        body = alert_body(id="signed-ok")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        token = await issue_token_async(data_dir) if app.extensions["router"].state.url == "sqlite" else None
        if token is not None:
            answer = await client.post("/webhook", data=token_body(token, id="token-ok"), headers=JSON)
            assert answer.status_code == 200, await answer.get_json()
        assert counting.parsed == (2 if token else 1), "a body is parsed once it authenticated"


async def test_the_parsed_payload_never_carries_the_token(app_client, data_dir):
    seen: list[dict] = []

    class Spy:
        @hookimpl
        def transform_payload(self, payload, request, router):
            seen.append(dict(payload))

    async with app_client(extra_plugins=[("spy", Spy())]) as (client, _app):
        token = await issue_token_async(data_dir)
        answer = await client.post("/webhook", data=token_body(token, id="t-1"), headers=JSON)
        assert answer.status_code == 200
    assert seen and all("token" not in payload for payload in seen)


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"token":"abc","symbol":"x"}', "abc"),
        (b' {"symbol":"x", "token" : "a\\"b"}', 'a"b'),
        (b'{"meta":{"token":"nested"},"token":"top"}', "top"),
        (b'{"a":"\\"token\\":\\"decoy\\"","token":"real"}', "real"),
        (b'{"token":"\\u00e9t\\u00e9"}', "\u00e9t\u00e9"),
        (b'{"token":5}', None),
        (b'{"a":["token"],"b":1}', MISSING),
        (b'[{"token":"x"}]', MISSING),
        (b'{"x":"token":"y"}', MISSING),
        (b"token=abc", MISSING),
    ],
)
def test_token_extraction_reads_only_the_top_level_key(body, expected):
    assert extract_token(body) == expected if expected is not MISSING else extract_token(body) is MISSING
    if expected not in (None, MISSING):
        assert json.loads(body)["token"] == expected  # what the parser reads after authentication


@pytest.mark.parametrize("state_url", STATE_BACKENDS, indirect=True)
async def test_concurrent_bad_requests_from_one_address_reach_authentication_at_most_budget_times(app_client):
    counting = Counting()
    async with app_client(extra_plugins=[("counting", counting)], AUTH_FAILURE_LIMIT="5/minute,30/hour") as (
        client,
        _app,
    ):
        bodies = [alert_body(id=f"bad-{i}") for i in range(300)]
        answers = await asyncio.gather(
            *(client.post("/webhook", data=b, headers=signed_headers(b, secret="guess")) for b in bodies)
        )
        statuses = [a.status_code for a in answers]
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) == 5 and counting.authenticating == 5, (statuses.count(401), counting.authenticating)


async def test_a_successful_authentication_gives_its_reservation_back(app_client):
    async with app_client(AUTH_FAILURE_LIMIT="2/minute") as (client, _app):
        for i in range(6):  # more successes than the failure budget: none is charged
            body = alert_body(id=f"good-{i}")
            assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        bad = alert_body(id="bad")
        assert [
            (await client.post("/webhook", data=bad, headers=signed_headers(bad, secret="x"))).status_code
            for _ in range(3)
        ] == [401, 401, 429]


async def test_a_burst_of_good_alerts_from_a_new_address_is_never_refused_by_the_failure_budget(app_client):
    """TradingView fires several strategies' alerts on one bar close from one address: more
    at once than the failure budget must all trade (they take turns to authenticate)."""
    async with app_client(AUTH_FAILURE_LIMIT="2/minute") as (client, _app):
        bodies = [alert_body(id=f"burst-{i}") for i in range(12)]
        answers = await asyncio.gather(*(client.post("/webhook", data=b, headers=signed_headers(b)) for b in bodies))
        assert [a.status_code for a in answers] == [200] * 12
        bad = alert_body(id="bad")  # the budget is whole: its failures are still counted
        assert [
            (await client.post("/webhook", data=bad, headers=signed_headers(bad, secret="x"))).status_code
            for _ in range(3)
        ] == [401, 401, 429]


@pytest.mark.slow
def test_a_proven_address_sends_concurrent_alerts_to_the_real_server_without_429(tmp_path):
    """Through the real server (core.web.intake vouches for an address once it authenticated):
    32 alerts at once from it all trade, and its bad requests still spend its budget."""
    import httpx

    from tests.abuse_support import running_server

    with running_server(tmp_path, AUTH_FAILURE_LIMIT="3/minute") as server:
        first = alert_body(id="first")
        assert (
            httpx.post(server.url + "/webhook", content=first, headers=signed_headers(first), timeout=10).status_code
            == 200
        )

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=20) as http:
                bodies = [alert_body(id=f"proven-{i}") for i in range(32)]
                answers = await asyncio.gather(
                    *(http.post(server.url + "/webhook", content=b, headers=signed_headers(b)) for b in bodies)
                )
                return [a.status_code for a in answers]

        assert asyncio.run(burst()) == [200] * 32
        bad = alert_body(id="bad")
        assert [
            httpx.post(
                server.url + "/webhook", content=bad, headers=signed_headers(bad, secret="x"), timeout=10
            ).status_code
            for _ in range(4)
        ] == [401, 401, 401, 429]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def stores(request, tmp_path, state_prefix):
    """Two stores over the same state, as two workers (or machines) see it."""
    if request.param == "memory":
        store = MemoryRateStorage()
        yield store, store
        return
    if request.param == "sqlite":
        first, second = SqliteRateStorage(tmp_path / "rl.sqlite3"), SqliteRateStorage(tmp_path / "rl.sqlite3")
        yield first, second
        await first.after_serving()
        await second.after_serving()
        return
    from tests.conftest import REDIS_TEST_URL, redis_answers

    if not redis_answers():
        pytest.skip("Redis is not answering")
    from core.store.redis.client import redis_client
    from core.store.redis.rate import RedisRateStorage

    client = redis_client(REDIS_TEST_URL)
    yield RedisRateStorage(client, state_prefix), RedisRateStorage(client, state_prefix)
    keys = [k async for k in client.scan_iter(match=f"{state_prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_reservations_are_atomic_across_workers_sharing_a_store(stores):
    first, second = stores
    workers = [WebhookLimits([], parse_rate_limits("5/minute"), store=store) for store in (first, second)]

    async def attempt(limits: WebhookLimits) -> bool:
        try:
            await limits.reserve_failure("198.51.100.7")
            return True
        except RateLimited:
            return False

    results = await asyncio.gather(*(attempt(workers[i % 2]) for i in range(60)))
    assert results.count(True) == 5
    await workers[0].release_failure("198.51.100.7")  # one of them authenticated
    assert await attempt(workers[1]) is True
    assert await attempt(workers[0]) is False


async def test_ipv6_is_counted_by_64_and_bounded_by_48():
    assert [k for k, _ in address_keys("2001:db8:7:1::1")] == ["2001:db8:7:1::/64", "2001:db8:7::/48"]
    assert address_keys("192.0.2.1") == [("192.0.2.1", 1)]
    limits = WebhookLimits([], parse_rate_limits("1/minute"))
    for subnet in range(IPV6_SITE_SCALE):
        await limits.reserve_failure(f"2001:db8:7:{subnet:x}::1")
    with pytest.raises(RateLimited):
        await limits.reserve_failure("2001:db8:7:ffff::1")  # a fresh /64, but its /48 is spent
    with pytest.raises(RateLimited):
        await limits.check_failures("2001:db8:7:abcd::1")
    await limits.reserve_failure("2001:db8:8::1")  # another /48 is unaffected
    assert limits.failure_limits[0].get_expiry() == timedelta(minutes=1).total_seconds()
