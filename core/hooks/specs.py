"""The whole extension surface of the webhook router, in pipeline order.

A plugin is a module or an object with functions decorated ``@hookimpl`` (from
``core.hooks.manager``), named like the specs below and taking any subset of their arguments.

Async contract
--------------
pluggy calls hooks synchronously; an ``async def`` hook therefore returns a coroutine.
The router never lets pluggy combine results. ``core.hooks.manager.call_hook`` calls the
implementations one at a time in pluggy's order (``tryfirst`` ones first, then the most
recently registered first, ``trylast`` ones last; the built-ins are registered last, so
they run before user plugins unless marked ``trylast``) and, when one returns an
awaitable, **awaits it before calling the next**. Sync and async implementations can be
mixed freely and each sees the effects of those before it. pluggy's hook wrappers
(``hookwrapper=True``, ``wrapper=True``) would never run, so a plugin declaring one is
refused at startup with a one-line error naming the plugin and the hook. How the results
of several implementations combine is stated in each hook's docstring below.

Errors
------
A hook that raises a ``core.errors.WebhookError`` answers the request with that error's
status and message. Any other exception is logged (redacted) and answered as a 500 before
anything was sent to an exchange, or recorded as "outcome unknown" after. Exceptions in
``after_execute`` and ``on_error`` are logged and never change the answer.

The ``router`` argument is the plugin host, a ``core.hooks.host.PluginHost``: settings, the
data directory, a logger with redaction, the journal's read side, secret registration
and per-plugin state. Plugins use nothing else of the router (the argument keeps its
name so plugins written before the host existed keep working).

Execution plugins
-----------------
For one alert the router calls, in this order: ``parse_payload`` → ``authenticate`` →
``transform_payload`` → (``executor_for_credentials`` when the alert carries keys) →
the executor's ``lane_key`` → journal → ``Executor.prepare`` → ``execute_order`` (the
built-in calls ``Executor.submit``) → after an unknown outcome, ``lookup_order`` (the
built-in calls ``Executor.lookup``) → ``after_execute`` or ``on_error``. An execution
plugin implements ``register_executors`` and, to claim orders itself, ``execute_order``
together with ``lookup_order``. See docs/plugins/hooks.md and docs/plugins/execution.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import pluggy

if TYPE_CHECKING:
    from core.hooks.host import PluginHost
    from core.pipeline.models import Alert, Credentials, InboundRequest, OrderRequest, OrderResult
    from core.trading.execution import Executor, LookupResult

T = TypeVar("T")
# An implementation may be sync or async (the router awaits what it returns), and may
# return None to abstain.
Maybe: TypeAlias = "T | None | Awaitable[T | None]"

PROJECT = "ccxt_trading_webhook"
hookspec = pluggy.HookspecMarker(PROJECT)


# ---------------------------------------------------------------- lifecycle (startup)


@hookspec
def register_executors(register: Callable[..., None], router: PluginHost) -> Maybe[None]:
    """Declare which exchange accounts this plugin executes. Called once at startup.

    ``register(account_name, executor)`` records an executor (an object implementing
    ``core.trading.execution.Executor``) for an account name. The router owns the registry: a
    name registered by two plugins fails startup with a message naming both plugins.
    After all plugins have registered, the router awaits every executor's ``start()``
    concurrently; one that fails is kept as *not ready* (shown in ``GET /``) and its
    alerts get a clear error, while the other accounts keep working.

    Return value: ignored.
    """


@hookspec
def register_routes(register: Callable[..., None], router: PluginHost) -> Maybe[None]:
    """Add HTTP routes to the server (as datasette's ``register_routes``). Called once at
    startup, before executors start and before ``router_startup`` (a view runs only once
    the server serves, when startup is complete).

    ``register(path, view, methods=("GET",))`` adds ``view``, an ``async def`` Quart view
    (it reads ``quart.request`` and returns a response or a ``(body, status)`` tuple),
    at ``path`` (Quart's rule syntax, ``/alerts/<alert_id>``). A path registered twice,
    or one of the router's own (``/``, ``/webhook``, ``/alerts/<alert_id>``), fails
    startup naming the plugin. Views raise ``core.errors.WebhookError`` for error
    answers; they are responsible for their own authentication.

    Return value: ignored.
    """


@hookspec
def router_startup(router: PluginHost) -> Maybe[None]:
    """Called once when the server starts, after executors are registered and started.

    Open long-lived resources here (stores, HTTP sessions, background tasks) and keep
    them on the plugin object. Raising aborts startup with the plugin's name.

    Return value: ignored (awaited if a coroutine).
    """


# ---------------------------------------------------------------- per alert


@hookspec
def executor_for_credentials(exchange: str, credentials: Credentials, router: PluginHost) -> Maybe[Executor]:
    """Provide an executor for an alert that carries its own exchange credentials.

    Called only when an alert carries ``apiKey``/``secret`` (the classic payload's format, allowed
    while ``router.allow_payload_credentials`` is true) and it is routed to an exchange
    that is not the paper ledger. ``exchange`` is the exchange id (lower-case, e.g.
    ``binance``); ``credentials`` a ``core.pipeline.models.Credentials`` (secret values wrapped).
    The executor is used for that alert only; the plugin may cache it under a hash of
    the credentials (never the raw secret) and must close what it evicts.

    Return: an ``Executor`` (already started), or ``None`` to pass. The **first
    non-None** result wins; if none, the alert is refused with 422.
    """


@hookspec
def parse_payload(body: bytes, content_type: str, router: PluginHost) -> Maybe[dict[str, Any]]:
    """Turn the raw request body into a payload dict.

    ``body`` is the raw bytes (already within the size limit); ``content_type`` the
    media type without parameters, lower-cased ('' when absent).

    Return: a ``dict`` to claim the body, or ``None`` to pass. The **first non-None**
    result wins and later implementations are not called. The built-in JSON parser
    (``trylast``) accepts ``application/json`` and ``text/plain`` (TradingView's), and
    raises ``BadRequest`` (400) or ``UnsupportedMediaType`` (415).
    """


@hookspec
def authenticate(request: InboundRequest, router: PluginHost) -> Maybe[Any]:
    """Decide whether ``request`` (a ``core.pipeline.models.InboundRequest``) may trade.

    For ``POST /webhook`` this runs on the raw ``request.body`` and headers *before* the
    body is parsed (``request.payload`` is still empty): nothing is parsed for a request
    without valid credentials. Read what you need from the raw bytes, boundedly.

    Return ``AuthResult.accept(principal[, accounts])``, ``AuthResult.reject(reason[, status])`` or
    ``None`` to abstain. ``accounts`` limits what the principal may trade on (omitted: every
    account; an empty list: the default account only); a principal other than the owner's
    ``"hmac"`` has alert ids of its own and reads only its own alerts. **Every**
    implementation is called. Any rejection wins (the first one's status is used, 401 or
    403); otherwise at least one acceptance is needed (the first acceptance's principal is
    used); if all abstain the request gets 401.
    Clients get one 401 body whatever the reason, so no plugin can become an oracle;
    the reason is logged.
    """


@hookspec
def transform_payload(payload: dict[str, Any], request: InboundRequest, router: PluginHost) -> Maybe[dict[str, Any]]:
    """Normalize the authenticated payload in place, before it is validated as an alert.

    ``payload`` is a mutable dict; implementations form a chain, each seeing the previous
    one's changes (built-ins first: the TradingView normalization maps its ticker, side
    and amount forms onto ``core.pipeline.models.Alert`` fields). Raise ``Unprocessable`` (422)
    to refuse the alert with a reason naming the field.

    Return value: ignored.
    """


@hookspec
def check_risk(
    alert: Alert, order: OrderRequest, executor: Executor, reducing: bool, router: PluginHost
) -> Maybe[None]:
    """Refuse an order before it is sent: the risk phase, after the executor prepared
    ``order`` (a ``core.pipeline.models.OrderRequest``: market resolved, amount after precision,
    ``reference_price`` and ``position_before`` where known) and before ``execute_order``.

    Called for every order of every execution plugin, and for orders the router places
    itself (a flatten's steps, a strategy correction). ``reducing`` is True when the order
    can only lower risk (reduce-only, a close, a cancel, or an order that shrinks the
    position it was computed from); the built-in limits never refuse such an order by
    position, notional or hours. The kill switch (a halt) is checked by the router before
    this hook and refuses opening orders only.

    Raise ``core.errors.RiskLimitExceeded(limit, message, value=..., figure=...)`` to
    refuse: the alert is answered 422 ``risk_limit``, journaled as ``refused``, reported
    through ``on_error``, and nothing is sent. Return ``None`` to pass. **Every**
    implementation is called in order until one raises; reads of the exchange
    (``executor.fetch_last_price`` and the other optional ``Executor`` reads) may raise
    ``core.trading.execution.VenueNotSupported``: decide whether your check then refuses or skips.

    Return value: ignored.
    """


@hookspec
def describe_risk_limits(account: str, router: PluginHost) -> Maybe[list[dict[str, Any]]]:
    """Describe the limits your ``check_risk`` applies to ``account`` (a configured
    account's name), for the operator: the dashboard's risk page and ``risk status``
    (``KillSwitch.limits``). Called when such a page or command is asked for, never on an
    alert's path; keep it cheap (no exchange reads).

    Return a list of dicts ``{"limit": name, "value": configured value as text,
    "source": "default" | "account" | your plugin's word, "used": current use as text or
    None}`` (no secret in them), or ``None``. **Every** implementation is called; the
    lists are concatenated in call order.
    """


@hookspec
def execute_order(order: OrderRequest, executor: Executor, alert: Alert, router: PluginHost) -> Maybe[OrderResult]:
    """Place ``order`` (a ``core.pipeline.models.OrderRequest``) for ``alert`` on ``executor``.

    Return a ``core.pipeline.models.OrderResult`` to claim the order, or ``None`` to pass. The
    **first non-None** result wins; the plugin that returned it (or raised) is recorded
    in the journal as the order's placer, and reconciliation asks that plugin's
    ``lookup_order``. The built-in implementation (``trylast``) calls
    ``executor.submit(order)``; a plugin may claim orders first (dry-run, routing to
    another venue). Raise the order errors of ``core.errors`` (``OrderRejected``,
    ``OrderNotSent``, ``VenueBusy``, ``OutcomeUnknown``, ``CredentialsRefused``) or a
    ``WebhookError``; any other exception means the order may be booked.
    """


@hookspec
def lookup_order(
    order: OrderRequest, executor: Executor, alert: Alert, router: PluginHost
) -> Maybe[LookupResult | OrderResult]:
    """After an unknown outcome, what became of ``order`` (``core.trading.execution.LookupResult``).

    Called only on the plugin that placed the order (the one whose ``execute_order``
    claimed it, or raised); the built-in (``trylast``) calls ``executor.lookup(order)``.
    A plugin that claims orders in ``execute_order`` without implementing this hook
    leaves its unknown outcomes ``unknown`` (never resent). After a crash mid-send (the
    placer was not journaled) every implementation is asked, first answer wins, and an
    ``absent`` is not trusted while a plugin implements ``execute_order`` (not marked
    ``core.hooks.manager.observes_only``) without ``lookup_order``. Return a ``LookupResult``,
    or ``None`` for "cannot tell".
    """


@hookspec
def after_execute(
    alert: Alert, order: OrderRequest, result: OrderResult, state: str, router: PluginHost
) -> Maybe[None]:
    """Called after an order was executed (``result`` is its ``OrderResult``) and journaled.

    ``state`` is the alert's journal state: ``filled``, ``submitted`` (resting),
    ``canceled`` (a cancel alert) or ``reconciled`` (its outcome was unknown and a lookup
    found it at the exchange).

    For journals, notifications and metrics. **Every** implementation is called; errors
    are logged and do not change the answer. Keep it fast: the webhook's answer waits
    for awaited implementations, so start slow work (notifications) as a task.

    Return value: ignored.
    """


@hookspec
def on_error(
    alert: Alert, order: OrderRequest | None, error: BaseException, state: str, router: PluginHost
) -> Maybe[None]:
    """Called when an accepted alert failed, once that is journaled: ``error`` is the
    exception, ``order`` the ``OrderRequest`` if one was built (else ``None``), ``state``
    the alert's journal state (``rejected``, ``failed``, ``expired``, or ``unknown`` when
    reconciliation gave up).

    **Every** implementation is called; errors in it are logged and ignored.

    Return value: ignored.
    """


# ---------------------------------------------------------------- lifecycle (shutdown)


@hookspec
def router_shutdown(router: PluginHost) -> Maybe[None]:
    """Called once at shutdown, after orders in flight have finished (bounded wait) and
    before executors are closed. Close what ``router_startup`` opened.

    **Every** implementation is called, even if one raises. Return value: ignored.
    """
