"""Helpers for end-to-end tests on ccxt accounts: the emulator as a process, and
plugins.yaml accounts that point ccxt's real classes at it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from core.web.app import read_signature_message
from emulator import EmulatorControl, ccxt_config
from tests.support import ROOT, free_port, signed_headers


class EmulatorProcess:
    """``python -m emulator --port 0`` in its own process; ``url`` once it listens."""

    def __init__(self, log_dir: Path, port: int = 0):
        self.log_path = log_dir / f"emulator-{os.getpid()}-{time.monotonic_ns()}.log"
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 20) -> EmulatorProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--port", str(self.port)],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"listening on (http://\S+)", self.log_path.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            time.sleep(0.02)  # polling the real condition (the line printed once it listens), bounded
        raise TimeoutError(f"emulator not listening after {timeout}s:\n{self.log_path.read_text()}")

    @property
    def control(self) -> EmulatorControl:
        return EmulatorControl(self.url)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        if getattr(self, "_log", None):
            self._log.close()


def emulator_account(
    venue: str, url: str, *, key: str = "emu-key-1", secret: str = "emu-secret-1", **options: Any
) -> dict[str, Any]:
    """One plugins.yaml account on the emulator: ccxt's config from ``ccxt_config`` (urls),
    with the keys in the account's own fields and the market types left to the account."""
    config = ccxt_config(venue, url, api_key=key, secret=secret, match_production_errors=False)
    config.pop("apiKey"), config.pop("secret")
    config.get("options", {}).pop("fetchMarkets", None)
    config["timeout_on_exit"] = 0
    extra_ccxt = options.pop("ccxt", {})
    for name, value in extra_ccxt.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = _merge(config[name], value)
        else:
            config[name] = value
    account = {
        "exchange": venue,
        "api_key": key,
        "secret": secret,
        "rate_limit": False,
        "market_types": ["spot", "swap"],
        "ccxt": config,
    }
    account.update(options)
    return account


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def plugins_yaml(accounts: dict[str, dict[str, Any]], **sections: Any) -> str:
    return yaml.safe_dump({"ccxt": {"accounts": accounts}, **sections}, sort_keys=False)


def refused_websocket() -> dict[str, Any]:
    """ccxt urls sending the WebSocket API to a loopback port where nothing listens."""
    dead = f"ws://127.0.0.1:{free_port()}"
    return {"urls": {"api": {"ws": {"ws-api": {"spot": dead + "/ws-api/v3", "linear": dead + "/ws-fapi/v1"}}}}}


def tradingview_alert(
    ticker: str, alert_id: str, *, action: str = "buy", contracts: str = "0.0123456", price: str = "50000", **extra: Any
) -> dict[str, Any]:
    """The message of a TradingView strategy alert once its placeholders are filled."""
    return {"ticker": ticker, "action": action, "contracts": contracts, "price": price, "id": alert_id, **extra}


def send_alert(
    url: str, alert: dict[str, Any], client: httpx.Client | None = None, timeout: float = 15
) -> httpx.Response:
    body = json.dumps(alert).encode()
    headers = signed_headers(body) | {"Content-Type": "text/plain; charset=utf-8"}  # TradingView's type
    return (client or httpx).post(url + "/webhook", content=body, headers=headers, timeout=timeout)


def alert_status(url: str, alert_id: str) -> dict[str, Any]:
    return httpx.get(
        f"{url}/alerts/{alert_id}", headers=signed_headers(read_signature_message(alert_id)), timeout=5
    ).json()
