"""The extension surface: where plugins come from, and how bad configuration fails."""

from __future__ import annotations

import textwrap

import pytest

from core.config import PluginsFile, Settings
from core.errors import ConfigError
from core.hooks.manager import hookimpl
from core.pipeline.router import Router
from core.web.app import create_app
from tests.support import MONITOR, alert_body, signed_headers


async def post_alert(client, **fields):
    body = alert_body(**fields)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    return response.status_code, await response.get_json()


async def test_dropin_transform_file_changes_the_alert(app_client, write_plugins_yaml, tmp_path):
    folder = tmp_path / "dropins"
    folder.mkdir()
    (folder / "half_size.py").write_text(
        textwrap.dedent("""
        from decimal import Decimal
        from core.hooks.manager import hookimpl

        @hookimpl
        def transform_payload(payload):
            payload["amount"] = str(Decimal(str(payload["amount"])) / 2)
    """)
    )
    (folder / "_ignored.py").write_text("raise RuntimeError('files starting with _ are not plugins')\n")
    write_plugins_yaml(f"router:\n  plugin_dir: {folder}\n")
    async with app_client() as (client, app):
        status, answer = await post_alert(client, amount="0.004")
        health = await (await client.get("/", headers=MONITOR)).get_json()
    assert status == 200, answer
    assert answer["order"]["amount"] == "0.002"
    assert {"name": "half_size", "source": "dropin"} in health["plugins"]


async def test_plugin_installed_through_the_entry_point_group_is_loaded(app_client, tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "tv_extra_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "tv_extra_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tv-extra-plugin\nVersion: 1.0\n"
    )
    (site / "tv_extra_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[ccxt_trading_webhook]\nextra_side = tv_extra_plugin\n"
    )
    (site / "tv_extra_plugin.py").write_text(
        textwrap.dedent("""
        from core.hooks.manager import hookimpl

        @hookimpl
        def transform_payload(payload):
            payload["side"] = "sell"
    """)
    )
    monkeypatch.syspath_prepend(str(site))
    async with app_client() as (client, app):
        status, answer = await post_alert(client, side="buy")
        health = await (await client.get("/", headers=MONITOR)).get_json()
    assert status == 200, answer
    assert answer["order"]["side"] == "sell"
    assert {"name": "extra_side", "source": "entrypoint"} in health["plugins"]


async def test_plugin_named_in_plugins_yaml_modules_is_loaded(app_client, write_plugins_yaml, tmp_path, monkeypatch):
    (tmp_path / "my_plugins").mkdir()
    (tmp_path / "my_plugins" / "__init__.py").write_text("")
    (tmp_path / "my_plugins" / "tagger.py").write_text(
        textwrap.dedent("""
        from core.config import PluginOptions
        from core.hooks.manager import hookimpl

        class Plugin:
            class Options(PluginOptions):
                tag: str

            def __init__(self, options):
                self.options = options

            @hookimpl
            def transform_payload(self, payload):
                payload["tag"] = self.options.tag
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    write_plugins_yaml("router:\n  modules: [my_plugins.tagger]\ntagger:\n  tag: hello\n")
    async with app_client() as (client, app):
        status, answer = await post_alert(client, id="tagged-1")
        router = app.extensions["router"]
        row = await router.journal.get("tagged-1")
    assert status == 200
    assert row["payload"]["raw"] == {"tag": "hello"}


async def test_disabled_builtin_is_not_called(app_client, write_plugins_yaml):
    write_plugins_yaml("router:\n  disabled: [tradingview]\n")
    async with app_client() as (client, app):
        names = [p.name for p in app.extensions["router"].plugins.loaded]
        # Without the TradingView transform "BUY" is not normalized, so the alert is invalid.
        status, answer = await post_alert(client, side="BUY")
    assert "tradingview" not in names
    assert status == 422 and "side" in answer["error"]["message"]


def start_router(make_settings, extra=None) -> None:
    """Build the plugin manager as startup does; raises ConfigError on bad configuration."""
    settings = make_settings()
    Router(settings, PluginsFile.load(settings.plugins_file, settings.environ), extra)


class Misspelt:
    @hookimpl
    def transfrom_payload(self, payload):  # the typo is the point
        pass


class BadSignature:
    @hookimpl
    def transform_payload(self, payload, alert_price):
        pass


@pytest.mark.parametrize(
    "plugin, expected",
    [
        (Misspelt(), "unknown hook 'transfrom_payload'"),
        (BadSignature(), "{'alert_price'}"),
    ],
)
def test_misspelt_hook_or_bad_signature_fails_startup_naming_the_plugin(make_settings, plugin, expected):
    with pytest.raises(ConfigError) as info:
        start_router(make_settings, [("typo_plugin", plugin)])
    message = str(info.value)
    assert message.startswith("plugin 'typo_plugin'")
    assert expected in message
    assert "\n" not in message


class OldStyleWrapper:
    @hookimpl(hookwrapper=True)
    def execute_order(self, order):
        yield


class NewStyleWrapper:
    @hookimpl(wrapper=True)
    def transform_payload(self, payload):
        return (yield)


@pytest.mark.parametrize(
    "plugin, hook",
    [(OldStyleWrapper(), "execute_order"), (NewStyleWrapper(), "transform_payload")],
)
def test_wrappers_on_hooks_are_refused_at_startup_naming_plugin_and_hook(make_settings, plugin, hook):
    # The router calls each implementation itself (core.hooks.manager.call_hook): a wrapper
    # would silently never run, so it stops startup instead.
    with pytest.raises(ConfigError) as info:
        start_router(make_settings, [("wrapping", plugin)])
    message = str(info.value)
    assert message.startswith("plugin 'wrapping'") and f"hook '{hook}' is a hook wrapper" in message
    assert "\n" not in message


async def test_a_hook_wrapper_in_a_dropin_stops_the_app(make_settings, write_plugins_yaml, tmp_path):
    folder = tmp_path / "dropins"
    folder.mkdir()
    (folder / "timer.py").write_text(
        "from core.hooks.manager import hookimpl\n\n"
        "@hookimpl(wrapper=True)\ndef after_execute(alert):\n    return (yield)\n"
    )
    write_plugins_yaml(f"router:\n  plugin_dir: {folder}\n")
    with pytest.raises(Exception, match="plugin 'timer' .*hook 'after_execute' is a hook wrapper"):
        async with create_app(make_settings()).test_app():
            pass


def test_core_service_names_are_not_plugin_names(make_settings):
    class Metrics:
        @hookimpl
        def after_execute(self):
            pass

    with pytest.raises(ConfigError, match="plugin 'metrics' .*the name is core's metrics service"):
        start_router(make_settings, [("metrics", Metrics())])


async def test_misspelt_hook_in_dropin_fails_app_startup(make_settings, write_plugins_yaml, tmp_path):
    folder = tmp_path / "dropins"
    folder.mkdir()
    (folder / "typo.py").write_text(
        "from core.hooks.manager import hookimpl\n\n@hookimpl\ndef authenticat(request):\n    return None\n"
    )
    write_plugins_yaml(f"router:\n  plugin_dir: {folder}\n")
    app = create_app(make_settings())
    with pytest.raises(Exception) as info:
        async with app.test_app():
            pass
    assert "plugin 'typo'" in str(info.value) and "authenticat" in str(info.value)


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        ("paper:\n  fee_rat: 0.1\n", "plugin 'paper': field 'fee_rat': no such option"),
        ("paper:\n  fee_rate: cheap\n", "plugin 'paper': field 'fee_rate': "),
        (
            "hmac:\n  allow_body_only: ${NOT_SET_ANYWHERE}\n",
            "plugin 'hmac': field 'allow_body_only': environment variable NOT_SET_ANYWHERE is not set",
        ),
        ("router:\n  max_body_bytes: -1\n", "plugin 'router': field 'max_body_bytes': "),
        ("nonexistent:\n  a: 1\n", "plugin 'nonexistent': no plugin of that name is loaded"),
        ("router:\n  disabled: [papr]\n", "plugin 'router': field 'disabled': no plugin named papr"),
        ("router: [1, 2\n", "is not valid YAML"),
    ],
)
def test_bad_plugins_yaml_fails_startup_with_one_line(make_settings, write_plugins_yaml, yaml_text, expected):
    path = write_plugins_yaml(yaml_text)
    with pytest.raises(ConfigError) as info:
        start_router(make_settings)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message, message
    assert "\n" not in message


def test_interpolation_from_environment_and_defaults(make_settings, write_plugins_yaml):
    write_plugins_yaml("paper:\n  fee_rate: ${PAPER_FEE:-0.002}\n  accounts: ['${PAPER_NAME}']\n")
    settings = make_settings(PAPER_NAME="sim")
    router = Router(settings)
    plugin = router.plugins.get("paper")
    assert str(plugin.options.fee_rate) == "0.002"
    assert plugin.options.accounts == ["sim"]


def test_dotenv_file_feeds_settings_and_interpolation(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("RATE_LIMIT=5/second\nPAPER_NAME=from-dotenv\n")
    monkeypatch.delenv("RATE_LIMIT", raising=False)
    settings = Settings.from_env(env_file=env_file, environ={"LOG_LEVEL": "debug"})
    assert settings.rate_limit == "5/second"
    assert settings.log_level == "DEBUG"
    assert settings.environ["PAPER_NAME"] == "from-dotenv"
    assert Settings.from_env(env_file=env_file, environ={"RATE_LIMIT": "1/day"}).rate_limit == "1/day"


def test_classic_variables_keep_their_defaults():
    settings = Settings.from_env(env_file=None, environ={})
    assert (
        settings.log_level,
        settings.rate_limit,
        settings.signature_cache_ttl,
        settings.token_ttl,
        settings.require_https,
        settings.use_websockets,
    ) == ("INFO", "10/minute", 300, 86400, False, False)
    assert (settings.plugins_file, settings.data_dir, settings.default_exchange) == (
        "./plugins.yaml",
        "./data",
        "paper",
    )
