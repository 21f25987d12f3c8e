"""The limits the server is measured against: the raw ASGI durable limit and the same work
as a plain Quart route answer every request alike (status and JSON body), send the same
orders with the router's client order ids, and the raw one loads no framework."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from bench import limit_app, quart_limit_app
from bench.durable import GroupCommitJournal
from bench.loadgen import alert_body, signature_headers
from core.trading.execution import client_order_id
from tests.support import ROOT

SECRET = "limit-secret"


class FakeExchange:
    """The part of a ccxt client the limit uses: one market, and orders that fill (or fail
    with a ccxt error for 666 contracts)."""

    markets_by_id = {"B00USDT": [{"symbol": "B00/USDT"}]}

    def __init__(self) -> None:
        self.orders: list[tuple[Any, ...]] = []

    async def create_order(self, symbol, kind, side, amount, price, params):
        if amount == 666:
            raise ccxt_async.InsufficientFunds("binance: not enough USDT")
        self.orders.append((symbol, kind, side, amount, price, params))
        return {"id": str(len(self.orders)), "clientOrderId": params["clientOrderId"], "status": "closed", "filled": 1}


def signed(body: bytes, timestamp: int | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", **signature_headers(body, SECRET, timestamp=timestamp)}


def requests() -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(method, path, body, headers): the same requests, in order, to each app. Signed when
    the test runs, not when the module is collected: a suite slower than the limits'
    300 s timestamp window would otherwise find its signatures expired."""
    return [
        ("POST", "/webhook", alert_body("a1", "bench", "buy"), signed(alert_body("a1", "bench", "buy"))),
        ("POST", "/webhook", alert_body("a1", "bench", "buy"), signed(alert_body("a1", "bench", "buy"))),  # again
        ("POST", "/webhook", alert_body("a2", "bench", "sell"), signed(alert_body("a2", "bench", "buy"))),  # forged
        ("POST", "/webhook", alert_body("a3", "bench", "buy"), signed(alert_body("a3", "bench", "buy"), 1_000_000)),
        ("POST", "/webhook", b"not json", signed(b"not json")),
        (
            "POST",
            "/webhook",
            alert_body("a4", "bench", "buy", "NOPE"),
            signed(alert_body("a4", "bench", "buy", "NOPE")),
        ),
        (
            "POST",
            "/webhook",
            alert_body("a5", "bench", "buy", contracts="666"),
            signed(alert_body("a5", "bench", "buy", contracts="666")),
        ),
        ("POST", "/webhook", alert_body("a6", "bench", "SELL"), signed(alert_body("a6", "bench", "SELL"))),
        ("GET", "/", b"", {}),
        ("GET", "/webhook", b"", {}),
        ("POST", "/elsewhere", b"{}", {}),
    ]


async def raw_limit(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    await limit_app.app(scope, receive, send)
    assert dict(sent[0]["headers"])[b"content-type"] == b"application/json"
    return sent[0]["status"], json.loads(sent[1]["body"])


async def quart_limit(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    client = quart_limit_app.app.test_client()
    response = await client.open(path, method=method, data=body, headers=headers)
    assert response.mimetype == "application/json"
    return response.status_code, await response.get_json()


@pytest.mark.parametrize("serve", [raw_limit, quart_limit], ids=["raw", "quart"])
async def test_each_durable_limit_answers_journals_and_orders_alike(serve, tmp_path, monkeypatch):
    exchange = FakeExchange()
    journal = GroupCommitJournal(tmp_path)
    journal.start()
    state = {"client": exchange, "secret": SECRET.encode(), "account": "bench", "ccxt": ccxt_async, "journal": journal}
    monkeypatch.setattr(limit_app, "_state", state)
    try:
        answers = [await serve(*request) for request in requests()]
    finally:
        journal.close()
    statuses = [status for status, _ in answers]
    assert statuses == [200, 409, 401, 401, 422, 422, 502, 200, 200, 404, 404]
    coid = client_order_id("a1", "bench")  # the router's, which the integrity check matches orders by
    assert answers[0][1] == {
        "status": "filled",
        "alert_id": "a1",
        "order": {"id": "1", "client_order_id": coid, "status": "closed", "filled": 1},
    }
    assert answers[1][1] == {"error": "duplicate alert id", "alert_id": "a1"}
    assert answers[2][1] == answers[3][1] == {"error": "authentication failed"}
    assert answers[4][1]["error"].startswith("JSONDecodeError: ")
    assert answers[5][1] == {"error": "KeyError: 'NOPE'"}
    assert answers[6][1] == {"error": "InsufficientFunds: binance: not enough USDT"}
    assert answers[8][1] == {"status": "ok"} and answers[9][1] == answers[10][1] == {"error": "not found"}
    assert exchange.orders == [
        ("B00/USDT", "market", "buy", 0.1, None, {"clientOrderId": coid}),
        ("B00/USDT", "market", "sell", 0.1, None, {"clientOrderId": client_order_id("a6", "bench")}),
    ]
    assert journal.rows == 4  # written: a1, a1 again (refused), a5 (then refused by the exchange), a6


def test_the_raw_limit_loads_no_framework_and_the_quart_limit_no_project_code():
    probe = (
        "import sys, bench.limit_app\n"
        "raw = sorted({m.split('.')[0] for m in sys.modules} & {'quart', 'werkzeug', 'ccxt', 'core', 'plugins'})\n"
        "import bench.quart_limit_app\n"
        "both = sorted({m.split('.')[0] for m in sys.modules} & {'ccxt', 'core', 'plugins'})\n"
        "print(raw, both, type(bench.quart_limit_app.app).__module__)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["[]", "[]", "quart.app"]  # ccxt is imported at startup; plain Quart, not LeanQuart
