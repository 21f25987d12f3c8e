"""Settings from the environment and .env (pydantic-settings): every variable, its meaning
kept from the classic interface, and a mistake is one line naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import Settings, read_environment
from core.errors import ConfigError
from tests.support import ROOT

CLASSIC = (
    "WEBHOOK_SECRET",
    "DEFAULT_EXCHANGE",
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "LOG_LEVEL",
    "RATE_LIMIT",
    "SIGNATURE_CACHE_TTL",
    "TOKEN_TTL",
    "REQUIRE_HTTPS",
    "USE_WEBSOCKETS",
)
SECRETS = {
    "WEBHOOK_SECRET",
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "METRICS_TOKEN",
    "STATE_URL",
    "DASHBOARD_PASSWORD",
}


def settings(**environ: str) -> Settings:
    return Settings.from_env(env_file=None, environ=environ)


def test_every_setting_is_an_uppercase_variable_with_a_description():
    variables = Settings.variables()
    assert set(CLASSIC) <= set(variables)
    for name, field in variables.items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), name
        assert field.description and len(field.description) > 20, f"{name} has no description"
    assert {name for name, f in variables.items() if (f.json_schema_extra or {}).get("secret")} == SECRETS


def test_every_variable_of_the_env_example_is_a_setting_or_used_in_plugins_yaml():
    written = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    interpolated = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", (ROOT / "plugins.yaml").read_text()))
    assert set(CLASSIC) <= written
    assert written - set(Settings.variables()) <= interpolated, "documented in .env.example, read by nothing"


def test_defaults_of_the_classic_interface():
    s = settings()
    assert (s.webhook_secret, s.default_exchange, s.default_api_key, s.default_api_secret) == ("", "paper", "", "")
    assert (s.log_level, s.rate_limit, s.signature_cache_ttl, s.token_ttl) == ("INFO", "10/minute", 300, 86400)
    assert (s.require_https, s.use_websockets) == (False, False)


def test_secrets_are_never_in_repr_or_str():
    values = {name: f"{name.lower()}-value-0123456789" for name in SECRETS - {"STATE_URL"}}
    s = settings(**values, STATE_URL="redis://:hunter2-password@host:6379/0")
    shown = repr(s) + str(s)
    assert "hunter2" not in shown
    for value in values.values():
        assert value not in shown
    assert s.webhook_secret == values["WEBHOOK_SECRET"]  # still a plain string where it is used


@pytest.mark.parametrize("text", ["1", "true", "TRUE", " yes ", "On"])
def test_a_boolean_is_true_for_the_usual_words(text):
    assert settings(REQUIRE_HTTPS=text, USE_WEBSOCKETS=text, ALLOW_EPHEMERAL_STATE=text).require_https is True


@pytest.mark.parametrize("text", ["", "0", "false", "no", "off", "t", "enabled"])
def test_a_boolean_is_false_for_anything_else(text):
    s = settings(REQUIRE_HTTPS=text, USE_WEBSOCKETS=text, ALLOW_EPHEMERAL_STATE=text)
    assert (s.require_https, s.use_websockets, s.allow_ephemeral_state) == (False, False, False)


def test_the_environment_wins_over_the_env_file(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("TOKEN_TTL=120\nLOG_LEVEL=debug\nSOMETHING_ELSE=kept\n")
    s = Settings.from_env(env_file=env_file, environ={"TOKEN_TTL": "600"})
    assert (s.token_ttl, s.log_level) == (600, "DEBUG")
    assert s.environ["SOMETHING_ELSE"] == "kept"  # the whole environment, for ${VAR} in plugins.yaml
    assert read_environment(env_file, {"TOKEN_TTL": "600"})["TOKEN_TTL"] == "600"


def test_variable_names_are_exact(tmp_path: Path):
    (tmp_path / ".env").write_text("token_ttl=5\nwebhook_secret=lower\n")
    s = Settings.from_env(env_file=tmp_path / ".env", environ={"Webhook_Secret": "mixed"})
    assert (s.token_ttl, s.webhook_secret) == (86400, "")


def test_empty_values_that_mean_the_default():
    s = settings(RATE_LIMIT="", AUTH_FAILURE_LIMIT=" ", RATE_LIMIT_KEY="", PORT="")
    assert (s.rate_limit, s.auth_failure_limit, s.rate_limit_key, s.port) == (
        "10/minute",
        "5/minute,30/hour",
        "ip",
        None,
    )


def test_overrides_by_variable_name_win():
    assert Settings.from_env(env_file=None, environ={"TOKEN_TTL": "5"}, TOKEN_TTL=7).token_ttl == 7


def test_settings_are_frozen():
    s = settings()
    with pytest.raises(ValidationError):
        s.token_ttl = 1  # type: ignore[misc]


def test_bare_construction_reads_the_process_environment_and_dotenv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("TOKEN_TTL=120\nDEFAULT_EXCHANGE=kraken\n")
    monkeypatch.setenv("TOKEN_TTL", "240")
    s = Settings()
    assert (s.token_ttl, s.default_exchange) == (240, "kraken")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TOKEN_TTL", "a day", "TOKEN_TTL: Input should be a valid integer"),
        ("SIGNATURE_CACHE_TTL", "0", "SIGNATURE_CACHE_TTL: Input should be greater than 0"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT: String should match pattern"),
        ("STATE_PREFIX", "two words", "STATE_PREFIX: String should match pattern"),
        ("RATE_LIMIT", "3/fortnight", "RATE_LIMIT: '3/fortnight' is not N/second"),
        ("RATE_LIMIT_KEY", "user", "RATE_LIMIT_KEY: String should match pattern"),
        ("DASHBOARD_PASSWORD", "short", "DASHBOARD_PASSWORD: must be empty (dashboard off) or at least 12"),
        ("DASHBOARD_SESSION_TTL", "-1", "DASHBOARD_SESSION_TTL: Input should be greater than 0"),
        ("PORT", "eighty", "PORT: Input should be a valid integer"),
        ("PORT", "70000", "PORT: Input should be less than or equal to 65535"),
        ("PLUGINS_FILE", "nowhere.yaml", "PLUGINS_FILE: no file at 'nowhere.yaml'"),
    ],
)
def test_a_mistake_is_one_line_naming_the_variable(variable, value, message):
    with pytest.raises(ConfigError) as info:
        settings(**{variable: value})
    text = str(info.value)
    assert text.startswith(f"environment: {variable}: ") and message in text and "\n" not in text


def test_heroku_redis_urls_fill_an_empty_state_url():
    assert settings(REDIS_URL="redis://h:1").state_url == "redis://h:1"
    assert settings(REDIS_URL="redis://h:1", REDIS_TLS_URL="rediss://h:2", STATE_URL="").state_url == "rediss://h:2"
    assert settings(REDIS_URL="redis://h:1", STATE_URL="redis://mine:3").state_url == "redis://mine:3"
