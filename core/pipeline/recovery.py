"""Crash recovery: heartbeats, claiming the alerts of dead workers, and what to do with each.

Every worker heartbeats into the journal. Unfinished alerts whose owner stopped
heartbeating (a crash, kill -9) are claimed — atomically, by exactly one worker — and
reconciled (an order attempt was journaled: it may exist) or executed (nothing was sent);
those never sent and older than ``recovery_max_age`` are marked expired and reported
instead. A row that cannot be read is quarantined, and the others go on.
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
    reconcile ``order`` (the last one attempted), or execute it from the start."""

    alert: Alert
    executor: Executor | None
    lane: str = ""
    seq: int = 0
    expire: str | None = None
    order: OrderRequest | None = None
    sent_at: float = 0.0
    placed_by: str | None = None  # the plugin that placed ``order``; None: ask every lookup_order


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
