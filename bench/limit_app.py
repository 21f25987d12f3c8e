"""The limit: the least work any webhook-to-exchange server can do, as a raw ASGI app.

    hypercorn bench.limit_app:app                                 # the bare limit
    BENCH_DURABLE_DIR=/some/dir hypercorn bench.limit_app:app     # the durable limit

No framework, no plugins, no journal, no replay cache, no rate limit: it checks the HMAC
of ``"<X-Timestamp>.<body>"`` (the router's recommended form) and the timestamp window,
reads ``id``, ``ticker``, ``action`` and ``contracts`` from the JSON body and calls
``create_order`` on one ccxt binance client, created at startup with its markets loaded
and ccxt's throttle off, with the client order id the router would use for the same
alert. The router's figures are divided by this app's, measured in the same run, served
by the same hypercorn with the same options.

Environment: ``BENCH_WEBHOOK_SECRET``; ``BENCH_CCXT_CONFIG``, the ccxt constructor config
as JSON (the emulator's urls and keys, ``enableRateLimit: false``, spot markets only: the
same as the router's benchmark account); ``BENCH_ACCOUNT``, the account name client order
ids are derived from, as the router does.

With ``BENCH_DURABLE_DIR`` set it is the **durable limit**: the same app plus one SQLite
row per alert (alert id, client order id, time, body) in that directory, group-committed
and fsynced (``bench.durable``: WAL, ``synchronous=FULL``, one writer thread committing
whatever is queued in one transaction) before the order is sent — the one durable write
that "never lose an accepted alert" needs. An alert id journaled before is answered 409
and not sent.

``startup``, ``shutdown`` and ``webhook`` (the checks, the row and the order) are shared
with ``bench.quart_limit_app``, the durable limit as a plain Quart route; this module
imports no framework.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

SIGNATURE_WINDOW = 300

_state: dict[str, Any] = {}


def client_order_id(alert_id: str, account: str) -> str:
    """``core.trading.execution.client_order_id`` (not imported: this app loads nothing of core).
    The benchmark's booked-order check uses core's function, so a divergence shows there."""
    return ("tv" + hashlib.sha256(f"{account}\x00{alert_id}".encode()).hexdigest())[:32]


async def startup() -> None:
    import ccxt.async_support as ccxt_async

    client = ccxt_async.binance(json.loads(os.environ["BENCH_CCXT_CONFIG"]))
    await client.load_markets()
    durable_dir = os.environ.get("BENCH_DURABLE_DIR", "")
    if durable_dir:
        from bench.durable import GroupCommitJournal

        journal = GroupCommitJournal(Path(durable_dir))
        journal.start()
        _state["journal"] = journal
    _state.update(
        client=client,
        secret=os.environ["BENCH_WEBHOOK_SECRET"].encode(),
        account=os.environ.get("BENCH_ACCOUNT", "bench"),
        ccxt=ccxt_async,
    )
    gc.collect()
    gc.freeze()  # as the router does after startup: no full GC passes over ccxt's objects


async def shutdown() -> None:
    client = _state.pop("client", None)
    if client is not None:
        await client.close()
    journal = _state.pop("journal", None)
    if journal is not None:
        journal.close()


async def _answer(send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def webhook(body: bytes, timestamp: bytes, signature: bytes) -> tuple[int, dict[str, Any]]:
    """One ``POST /webhook``, after the request is read: the HMAC and the timestamp window,
    the alert's fields, the journal's row (the durable limit) and the order; the answer's
    status and JSON body. The raw ASGI ``app`` below and ``bench.quart_limit_app`` (the same
    work as a Quart route) both answer with it, so they differ only by what serves them."""
    expected = hmac.new(_state["secret"], timestamp + b"." + body, hashlib.sha256).hexdigest().encode()
    if (
        not hmac.compare_digest(signature, expected)
        or not timestamp.isdigit()
        or abs(time.time() - int(timestamp)) > SIGNATURE_WINDOW
    ):
        return 401, {"error": "authentication failed"}
    try:
        alert = json.loads(body)
        client = _state["client"]
        symbol = client.markets_by_id[alert["ticker"]][0]["symbol"]
        side = alert["action"].lower()
        amount = float(alert["contracts"])
        coid = client_order_id(str(alert["id"]), _state["account"])
    except Exception as exc:
        return 422, {"error": f"{type(exc).__name__}: {exc}"}
    journal = _state.get("journal")
    if journal is not None and not await journal.write((str(alert["id"]), coid, time.time(), body)):
        return 409, {"error": "duplicate alert id", "alert_id": alert["id"]}
    try:
        order = await client.create_order(symbol, "market", side, amount, None, {"clientOrderId": coid})
    except _state["ccxt"].BaseError as exc:
        return 502, {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return 200, {
        "status": "filled" if order.get("status") == "closed" else "submitted",
        "alert_id": alert["id"],
        "order": {
            "id": order.get("id"),
            "client_order_id": order.get("clientOrderId"),
            "status": order.get("status"),
            "filled": order.get("filled"),
        },
    }


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] == "GET" and scope["path"] == "/":
        await _answer(send, 200, {"status": "ok"})
        return
    if scope["method"] != "POST" or scope["path"] != "/webhook":
        await _answer(send, 404, {"error": "not found"})
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    status, answer = await webhook(b"".join(chunks), headers.get(b"x-timestamp", b""), headers.get(b"x-signature", b""))
    await _answer(send, status, answer)
