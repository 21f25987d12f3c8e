"""Rate limits of ``POST /webhook``: RATE_LIMIT per client and a stricter budget for
requests that fail before they authenticate (AUTH_FAILURE_LIMIT).

**The library.** Counting is the ``limits`` library's moving window
(``limits.aio.strategies.MovingWindowRateLimiter``): at most N requests in any period
(``10/minute``: never an 11th within 60 s of the first). Each hit checks and charges one
counter in one atomic step of its storage, which is what lets several workers or
machines share a budget without overspending it:

* memory (``MemoryRateStorage``, limits' ``MemoryStorage`` made bounded): no await
  between the check and the charge — the default with one worker and no STATE_URL,
  chosen once by ``core.store.factory.StateBackend.rate_store`` (nothing to share, no
  disk write per request);
* SQLite (``core.store.sqlite.rate``, ``DATA_DIR/ratelimit.sqlite3``) for the workers of
  one machine: limits has no SQLite storage, so this one implements limits' storage
  interface with one ``BEGIN IMMEDIATE`` transaction per hit (the way every other
  check-then-write of this project's SQLite state is made atomic across processes);
* Redis (``core.store.redis.rate``, STATE_URL): limits' own ``RedisStorage``, whose
  moving window is one Lua script per hit, atomic on the server.

quart-rate-limiter (the project's other rate-limit dependency) cannot be the engine:
its extension checks in ``before_request`` and charges after, through a store's separate
``get`` and ``set``, so two workers sharing a store can both pass the check before
either charges; its budgets are per route and per request, while the failure budget is
checked on every request and charged only by failures, and RATE_LIMIT may be keyed by a
principal known only after authentication; and its default key believes any client's
X-Forwarded-For. It is used where its model is right: ``route_limiter`` below, a brake
on the dashboard's login form that each worker applies to its own work.

**The order on a request:**

1. the failure budget of the client's address is checked, not charged: once spent,
   the address gets 429 before its request is even parsed or authenticated;
2. ``RATE_LIMIT_KEY=ip`` (default): RATE_LIMIT is checked and charged for the address;
3. a request refused before authentication starts (400, 413, 415) charges the failure
   budget of its address;
4. right before authentication the failure budget is **reserved**: each of its counters
   is hit (checked and charged atomically), and the hits are given back (``refund``) when
   authentication succeeds. So however many bad requests one address has in flight at
   once, no more of them reach authentication than its budget allows;
5. ``RATE_LIMIT_KEY=principal``: after authentication, RATE_LIMIT is checked and
   charged for the principal (``token:<label>``, ``hmac``).

A request is charged on all of its counters or none: when one refuses, the hits already
made on the others are refunded. Refunding removes the newest entry of a counter's
window, an operation limits' interface lacks: each storage here adds it (``refund``).

IPv6 clients are keyed by their /64, which one host usually owns whole, **and** their
/48 (what one site or customer is usually given) is bounded too, at ``IPV6_SITE_SCALE``
times each budget: rotating through the 65,536 /64s of a /48 buys no more than that.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import heapq
import ipaddress
import math
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from quart import Quart, Response, jsonify, request
from quart_rate_limiter import RateLimit, RateLimiter, RateLimitExceeded
from quart_rate_limiter.store import RateLimiterStoreABC

from core.errors import RateLimited, StoreUnavailable

PERIODS: dict[str, type[RateLimitItem]] = {
    "second": RateLimitItemPerSecond,
    "minute": RateLimitItemPerMinute,
    "hour": RateLimitItemPerHour,
    "day": RateLimitItemPerDay,
}
_LIMIT = re.compile(r"^\s*(\d{1,9})\s*(?:/|per)\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
DISABLED = frozenset({"off", "none", "0"})


def parse_rate_limits(text: str) -> list[RateLimitItem]:
    """``"10/minute"``, ``"3/second,100/hour"`` → limits' rate-limit items; ``"off"`` → none.

    Raises ``ValueError`` with a message naming the part that is wrong.
    """
    if text.strip().lower() in DISABLED:
        return []
    items: list[RateLimitItem] = []
    for part in text.split(","):
        match = _LIMIT.match(part)
        if match is None:
            raise ValueError(
                f"{part.strip()!r} is not N/second, N/minute, N/hour or N/day (several separated by commas, or off)"
            )
        count = int(match.group(1))
        if count <= 0:
            raise ValueError(f"{part.strip()!r}: the count must be at least 1")
        items.append(PERIODS[match.group(2).lower()](count))
    return items


IPV6_SITE_SCALE = 16
"""A /48 may spend this many times each per-address budget (its /64s together)."""


@functools.lru_cache(maxsize=8192)  # parsed once per address, not on every request (bounded)
def address_key(address: str) -> str:
    """The rate-limit key of a client address: the address, or the /64 of an IPv6 one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def address_keys(address: str) -> list[tuple[str, int]]:
    """The keys a client address is counted under, each with the factor its budgets are
    scaled by: the address (the /64 for IPv6) and, for IPv6, its /48."""
    key = address_key(address)
    if key.endswith("/64"):
        site = ipaddress.IPv6Network(key).supernet(new_prefix=48)
        return [(key, 1), (str(site), IPV6_SITE_SCALE)]
    return [(key, 1)]


# ---------------------------------------------------------------- storages


@runtime_checkable
class RateStorage(Protocol):
    """What ``WebhookLimits`` needs of a storage beyond limits' ``Storage`` with moving-window
    support (``acquire_entry``, ``get_moving_window``; ``incr``/``get`` for plain expiring
    counters): give back the newest entry of a window, and close."""

    async def refund(self, key: str) -> None: ...

    async def after_serving(self) -> None: ...


class MemoryRateStorage(MemoryStorage):
    """limits' ``MemoryStorage`` for one process, with bounded memory and no work per hit
    beyond the hit itself.

    limits' own version, after every hit, starts a task that walks every key it holds (for
    the moving window with a thread hop per key): with 20,000 addresses that cost 0.1–3 ms
    per hit, and its memory is bounded only by expiry. Here the same sweep (drop what has
    expired) runs inline at most every ``sweep_every`` seconds, and beyond ``max_keys``
    the counters hit least recently are dropped (down to 90 %, so the sweep is not
    repeated on every new key): rotating addresses cannot exhaust the memory. A dropped
    counter only ever forgets charges, never invents them.
    """

    def __init__(self, max_keys: int = 100_000, sweep_every: float = 10.0) -> None:
        super().__init__()
        self.max_keys = max_keys
        self.sweep_every = sweep_every
        self._swept_at = time.time()

    async def _MemoryStorage__schedule_expiry(self) -> None:  # replaces limits' per-hit sweep task
        now = time.time()
        if len(self) >= self.max_keys or now - self._swept_at >= self.sweep_every:
            self._swept_at = now
            self.sweep(now)

    def __len__(self) -> int:
        return len(self.events) + len(self.storage)

    def sweep(self, now: float) -> None:
        """Drop expired entries and counters, then the least recently hit beyond the bound."""
        for key, events in list(self.events.items()):
            live = bisect.bisect_left(events, -now, key=lambda event: -event.expiry)  # newest first
            if live:
                del events[live:]
            else:
                self._forget(key)
        for key, expires_at in list(self.expirations.items()):
            if expires_at <= now:
                self._forget(key)
        excess = len(self) - self.max_keys * 9 // 10
        if len(self) >= self.max_keys and excess > 0:
            recency = [(events[0].atime, key) for key, events in self.events.items()]
            recency += [(expires_at, key) for key, expires_at in self.expirations.items()]
            for _, key in heapq.nsmallest(excess, recency):
                self._forget(key)

    def _forget(self, key: str) -> None:
        self.events.pop(key, None)
        self.storage.pop(key, None)
        self.expirations.pop(key, None)
        self.locks.pop(key, None)

    async def refund(self, key: str) -> None:
        events = self.events.get(key)
        if events:
            del events[0]  # the newest (limits keeps a window newest first)

    async def after_serving(self) -> None:
        pass


# ---------------------------------------------------------------- the webhook's budgets

# One counter: a limit and the identifiers of what it counts (budget, key).
Counter = tuple[RateLimitItem, tuple[str, ...]]


def scaled(item: RateLimitItem, factor: int) -> RateLimitItem:
    """The same limit with ``factor`` times the count (an IPv6 /48's share)."""
    return type(item)(item.amount * factor, item.multiples, item.namespace) if factor != 1 else item


class WebhookLimits:
    """The three budgets of ``POST /webhook`` over one storage (see the module docstring)."""

    def __init__(
        self,
        limits: list[RateLimitItem],
        failure_limits: list[RateLimitItem],
        *,
        key_by: str = "ip",
        store: RateStorage | None = None,
    ):
        if key_by not in ("ip", "principal"):
            raise ValueError("key_by must be 'ip' or 'principal'")
        self.limits = limits
        self.failure_limits = failure_limits
        self.key_by = key_by
        chosen = store if store is not None else MemoryRateStorage()
        if not isinstance(chosen, RateStorage):
            raise TypeError(f"{type(chosen).__name__} cannot refund a hit (see core.web.ratelimit.RateStorage)")
        if not isinstance(chosen, Storage):
            raise TypeError(f"{type(chosen).__name__} is not a limits storage (see core.web.ratelimit.RateStorage)")
        self.store: RateStorage = chosen
        self._refunds: RateStorage = chosen
        self.limiter = MovingWindowRateLimiter(chosen)

    @classmethod
    def from_settings(cls, settings: Any, *, store: RateStorage | None = None) -> WebhookLimits:
        return cls(
            parse_rate_limits(settings.rate_limit),
            parse_rate_limits(settings.auth_failure_limit),
            key_by=settings.rate_limit_key,
            store=store,
        )

    async def before_request(self, address: str) -> None:
        """Before anything else: the failure budget (checked) and, keyed by address, RATE_LIMIT."""
        await self.check_failures(address)
        if self.key_by == "ip":
            await self._take(self._address_counters("requests", address, self.limits))

    async def check_failures(self, address: str) -> None:
        """429 once ``address`` has spent its failure budget (nothing is charged)."""
        spent, wait = False, 0.0
        with self._store_errors():
            for item, identifiers in self._address_counters("auth-failures", address, self.failure_limits):
                stats = await self.limiter.get_window_stats(item, *identifiers)
                if stats.remaining <= 0:
                    spent, wait = True, max(wait, stats.reset_time - time.time())
        if spent:
            raise _refusal(wait)

    async def reserve_failure(self, address: str) -> None:
        """Right before authentication: charge the failure budget of ``address`` (each
        counter in one atomic step), or 429 when it is spent. ``release_failure`` gives it back."""
        await self._take(self._address_counters("auth-failures", address, self.failure_limits))

    async def release_failure(self, address: str) -> None:
        """The request reserved by ``reserve_failure`` authenticated: give the charge back."""
        with self._store_errors():
            for item, identifiers in self._address_counters("auth-failures", address, self.failure_limits):
                await self._refunds.refund(item.key_for(*identifiers))

    async def authenticated(self, principal: str) -> None:
        """After a successful authentication: RATE_LIMIT keyed by principal, if so configured."""
        if self.key_by == "principal":
            await self._take([(item, ("webhook", "requests", f"principal:{principal}")) for item in self.limits])

    async def failed(self, address: str) -> None:
        """A request from ``address`` was refused before authentication (not reserved)."""
        with self._store_errors():
            for item, identifiers in self._address_counters("auth-failures", address, self.failure_limits):
                await self.limiter.hit(item, *identifiers)

    @staticmethod
    def _address_counters(budget: str, address: str, limits: list[RateLimitItem]) -> list[Counter]:
        return _address_counters(budget, address_key(address), tuple(limits)) if limits else []

    async def _take(self, counters: list[Counter]) -> None:
        """Hit every counter, or none: a refusal refunds the hits made before it."""
        taken: list[Counter] = []
        with self._store_errors():
            for item, identifiers in counters:
                if await self.limiter.hit(item, *identifiers):
                    taken.append((item, identifiers))
                    continue
                for done, done_identifiers in reversed(taken):
                    await self._refunds.refund(done.key_for(*done_identifiers))
                stats = await self.limiter.get_window_stats(item, *identifiers)
                raise _refusal(stats.reset_time - time.time())

    @staticmethod
    @contextlib.contextmanager
    def _store_errors() -> Iterator[None]:
        """A storage that cannot be reached (limits wraps its errors) answers 503: nothing was sent.

        redis-py reports a call cancelled mid-flight as a connection error; while the task
        is being cancelled that is the cancellation, and it must stay one."""
        try:
            yield
        except StorageError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError() from exc
            raise StoreUnavailable(f"the state store is unavailable: {type(exc.storage_error).__name__}") from None


@functools.lru_cache(maxsize=4096)  # built once per address and budget, not on every request (bounded)
def _address_counters(budget: str, key: str, limits: tuple[RateLimitItem, ...]) -> list[Counter]:
    return [(scaled(item, factor), ("webhook", budget, k)) for k, factor in address_keys(key) for item in limits]


def _refusal(wait: float) -> RateLimited:
    retry_after = max(1, math.ceil(wait))
    return RateLimited(f"too many requests; retry after {retry_after} s", headers={"Retry-After": str(retry_after)})


# ---------------------------------------------------------------- quart-rate-limiter: per-worker brakes

LOGIN_LIMITS = [RateLimit(30, timedelta(minutes=1))]
"""Posts of the dashboard's login form per client address and worker (``rate_limit(limits=LOGIN_LIMITS)``);
the failure budget, shared by all workers, applies to wrong passwords as well."""


class BoundedMemoryStore(RateLimiterStoreABC):
    """quart-rate-limiter's memory store, bounded: a theoretical arrival time in the past
    means the same as no entry, so those are dropped when the store grows, and beyond
    ``max_keys`` the oldest entries go. Rotating addresses cannot exhaust the memory."""

    def __init__(self, max_keys: int = 10_000):
        self._tats: dict[str, datetime] = {}
        self._max = max_keys

    async def get(self, key: str, default: datetime) -> datetime:
        return self._tats.get(key, default)

    async def set(self, key: str, tat: datetime) -> None:
        self._tats.pop(key, None)  # re-insert: dict order is then oldest-written first
        self._tats[key] = tat
        if len(self._tats) > self._max:
            now = datetime.now(UTC)
            self._tats = {k: v for k, v in self._tats.items() if v > now}
            while len(self._tats) > self._max * 9 // 10:
                del self._tats[next(iter(self._tats))]

    def __len__(self) -> int:
        return len(self._tats)

    async def before_serving(self) -> None:
        pass

    async def after_serving(self) -> None:
        pass


async def client_key() -> str:
    """The client's address as ``core.web.proxy`` established it (its /64 for IPv6)."""
    return address_key(request.remote_addr or "")


def route_limiter(app: Quart) -> RateLimiter:
    """quart-rate-limiter's extension on ``app``: the routes decorated with its ``rate_limit``
    (the dashboard's login form, ``LOGIN_LIMITS``) are limited per client address — the one
    ``core.web.proxy`` established, not the extension's default, which believes any
    client's X-Forwarded-For — and per worker, in the worker's memory.

    Per worker is the right scope for a brake on work each worker does itself, and on a
    memory store the extension's check and charge run with nothing awaited in between, so
    within the worker they are exact. A refusal is the usual 429 JSON with Retry-After.
    Budgets that must hold across workers are ``WebhookLimits``'.

    The extension's checks run only on requests to the blueprints (or the app itself) that
    hold a limited route, found when the server starts: installed app-wide, as the
    extension does, they would run on every webhook (two hooks, two clock reads and a
    caught exception per request) to find that it has no limit."""
    limiter = RateLimiter(key_function=client_key, store=BoundedMemoryStore())
    app.config.setdefault("QUART_RATE_LIMITER_ENABLED", True)
    app.before_serving(limiter._before_serving)
    app.after_serving(limiter._after_serving)

    @app.before_serving
    async def hook_limited_routes() -> None:
        for name in _limited_blueprints(app, limiter):
            if limiter._before_request not in app.before_request_funcs[name]:
                # First of the blueprint's hooks (before its CSRF guard: every post counts);
                # the after hook last (Quart calls them in reverse).
                app.before_request_funcs[name].insert(0, limiter._before_request)
                app.after_request_funcs[name].insert(0, limiter._after_request)

    app.register_error_handler(RateLimitExceeded, _too_many_requests)
    return limiter


def _limited_blueprints(app: Quart, limiter: RateLimiter) -> set[str | None]:
    """The blueprints (``None``: the app's own routes) with a route quart-rate-limiter limits."""
    names: set[str | None] = set()
    for endpoint, view in app.view_functions.items():
        blueprint_name = endpoint.rpartition(".")[0] or None
        blueprint = app.blueprints.get(blueprint_name) if blueprint_name else None
        if limiter._get_limits_for_view_function(view, blueprint):
            names.add(blueprint_name)
    return names


async def _too_many_requests(error: RateLimitExceeded) -> tuple[Response, int, dict[str, str]]:
    refusal = _refusal(error.retry_after if isinstance(error.retry_after, int) else 1)
    return jsonify(refusal.to_body()), refusal.status, refusal.headers


class AddressTurns:
    """One holder at a time per client address (its /64 for IPv6), in this process.

    Locks exist only while someone holds or waits for one, so an address flood leaves
    nothing behind."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, address: str) -> AsyncIterator[None]:
        key = address_key(address)
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
