"""HMAC mode: both signature forms, the window, constant-time comparison and replays (a
request accepted once is never accepted again: its key is recorded with its admission)."""

from __future__ import annotations

import asyncio
import hmac
import json
import time

import pytest

from plugins.auth import hmac_auth
from plugins.auth.hmac_auth import replay_key, sign
from tests.abuse_support import UNAUTHORIZED, ledger_count
from tests.support import SECRET, alert_body, signed_headers


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- the plugin, in process


async def post(client, body: bytes, headers: dict[str, str]):
    response = await client.post("/webhook", data=body, headers=headers)
    return response.status_code, await response.get_json()


async def test_both_forms_are_accepted_once(app_client, data_dir):
    async with app_client() as (client, app):
        for bound in (True, False):
            body = alert_body(id=f"once-{bound}")
            headers = signed_headers(body, bound=bound)
            assert (await post(client, body, headers))[0] == 200
            assert await post(client, body, headers) == (401, UNAUTHORIZED)
    assert ledger_count(data_dir) == 2


async def test_body_only_replay_with_a_fresh_timestamp_is_refused(app_client):
    body = alert_body(id="fresh-ts")
    headers = signed_headers(body, bound=False, timestamp=int(time.time()) - 200)
    async with app_client() as (client, app):
        assert (await post(client, body, headers))[0] == 200
        for offset in (0, 100, -100):
            replay = headers | {"X-Timestamp": str(int(time.time()) + offset)}
            assert await post(client, body, replay) == (401, UNAUTHORIZED)


async def test_signature_case_and_whitespace_do_not_make_a_new_request(app_client):
    body = alert_body(id="case")
    headers = signed_headers(body)
    async with app_client() as (client, app):
        assert (await post(client, body, headers))[0] == 200
        for variant in (headers["X-Signature"].upper(), headers["X-Signature"] + " ", "\t" + headers["X-Signature"]):
            assert (await post(client, body, headers | {"X-Signature": variant}))[0] == 401


async def test_body_only_form_can_be_switched_off(app_client, write_plugins_yaml):
    write_plugins_yaml("hmac:\n  allow_body_only: false\n")
    async with app_client() as (client, app):
        body = alert_body(id="no-body-only")
        assert (await post(client, body, signed_headers(body, bound=False)))[0] == 401
        assert (await post(client, body, signed_headers(body)))[0] == 200


async def test_window_edges(app_client):
    async with app_client(SIGNATURE_CACHE_TTL="60") as (client, app):
        now = int(time.time())
        for offset, status in ((-50, 200), (50, 200), (-70, 401), (70, 401)):
            body = alert_body(id=f"edge{offset}")
            assert (await post(client, body, signed_headers(body, timestamp=now + offset)))[0] == status, offset


async def test_without_webhook_secret_every_signature_is_refused(app_client, make_settings):
    from core.store.factory import StateBackend

    backend = StateBackend(make_settings())  # a token is the credential (without any the server refuses to start)
    store = backend.token_store()
    await store.issue(ttl=3600, label="tv")
    await store.close()
    await backend.aclose()
    body = alert_body(id="nosecret")
    async with app_client(WEBHOOK_SECRET="") as (client, app):
        assert await post(client, body, signed_headers(body, secret="")) == (401, UNAUTHORIZED)


def replay_rows(app) -> dict[str, float | None]:
    """The replay keys in the journal (SQLite: its ``replay`` table, and those kept on the
    rows of the alerts they admitted)."""
    journal = app.extensions["router"].journal
    query = (
        "SELECT key, expires_at FROM replay UNION ALL"
        " SELECT replay_key, replay_expires_at FROM alerts WHERE replay_key IS NOT NULL"
    )
    return dict(journal.db.run_sync(lambda c: c.execute(query).fetchall()))


async def test_only_verified_signatures_are_recorded(app_client):
    async with app_client() as (client, app):
        for i in range(20):
            body = alert_body(id=f"junk-{i}")
            await post(client, body, signed_headers(body, secret="attacker"))
            await post(client, body, signed_headers(body, timestamp=int(time.time()) - 10_000))
        assert replay_rows(app) == {}
        body = alert_body(id="good")
        headers = signed_headers(body)
        await post(client, body, headers)
        assert list(replay_rows(app)) == [replay_key(headers["X-Signature"].encode())]


async def test_a_request_refused_after_authenticating_records_nothing(app_client, data_dir):
    # Authenticated, then refused (422): nothing admitted, nothing recorded — the same bytes
    # get the same refusal again, not a 401.
    body = json.dumps({"symbol": "BTCUSDT", "side": "buy", "amount": "-1", "id": "bad-amount"}).encode()
    headers = signed_headers(body)
    async with app_client() as (client, app):
        first = await post(client, body, headers)
        again = await post(client, body, headers)
        assert first[0] == again[0] == 422 and again[1]["error"]["code"] == "invalid_alert"
        assert replay_rows(app) == {}
    assert ledger_count(data_dir) == 0


async def test_a_replay_is_refused_after_a_restart_and_admits_nothing(app_client, data_dir):
    body = alert_body(id="restart-replay")
    headers = signed_headers(body)
    other = alert_body(id="restart-other")
    async with app_client() as (client, app):
        assert (await post(client, body, headers))[0] == 200
    async with app_client() as (client, app):  # this process never saw it: the journal remembers
        assert await post(client, body, headers) == (401, UNAUTHORIZED)
        # The same signature on another body does not verify; the journal holds one row.
        assert (await post(client, other, headers))[0] == 401
        assert await app.extensions["router"].journal.get("restart-other") is None
        assert (await app.extensions["router"].journal.get("restart-replay"))["duplicates"] == 0
    assert ledger_count(data_dir) == 1


async def test_the_same_request_sent_concurrently_is_accepted_once(app_client, data_dir):
    body = alert_body(id="concurrent-replay")
    headers = signed_headers(body)
    async with app_client() as (client, app):
        answers = await asyncio.gather(*(post(client, body, headers) for _ in range(5)))
    assert sorted(status for status, _ in answers) == [200, 401, 401, 401, 401]
    assert ledger_count(data_dir) == 1


@pytest.mark.parametrize("ttl, remembered", [(120, 86400), (200_000, 200_000)])
async def test_bound_signatures_are_remembered_until_their_window_ends(app_client, ttl, remembered):
    # Until the window ends — and at least a day, so that restarting with a wider
    # SIGNATURE_CACHE_TTL cannot revive a signature seen under the narrower one.
    body = alert_body(id=f"expiry-{ttl}")
    sent_at = int(time.time())
    headers = signed_headers(body, timestamp=sent_at)
    async with app_client(SIGNATURE_CACHE_TTL=str(ttl)) as (client, app):
        assert (await post(client, body, headers))[0] == 200
        key = replay_key(headers["X-Signature"].encode())
        assert replay_rows(app)[key] == sent_at + remembered + 1
        body_only = alert_body(id=f"expiry-body-{ttl}")
        assert (await post(client, body_only, signed_headers(body_only, bound=False)))[0] == 200
        assert list(replay_rows(app).values()).count(None) == 1


async def test_signatures_are_compared_in_constant_time(app_client, monkeypatch):
    calls: list[tuple] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(hmac_auth.hmac, "compare_digest", spy)
    async with app_client() as (client, app):
        for headers in (
            {"X-Signature": "00" * 32, "X-Timestamp": "nope"},
            {"X-Signature": "é" * 64, "X-Timestamp": "1"},
        ):
            assert (await post(client, alert_body(), {"Content-Type": "application/json"} | headers))[0] == 401
    # Both forms compared for every request, whatever else was wrong, and never with ==.
    assert len(calls) == 4 and all(t == (bytes, bytes) for t in calls)


async def test_a_good_bound_signature_skips_the_body_only_digest(app_client, monkeypatch):
    digests: list[bool] = []
    real = hmac_auth.sign

    def spy(secret, body, timestamp=None):
        digests.append(timestamp is not None)
        return real(secret, body, timestamp)

    monkeypatch.setattr(hmac_auth, "sign", spy)
    async with app_client() as (client, app):
        body = alert_body(id="one-digest")
        assert (await post(client, body, signed_headers(body)))[0] == 200
        assert digests == [True], "the bound form matched: no body-only digest"
        digests.clear()
        body = alert_body(id="two-digests")
        assert (await post(client, body, signed_headers(body, bound=False)))[0] == 200
        assert digests == [True, False]
        digests.clear()
        assert (await post(client, body, signed_headers(body) | {"X-Signature": "00" * 32}))[0] == 401
        assert digests == [True, False], "a refusal computes both"


def test_sign_matches_the_documented_construction():
    body = b'{"a":1}'
    assert sign("k", body, "1700000000") == hmac.new(b"k", b"1700000000." + body, "sha256").hexdigest()
    assert sign("k", body) == hmac.new(b"k", body, "sha256").hexdigest()
    assert signed_headers(body, timestamp=1700000000)["X-Signature"] == sign(SECRET, body, "1700000000")
