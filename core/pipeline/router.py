"""The alert pipeline: parse → authenticate → transform → validate → route → journal →
execute → after_execute / on_error.

The router owns the deployment: settings, plugins, accounts, the journal, the kill
switch and the execution engine (``core.pipeline.engine``), which it gives what it needs.
The request only *waits* for execution: the order runs in a task owned by the engine,
so a client disconnect or the answer deadline never cancels it, and shutdown waits
(bounded) for orders in flight. Alert ids and duplicates: ``core.pipeline.ids``; one
alert for several accounts: ``core.pipeline.fanout``; secrets in the payload:
``core.pipeline.credentials``; who sent a request: ``core.pipeline.authentication``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pluggy
from pydantic import ValidationError

from core import __version__
from core.checks.startup import check_startup
from core.config import PluginsFile, RouterOptions, Settings
from core.errors import BadRequest, Forbidden, NotFound, ServiceUnavailable, Unauthorized, Unprocessable
from core.hooks.manager import (
    PluginSet,
    call_hook,
    call_hook_first,
    call_hook_safely,
    call_implementation,
    create_plugin_manager,
)
from core.observability.redaction import REDACTOR
from core.pipeline import admission
from core.pipeline.admission import Replayed
from core.pipeline.authentication import Authenticator
from core.pipeline.credentials import (
    PAYLOAD_CREDENTIALS_WARNING,
    describe_alert_error,
    payload_credentials,
    presented_secrets,
    register_secrets,
    split_payload,
)
from core.pipeline.engine import ExecutionEngine
from core.pipeline.fanout import fan_out
from core.pipeline.ids import FAN_OUT_SEPARATOR, body_hash, id_namespace, journal_key, shown_id, shown_outcome
from core.pipeline.killswitch import KillSwitch
from core.pipeline.models import OWNER_PRINCIPAL, Alert, AuthResult, InboundRequest
from core.pipeline.outcomes import Outcome
from core.store.factory import StateBackend, StateOptions
from core.store.protocols import Journal
from core.store.sqlite.database import private_dir
from core.trading.execution import Executor, ExecutorRegistry
from core.web.ratelimit import WebhookLimits
from core.web.worker import hypercorn_workers

log = logging.getLogger(__name__)


class Router:
    """One running deployment: settings, plugins, accounts, journal and tasks in flight."""

    def __init__(
        self,
        settings: Settings,
        plugins_file: PluginsFile | None = None,
        extra_plugins: list[tuple[str, object]] | None = None,
    ):
        self.settings = settings
        self.plugins_file = plugins_file or PluginsFile.load(settings.plugins_file, settings.environ)
        self.plugins: PluginSet = create_plugin_manager(self.plugins_file, extra_plugins)
        self.options: RouterOptions = self.plugins_file.validate("router", RouterOptions)  # type: ignore[assignment]
        self.state = StateBackend(settings, self.plugins_file.validate("state", StateOptions), self.options)  # type: ignore[arg-type]
        if self.state.kind != "sqlite":  # a shared store's URL may hold its password; "sqlite" names the default
            REDACTOR.add(self.state.url, static=True)
        self.executors = ExecutorRegistry(default_account=settings.default_exchange)
        self.limits = WebhookLimits.from_settings(settings, store=self.state.rate_store())
        self.journal: Journal | None = None  # opened at start(), on the state backend
        self.kill_switch = KillSwitch(self)
        self.engine = ExecutionEngine(self, risk_gate=self.kill_switch.check, patience=self._admission_patience())
        self.started_at = time.time()
        self._plugin_state: dict[str, dict[str, Any]] = {}
        self.authenticator = Authenticator(self)
        for secret in (
            settings.webhook_secret,
            settings.default_api_key,
            settings.default_api_secret,
            settings.metrics_token,
            settings.dashboard_password,
        ):
            REDACTOR.add(secret, static=True)

    def _admission_patience(self) -> int:
        """``router.group_admissions_behind`` when this process is the only one admitting
        alerts into its journal (one worker); else 0. Alerts of one market that arrive at
        different workers are ordered by their admissions' commits: one held back for the
        next commit could be overtaken by a later one that another worker commits at once."""
        return self.options.group_admissions_behind if hypercorn_workers() == 1 else 0

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.plugins.pm.hook

    @property
    def worker_id(self) -> str:
        """This process's id in the journal (heartbeats, alert and flatten ownership)."""
        return self.engine.worker_id

    @property
    def data_dir(self) -> Path:
        return self.settings.data_path

    # ------------------------------------------------------------ the plugin host (core.hooks.host.PluginHost)

    @property
    def config_path(self) -> Path:
        return Path(self.plugins_file.path)

    def logger(self, name: str) -> logging.Logger:
        return logging.getLogger(f"plugins.{name}")  # records pass the redactor (core.observability.redaction)

    def register_secret(self, value: Any) -> None:
        if hasattr(value, "get_secret_value"):  # pydantic SecretStr
            value = value.get_secret_value()
        REDACTOR.add(value, static=True)

    def plugin_state(self, name: str) -> dict[str, Any]:
        return self._plugin_state.setdefault(name, {})

    def open_journal(self) -> Any:
        """The journal; 503 (nothing was sent) while the router is not started."""
        if self.journal is None:
            raise ServiceUnavailable("the router is starting or stopping; nothing was sent", code="not_ready")
        return self.journal

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        private_dir(self.data_dir)
        await self.configure()
        self.journal = self.state.journal()
        await self.executors.start_all()
        await self.kill_switch.start()
        await call_hook(self.hook.router_startup, router=self)
        await self.engine.start()
        if self.options.allow_payload_credentials:
            log.warning(PAYLOAD_CREDENTIALS_WARNING)
        log.info(
            "router %s started: plugins %s; accounts %s",
            __version__,
            ", ".join(self.plugins.names()),
            ", ".join(f"{e.account}({e.exchange}, {'ready' if e.ready else 'NOT READY'})" for e in self.executors),
        )

    async def configure(self) -> None:
        """Register the accounts and check the configuration as a whole (``core.checks.startup``);
        a ConfigError stops startup. Nothing is connected yet: ``check-config`` runs this."""
        for impl in reversed(self.hook.register_executors.get_hookimpls()):
            await call_implementation(impl, {"register": self.executors.register_for(impl.plugin_name), "router": self})
        await check_startup(self)

    async def stop(self) -> None:
        await self.engine.stop(self.options.shutdown_grace)
        await self.kill_switch.stop()
        await call_hook_safely(self.hook.router_shutdown, router=self)
        await self.executors.close_all()
        if self.journal is not None:
            await self.journal.aclose()
            self.journal = None
        await self.limits.store.after_serving()
        await self.state.aclose()

    async def health(self) -> dict[str, Any]:
        accounts = {e.account: e.status() for e in self.executors}
        state: dict[str, Any] = {"backend": self.state.description, "ok": True}
        try:
            journal = self.open_journal()
            await asyncio.wait_for(journal.ping(), timeout=2)
            quarantined = await asyncio.wait_for(journal.quarantined_count(), timeout=2)
            if quarantined:
                state["quarantined"] = quarantined  # journal rows set aside unread: see `journal list`
        except Exception as exc:
            state.update(ok=False, error=getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"[:200])
        ok = state["ok"] and all(a["ready"] for a in accounts.values())
        halts: dict[str, Any]
        try:
            halts = await self.kill_switch.halts()
        except Exception as exc:
            halts = {"error": getattr(exc, "message", None) or type(exc).__name__}
        return {
            "status": "ok" if ok else "degraded",
            "state": state,
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "plugins": [{"name": p.name, "source": p.source} for p in self.plugins.loaded],
            "accounts": accounts,
            "default_account": getattr(self.executors.default, "account", None),
            "halts": halts,
            "warnings": [PAYLOAD_CREDENTIALS_WARNING] if self.options.allow_payload_credentials else [],
        }

    # ------------------------------------------------------------ the pipeline

    async def parse(self, body: bytes, content_type: str) -> dict[str, Any]:
        payload = await call_hook_first(self.hook.parse_payload, body=body, content_type=content_type, router=self)
        if payload is None:
            raise BadRequest("no parser accepted the body")
        if not isinstance(payload, dict):
            raise Unprocessable("the alert must be a JSON object", code="invalid_alert")
        # Not registered with the redactor here: only values that authenticate are (receive()).
        return payload

    # Authentication (``core.pipeline.authentication``), for callers that hold the router.

    async def authenticate(self, request: InboundRequest) -> AuthResult:
        return await self.authenticator.authenticate(request)

    async def remember_replay(self, request: InboundRequest, auth: AuthResult) -> None:
        await self.authenticator.remember_replay(request, auth)

    async def authenticate_within_budget(self, request: InboundRequest, *, proven: bool = False) -> AuthResult:
        return await self.authenticator.within_budget(request, proven=proven)

    async def build_alert(self, request: InboundRequest, principal: str | None) -> Alert:
        payload = request.payload
        await call_hook(self.hook.transform_payload, payload=payload, request=request, router=self)
        fields, raw, secrets = split_payload(payload)
        fields["principal"] = principal
        secrets.pop("token", None)
        if secrets:
            fields["credentials"] = payload_credentials(secrets, allowed=self.options.allow_payload_credentials)
        fields["raw"] = raw
        fields["received_at"] = request.received_at
        try:
            return Alert.model_validate(fields)
        except ValidationError as exc:
            raise Unprocessable(describe_alert_error(exc), code="invalid_alert") from None

    async def executor_for(self, alert: Alert, auth: AuthResult | None = None) -> Executor:
        """The configured account for the alert, or an executor for its own credentials.

        As in the classic interface, an alert carrying apiKey/secret (when
        ``allow_payload_credentials`` is on) trades with them on the exchange it names
        (else DEFAULT_EXCHANGE), unless that is a paper account. ``auth`` limits the
        accounts: one outside its scope is refused with 403, and credentials from the
        alert need a principal allowed every account.
        """
        if alert.credentials is None:
            configured_for = self.executors.resolve(alert)
            if auth is not None:
                self.check_scope(auth, configured_for.account)
            return configured_for
        if auth is not None and auth.accounts is not None:
            raise Forbidden(
                "this credential may trade only on its own accounts, not with keys from the alert",
                code="account_not_allowed",
            )
        if alert.account:
            raise Unprocessable("an alert names either an account or apiKey/secret, not both", code="invalid_alert")
        exchange = (alert.exchange or self.settings.default_exchange).lower()
        configured = self.executors.get(exchange)
        if configured is not None and configured.route == "paper":
            return configured  # paper trading ignores credentials (and never stores them)
        executor: Executor | None = await call_hook_first(
            self.hook.executor_for_credentials, exchange=exchange, credentials=alert.credentials, router=self
        )
        if executor is None:
            raise Unprocessable(
                f"no plugin can trade on '{exchange}' with credentials from the alert", code="unknown_exchange"
            )
        return executor

    def check_scope(self, auth: AuthResult, account: str) -> None:
        """403 unless ``auth`` may trade on ``account`` (an empty scope: the default account)."""
        if auth.accounts is None:
            return
        allowed = auth.accounts or {getattr(self.executors.default, "account", "").lower()}
        if account.lower() not in allowed:
            raise Forbidden(f"this credential may not trade on account '{account}'", code="account_not_allowed")

    async def alert_status(self, request: InboundRequest, alert_id: str) -> dict[str, Any]:
        """The journaled alert with its order attempts, for an authenticated reader: the
        owner reads any alert, any other principal only its own (others are "not found",
        exactly like an id that does not exist)."""
        presented = presented_secrets(request.payload)
        auth = await self.authenticator.within_budget(request)
        register_secrets(presented)
        await self.authenticator.remember_replay(request, auth)
        journal = self.open_journal()
        namespace = id_namespace(auth.principal)
        key = journal_key(namespace, alert_id) if namespace else alert_id
        # An outcome answered but not yet journaled (written after the answer) is waited for.
        await self.engine.writes.written(key, timeout=self.options.response_budget)
        row: dict[str, Any] | None = await journal.get(key)
        if row is None and namespace:
            row = await journal.get(alert_id)  # an id the journal made (no id sent): its principal decides
        if row is None and not namespace and alert_id.startswith("flatten-"):
            flatten = await self.kill_switch.flatten_record(alert_id.removeprefix("flatten-"))
            if flatten is not None:
                return flatten  # its steps are alerts of their own: GET /alerts/<step id>
        if row is None or (namespace and row.get("principal") != auth.principal):
            raise NotFound(f"no alert '{alert_id[:128]}' in the journal")
        row.pop("body_hash", None)
        row.pop("owner", None)
        row["alert_id"] = shown_id(namespace, row["alert_id"])
        return row

    async def control(self, request: InboundRequest, action: str) -> Outcome:
        """The kill switch for an authenticated operator: HMAC (the webhook secret's holder)
        or a token with the ``control`` scope."""
        presented = presented_secrets(request.payload)
        auth = await self.authenticator.within_budget(request)
        register_secrets(presented)
        await self.authenticator.remember_replay(request, auth)
        if auth.principal != OWNER_PRINCIPAL and "control" not in auth.scopes:
            log.warning("control %s refused for %s: no control scope", action, auth.principal)
            raise Forbidden("this credential may not use the kill switch (it needs the control scope)")
        account = request.payload.get("account")
        if account is not None and (not isinstance(account, str) or self.executors.get(account) is None):
            raise Unprocessable(f"unknown account '{str(account)[:64]}'", code="unknown_account")
        if auth.accounts is not None:  # a scoped credential controls its own accounts only, one at a time
            if account is None:
                raise Forbidden(
                    "this credential may control only its own accounts: name one", code="account_not_allowed"
                )
            self.check_scope(auth, account)
        reason = str(request.payload.get("reason") or "")[:200]
        return await self.kill_switch.command(action, account, by=f"http:{auth.principal}", reason=reason)

    async def receive_body(
        self,
        request: InboundRequest,
        content_type: str,
        *,
        on_authenticated: Callable[[], None] | None = None,
        proven: bool = False,
    ) -> Outcome:
        """POST /webhook: authenticate on the raw body and headers, *then* parse the body.

        Nothing is parsed for a request without valid credentials: an HMAC signature is
        verified over the raw bytes, and the token plugin reads the body's top-level
        ``token`` without building the JSON (``plugins.auth.token_auth.extract_token``).
        ``request.payload`` is empty while the ``authenticate`` hooks run. The classic
        ``token`` field is dropped from the parsed payload: no later stage sees it.
        ``on_authenticated`` is called once the request authenticated, and ``proven`` says
        whether its address authenticated lately (both ``core.web.intake``).
        """
        auth = await self.authenticator.within_budget(request, proven=proven)
        try:
            if on_authenticated is not None:
                on_authenticated()
            payload = await self.parse(request.body, content_type)
            register_secrets(presented_secrets(payload))  # it authenticated: its token and keys are masked in logs
            payload.pop("token", None)
            request.payload = payload
            return await self._receive_alert(request, auth)
        finally:
            self.authenticator.replays.release(auth.replay_key)

    async def receive(self, request: InboundRequest) -> Outcome:
        """Run one webhook request whose body is already parsed (``request.payload``) through
        the pipeline; the answer to send. ``POST /webhook`` uses ``receive_body``."""
        presented = presented_secrets(request.payload)  # auth plugins may pop them
        auth = await self.authenticator.within_budget(request)
        try:
            register_secrets(presented)
            return await self._receive_alert(request, auth)
        finally:
            self.authenticator.replays.release(auth.replay_key)

    async def _receive_alert(self, request: InboundRequest, auth: AuthResult) -> Outcome:
        """An authenticated request's alert, built, admitted and answered; 401 when the
        journal remembers its replay key (``Replayed``: nothing was admitted)."""
        try:
            await self.limits.authenticated(auth.principal or "")
            alert = await self.build_alert(request, auth.principal)
            # Each principal's ids live in a namespace of their own: another sender's "a-2"
            # (or its identical body) is never taken for this one's.
            namespace = id_namespace(auth.principal)
            if alert.alert_id is not None and namespace:
                alert.alert_id = journal_key(namespace, alert.alert_id)
            if len(alert.accounts) > 1:

                async def receive_leg(leg: Alert, leg_hash: str) -> Outcome:
                    # Each leg is admitted on its own: its own replay key, derived from the request's.
                    leg_key = None if auth.replay_key is None else f"{auth.replay_key}{FAN_OUT_SEPARATOR}{leg.account}"
                    try:
                        return await self._receive_one(request, leg, auth, leg_hash, replay_key=leg_key)
                    except Replayed:
                        return Outcome.error(401, Unauthorized.code, "authentication failed", state="rejected")

                outcome = await fan_out(alert, request.body, namespace, receive_leg)
                if outcome.status == 401:  # every leg a replay (or refused): the request is one
                    raise Replayed()
            else:
                outcome = await self._receive_one(request, alert, auth, body_hash(namespace, request.body))
        except Replayed:
            await self.limits.failed(request.remote_addr)
            raise Unauthorized("authentication failed") from None
        return shown_outcome(namespace, outcome)

    async def _receive_one(
        self, request: InboundRequest, alert: Alert, auth: AuthResult, body_hash: str, *, replay_key: str | None = None
    ) -> Outcome:
        executor = await self.executor_for(alert, auth)
        if not executor.ready:
            raise ServiceUnavailable(
                f"account '{executor.account}' is not ready; nothing was sent", code="account_not_ready"
            )
        # Journal and start together: once the alert is journaled its execution task exists,
        # even if this request is cancelled mid-admission (``core.pipeline.admission``).
        started = await self.admit(request, alert, executor, auth, body_hash, replay_key=replay_key or auth.replay_key)
        if isinstance(started, Outcome):
            return started
        return await self.engine.answer_within_budget(alert.alert_id or "", started, request.received_at)

    def admit(
        self,
        request: InboundRequest,
        alert: Alert,
        executor: Executor,
        auth: AuthResult,
        body_hash: str,
        *,
        replay_key: str | None = None,
    ) -> Coroutine[Any, Any, Outcome | asyncio.Task[Outcome]]:
        """Journal ``alert`` for ``executor`` and start its execution (``core.pipeline.admission``):
        awaited, the task, or the outcome of the alert it duplicates. ``replay_key``: the
        request's, recorded in the same step (``Replayed`` if the journal remembers it).
        ``admission.admit``'s own coroutine: no coroutine of this method's in between."""
        return admission.admit(
            self.open_journal(),
            self.engine,
            self.authenticator.replays,
            request,
            alert,
            executor,
            auth,
            body_hash,
            dedup_window=self.options.dedup_window,
            replay_key=replay_key,
        )
