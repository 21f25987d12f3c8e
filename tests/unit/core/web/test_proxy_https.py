"""Client address and scheme behind proxies (TRUSTED_PROXIES), REQUIRE_HTTPS, and the
IP-allowlist plugin."""

from __future__ import annotations

import itertools

import pytest

from core.config import PluginsFile, Settings
from core.errors import ConfigError
from core.web.proxy import ProxyHeadersMiddleware, TrustedProxies, parse_address
from tests.abuse_support import client_from, issue_token_async, ledger_count, running_server, token_body
from tests.support import alert_body, signed_headers

_ids = itertools.count()


# ---------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    "peer, forwarded, trusted, client",
    [
        ("198.51.100.1", ["6.6.6.6"], "", "198.51.100.1"),  # trust nobody
        ("198.51.100.1", ["6.6.6.6"], "10.0.0.0/8", "198.51.100.1"),  # peer not a proxy
        ("10.0.0.2", ["203.0.113.9"], "10.0.0.0/8", "203.0.113.9"),  # one proxy
        ("10.0.0.2", ["6.6.6.6", "203.0.113.9"], "10.0.0.0/8", "203.0.113.9"),  # client-written entry ignored
        ("10.0.0.2", ["203.0.113.9", "10.0.0.7"], "10.0.0.0/8", "203.0.113.9"),  # two proxies
        ("10.0.0.2", ["10.0.0.8", "10.0.0.7"], "10.0.0.0/8", "10.0.0.8"),  # all proxies: the farthest
        ("10.0.0.2", ["garbage", "203.0.113.9"], "10.0.0.0/8", "203.0.113.9"),
        ("10.0.0.2", ["203.0.113.9", "garbage"], "10.0.0.0/8", "10.0.0.2"),  # unreadable: stop at the proxy
        ("10.0.0.2", ["203.0.113.9:4711"], "10.0.0.0/8", "203.0.113.9"),
        ("10.0.0.2", ["[2001:db8::1]:443"], "10.0.0.0/8", "2001:db8::1"),
        ("::ffff:10.0.0.2", ["203.0.113.9"], "10.0.0.0/8", "203.0.113.9"),  # IPv4-mapped peer
        ("172.16.5.5", ["6.6.6.6", "203.0.113.9"], "*", "203.0.113.9"),  # Heroku: any peer, one hop
        ("172.16.5.5", ["203.0.113.9", "10.1.1.1"], "*,10.0.0.0/8", "203.0.113.9"),
    ],
)
def test_client_address(peer, forwarded, trusted, client):
    scope = {
        "type": "http",
        "client": (peer, 1234),
        "scheme": "http",
        "headers": [(b"x-forwarded-for", ", ".join(forwarded).encode())],
    }
    assert ProxyHeadersMiddleware(None, TrustedProxies(trusted)).rewrite(scope)["client"][0] == client


@pytest.mark.parametrize(
    "peer, protos, trusted, scheme",
    [
        ("198.51.100.1", ["https"], "", "http"),
        ("198.51.100.1", ["https"], "10.0.0.0/8", "http"),
        ("10.0.0.2", ["https"], "10.0.0.0/8", "https"),
        ("10.0.0.2", ["HTTPS"], "10.0.0.0/8", "https"),
        ("10.0.0.2", ["http", "https"], "10.0.0.0/8", "https"),  # the nearest proxy's value
        ("10.0.0.2", ["https", "http"], "10.0.0.0/8", "http"),
        ("10.0.0.2", ["gopher"], "10.0.0.0/8", "http"),
    ],
)
def test_scheme(peer, protos, trusted, scheme):
    scope = {
        "type": "http",
        "client": (peer, 1234),
        "scheme": "http",
        "headers": [(b"x-forwarded-proto", p.encode()) for p in protos],
    }
    assert ProxyHeadersMiddleware(None, TrustedProxies(trusted)).rewrite(scope)["scheme"] == scheme


def test_trusted_proxies_setting_is_validated():
    assert Settings.from_env(env_file=None, environ={"TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8,::1,*"}).trusted_proxies
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES: 'proxy.local'"):
        Settings.from_env(env_file=None, environ={"TRUSTED_PROXIES": "10.0.0.1,proxy.local"})


def test_parse_address():
    assert str(parse_address("::ffff:1.2.3.4")) == "1.2.3.4"
    assert parse_address("not an address") is None and parse_address("") is None


# ---------------------------------------------------------------- REQUIRE_HTTPS, real server


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    env = {"REQUIRE_HTTPS": "true", "TRUSTED_PROXIES": "127.0.0.1"}
    with running_server(tmp_path_factory.mktemp("https"), **env) as server:
        yield server


def signed_post(http, **headers):
    body = alert_body(id=f"https-{next(_ids)}")
    return http.post("/webhook", content=body, headers=signed_headers(body) | headers)


def test_plain_http_is_refused(https_server):
    with client_from("127.0.0.2", base_url=https_server.url) as direct:
        before = ledger_count(https_server.data_dir)
        response = signed_post(direct)
        assert response.status_code == 403 and response.json()["error"]["code"] == "https_required"
        assert ledger_count(https_server.data_dir) == before
        assert direct.get("/").status_code == 200, "the health check stays reachable over HTTP"


def test_forwarded_proto_https_from_a_trusted_proxy_is_accepted(https_server):
    with client_from("127.0.0.1", base_url=https_server.url) as proxy:
        before = ledger_count(https_server.data_dir)
        assert signed_post(proxy, **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.5"}).status_code == 200
        assert ledger_count(https_server.data_dir) == before + 1
        response = signed_post(proxy)  # the proxy itself over plain HTTP, no header
        assert response.status_code == 403 and response.json()["error"]["code"] == "https_required"
        response = signed_post(proxy, **{"X-Forwarded-Proto": "http"})
        assert response.status_code == 403


def test_forwarded_proto_https_from_an_untrusted_peer_is_refused(https_server):
    with client_from("127.0.0.2", base_url=https_server.url) as untrusted:
        before = ledger_count(https_server.data_dir)
        response = signed_post(untrusted, **{"X-Forwarded-Proto": "https"})
        assert response.status_code == 403 and response.json()["error"]["code"] == "https_required"
        response = signed_post(
            untrusted, **{"Forwarded": "proto=https", "X-Forwarded-Ssl": "on", "X-Url-Scheme": "https"}
        )
        assert response.status_code == 403
        assert ledger_count(https_server.data_dir) == before


def test_alert_status_also_requires_https(https_server):
    with client_from("127.0.0.2", base_url=https_server.url) as direct:
        response = direct.get("/alerts/anything", headers={"Authorization": "Bearer x"})
        assert response.status_code == 403 and response.json()["error"]["code"] == "https_required"


# ---------------------------------------------------------------- the IP allowlist


def plugins_file(tmp_path, text: str) -> PluginsFile:
    path = tmp_path / "allow.yaml"
    path.write_text(text)
    return PluginsFile.load(path, {})


async def test_allowlist_refuses_other_addresses_with_403_and_never_accepts_alone(app_client, tmp_path, data_dir):
    token = await issue_token_async(data_dir, label="tv")
    allow = plugins_file(tmp_path, "ip_allowlist:\n  allow: [192.0.2.0/24]\n  presets: [tradingview]\n")
    async with app_client(plugins_file=allow) as (client, app):

        async def post(address, body, headers):
            response = await client.post("/webhook", data=body, headers=headers, scope_base={"client": (address, 1)})
            return response.status_code, await response.get_json()

        for address in (
            "52.89.214.238",
            "34.212.75.30",
            "54.218.53.128",
            "52.32.178.7",
            "192.0.2.77",
            "::ffff:52.32.178.7",
        ):
            status, answer = await post(
                address, token_body(token, id=f"allow-{address}"), {"Content-Type": "text/plain"}
            )
            assert status == 200, (address, answer)
        for address in ("52.89.214.239", "198.51.100.1", "2001:db8::1", "<local>"):
            body = alert_body(id=f"deny-{address}")
            status, answer = await post(address, body, signed_headers(body))
            assert (status, answer["error"]["code"]) == (403, "forbidden"), address
            assert address not in answer["error"]["message"]
        # Allowed address, no credentials: still 401.
        status, _ = await post("52.89.214.238", alert_body(id="allow-noauth"), {"Content-Type": "application/json"})
        assert status == 401
    assert ledger_count(data_dir) == 6


async def test_allowlist_without_addresses_abstains(app_client):
    async with app_client() as (client, app):
        body = alert_body(id="no-allowlist")
        response = await client.post(
            "/webhook", data=body, headers=signed_headers(body), scope_base={"client": ("198.51.100.1", 1)}
        )
        assert response.status_code == 200


@pytest.mark.parametrize(
    "text, message",
    [
        ("ip_allowlist:\n  allow: [not-an-ip]\n", "field 'allow': Value error, 'not-an-ip' is not an IP address"),
        ("ip_allowlist:\n  presets: [binance]\n", "field 'presets.0'"),
        ("ip_allowlist:\n  allowed: [1.2.3.4]\n", "field 'allowed': no such option"),
    ],
)
def test_allowlist_options_are_validated(tmp_path, text, message):
    from core.hooks.manager import create_plugin_manager

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_plugin_manager(plugins_file(tmp_path, text))


def test_allowlist_sees_the_address_behind_a_trusted_proxy(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "plugins.yaml").write_text("ip_allowlist:\n  presets: [tradingview]\n")
    with running_server(tmp_path, TRUSTED_PROXIES="127.0.0.1") as server:
        with (
            client_from("127.0.0.1", base_url=server.url) as proxy,
            client_from("127.0.0.2", base_url=server.url) as other,
        ):
            assert signed_post(proxy, **{"X-Forwarded-For": "52.89.214.238"}).status_code == 200
            assert signed_post(proxy, **{"X-Forwarded-For": "198.51.100.1"}).status_code == 403
            assert signed_post(proxy).status_code == 403  # the proxy's own address is not TradingView's
            # An untrusted peer cannot claim TradingView's address.
            assert signed_post(other, **{"X-Forwarded-For": "52.89.214.238"}).status_code == 403
