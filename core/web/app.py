"""The Quart application: ``create_app(settings=None)`` and the module-level ``app``.

``hypercorn core.web.app:app`` serves it. Nothing is read at import: settings, plugins.yaml
and plugins are loaded when the server starts (``before_serving``), so a configuration
error stops startup with one readable line, and importing this module is cheap.

Routes: ``GET /`` health (liveness only without credentials; everything, accounts and
plugins included, with a signed request line ``GET /``, a token or METRICS_TOKEN as
``Authorization: Bearer``); ``POST /webhook`` the alert pipeline; ``POST /control/<action>``
the kill switch (``core.pipeline.killswitch``); ``GET /metrics`` the Prometheus metrics
of core's metrics service (``core.observability.metrics``, built here at startup unless
``router.disabled`` names ``metrics``; METRICS_TOKEN or a signed ``GET /metrics`` unless
``metrics.public``; every webhook answer's status is counted here); ``/dashboard`` the web
dashboard of ``core.dashboard`` (off unless DASHBOARD_PASSWORD is set).
Errors map to status codes here, in one place, as ``{"error": {"code": ..., "message": ...}}``.

Abuse protection around the pipeline: ``core.web.proxy`` establishes the client's address and
scheme (TRUSTED_PROXIES); ``core.web.intake`` caps the requests in flight per address and
reads each body within a deadline; ``POST /webhook`` then refuses plain HTTP when
REQUIRE_HTTPS is set (``GET /`` stays reachable for platform health checks), applies the
rate limits of ``core.web.ratelimit`` before the body is read, and authenticates before the
body is parsed.
"""

from __future__ import annotations

import gc

_GC_WAS_ENABLED = gc.isenabled()
gc.disable()  # until the end of this module: see there
import asyncio
import hmac
import logging
import multiprocessing
import os
import sys
import time
from typing import cast

from quart import Quart, Response, request
from quart.typing import ResponseTypes
from quart.wrappers import Request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core.checks.preflight import STARTUP_REPORT_ENV
from core.config import PluginsFile, Settings
from core.dashboard import dashboard_blueprint
from core.errors import ConfigError, Forbidden, NotFound, PayloadTooLarge, Unauthorized, WebhookError
from core.hooks.manager import collect_routes
from core.observability.logs import configure_logging
from core.observability.metrics import Metrics
from core.observability.redaction import REDACTOR
from core.pipeline.models import InboundRequest
from core.pipeline.router import Router
from core.web.asgi import BODY, LeanQuart, json_response, scope_headers
from core.web.intake import IntakeGuard, authenticated_callback, quiet_refusals_in_access_log
from core.web.proxy import ProxyHeadersMiddleware
from core.web.ratelimit import route_limiter
from core.web.worker import die_with_parent, dump_stacks_on_sigusr1, in_hypercorn_worker, raise_file_limit

GC_YOUNG_THRESHOLD = 10_000  # allocations between two passes of the cyclic GC once serving (start_router)

log = logging.getLogger(__name__)

CONTROL_MAX_BODY = 2048


def create_app(
    settings: Settings | None = None,
    *,
    plugins_file: PluginsFile | None = None,
    extra_plugins: list[tuple[str, object]] | None = None,
) -> Quart:
    """Build the app. ``settings`` default to the environment and ``.env`` at startup.

    ``extra_plugins`` — ``[(name, plugin), ...]`` registered before the built-ins — is
    for tests and embedding.
    """
    app = LeanQuart("ccxt_trading_webhook")  # Quart without per-request work nothing needs (core.web.asgi)
    app.config["MAX_CONTENT_LENGTH"] = 65536
    app.config["PROPAGATE_EXCEPTIONS"] = False
    intake = IntakeGuard(app.asgi_app)  # in-flight cap per address, body deadline (core.web.intake)
    proxy = ProxyHeadersMiddleware(intake)  # trusts nobody until startup configures it
    app.asgi_app = proxy  # type: ignore[method-assign]
    app.register_blueprint(dashboard_blueprint())  # answers 404 unless DASHBOARD_PASSWORD is set
    route_limiter(app)  # quart-rate-limiter: per-worker brakes on the routes it decorates (core.web.ratelimit)

    @app.before_serving
    async def arrange_worker() -> None:
        # The open-file limit up to the hard limit, stacks dumped on SIGUSR1; in a hypercorn
        # worker, a graceful SIGTERM and an exit when the master dies (core.web.worker).
        raise_file_limit()
        quiet_refusals_in_access_log()
        dump_stacks_on_sigusr1()
        if in_hypercorn_worker():
            app.extensions["parent_watcher"] = die_with_parent(asyncio.get_running_loop())

    @app.before_serving
    async def start_router() -> None:
        gc.disable()  # enabled again below, once what startup built is frozen
        try:
            active = settings or Settings.from_env()
            configure_logging(active.log_level, active.log_format)
            router = Router(active, plugins_file, extra_plugins)
            metrics = Metrics.for_router(router)  # core's own service; None when router.disabled names it
            if metrics is not None:
                router.plugins.add_core("metrics", metrics)  # it observes the pipeline through the hooks
            proxy.trust(active.trusted_proxies)
            app.config["MAX_CONTENT_LENGTH"] = router.options.max_body_bytes
            intake.configure(
                max_inflight=router.options.max_inflight_per_address,
                body_timeout=router.options.body_timeout,
                max_body=router.options.max_body_bytes,
                on_refused=router.limits.failed,
            )
            await _add_plugin_routes(app, router)  # before anything starts: a conflict stops startup cleanly
            if metrics is not None:
                metrics.start()  # before the router: recovery at startup reports outcomes too
            try:
                await router.start()
            except BaseException:
                if metrics is not None:
                    metrics.close()
                raise
        except BaseException as exc:
            gc.enable()
            if isinstance(exc, Exception):
                startup_failed(exc)
            raise
        app.extensions["router"] = router
        app.extensions["metrics"] = metrics
        # What startup built (ccxt's classes, the loaded markets: ~10^5 tracked objects)
        # lives as long as the process: keep it out of the cyclic GC, whose full passes over
        # it paused the event loop ~70 ms every few hundred alerts. Refcounting still frees it.
        # The cyclic GC was paused while startup built it (no pass over ~10^5 new objects,
        # ~30 ms of CPU): frozen uncollected, with the ~1,200 objects of garbage it left.
        gc.freeze()
        # Then a pass over the young generation every GC_YOUNG_THRESHOLD allocations instead
        # of 700: the default's passes — above all the full ones, over what the worker
        # allocated since startup — took ≈60 µs of CPU per alert at c=32 (gc.callbacks over
        # 5,000 alerts: 937, 85 and 7 passes of each generation), with it ≈8 µs (10, 0, 0).
        # Cyclic garbage lives a little longer; refcounting frees everything else at once.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        gc.enable()

    @app.after_serving
    async def stop_router() -> None:
        watcher = app.extensions.pop("parent_watcher", None)
        if watcher is not None:
            watcher.cancel()
        router = app.extensions.pop("router", None)
        metrics = app.extensions.pop("metrics", None)
        try:
            if router is not None:
                await router.stop()
        finally:
            if metrics is not None:
                metrics.close()

    @app.get("/")
    async def health() -> Response:
        """Liveness for anyone (platform health checks send no credentials); the full
        health (accounts, plugins, versions, warnings) for an authenticated reader."""
        router = _router(app)
        full = await router.health()
        reader = await _monitoring_reader(router, "GET /", tokens=True)
        if reader is None:
            return json_response(app, {"status": full["status"]})
        if not reader:
            raise Unauthorized("authentication failed")
        return json_response(app, full)

    @app.post("/webhook")
    async def webhook() -> Response:
        router = _router(app)
        received_at = time.time()
        current = cast(Request, request._get_current_object())  # type: ignore[attr-defined]  # one lookup, not one per read
        client = current.remote_addr or ""
        scope = current.scope
        _require_https(router, current.scheme)
        await router.limits.before_request(client)
        # Read whole by core.web.intake, in time and within router.max_body_bytes (its
        # max_body); without the intake in front, read here under the same limit.
        body = scope.get(BODY)
        if not isinstance(body, bytes):
            limit = router.options.max_body_bytes
            try:
                if current.content_length is not None and current.content_length > limit:
                    raise PayloadTooLarge(f"the body is larger than {limit} bytes")
                body = await current.get_data(cache=False, as_text=False, parse_form_data=False)
            except (WebhookError, RequestEntityTooLarge):
                await router.limits.failed(client)  # refused before authenticating
                raise
        inbound = InboundRequest(
            body=body,
            headers=scope_headers(scope, app.config["SERVER_NAME"]),
            remote_addr=client,
            scheme=current.scheme,
            payload={},  # parsed only once the request has authenticated (Router.receive_body)
            received_at=received_at,
            query=dict(current.args) if current.query_string else {},
        )
        # Once authenticated, the address's requests are no longer queued behind anonymous ones (core.web.intake).
        outcome = await router.receive_body(
            inbound,
            current.mimetype or "",
            on_authenticated=authenticated_callback(scope),
            proven=intake.proven(client),
        )
        return json_response(app, outcome.body, outcome.status, outcome.headers)

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
        inbound = InboundRequest(
            body=read_signature_message(alert_id),
            headers=headers,
            remote_addr=request.remote_addr or "",
            scheme=request.scheme,
            payload=payload,
            received_at=time.time(),
            query={},
        )
        return json_response(app, await router.alert_status(inbound, alert_id))

    @app.post("/control/<action>")
    async def control(action: str) -> Response:
        """The kill switch over HTTP: ``halt``, ``flatten``, ``resume`` (``status`` reads).
        Authenticated like a webhook, with HMAC headers whose signed "body" is the request
        line, a newline and the body (``control_signature_message``), or a token in the
        body carrying the ``control`` scope. Body: ``{"account": NAME, "reason": TEXT}``,
        both optional (no account: every account)."""
        router = _router(app)
        _require_https(router)
        if action not in ("halt", "flatten", "resume", "status"):
            raise NotFound(f"no control action '{action[:32]}' (halt, flatten, resume, status)")
        await router.limits.check_failures(request.remote_addr or "")
        try:
            # A control body is tiny ({"account", "reason"}, or a token): parsed before its token
            # can be checked, so bounded far below a webhook's limit.
            if request.content_length is not None and request.content_length > CONTROL_MAX_BODY:
                raise PayloadTooLarge(f"a control request's body is at most {CONTROL_MAX_BODY} bytes")
            body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
            if len(body) > CONTROL_MAX_BODY:
                raise PayloadTooLarge(f"a control request's body is at most {CONTROL_MAX_BODY} bytes")
            payload = await router.parse(body, "application/json") if body.strip() else {}
        except (WebhookError, RequestEntityTooLarge):
            await router.limits.failed(request.remote_addr or "")  # refused before authenticating
            raise
        inbound = InboundRequest(
            body=control_signature_message(action, body),
            headers={k.lower(): v for k, v in request.headers.items()},
            remote_addr=request.remote_addr or "",
            scheme=request.scheme,
            payload=payload,
            received_at=time.time(),
            query={},
        )
        outcome = await router.control(inbound, action)
        return json_response(app, outcome.body, outcome.status)

    @app.get("/metrics")
    async def serve_metrics() -> Response:
        """Prometheus text format (OpenMetrics on request), for ``Authorization: Bearer
        <METRICS_TOKEN>`` (or ``metrics.bearer_token``) or HMAC headers signing the request
        line ``GET /metrics`` (and over HTTPS if REQUIRE_HTTPS); for anyone with
        ``metrics.public: true``. 404 when ``router.disabled`` names ``metrics``."""
        router = _router(app)
        metrics: Metrics | None = app.extensions.get("metrics")
        if metrics is None:
            raise NotFound("metrics are disabled (router.disabled: [metrics])")
        if not metrics.options.public:
            _require_https(router)
            reader = await _monitoring_reader(router, "GET /metrics", tokens=False, bearer=metrics.options.bearer_token)
            if reader is None:
                await router.limits.failed(request.remote_addr or "")
            if not reader:
                raise Unauthorized("authentication failed")
        body, content_type = await metrics.exposition(router, request.headers.get("Accept", ""))
        return Response(body, content_type=content_type)

    def count_webhook_answer(answered: Request, response: ResponseTypes) -> None:
        """Every answer to POST /webhook, error handlers' included, counted by status
        (``LeanQuart.answered``: called once the app answered, with no hook per request)."""
        if answered.path == "/webhook" and answered.method == "POST":
            metrics: Metrics | None = app.extensions.get("metrics")
            if metrics is not None:
                metrics.webhook_answered(response.status_code)

    app.answered = count_webhook_answer

    @app.errorhandler(WebhookError)
    async def webhook_error(error: WebhookError) -> Response:
        body = error.to_body()
        body["error"]["message"] = REDACTOR.redact(body["error"]["message"])
        return json_response(app, body, error.status, error.headers)

    @app.errorhandler(RequestEntityTooLarge)
    async def too_large(error: RequestEntityTooLarge) -> Response:
        return await webhook_error(PayloadTooLarge(f"the body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"))

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        body = {"error": {"code": code, "message": error.description or error.name}}
        return json_response(app, body, error.code or 500)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.error("unexpected error handling %s %s", request.method, request.path, exc_info=error)
        body = {"error": {"code": "internal_error", "message": "internal error; nothing was sent to the exchange"}}
        return json_response(app, body, 500)

    return app


async def _monitoring_reader(router: Router, line: str, *, tokens: bool, bearer: str = "") -> bool | None:
    """Whether this request reads as a monitor: ``Authorization: Bearer`` METRICS_TOKEN (or
    ``bearer``), an issued token (``tokens``), or HMAC headers signing ``line``. ``None``
    when it presents no credentials at all; ``False`` (a failure counted) for bad ones."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    client = request.remote_addr or ""
    authorization = headers.get("authorization", "")
    if not authorization and "x-signature" not in headers:
        return None
    scheme, _, given = authorization.partition(" ")
    presented = given.strip() if scheme.lower() == "bearer" else ""
    monitoring = [t for t in (router.settings.metrics_token, bearer) if t]
    # Checked before anything touches a store: monitoring must work while Redis is down.
    if presented and any(hmac.compare_digest(presented.encode(), t.encode()) for t in monitoring):
        return True
    await router.limits.check_failures(client)
    if authorization and not (presented and tokens):
        await router.limits.failed(client)
        return False
    inbound = InboundRequest(
        body=line.encode(),
        headers=headers,
        remote_addr=client,
        scheme=request.scheme,
        payload={"token": presented} if presented else {},
        received_at=time.time(),
        query={},
    )
    if not (await router.authenticate(inbound)).accepted:
        await router.limits.failed(client)
        return False
    return True


async def _add_plugin_routes(app: Quart, router: Router) -> None:
    """The routes plugins register (``register_routes``: status pages, venue callbacks, ...);
    the app's own (``/``, ``/webhook``, ``/alerts/<alert_id>``, ``/metrics``, ...) cannot be taken."""
    own = {rule.rule for rule in app.url_map.iter_rules() if not rule.endpoint.startswith("plugin.")}
    for plugin, path, view, methods in await collect_routes(router.hook.register_routes, router, own):
        endpoint = f"plugin.{plugin}.{path}"
        if endpoint in app.view_functions:  # the same app started again (tests): the new view serves
            app.view_functions[endpoint] = view
        else:
            app.add_url_rule(path, endpoint=endpoint, view_func=view, methods=list(methods))


def startup_failed(exc: Exception) -> None:
    """Report a failed start as one line (the traceback only at LOG_LEVEL=DEBUG).

    Under ``python -m core serve`` the line goes to the file it names in
    ROUTER_STARTUP_REPORT: the master prints it once and exits non-zero (hypercorn's own
    master exits 0 whatever a worker's lifespan did). Otherwise it goes to stderr. A
    hypercorn worker then exits at once with status 3, which also stops the master,
    instead of printing the framework's traceback."""
    line = "error: " + REDACTOR.redact(
        str(exc) if isinstance(exc, ConfigError) else f"startup failed: {type(exc).__name__}: {exc}"
    )
    log.debug("startup failed", exc_info=exc)
    report = os.environ.get(STARTUP_REPORT_ENV)
    if report:
        with open(report, "a", encoding="utf-8") as out:
            out.write(line + "\n")
    else:
        print(line, file=sys.stderr, flush=True)
    if multiprocessing.parent_process() is not None:
        logging.shutdown()
        os._exit(3)


def read_signature_message(alert_id: str) -> bytes:
    """What an HMAC signature of ``GET /alerts/<alert_id>`` covers, in place of a body."""
    return f"GET /alerts/{alert_id}".encode()


def control_signature_message(action: str, body: bytes) -> bytes:
    """What an HMAC signature of ``POST /control/<action>`` covers: the request line and the body."""
    return f"POST /control/{action}\n".encode() + body


def _router(app: Quart) -> Router:
    router: Router = app.extensions["router"]  # set by start_router
    return router


def _require_https(router: Router, scheme: str | None = None) -> None:
    """REQUIRE_HTTPS: the scheme is the client's (``core.web.proxy`` applied TRUSTED_PROXIES);
    ``scheme``: the request's, when the view has read it already."""
    if router.settings.require_https and (request.scheme if scheme is None else scheme) != "https":
        raise Forbidden("this endpoint accepts HTTPS only", code="https_required")


app = create_app()
# Importing this module allocated ~10^5 objects that live as long as the process (Quart,
# pydantic, core's classes and models): no cyclic GC pass went over them meanwhile (~60 ms of CPU
# at every start, issue 14); frozen out of its sight now, the ~700 garbage objects with them.
gc.freeze()
if _GC_WAS_ENABLED:
    gc.enable()
