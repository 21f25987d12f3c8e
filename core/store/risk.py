"""Where the kill switch and the risk limits keep their shared state, whatever holds it.

The contract is ``core.store.protocols.RiskStore``, kept by ``core.store.sqlite.risk``
and ``core.store.redis.risk``:

* **halts** — account (or ``*`` for every account) → who halted it, why, since when and,
  for a daily-loss halt, until when. Read on every opening order (one indexed read on
  SQLite, one ``HGETALL`` of a small hash on Redis), so a halt set by any worker, the
  CLI or another machine on the same Redis is obeyed by the next order everywhere, and
  survives restarts.
* **flattens** — each flatten's request and progress, claimed by one worker at a time
  through a lease (owner + heartbeat), so an unfinished flatten is completed by another
  worker or by the next start after a crash.
* **order counts** — a sliding one-minute window per account, checked and counted in one
  atomic step (a transaction / a Lua script), so ``max_orders_per_minute`` holds across
  workers.
* **day baselines** — an account's equity when first read in a UTC day (set once).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from core.store.states import OPEN_FLATTEN_STATES, FlattenState

__all__ = ["ALL", "OPEN_FLATTEN_STATES", "FlattenRecord", "HaltRecord", "new_flatten_record"]

ALL = "*"  # the halt of every account

# A halt: {"reason", "by", "since", "until"} (``until``: None, or when a daily-loss halt ends).
HaltRecord = dict[str, Any]
# A flatten: {"flatten_id", "account", "by", "state" (a FlattenState), "requested_at", "owner",
# "heartbeat_at", "steps", ...}: stored as JSON, its progress saved by the worker running it.
FlattenRecord = dict[str, Any]


def new_flatten_record(account: str | None, *, by: str) -> FlattenRecord:
    """A flatten request: run by the worker that claims it (``RiskStore.claim_flatten``)."""
    return {
        "flatten_id": uuid.uuid4().hex[:12],
        "account": (account or ALL).lower(),
        "by": by,
        "state": FlattenState.PENDING.value,
        "requested_at": time.time(),
        "owner": None,
        "heartbeat_at": 0,
        "steps": {},
    }
