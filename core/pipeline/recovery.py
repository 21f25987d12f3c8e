"""Crash recovery: heartbeats, claiming the alerts of dead workers, and what to do with each.

Every worker heartbeats into the journal. Unfinished alerts whose owner stopped
heartbeating (a crash, kill -9) are claimed — atomically, by exactly one worker — and
reconciled by client order id when their order may exist: an order attempt was journaled,
or the alert's intent was (its admission records the client order id, and the attempts
are written only after the exchange answered, so an alert with an intent and no outcome
may have been sent; its order is prepared again to be looked up, and sent only once proven
absent). An alert without either (journaled by an earlier version) was never sent: it
is executed, or marked expired and reported when older than ``recovery_max_age``. A row
that cannot be read is quarantined, and the others go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.pipeline.models import Alert, OrderRequest
from core.trading.execution import Executor, ExecutorRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    """What to do with one orphaned alert, in its lane: expire it (``expire`` says why),
    reconcile ``order`` (the last one attempted), reconcile the order of its ``intent``
    (prepared again; ``sent_at``: the latest it can have been sent), or execute it from the start."""

    alert: Alert
    executor: Executor | None
    lane: str = ""
    seq: int = 0
    expire: str | None = None
    order: OrderRequest | None = None
    sent_at: float = 0.0
    placed_by: str | None = None  # the plugin that placed ``order``; None: ask every lookup_order
    intent: str | None = None  # the client order id its admission recorded, when no attempt was


def plan_recovery(row: dict[str, Any], executors: ExecutorRegistry, *, max_age: float) -> Recovery | None:
    """The recovery of a claimed journal row; None when it must wait (its account is not
    ready). A row whose fields cannot be read raises (the caller quarantines it)."""
    alert_id = row["alert_id"]
    alert = Alert.model_validate(row["payload"])
    alert.alert_id = alert_id
    alert.received_at = row["received_at"]
    executor = executors.get(row["account"] or "")
    if executor is None:
        why = f"account '{row['account']}' is not configured (credentials from an alert are never stored)"
        log.error("alert %s cannot be recovered now: %s", alert_id, why)
        return Recovery(alert, None, expire=why)
    if not executor.ready:
        log.error("alert %s cannot be recovered now: account '%s' is not ready", alert_id, row["account"])
        return None
    orders = row.get("orders") or []
    log.warning("recovering alert %s (%s, %d attempt(s))", alert_id, row["state"], len(orders))
    if not orders and row.get("client_order_id"):
        # Sent or not, nobody can tell (the worker died before journaling the outcome):
        # reconciled, as if sent now — this worker claimed it after its owner died.
        return Recovery(alert, executor, row["lane"], row["seq"], intent=row["client_order_id"], sent_at=time.time())
    if not orders:
        if time.time() - row["received_at"] > max_age:
            return Recovery(alert, executor, expire="it was never sent and is too old to send now")
        return Recovery(alert, executor, row["lane"], row["seq"])
    last = orders[-1]
    request = dict(last["request"]) if last.get("route") != "lookup" else dict(orders[0]["request"])
    # The plugin that placed it, when its attempt ended "unknown"; None after a crash
    # mid-send (every lookup_order is asked then).
    placed_by = next(
        (
            o["response"].get("placed_by")
            for o in reversed(orders)
            if isinstance(o.get("response"), dict) and o["response"].get("placed_by")
        ),
        None,
    )
    return Recovery(
        alert,
        executor,
        row["lane"],
        row["seq"],
        order=OrderRequest.model_validate(request),
        sent_at=last["started_at"],
        placed_by=placed_by,
    )


async def maintain(journal: Any, worker_id: str, stale_after: float, recover: Callable[[dict[str, Any]], None]) -> None:
    """One round of journal maintenance: heartbeat, then claim the alerts of workers silent
    for ``stale_after`` seconds and ``recover`` each; a row that cannot be recovered is
    quarantined. Store errors propagate (``core.pipeline.periodic.every`` waits them out)."""
    await journal.heartbeat(worker_id)
    for row in await journal.claim_orphans(worker_id, stale_after):
        try:
            recover(row)
        except Exception as exc:  # a row with bad fields: set aside, the others go on
            await journal.quarantine(
                row.get("alert_id", ""),
                f"the journal row cannot be recovered: {type(exc).__name__}: {str(exc)[:300]}",
            )
