"""``python -m core doctor`` against the emulator (issue 15): a key that can withdraw, a
clock 10 s off and a missing market are reported and make the exit status non-zero; a
clean set-up exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.checks.doctor import data_dir_findings
from tests.ccxt_support import emulator_account, plugins_yaml
from tests.support import ROOT

STRONG_SECRET = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def doctor(tmp_path: Path, yaml_text: str, *symbols: str, **env: str) -> tuple[int, str]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True, mode=0o700)
    (tmp_path / "plugins.yaml").write_text(yaml_text)
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "DATA_DIR": str(data),
        "PLUGINS_FILE": str(tmp_path / "plugins.yaml"),
        "DEFAULT_EXCHANGE": "paper",
        "WEBHOOK_SECRET": STRONG_SECRET,
        "REQUIRE_HTTPS": "true",
        "TRUSTED_PROXIES": "127.0.0.1",
        "RATE_LIMIT_KEY": "principal",
        **env,
    }
    args = [a for s in symbols for a in ("--symbol", s)]
    done = subprocess.run(
        [sys.executable, "-m", "core", "doctor", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def accounts(url: str) -> str:
    return plugins_yaml(
        {
            "main": emulator_account("binance", url, market_types=["spot", "swap"]),
            "bb": emulator_account("bybit", url, market_types=["spot", "swap"]),
        },
        router={"allow_payload_credentials": False},
    )


def lines(output: str, level: str, subject: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(level) and subject in line]


def test_doctor_reports_withdrawals_clock_skew_and_a_missing_market(tmp_path, emulator):
    control = emulator.control
    try:
        control.set_api_restrictions("emu-key-1", enableWithdrawals=True)
        control.set_clock_offset(10_000)
        status, out = doctor(tmp_path, accounts(emulator.url), "BINANCE:BTCUSDT", "BINANCE:NOPEUSDT")
    finally:
        control.reset()
    assert status == 1, out
    for account in ("account main (binance)", "account bb (bybit)"):
        assert any("THIS KEY CAN WITHDRAW FUNDS" in line for line in lines(out, "WARNING", account)), out
        assert any("clock is 10.0 s ahead" in line for line in lines(out, "BLOCKER", account)), out
        assert any("market 'BINANCE:NOPEUSDT' is missing" in line for line in lines(out, "BLOCKER", account)), out
        # Compensated for the skew, the keys were still checked.
        assert any("keys valid" in line for line in lines(out, "OK", account)), out
    assert "LIVE" in out
    assert "blocker(s)" in out.splitlines()[-1]


def test_doctor_passes_a_clean_set_up(tmp_path, emulator):
    emulator.control.reset()
    status, out = doctor(tmp_path, accounts(emulator.url), "BINANCE:BTCUSDT", "BYBIT:BTCUSDT.P")
    assert status == 0, out
    assert not [line for line in out.splitlines() if line.startswith("BLOCKER")]
    assert any("withdrawals disabled" in line for line in lines(out, "OK", "account main (binance)")), out
    assert any("BINANCE:BTCUSDT → BTC/USDT" in line for line in lines(out, "OK", "account main")), out
    assert any("BYBIT:BTCUSDT.P → BTC/USDT:USDT" in line for line in lines(out, "OK", "account bb")), out
    assert any("keys valid" in line for line in lines(out, "OK", "account bb (bybit)")), out
    assert any(
        "BYBIT:BTCUSDT.P → BTC/USDT:USDT (paper (bybit markets))" in line for line in lines(out, "OK", "account paper")
    ), out


def test_doctor_blocks_refused_keys_and_server_mistakes(tmp_path, emulator):
    yaml_text = plugins_yaml(
        {
            "main": emulator_account(
                "binance", emulator.url, key="emu-key-1", secret="wrong-secret", market_types=["spot"]
            )
        },
        router={"allow_payload_credentials": True},
    )
    status, out = doctor(tmp_path, yaml_text, WEBHOOK_SECRET="short", REQUIRE_HTTPS="false", RATE_LIMIT_KEY="ip")
    assert status == 1, out
    assert lines(out, "BLOCKER", "account main") and "refused the keys" in "".join(
        lines(out, "BLOCKER", "account main")
    )
    assert lines(out, "BLOCKER", "server") and "WEBHOOK_SECRET is weak" in "".join(lines(out, "BLOCKER", "server"))
    assert "REQUIRE_HTTPS is off" in out and "RATE_LIMIT_KEY=ip" in out and "allow_payload_credentials is on" in out


def test_doctor_reads_redis_persistence(tmp_path, state_prefix):
    from tests.conftest import REDIS_TEST_URL

    status, out = doctor(tmp_path, "", STATE_URL=REDIS_TEST_URL, STATE_PREFIX=state_prefix)
    assert status == 0, out
    state = [line for line in out.splitlines() if "state redis://" in line]
    # Whatever this Redis is configured with, the doctor read it (or said it could not).
    assert state and any(word in state[0] for word in ("appendonly", "AOF", "CONFIG GET refused")), out


def test_data_dir_readable_by_others_is_a_warning(tmp_path):
    path = tmp_path / "d"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    assert data_dir_findings(path)[0].level == "warning"
    path.chmod(0o700)
    assert data_dir_findings(path)[0].level == "ok"
    assert data_dir_findings(tmp_path / "absent")[0].level == "blocker"
