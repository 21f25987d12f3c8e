"""One alert, several accounts (``"account": ["a", "b"]``).

Each account is a leg that executes and is journaled on its own — its own alert id
``<id>→<account>`` (``core.pipeline.ids.fan_out_id``), its own client order id, its own
duplicate detection — and one account's failure does not hold up the others. The answer
lists every leg's outcome, under one status (``combined``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from core.errors import WebhookError
from core.pipeline.ids import body_hash, fan_out_id
from core.pipeline.models import Alert
from core.pipeline.outcomes import Outcome

# Receives one leg: (the leg's alert, the hash its resends are recognised by) → its outcome.
ReceiveLeg = Callable[[Alert, str], Awaitable[Outcome]]


async def fan_out(alert: Alert, body: bytes, namespace: str, receive_leg: ReceiveLeg) -> Outcome:
    """Receive a leg of ``alert`` for each of its accounts, concurrently; the combined answer."""
    parent = alert.alert_id

    async def one(name: str) -> Outcome:
        child_id = fan_out_id(parent, name) if parent else None
        child = alert.model_copy(update={"account": name, "alert_id": child_id}, deep=True)
        child.credentials = alert.credentials
        try:
            return await receive_leg(child, body_hash(namespace, body + b"@" + name.lower().encode()))
        except WebhookError as exc:
            return Outcome.error(exc.status, exc.code, exc.message, state="rejected" if exc.status < 500 else "failed")

    outcomes = await asyncio.gather(*(one(name) for name in alert.accounts))
    return combined(parent, alert.accounts, outcomes)


def combined(parent: str | None, accounts: Sequence[str], outcomes: Sequence[Outcome]) -> Outcome:
    """The answer to a fanned-out alert: every leg's body under its account, and one status.

    202 while any leg still executes (never a 5xx then: something may have been sent);
    else 200 if any leg succeeded; else 503 if any failed with nothing sent (a resend
    retries the legs that failed; the others are recognised as duplicates); else the
    highest 4xx."""
    statuses = [o.status for o in outcomes]
    if 202 in statuses:
        status = 202
    elif any(200 <= s < 300 for s in statuses):
        status = 200
    elif any(s >= 500 for s in statuses):
        status = 503
    else:
        status = max(statuses)
    body = {
        "status": "fanout",
        "alert_id": parent,
        "accounts": {n: o.body for n, o in zip(accounts, outcomes, strict=True)},
    }
    return Outcome(status, body, headers={"Retry-After": "5"} if status == 503 else {})
