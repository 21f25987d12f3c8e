"""Patches of ccxt's request throttle: idle time counts as refilled tokens.

The ccxt internals relied on here (tests/unit/plugins/exchanges/test_ccxt_internals.py checks
each of them against the installed ccxt):

* ``Exchange.throttler`` (REST) and ``Client.throttle`` of each WebSocket connection in
  ``Exchange.clients`` (ccxt.pro): instances of ``ccxt.async_support.base.throttler.Throttler``;
* ``Throttler.config``, a dict whose ``tokens``, ``capacity`` and ``refillRate`` (tokens per
  millisecond) the leaky-bucket loop reads and writes, and ``Throttler.running``, true while a
  request waits in it;
* ``Exchange.enableRateLimit``: ccxt throttles only when it is set;
* instances take extra attributes (``_router_idle_since`` is ours).
"""

from __future__ import annotations

import time
from typing import Any


def credit_idle_time(throttler: Any) -> None:
    """Let ccxt's throttle count the time it sat idle.

    ccxt's leaky bucket refills only while a request is waiting in it, so after any pause
    the next request still waits for the tokens the previous one spent — every order pays
    ``cost × rateLimit`` (≈ 11 ms per binance REST order, 250 ms per WebSocket order) however
    long the account was idle. This credits the idle time, never beyond the bucket's
    capacity: the pacing of bursts is ccxt's, unchanged. The time is taken after a request
    completed, so the credit errs on the low side. A no-op if ccxt's internals differ.
    """
    # ccxt internals: Throttler.config["tokens" | "capacity" | "refillRate"] (the leaky bucket's
    # state, read by its loop at the next request) and Throttler.running (a request is waiting).
    config = getattr(throttler, "config", None)
    if (
        not isinstance(config, dict)
        or getattr(throttler, "running", True)
        or not isinstance(config.get("tokens"), (int, float))
    ):
        return
    idle_since = getattr(throttler, "_router_idle_since", None)
    if idle_since is not None and config["tokens"] < config.get("capacity", 1):
        elapsed_ms = time.time() * 1000 - idle_since
        config["tokens"] = min(config["tokens"] + elapsed_ms * config.get("refillRate", 0), config.get("capacity", 1))


def mark_idle(throttler: Any) -> None:
    """Note when the throttle went idle (an attribute of ours on ccxt's Throttler)."""
    if getattr(throttler, "config", None) is not None:
        throttler._router_idle_since = time.time() * 1000


def throttlers(client: Any) -> list[Any]:
    """ccxt's REST throttle and those of its WebSocket connections (when it throttles)."""
    # ccxt internals: Exchange.enableRateLimit, Exchange.throttler, Exchange.clients[url].throttle.
    if not client.enableRateLimit:
        return []
    found = [getattr(client, "throttler", None)]
    found += [getattr(ws, "throttle", None) for ws in (getattr(client, "clients", None) or {}).values()]
    return [t for t in found if t is not None]
