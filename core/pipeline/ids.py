"""Alert ids in the journal, and how a resend is recognised.

The owner's (WEBHOOK_SECRET's) ids are kept as sent; every other principal's are
"<principal>›<id>", and a fan-out leg's "<parent>→<account>". An alert id is printable
ASCII (``core.pipeline.models``), so no id as sent can contain "›" or "→": no sender can
take another's id or a leg's. A resend without an id is recognised by the hash of its
body (``body_hash``), per principal. Answers show each sender its ids as it sent them
(``shown_id``, ``shown_outcome``).
"""

from __future__ import annotations

import hashlib

from core.pipeline.models import OWNER_PRINCIPAL
from core.pipeline.outcomes import Outcome

NAMESPACE_SEPARATOR = "\u203a"  # ›
FAN_OUT_SEPARATOR = "\u2192"  # →


def id_namespace(principal: str | None) -> str:
    """The namespace of a principal's alert ids: none for the owner."""
    return "" if principal is None or principal == OWNER_PRINCIPAL else principal


def journal_key(namespace: str, alert_id: str) -> str:
    """The journal's key of ``alert_id`` as sent by the principal of ``namespace``."""
    return f"{namespace}{NAMESPACE_SEPARATOR}{alert_id}" if namespace else alert_id


def shown_id(namespace: str, key: str) -> str:
    """A journal key as its sender knows it (its own namespace left out)."""
    prefix = f"{namespace}{NAMESPACE_SEPARATOR}"
    return key[len(prefix) :] if namespace and key.startswith(prefix) else key


def fan_out_id(parent: str, account: str) -> str:
    """A leg's id: unique for each (parent, account), whatever their lengths."""
    return f"{parent}{FAN_OUT_SEPARATOR}{account}"


def body_hash(namespace: str, body: bytes) -> str:
    """What resends without an id are recognised by, per principal."""
    return hashlib.sha256(namespace.encode() + b"\x00" + body if namespace else body).hexdigest()


def shown_outcome(namespace: str, outcome: Outcome) -> Outcome:
    """``outcome`` as the sender of ``namespace`` is answered: its ids without the namespace."""
    if not namespace:
        return outcome
    body = dict(outcome.body)
    if isinstance(body.get("alert_id"), str):
        body["alert_id"] = shown_id(namespace, body["alert_id"])
    if isinstance(body.get("accounts"), dict):
        body["accounts"] = {
            name: shown_outcome(namespace, Outcome(0, leg)).body if isinstance(leg, dict) else leg
            for name, leg in body["accounts"].items()
        }
    if isinstance(body.get("message"), str):
        body["message"] = body["message"].replace(f"{namespace}{NAMESPACE_SEPARATOR}", "")
    return Outcome(
        outcome.status, body, state=outcome.state, code=outcome.code, message=outcome.message, headers=outcome.headers
    )
