"""The Quart application: ``create_app(settings=None)`` and the module-level ``app``.

``hypercorn core.app:app`` serves it. Nothing is read at import: settings, plugins.yaml
and plugins are loaded when the server starts (``before_serving``), so a configuration
error stops startup with one readable line, and importing this module is cheap.

Routes: ``GET /`` health; ``POST /webhook`` the alert pipeline. Errors map to status
codes here, in one place, as ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import logging
import time

from quart import Quart, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core.config import PluginsFile, Settings
from core.errors import PayloadTooLarge, WebhookError
from core.logging_setup import configure_logging
from core.models import InboundRequest
from core.redaction import REDACTOR
from core.router import Router

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, plugins_file: PluginsFile | None = None, extra_plugins: list | None = None) -> Quart:
    """Build the app. ``settings`` default to the environment and ``.env`` at startup.

    ``extra_plugins`` — ``[(name, plugin), ...]`` registered before the built-ins — is
    for tests and embedding.
    """
    app = Quart("ccxt_trading_webhook")
    app.config["MAX_CONTENT_LENGTH"] = 65536
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.before_serving
    async def start_router() -> None:
        active = settings or Settings.from_env()
        configure_logging(active.log_level, active.log_format)
        router = Router(active, plugins_file, extra_plugins)
        app.config["MAX_CONTENT_LENGTH"] = router.options.max_body_bytes
        await router.start()
        app.extensions["router"] = router

    @app.after_serving
    async def stop_router() -> None:
        router = app.extensions.pop("router", None)
        if router is not None:
            await router.stop()

    @app.get("/")
    async def health() -> Response:
        return jsonify(_router(app).health())

    @app.post("/webhook")
    async def webhook() -> tuple[Response, int, dict[str, str]]:
        router = _router(app)
        received_at = time.time()
        limit = router.options.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        body = await request.get_data(cache=False, as_text=False)
        inbound = InboundRequest(
            body=body,
            headers={k.lower(): v for k, v in request.headers.items()},
            remote_addr=request.remote_addr or "",
            scheme=request.scheme,
            payload=await router.parse(body, request.mimetype or ""),
            received_at=received_at,
            query=dict(request.args),
        )
        outcome = await router.receive(inbound)
        return jsonify(outcome.body), outcome.status, outcome.headers

    @app.get("/alerts/<alert_id>")
    async def alert_status(alert_id: str) -> Response:
        """Read-only: authenticated like a webhook (HMAC headers over an empty body, or
        ``Authorization: Bearer <token>``)."""
        router = _router(app)
        headers = {k.lower(): v for k, v in request.headers.items()}
        bearer = headers.get("authorization", "")
        payload = {"token": bearer[7:].strip()} if bearer.lower().startswith("bearer ") else {}
        for value in payload.values():
            REDACTOR.add(value)
        inbound = InboundRequest(body=b"", headers=headers, remote_addr=request.remote_addr or "", scheme=request.scheme,
                                 payload=payload, received_at=time.time(), query={})
        return jsonify(await router.alert_status(inbound, alert_id))

    @app.errorhandler(WebhookError)
    async def webhook_error(error: WebhookError) -> tuple[Response, int, dict[str, str]]:
        body = error.to_body()
        body["error"]["message"] = REDACTOR.redact(body["error"]["message"])
        return jsonify(body), error.status, error.headers

    @app.errorhandler(RequestEntityTooLarge)
    async def too_large(error: RequestEntityTooLarge) -> tuple[Response, int]:
        return await webhook_error(PayloadTooLarge(f"the body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"))

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> tuple[Response, int]:
        code = (error.name or "error").lower().replace(" ", "_")
        return jsonify({"error": {"code": code, "message": error.description or error.name}}), error.code or 500

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return jsonify({"error": {"code": "internal_error", "message": "internal error; nothing was sent to the exchange"}}), 500

    return app


def _router(app: Quart) -> Router:
    return app.extensions["router"]


app = create_app()
