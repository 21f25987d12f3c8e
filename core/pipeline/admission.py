"""Admission: the one durable write before an order is sent.

``admit`` journals an alert in one step (``Journal.admit``) with what a crash must not
lose: the alert, the order's intent (its client order id: deterministic, from the alert
id and the account) and the request's replay key. A new alert then takes its place in its
lane with no await in between (``ExecutionEngine.submit``), in the admission's
continuation (``Journal.admit(then=...)``): it runs as the admission commits even if the
request was cancelled meanwhile (a graceful shutdown's end), so no task has to shield
the admission from the request's cancellation. Should its execution fail to start, the
alert ends at once as failed with nothing sent (a 5xx), and the sender's resend executes
it. A duplicate is answered with
the outcome of the alert it duplicates — or, when that one failed with nothing sent (a
5xx), executed again (``Journal.reopen``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from core.errors import WebhookError
from core.pipeline.engine import ExecutionEngine
from core.pipeline.models import Alert, AuthResult, InboundRequest
from core.pipeline.outcomes import Outcome
from core.pipeline.replays import RecentKeys
from core.store.journal import Admission, AdmissionRequest, new_alert_id
from core.store.protocols import Journal
from core.trading.execution import Executor, client_order_id

log = logging.getLogger(__name__)


class Replayed(Exception):
    """The journal remembers the request's replay key: nothing was admitted (401)."""


async def admit(
    journal: Journal,
    engine: ExecutionEngine,
    replays: RecentKeys,
    request: InboundRequest,
    alert: Alert,
    executor: Executor,
    auth: AuthResult,
    body_hash: str,
    *,
    dedup_window: float,
    replay_key: str | None,
) -> Outcome | asyncio.Task[Outcome]:
    """Journal ``alert`` for ``executor`` and start its execution: the task, or the outcome
    of the alert it duplicates (recognised by id, else by ``body_hash``). ``replay_key``
    (the request's, or a fan-out leg's) is recorded in the same step; ``Replayed`` if the
    journal remembers it."""
    try:
        lane = f"{executor.account}|{executor.lane_key(alert)}"
    except WebhookError:
        lane = f"{executor.account}|{alert.symbol.upper()}"  # prepare() refuses it with the reason
    started: list[asyncio.Task[Outcome]] = []

    def start(admission: Admission) -> None:
        # On the loop as the admission commits, whether or not the request still waits for
        # it (a request cancelled meanwhile leaves no journaled alert unexecuted), and with
        # no await since it returned: the alert takes its place in its lane in arrival order.
        if admission.replayed:
            return
        if auth.replay_key is not None and replay_key is not None:
            replays.admitted(auth.replay_key)
        alert.alert_id = admission.alert_id
        if not admission.duplicate:
            try:
                behind = admission.behind_others
                task = engine.submit(alert, executor, lane=lane, seq=admission.seq, check_others=behind)
            except Exception as exc:  # journaled, not started: a 5xx with nothing sent, which a resend executes
                task = engine.not_started(alert, exc)
            started.append(task)

    recorded = AdmissionRequest(
        explicit_id=alert.alert_id,
        body_hash=body_hash,
        received_at=request.received_at,
        authenticated_at=request.authenticated_at,
        dedup_window=dedup_window,
        principal=auth.principal,
        account=executor.account,
        symbol=alert.symbol,
        side=alert.side or alert.action,
        amount=str(alert.amount) if alert.amount is not None else "",
        payload=journal_payload(alert),
        owner=engine.worker_id,
        lane=lane,
        # The order's intent: after a crash, an alert with one and no outcome may have been sent.
        client_order_id=client_order_id(new_alert_id(alert.alert_id, body_hash, request.received_at), executor.account),
        replay_key=replay_key,
        replay_expires_at=auth.replay_expires_at,
    )
    waiting = engine.patient_lane(lane)  # None but behind a queue of the market's alerts
    if waiting is None:
        admission = await journal.admit(recorded, then=start)
    else:
        waiting.patient += 1  # hurried by the lane as it runs short
        try:
            admission = await journal.admit(recorded, then=start, patient=True)
        finally:
            waiting.patient -= 1
    if admission.replayed:
        log.warning("request from %s refused: replayed signature (accepted before)", request.remote_addr)
        raise Replayed()
    if started:
        return started[0]
    # A duplicate. Shielded: a reopened alert must start even if the request is gone.
    return await asyncio.shield(asyncio.ensure_future(duplicate(journal, engine, alert, executor, admission, request)))


def journal_payload(alert: Alert) -> dict[str, Any]:
    """The alert as its journal row keeps it: its fields in JSON form, without its
    credentials (a field never dumped) and without its id (the row's id is the journal's
    key: namespaced, a fan-out leg's). The id is deleted from the dump rather than
    excluded in it: the same dict, without pydantic building an exclusion per call."""
    payload = alert.model_dump(mode="json")
    del payload["alert_id"]
    return payload


async def duplicate(
    journal: Journal,
    engine: ExecutionEngine,
    alert: Alert,
    executor: Executor,
    admission: Admission,
    request: InboundRequest,
) -> Outcome | asyncio.Task[Outcome]:
    """A duplicate admitted: the outcome of the alert it duplicates, or that alert executed
    again when it failed with nothing sent."""
    if may_reopen(engine, admission):
        reopened = await journal.reopen(admission.alert_id, engine.worker_id)
        if reopened is not None:
            # It failed with nothing sent (a 5xx): this resend is what the 5xx asked for.
            log.info("alert %s is sent again: its last attempt failed before anything was sent", alert.alert_id)
            return engine.submit(alert, executor, lane=reopened["lane"], seq=reopened["seq"])
    return await engine.duplicate_outcome(admission.alert_id, request.received_at)


def may_reopen(engine: ExecutionEngine, admission: Admission) -> bool:
    """Whether the alert a resend duplicates may have failed with nothing sent (a 5xx):
    then the resend executes it again (``Journal.reopen`` decides, atomically)."""
    alert_id = admission.alert_id
    if alert_id in engine.inflight:
        return False  # still executing: the resend gets its outcome
    ended = engine.writes.outcome(alert_id)  # ended here; its journal write is on its way
    if ended is not None:
        return ended.status >= 500
    return admission.state == "failed" and (admission.http_status or 0) >= 500
