"""The durable limit as a Quart route: what the project's fixed choice of framework costs.

    BENCH_DURABLE_DIR=/some/dir hypercorn bench.quart_limit_app:app

The webhook route of this project is a Quart route (a fixed choice), so the least it can
cost is the durable limit's work served by Quart: this app is ``bench.limit_app``'s
durable limit — the same startup, HMAC and timestamp check, fsynced journal row and
``create_order``, the same answers (status codes and JSON bodies), run by the same
function ``limit_app.webhook`` — behind one route of a plain ``quart.Quart`` (the
framework as shipped, not the project's ``LeanQuart``). Its figures over the durable
limit's are the framework's cost; the server's over its own are the router's work.

The environment is the durable limit's (``BENCH_WEBHOOK_SECRET``, ``BENCH_CCXT_CONFIG``,
``BENCH_ACCOUNT``, ``BENCH_DURABLE_DIR``; without the last it has no journal, like the
bare limit).
"""

from __future__ import annotations

from typing import Any

from quart import Quart, request

from bench import limit_app

app = Quart(__name__)
app.before_serving(limit_app.startup)
app.after_serving(limit_app.shutdown)


@app.get("/")
async def health() -> tuple[dict[str, Any], int]:
    return {"status": "ok"}, 200


@app.post("/webhook")
async def webhook() -> tuple[dict[str, Any], int]:
    body = await request.get_data(cache=True, as_text=False, parse_form_data=False)  # the defaults, typed bytes
    # Quart decodes header values as latin-1: encoding them back gives the bytes sent.
    timestamp = request.headers.get("X-Timestamp", "").encode("latin-1")
    signature = request.headers.get("X-Signature", "").encode("latin-1")
    status, answer = await limit_app.webhook(body, timestamp, signature)
    return answer, status


@app.errorhandler(404)
@app.errorhandler(405)  # a GET /webhook: the raw limit answers any other request 404 too
async def not_found(error: Exception) -> tuple[dict[str, Any], int]:
    return {"error": "not found"}, 404
