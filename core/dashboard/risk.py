"""What the dashboard's risk page needs from the risk controls (issue 16), as one seam.

The risk work provides an object with this shape and makes ``risk_controls(router)``
return it; until then it returns ``None`` and the page says "risk controls not
configured". Nothing else in the dashboard knows how limits or the halt are kept.
"""

from __future__ import annotations

from typing import Any, Protocol


class RiskControls(Protocol):
    async def status(self) -> dict[str, Any]:
        """``{"halted": bool, "reason": str | None, "limits": [{"name", "limit", "used"}, ...]}``;
        no secret in it."""

    async def halt(self, reason: str) -> dict[str, Any]:
        """Refuse every opening order from now on (closing orders still pass)."""

    async def flatten(self, reason: str) -> dict[str, Any]:
        """Halt, cancel open orders and close positions; a summary of what was done."""

    async def resume(self) -> dict[str, Any]:
        """Lift the halt."""


def risk_controls(router: Any) -> RiskControls | None:
    """The deployment's risk controls, or ``None`` while none exist.

    Integration point for issue 16: return the risk plugin's controls here (e.g. an
    object it keeps on the router). Anything with the methods of ``RiskControls`` fits.
    """
    controls = getattr(router, "risk", None)
    if controls is None or not all(callable(getattr(controls, m, None)) for m in ("status", "halt", "flatten", "resume")):
        return None
    return controls
