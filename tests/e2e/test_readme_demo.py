"""The "Real ccxt demo" of docs/exchanges.md, run as written: its code blocks, in order, in a fresh copy
of the repository — the emulator, the account file, the server, the alerts, the orders.

Only the ports (9000, 8000 → free ones) and the virtual environment's path change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, free_port


def demo_section() -> str:
    text = (ROOT / "docs" / "exchanges.md").read_text(encoding="utf-8")
    return text[text.index("## Real ccxt demo") : text.index("<!-- exchanges:end -->")]


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line and (ROOT / line).is_file()]


def wait_until_answering(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url}: the process exited"
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)  # polling the port, bounded
    raise TimeoutError(f"{url} not answering after {timeout}s")


@pytest.mark.slow
def test_readme_real_ccxt_demo_works_as_written(tmp_path: Path):
    section = demo_section()
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    assert [kind for kind, _ in blocks] == ["bash", "yaml", "bash", "bash"], (
        "the demo's shape changed; update this test"
    )
    account_file = re.search(r"Write `([^`]+)`", section).group(1)

    checkout = tmp_path / "checkout"
    for name in tracked_files():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, checkout / name)
    venv = Path(sys.executable).parent.parent  # not resolved: the venv, not the interpreter it links to
    emu_port, server_port = free_port(), free_port()

    def adapt(text: str) -> str:
        return (
            text.replace(".venv/bin/", f"{venv}/bin/")
            .replace("127.0.0.1:9000", f"127.0.0.1:{emu_port}")
            .replace("--port 9000", f"--port {emu_port}")
            .replace("127.0.0.1:8000", f"127.0.0.1:{server_port}")
        )

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env["PORT"] = str(server_port)  # simulate_tradingview.py's default URL; the docs' is 8000
    background: list[subprocess.Popen] = []

    def start(command: str, log: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=checkout,
            env=env,
            start_new_session=True,
            stdout=open(tmp_path / log, "wb"),
            stderr=subprocess.STDOUT,
        )
        background.append(proc)
        return proc

    def run(command: str) -> str:
        if command.startswith("curl ") and shutil.which("curl") is None:
            url = command.split()[-1]
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode()
        done = subprocess.run(
            ["bash", "-c", command], cwd=checkout, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    try:
        # 1. the emulator
        [emulator_command] = [line for line in blocks[0][1].splitlines() if line.strip()]
        emulator = start(adapt(emulator_command), "emulator.log")
        wait_until_answering(f"http://127.0.0.1:{emu_port}/_emu/health", emulator)
        # 2. the account file
        (checkout / account_file).write_text(adapt(blocks[1][1]))
        # 3. init-env, then the server
        init_env, serve = [line for line in blocks[2][1].splitlines() if line.strip()]
        run(adapt(init_env))
        server = start(adapt(serve), "server.log")
        wait_until_answering(f"http://127.0.0.1:{server_port}/", server)
        # 4. alerts, then the orders and the health check
        outputs = [run(adapt(line)) for line in blocks[3][1].splitlines() if line.strip()]
    finally:
        for proc in reversed(background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)

    spot_answer, perp_answer, orders_text, health_text = outputs
    answers = [json.loads(text.split("\n", 1)[1]) for text in (spot_answer, perp_answer)]
    assert all(text.startswith("HTTP 200") for text in (spot_answer, perp_answer)), outputs
    orders = json.loads(orders_text)
    orders = orders["orders"] if isinstance(orders, dict) else orders
    assert [
        (o["symbol"], o["market_type"], o["side"], o["quantity"], o["transport"], o["account_key"]) for o in orders
    ] == [
        ("BTCUSDT", "spot", "BUY", "0.01", "ws", "emu-key-1"),
        ("BTCUSDT", "linear", "SELL", "0.01", "ws", "emu-key-1"),
    ]
    for answer, booked in zip(answers, orders, strict=True):
        order = answer["order"]
        assert (order["order_id"], order["client_order_id"], order["status"], order["filled"]) == (
            booked["order_id"],
            booked["client_order_id"],
            "filled",
            "0.01",
        )
        assert order["average"] == "50000" and order["route"] == "websocket"
    health = json.loads(health_text)
    assert health["accounts"]["demo"]["route"] == "websocket" and health["accounts"]["demo"]["ready"] is True


@pytest.mark.parametrize("marker", ["## Named accounts", "**The default account.**"])
def test_readme_account_examples_load(tmp_path: Path, marker: str):
    """The plugins.yaml examples of the section start (clients built, nothing sent)."""
    from types import SimpleNamespace

    from core.config import PluginsFile, Settings
    from plugins.exchanges.ccxt.plugin import Plugin

    text = (ROOT / "docs" / "exchanges.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(.*?)```", text[text.index(marker) :], re.DOTALL).group(1)
    (tmp_path / "plugins.yaml").write_text(block)
    environ = {
        "BINANCE_KEY": "k" * 12,
        "BINANCE_SECRET": "s" * 12,
        "BYBIT_KEY": "b" * 12,
        "BYBIT_SECRET": "t" * 12,
        "DEFAULT_EXCHANGE": "binance",
        "DEFAULT_API_KEY": "d" * 12,
        "DEFAULT_API_SECRET": "e" * 12,
    }
    settings = Settings.from_env(env_file=None, environ=environ)
    plugins_file = PluginsFile.load(tmp_path / "plugins.yaml", settings.environ)
    plugin = Plugin(plugins_file.validate("ccxt", Plugin.Options))
    registered: dict = {}
    plugin.register_executors(
        lambda name, ex: registered.setdefault(name, ex),
        SimpleNamespace(settings=settings, config_path=tmp_path / "plugins.yaml", register_secret=lambda value: None),
    )
    assert registered and all(ex.client.apiKey for ex in registered.values())
