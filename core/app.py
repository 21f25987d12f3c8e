"""The Quart application: ``create_app(settings=None)`` and the module-level ``app``.

``hypercorn core.app:app`` serves it. Nothing is read at import: settings, plugins.yaml
and plugins are loaded when the server starts (``before_serving``), so a configuration
error stops startup with one readable line, and importing this module is cheap.

Routes: ``GET /`` health; ``POST /webhook`` the alert pipeline; ``GET /metrics`` the
Prometheus metrics of ``core.metrics`` (every webhook answer's status is counted here).
Errors map to status codes here, in one place, as ``{"error": {"code": ..., "message": ...}}``.

Abuse protection around the pipeline: ``core.proxy`` establishes the client's address and
scheme (TRUSTED_PROXIES); ``POST /webhook`` then refuses plain HTTP when REQUIRE_HTTPS is
set (``GET /`` stays reachable for platform health checks) and applies the rate limits
of ``core.ratelimit`` before the body is read.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import signal
import time

from quart import Quart, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core.config import PluginsFile, Settings
from core.errors import Forbidden, NotFound, PayloadTooLarge, Unauthorized, WebhookError
from core.logging_setup import configure_logging
from core.metrics import recorder_for
from core.models import InboundRequest
from core.proxy import ProxyHeadersMiddleware
from core.redaction import REDACTOR
from core.plugins import collect_routes
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
    proxy = ProxyHeadersMiddleware(app.asgi_app)  # trusts nobody until startup configures it
    app.asgi_app = proxy  # type: ignore[method-assign]

    @app.before_serving
    async def graceful_sigterm_in_workers() -> None:
        if multiprocessing.parent_process() is not None:
            # A hypercorn worker. Its master turns SIGTERM into a graceful shutdown of every
            # worker (finish requests, then after_serving waits for orders in flight). A
            # SIGTERM sent to the whole process group (Heroku, systemd, Ctrl-C in a shell)
            # would otherwise kill the worker first and skip that wait.
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: log.info("SIGTERM: shutting down gracefully when hypercorn's master says so"))

    @app.before_serving
    async def start_router() -> None:
        active = settings or Settings.from_env()
        configure_logging(active.log_level, active.log_format)
        router = Router(active, plugins_file, extra_plugins)
        proxy.trust(active.trusted_proxies)
        app.config["MAX_CONTENT_LENGTH"] = router.options.max_body_bytes
        await _add_plugin_routes(app, router)  # before anything starts: a conflict stops startup cleanly
        await router.start()
        app.extensions["router"] = router
        # What startup built (ccxt's classes, the loaded markets: ~2·10^5 tracked objects)
        # lives as long as the process: keep it out of the cyclic GC, whose full passes over
        # it paused the event loop ~70 ms every few hundred alerts. Refcounting still frees it.
        gc.collect()
        gc.freeze()

    @app.after_serving
    async def stop_router() -> None:
        router = app.extensions.pop("router", None)
        if router is not None:
            await router.stop()

    @app.get("/")
    async def health() -> Response:
        return jsonify(await _router(app).health())

    @app.post("/webhook")
    async def webhook() -> tuple[Response, int, dict[str, str]]:
        router = _router(app)
        received_at = time.time()
        client = request.remote_addr or ""
        _require_https(router)
        await router.limits.before_request(client)
        limit = router.options.max_body_bytes
        try:
            if request.content_length is not None and request.content_length > limit:
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")
            body = await request.get_data(cache=False, as_text=False)
            payload = await router.parse(body, request.mimetype or "")
        except (WebhookError, RequestEntityTooLarge):
            await router.limits.failed(client)  # refused before authenticating
            raise
        inbound = InboundRequest(
            body=body,
            headers={k.lower(): v for k, v in request.headers.items()},
            remote_addr=client,
            scheme=request.scheme,
            payload=payload,
            received_at=received_at,
            query=dict(request.args),
        )
        outcome = await router.receive(inbound)
        return jsonify(outcome.body), outcome.status, outcome.headers

    @app.get("/alerts/<alert_id>")
    async def alert_status(alert_id: str) -> Response:
        """Read-only: authenticated like a webhook — HMAC headers whose signed "body" is the
        request line ``GET /alerts/<alert_id>`` (so a signature reads one alert), or
        ``Authorization: Bearer <token>``."""
        router = _router(app)
        _require_https(router)
        await router.limits.check_failures(request.remote_addr or "")
        headers = {k.lower(): v for k, v in request.headers.items()}
        bearer = headers.get("authorization", "")
        payload = {"token": bearer[7:].strip()} if bearer.lower().startswith("bearer ") else {}
        for value in payload.values():
            REDACTOR.add(value)
        inbound = InboundRequest(body=read_signature_message(alert_id), headers=headers, remote_addr=request.remote_addr or "",
                                 scheme=request.scheme, payload=payload, received_at=time.time(), query={})
        return jsonify(await router.alert_status(inbound, alert_id))

    @app.after_request
    async def count_webhook_answer(response: Response) -> Response:
        if request.path == "/webhook" and request.method == "POST":
            recorder = recorder_for(app.extensions.get("router"))
            if recorder is not None:
                recorder.webhook_answered(response.status_code)
        return response

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


async def serve_metrics() -> Response:
    """``GET /metrics``, registered by the metrics plugin (``core.metrics``) through the
    ``register_routes`` hook. Prometheus text format; open like ``GET /`` unless
    ``metrics.bearer_token`` is set, then it needs ``Authorization: Bearer <token>`` (and
    HTTPS if REQUIRE_HTTPS)."""
    router = _router(current_app)
    recorder = recorder_for(router)
    if recorder is None:
        raise NotFound("metrics are disabled (router.disabled: [metrics])")
    if recorder.options.bearer_token:
        _require_https(router)
        await router.limits.check_failures(request.remote_addr or "")
        if not recorder.authorized(request.headers.get("Authorization", "")):
            await router.limits.failed(request.remote_addr or "")
            raise Unauthorized("authentication failed")
    body, content_type = await recorder.exposition(router, request.headers.get("Accept", ""))
    return Response(body, content_type=content_type)


# The app's own routes; plugins add theirs through the register_routes hook.
APP_ROUTES = frozenset({"/", "/webhook", "/alerts/<alert_id>"})


async def _add_plugin_routes(app: Quart, router: Router) -> None:
    """The routes plugins register (``register_routes``: metrics, dashboards, ...)."""
    for plugin, path, view, methods in await collect_routes(router.hook.register_routes, router, set(APP_ROUTES)):
        endpoint = f"plugin.{plugin}.{path}"
        if endpoint in app.view_functions:  # the same app started again (tests): the new view serves
            app.view_functions[endpoint] = view
        else:
            app.add_url_rule(path, endpoint=endpoint, view_func=view, methods=list(methods))


def read_signature_message(alert_id: str) -> bytes:
    """What an HMAC signature of ``GET /alerts/<alert_id>`` covers, in place of a body."""
    return f"GET /alerts/{alert_id}".encode()


def _router(app: Quart) -> Router:
    return app.extensions["router"]


def _require_https(router: Router) -> None:
    """REQUIRE_HTTPS: the scheme is the client's (``core.proxy`` applied TRUSTED_PROXIES)."""
    if router.settings.require_https and request.scheme != "https":
        raise Forbidden("this endpoint accepts HTTPS only", code="https_required")


app = create_app()
