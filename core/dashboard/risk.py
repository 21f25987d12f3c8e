"""What the dashboard's risk page shows and does, read from the router's kill switch.

No state of its own: halts and flattens are the kill switch's (``router.kill_switch``,
kept in the state store every worker reads), limits are what the ``describe_risk_limits``
implementations say (the built-in risk plugin's validated options; none when it is
disabled). Actions go through the same ``KillSwitch`` calls as ``POST /control/...``,
recorded ``by="dashboard"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.store.risk import ALL, OPEN_FLATTEN_STATES

ACTIONS = ("halt", "flatten", "resume")
BY = "dashboard"


@dataclass
class AccountRisk:
    name: str
    halt: dict[str, Any] | None  # the account's own halt
    limits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in self.name)


@dataclass
class RiskView:
    all_halt: dict[str, Any] | None  # the halt of every account
    accounts: list[AccountRisk]
    flattens: list[dict[str, Any]]  # most recent first, each with its steps (step id → state)

    @property
    def running_flattens(self) -> list[dict[str, Any]]:
        return [f for f in self.flattens if f.get("state") in OPEN_FLATTEN_STATES]

    @property
    def any_limits(self) -> bool:
        return any(a.limits for a in self.accounts)


async def risk_view(router: Any) -> RiskView:
    """Halts, recent flattens and each configured account's limits (no exchange read)."""
    kill_switch = router.kill_switch
    halts = await kill_switch.halts()
    limits = await kill_switch.limits()
    accounts = [
        AccountRisk(e.account, halts.get(e.account.lower()), limits.get(e.account, [])) for e in router.executors
    ]
    flattens = await kill_switch.store.flattens(limit=10)
    return RiskView(halts.get(ALL), accounts, flattens)


async def act(router: Any, action: str, account: str | None, reason: str) -> dict[str, Any]:
    """Halt, flatten or resume ``account`` (``None``: every account) as the dashboard."""
    kill_switch = router.kill_switch
    record: dict[str, Any]
    if action == "halt":
        record = await kill_switch.halt(account, reason=reason or "halted from the dashboard", by=BY)
        return record
    if action == "flatten":
        record = await kill_switch.request_flatten(account, by=BY, reason=reason or "flatten from the dashboard")
        return record
    if action == "resume":
        return {"resumed": await kill_switch.resume(account, by=BY)}
    raise ValueError(action)
