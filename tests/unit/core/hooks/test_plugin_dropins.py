"""Execution plugins as users drop them in, through the real server (hypercorn).

* The naive broker (tests/plugins/naive_broker.py: prepare + submit only, no lookup, no
  typed errors): the broker books the order and the connection drops before the answer —
  a plain ConnectionResetError. One order at the broker, the alert ``unknown`` and
  visible, never sent twice — also when TradingView resends the alert.
* The guide's reference executor (docs/plugins/example_executor.py), copied as is into a
  drop-in folder, trades.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from core.store.states import GAVE_UP
from core.web.app import read_signature_message
from tests.support import MONITOR, ROOT, signed_headers
from tests.unit.plugins.exchanges.test_conformance import LineBroker

FAST = """
router:
  plugin_dir: {plugins}
  response_budget: 1.0
  reconcile_interval: 0.05
  reconcile_max_delay: 0.2
  resubmit_after: 0.3
"""


async def post(client: httpx.AsyncClient, url: str, alert: dict) -> httpx.Response:
    body = json.dumps(alert).encode()
    return await client.post(
        url + "/webhook", content=body, headers=signed_headers(body) | {"Content-Type": "text/plain"}
    )


async def settled(client: httpx.AsyncClient, url: str, alert_id: str, done, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = (
            await client.get(f"{url}/alerts/{alert_id}", headers=signed_headers(read_signature_message(alert_id)))
        ).json()
        if done(row) or time.monotonic() > deadline:
            return row
        await asyncio.sleep(0.05)  # the server works in the background: poll its journal, bounded


@pytest.fixture
def dropins(tmp_path: Path) -> Path:
    folder = tmp_path / "local_plugins"
    folder.mkdir()
    return folder


async def test_naive_broker_losing_the_reply_ends_with_one_order_and_a_visible_unknown(
    server_factory, data_dir, dropins
):
    broker = await LineBroker(refuse_duplicates=False).start()  # a broker that would book a resend again
    try:
        shutil.copy(ROOT / "tests" / "plugins" / "naive_broker.py", dropins / "naive_broker.py")
        (data_dir / "plugins.yaml").write_text(FAST.format(plugins=dropins) + f"naive_broker:\n  port: {broker.port}\n")
        server = await asyncio.to_thread(server_factory)
        broker.drop_after_book = 1
        alert = {"account": "naive", "symbol": "NASDAQ:AAPL", "side": "buy", "amount": "3", "id": "naive-lost-1"}
        async with httpx.AsyncClient(timeout=10) as client:
            first = await post(client, server.url, alert)
            assert first.status_code == 202, first.text  # never a 5xx: the order may exist
            row = await settled(
                client,
                server.url,
                "naive-lost-1",
                lambda r: r.get("state") == "unknown" and r.get("error_code") == GAVE_UP,
            )
            resent = await post(client, server.url, alert)  # TradingView resends; the user clicks again
            row_after = await settled(client, server.url, "naive-lost-1", lambda r: True)
        assert (row["state"], row["error_code"]) == ("unknown", GAVE_UP), row
        assert "cannot tell" in row["error_message"] and "check the exchange" in row["error_message"]
        assert resent.status_code in (200, 202) and resent.json().get("duplicate") is True
        assert len(broker.orders) == 1, broker.orders
        assert [o["state"] for o in row_after["orders"]] == ["unknown"]  # one attempt, never sent again
        assert "sending it again" not in server.log()
    finally:
        await broker.stop()


async def test_the_guides_example_executor_trades_as_a_dropin(server_factory, data_dir, dropins):
    shutil.copy(ROOT / "docs" / "plugins" / "example_executor.py", dropins / "example_executor.py")
    key = "example-venue-key-0123456789"
    (data_dir / "plugins.yaml").write_text(
        FAST.format(plugins=dropins) + "example_executor:\n  api_key: ${EXAMPLE_KEY}\n"
    )
    server = await asyncio.to_thread(server_factory, EXAMPLE_KEY=key)
    async with httpx.AsyncClient(timeout=10) as client:
        health = (await client.get(server.url + "/", headers=MONITOR)).json()
        bought = await post(
            client,
            server.url,
            {"account": "example", "symbol": "NASDAQ:AAPL", "side": "buy", "amount": "2.50005", "id": "example-1"},
        )
        too_small = await post(
            client,
            server.url,
            {"account": "example", "symbol": "MSFT", "side": "buy", "amount": "0.5", "id": "example-2"},
        )
        nothing = await post(
            client,
            server.url,
            {"account": "example", "symbol": "MSFT", "side": "sell", "amount": "1", "id": "example-3"},
        )
    assert health["accounts"]["example"]["ready"] is True
    assert bought.status_code == 200, bought.text
    order = bought.json()["order"]
    assert (order["symbol"], order["amount"], order["status"], order["exchange"]) == (
        "AAPL",
        "2.5",
        "filled",
        "pretendvenue",
    )
    assert too_small.status_code == 422 and too_small.json()["error"]["code"] == "amount_below_minimum"
    assert nothing.status_code == 200 and nothing.json()["status"] == "nothing_to_do"
    assert key not in server.log() and key not in json.dumps(health)
