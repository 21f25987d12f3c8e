"""The dashboard's routes: login and logout, alerts, accounts, latency, tokens, risk."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from quart import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
)
from quart_rate_limiter import rate_limit
from werkzeug.wrappers import Response as WerkzeugResponse

from core.dashboard import reads
from core.dashboard.risk import ACTIONS as RISK_ACTIONS
from core.dashboard.risk import act as risk_act
from core.dashboard.risk import risk_view
from core.dashboard.session import (
    COOKIE_PATH,
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoggedOut,
    SessionSigner,
)
from core.errors import Forbidden, NotFound, RateLimited, Unauthorized, Unprocessable
from core.store.tokens import CONTROL_SCOPE
from core.web.ratelimit import LOGIN_LIMITS

log = logging.getLogger(__name__)

# quart.redirect is typed as werkzeug's Response (at run time it is the app's response
# class): a view that redirects, or may, says so with this.
Redirect = WerkzeugResponse

# No inline script or style anywhere: scripts and styles come from /dashboard/static only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PUBLIC_ENDPOINTS = frozenset({"dashboard.login_form", "dashboard.login", "dashboard.static"})
TTL_CHOICES = [
    (3600, "1 hour"),
    (86400, "1 day"),
    (7 * 86400, "7 days"),
    (30 * 86400, "30 days"),
    (90 * 86400, "90 days"),
    (365 * 86400, "1 year"),
]
LATENCY_WINDOWS = {"1h": (3600, 60), "6h": (6 * 3600, 300), "24h": (86400, 900), "7d": (7 * 86400, 3600)}


@dataclass
class Dashboard:
    """Per-app dashboard state, built on the first request once the router has started."""

    signer: SessionSigner
    logged_out: LoggedOut
    tokens: Any = None  # a core.store.protocols.TokenStore, opened when the tokens page is first used
    # The journal the pages read: on SQLite a connection (and thread) of its own, so a page
    # never queues behind — or delays — the webhook's writes (WAL lets it read meanwhile).
    journal: Any = None
    opening: asyncio.Lock = field(default_factory=asyncio.Lock)


def dashboard_blueprint() -> Blueprint:
    bp = Blueprint(
        "dashboard",
        __name__,
        url_prefix="/dashboard",
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )

    # ------------------------------------------------------------ guard

    @bp.before_request
    async def guard() -> Response | Redirect | None:
        router = current_app.extensions.get("router")
        if router is None or not router.settings.dashboard_password:
            raise NotFound("the dashboard is off (set DASHBOARD_PASSWORD to turn it on)")
        if router.settings.require_https and request.scheme != "https":
            raise Forbidden("the dashboard is served over HTTPS only", code="https_required")
        board = _dashboard(router)
        g.router, g.board = router, board
        if request.endpoint in PUBLIC_ENDPOINTS:
            return None
        session = board.signer.read(request.cookies.get(SESSION_COOKIE))
        if session is None or await board.logged_out.contains(session):
            return _unauthenticated()
        g.session = session
        g.csrf = board.signer.csrf_token(session)
        if request.method not in ("GET", "HEAD"):
            presented = request.headers.get(CSRF_HEADER) or (await request.form).get(CSRF_FIELD)
            if not board.signer.same(g.csrf, presented):
                raise Forbidden("missing or wrong CSRF token; reload the page", code="csrf")
        return None

    @bp.after_request
    async def security_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.endpoint != "dashboard.static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @bp.after_app_serving
    async def close_stores() -> None:
        board: Dashboard | None = current_app.extensions.pop("dashboard", None)
        if board is not None and board.tokens is not None:
            await board.tokens.close()
        if board is not None and board.journal is not None:
            await board.journal.aclose()

    @bp.app_template_filter("ts")
    def format_ts(value: float | None) -> str:
        if not value:
            return "—"
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value)) + f".{int(value * 1000) % 1000:03d}"

    @bp.app_template_filter("ms")
    def format_ms(value: float | None) -> str:
        if value is None:
            return ""
        return f"{value:.1f} ms" if value < 10_000 else f"{value / 1000:.1f} s"

    # ------------------------------------------------------------ login / logout

    @bp.get("/login")
    async def login_form() -> Response:
        return await _login_page("", 200)

    @bp.post("/login")
    @rate_limit(limits=LOGIN_LIMITS)  # per worker and address (core.web.ratelimit.route_limiter)
    async def login() -> Response | Redirect:
        router, board = g.router, g.board
        address = request.remote_addr or ""
        form = await request.form
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not board.signer.same(board.signer.login_token(nonce), form.get(CSRF_FIELD)):
            raise Forbidden("missing or wrong CSRF token; reload the login page", code="csrf")
        try:  # reserved in one atomic step, as for webhooks: concurrent guesses cannot overspend it
            await router.limits.reserve_failure(address)
        except RateLimited as exc:
            return await _login_page(f"Too many failed logins from your address; {exc.message}.", 429, exc.headers)
        if not board.signer.password_matches(form.get("password", "")):
            log.warning("dashboard: failed login from %s", address)
            return await _login_page("Wrong password.", 401)  # the reservation stays spent
        await router.limits.release_failure(address)
        _session, cookie = board.signer.new_session()
        target = form.get("next", "")
        if not (target.startswith("/dashboard") and "//" not in target and "\\" not in target):
            target = "/dashboard/alerts"
        response = redirect(target, 303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=board.signer.ttl,
            path=COOKIE_PATH,
            httponly=True,
            samesite="Strict",
            secure=request.scheme == "https",
        )
        response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        log.info("dashboard: login from %s", address)
        return response

    @bp.post("/logout")
    async def logout() -> Redirect:
        await g.board.logged_out.add(g.session)
        response = redirect("/dashboard/login", 303)
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response

    # ------------------------------------------------------------ alerts

    @bp.get("", strict_slashes=False)
    async def index() -> Redirect:
        return redirect("/dashboard/alerts", 302)

    @bp.get("/alerts")
    async def alerts() -> str:
        feed = reads.FeedFilter.from_args(request.args)
        rows = await reads.alert_feed(await _journal(), feed)
        return await _render(
            "alerts.html",
            "alerts",
            feed=feed,
            rows=rows,
            feed_query=urlencode(feed.query()),
            states=reads.FEED_STATES,
        )

    @bp.get("/alerts/feed")
    async def alerts_feed() -> str:
        feed = reads.FeedFilter.from_args(request.args)
        return await render_template("dashboard/_feed_rows.html", rows=await reads.alert_feed(await _journal(), feed))

    @bp.get("/api/alerts")
    async def alerts_json() -> Response:
        feed = reads.FeedFilter.from_args(request.args)
        return jsonify({"alerts": await reads.alert_feed(await _journal(), feed)})

    @bp.get("/alert/<path:alert_id>")
    async def alert_page(alert_id: str) -> tuple[str, int]:
        row = await (await _journal()).get(alert_id[:256])
        if row is None:
            return await _render("missing.html", "alerts", what=f"No alert '{alert_id[:256]}' in the journal."), 404
        return await _render("alert.html", "alerts", alert=reads.alert_view(row)), 200

    # ------------------------------------------------------------ accounts

    @bp.get("/accounts")
    async def accounts() -> str:
        return await _render(
            "accounts.html", "accounts", accounts=await reads.account_views(g.router.executors), read_at=time.time()
        )

    @bp.get("/accounts/panel")
    async def accounts_panel() -> str:
        return await render_template(
            "dashboard/_accounts.html", accounts=await reads.account_views(g.router.executors), read_at=time.time()
        )

    # ------------------------------------------------------------ latency

    @bp.get("/latency")
    async def latency() -> str:
        window = request.args.get("window", "1h")
        window = window if window in LATENCY_WINDOWS else "1h"
        return await _render(
            "latency.html",
            "latency",
            window=window,
            windows=list(LATENCY_WINDOWS),
            stats=await (await _journal()).stats(),
        )

    @bp.get("/api/latency")
    async def latency_json() -> Response:
        span, bucket = LATENCY_WINDOWS.get(request.args.get("window", "1h"), LATENCY_WINDOWS["1h"])
        now = time.time()
        rows = await (await _journal()).timings(now - span)
        return jsonify(reads.latency_series(rows, bucket, now - span, now))

    # ------------------------------------------------------------ tokens

    @bp.get("/tokens")
    async def tokens() -> str:
        return await _tokens_page()

    @bp.post("/tokens")
    async def issue_token() -> tuple[str, int]:
        form = await request.form
        label = form.get("label", "").strip() or None
        accounts = [a.strip() for a in form.get("accounts", "").replace(" ", ",").split(",") if a.strip()]
        try:
            ttl = int(form.get("ttl", "") or g.router.settings.token_ttl)
        except ValueError:
            return await _tokens_page(error="The lifetime must be a whole number of seconds."), 422
        unknown = [a for a in accounts if g.router.executors.get(a) is None]
        if unknown:
            return await _tokens_page(error=f"Unknown account(s): {', '.join(unknown)}."), 422
        store = await _token_store()
        kwargs: dict[str, Any] = {"ttl": ttl, "label": label}
        if accounts:
            if "accounts" not in inspect.signature(store.issue).parameters:
                return await _tokens_page(
                    error="This version's tokens cannot be limited to accounts yet; leave Accounts empty."
                ), 422
            kwargs["accounts"] = accounts
        if form.get("control"):  # the kill switch: POST /control/* on the token's accounts
            kwargs["scopes"] = (CONTROL_SCOPE,)
        try:
            token, info = await store.issue(**kwargs)
        except ValueError as exc:
            return await _tokens_page(error=str(exc)), 422
        log.info(
            "dashboard: token %s issued (label %s, scopes %s)", info.id, info.label or "-", ",".join(info.scopes) or "-"
        )
        template = {
            "token": token,
            "ticker": "{{ticker}}",
            "action": "{{strategy.order.action}}",
            "contracts": "{{strategy.order.contracts}}",
            "price": "{{close}}",
            "id": "{{strategy.order.id}}-{{timenow}}",
        }
        if len(accounts) == 1:
            template["account"] = accounts[0]
        return await _tokens_page(new_token=token, new_info=info, message_template=json.dumps(template, indent=2)), 200

    @bp.post("/tokens/<token_id>/revoke")
    async def revoke_token(token_id: str) -> Redirect:
        store = await _token_store()
        revoked = await store.revoke_id(token_id)
        log.info("dashboard: token %s %s", token_id[:16], "revoked" if revoked else "not found for revocation")
        return redirect("/dashboard/tokens" + ("" if revoked else "?missing=1"), 303)

    # ------------------------------------------------------------ risk

    @bp.get("/risk")
    async def risk() -> str:
        return await _render(
            "risk.html",
            "risk",
            view=await risk_view(g.router),
            done=request.args.get("done", ""),
            done_account=request.args.get("account", ""),
            flatten_id=request.args.get("flatten", ""),
        )

    @bp.post("/risk/<action>")
    async def risk_action(action: str) -> Redirect:
        if action not in RISK_ACTIONS:
            raise NotFound(f"no risk action '{action[:32]}'")
        form = await request.form
        account = form.get("account", "").strip() or None
        if account is not None:
            executor = g.router.executors.get(account)
            if executor is None:
                raise Unprocessable(f"unknown account '{account[:64]}'", code="unknown_account")
            account = executor.account
        record = await risk_act(g.router, action, account, form.get("reason", "").strip()[:200])
        log.warning("dashboard: risk %s %s from %s", action, account or "every account", request.remote_addr)
        query = {"done": action, "account": account or ""}
        if action == "flatten":
            query["flatten"] = record.get("flatten_id", "")
        return redirect("/dashboard/risk?" + urlencode(query), 303)

    return bp


# ---------------------------------------------------------------- helpers


def _dashboard(router: Any) -> Dashboard:
    board = current_app.extensions.get("dashboard")
    if board is None:
        settings = router.settings
        board = Dashboard(
            SessionSigner(settings.dashboard_password, settings.webhook_secret, settings.dashboard_session_ttl),
            LoggedOut(router.state.rate_store(durable=True)),
        )
        current_app.extensions["dashboard"] = board
    return board


async def _journal() -> Any:
    board: Dashboard = g.board
    await g.router.engine.writes.settled()  # outcomes answered before are journaled: read them
    if g.router.state.is_redis:
        return g.router.journal  # Redis serves concurrent readers itself
    async with board.opening:
        if board.journal is None:  # opening runs the schema check: off the event loop
            board.journal = await asyncio.to_thread(g.router.state.journal)
    return board.journal


async def _token_store() -> Any:
    board: Dashboard = g.board
    if board.tokens is None:
        board.tokens = g.router.state.token_store(synchronous="FULL")
    return board.tokens


def _unauthenticated() -> Response | Redirect:
    """A page asked for in a browser goes to the login form; anything else gets 401."""
    wants_page = (
        request.method == "GET"
        and not request.headers.get("HX-Request")
        and not request.path.startswith("/dashboard/api/")
        and "text/event-stream" not in request.headers.get("Accept", "")
    )
    if wants_page:
        return redirect("/dashboard/login?" + urlencode({"next": request.full_path.rstrip("?")}), 302)
    response = jsonify({"error": {"code": "unauthorized", "message": "log in to the dashboard first"}})
    response.status_code = Unauthorized.status
    if request.headers.get("HX-Request"):
        response.headers["HX-Redirect"] = "/dashboard/login"
    return response


async def _render(template: str, page: str, **context: Any) -> str:
    return await render_template(f"dashboard/{template}", page=page, csrf=g.csrf, **context)


async def _login_page(error: str, status: int, headers: dict[str, str] | None = None) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_hex(16)
    body = await render_template(
        "dashboard/login.html",
        page="login",
        error=error,
        login_token=g.board.signer.login_token(nonce),
        next=request.args.get("next", "") if request.method == "GET" else (await request.form).get("next", ""),
    )
    response = Response(body, status=status, headers=headers or {}, content_type="text/html; charset=utf-8")
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
    )
    return response


async def _tokens_page(
    *, error: str = "", new_token: str | None = None, new_info: Any = None, message_template: str = ""
) -> str:
    store = await _token_store()
    now = time.time()
    listed = [
        {
            "id": t.id,
            "label": t.label or "",
            "accounts": getattr(t, "accounts", None) or [],
            "scopes": t.scopes,
            "created_at": t.created_at,
            "expires_at": t.expires_at,
            "expired": t.expires_at <= now,
            "last_used_at": t.last_used_at,
        }
        for t in await store.list()
    ]
    scopes = "accounts" in inspect.signature(store.issue).parameters
    return await _render(
        "tokens.html",
        "tokens",
        tokens=listed,
        error=error,
        new_token=new_token,
        new_info=new_info,
        message_template=message_template,
        ttl_choices=TTL_CHOICES,
        default_ttl=g.router.settings.token_ttl,
        scopes=scopes,
        accounts=[e.account for e in g.router.executors],
        missing=request.args.get("missing") == "1",
    )
