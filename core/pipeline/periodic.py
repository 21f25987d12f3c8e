"""The loop behind the router's periodic work: journal maintenance (heartbeats, claiming the
alerts of dead workers) and the kill switch's check for flattens to take up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from core.errors import StoreUnavailable

log = logging.getLogger(__name__)


async def every(interval: float, stopping: asyncio.Event, step: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``step`` now and then every ``interval`` seconds until ``stopping`` is set.

    A state-store outage is logged and waited out, any other error logged and retried;
    only a cancellation ends it early. The wait ends on ``stopping`` (redis-py can swallow
    a cancellation delivered mid-call, so shutdown does not rely on cancelling)."""
    while not stopping.is_set():
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            log.error("%s waits for the state store: %s", what, exc.message)
        except Exception:
            log.exception("%s failed; retrying", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=interval)
