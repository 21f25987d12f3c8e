"""What a worker imports: ccxt only for a ccxt account (it is ~1 s and ~75 MiB of a start).

Each case starts the app in a fresh interpreter (what is imported is process state) and
reports the modules loaded once the first alert has been answered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, SECRET, signed_headers

PROBE = """
import asyncio, json, os, sys
from core.web.app import create_app

async def main():
    app = create_app()
    await app.startup()
    try:
        client = app.test_client()
        body = os.environ["PROBE_BODY"].encode()
        answer = await client.post("/webhook", data=body, headers=json.loads(os.environ["PROBE_HEADERS"]))
        status = answer.status_code
    finally:
        await app.shutdown()
    heavy = ("ccxt", "ccxt.async_support", "ccxt.pro", "hypothesis", "pytest")
    print(json.dumps({"status": status, "loaded": [m for m in heavy if m in sys.modules]}))

asyncio.run(main())
"""


def _probe(tmp_path: Path, plugins_yaml: str, body: dict[str, str], **env: str) -> dict[str, object]:
    (tmp_path / "plugins.yaml").write_text(plugins_yaml)
    data = json.dumps(body).encode()
    environ = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "WEBHOOK_SECRET": SECRET,
        "DATA_DIR": str(tmp_path),
        "PLUGINS_FILE": str(tmp_path / "plugins.yaml"),
        "LOG_LEVEL": "WARNING",
        "PROBE_BODY": data.decode(),
        "PROBE_HEADERS": json.dumps({**signed_headers(data), "Content-Type": "application/json"}),
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=environ, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_paper_exchange_imports_no_ccxt(tmp_path):
    result = _probe(
        tmp_path,
        "router:\n  plugin_dir: ./none\n",
        {"id": "probe-1", "ticker": "BTCUSDT", "action": "buy", "contracts": "0.001"},
        DEFAULT_EXCHANGE="paper",
    )
    assert result == {"status": 200, "loaded": []}


def test_a_ccxt_account_imports_ccxt_but_not_ccxt_pro_without_websocket(tmp_path):
    account = "    live:\n      exchange: binance\n      public: true\n      market_types: [spot]\n"
    account += "      ccxt: {urls: {api: {public: 'http://127.0.0.1:9/api/v3'}}}\n"
    result = _probe(
        tmp_path,
        "router:\n  plugin_dir: ./none\nccxt:\n  accounts:\n" + account,
        {"id": "probe-2", "ticker": "BTCUSDT", "action": "buy", "contracts": "0.001"},
        DEFAULT_EXCHANGE="paper",
    )
    assert result["loaded"] == ["ccxt", "ccxt.async_support"]
