"""Rate limits of ``POST /webhook``: RATE_LIMIT per client and a stricter budget for
requests that fail before they authenticate (AUTH_FAILURE_LIMIT).

**The library.** Counting is the ``limits`` library's moving window (its rate-limit
items, and its storages' ``acquire_entry``/``get_moving_window``, what its
``MovingWindowRateLimiter`` calls): at most N requests in any period (``10/minute``:
never an 11th within 60 s of the first). Each hit checks and charges one counter in one
atomic step of its storage, which is what lets several workers or machines share a
budget without overspending it. The keys of a client's counters (``item.key_for``, the
keys limits builds) are built once per client, not on every request:

* memory (``core.store.memory_rate.MemoryRateStorage``): the default with one worker and
  no STATE_URL, chosen once by ``core.store.factory.StateBackend.rate_store`` (nothing to
  share, no disk write per request). limits' interface over the same moving window written
  for one process: limits' own ``MemoryStorage`` copied its window on every hit, took a
  lock, started a sweep task and was reached through layers of wrapping coroutines — most
  of the rate limit's cost per alert. ``WebhookLimits`` calls it synchronously: nothing is
  awaited between a check and its charge, so it is exact without a lock, and bounded;
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
import contextlib
import functools
import ipaddress
import math
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)
from limits.aio.storage import Storage
from limits.errors import StorageError
from quart import Quart, Response, jsonify, request
from quart_rate_limiter import RateLimit, RateLimiter, RateLimitExceeded
from quart_rate_limiter.store import RateLimiterStoreABC

from core.errors import RateLimited, StoreUnavailable
from core.store.memory_rate import MemoryRateStorage as MemoryRateStorage  # re-exported (core.store.factory)
from core.store.protocols import RateStore

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


# ---------------------------------------------------------------- the webhook's budgets


class Counter(NamedTuple):
    """One counter: a limit and its storage key (``item.key_for`` of budget and client),
    built once per client and budget."""

    item: RateLimitItem
    key: str
    amount: int
    expiry: int


def scaled(item: RateLimitItem, factor: int) -> RateLimitItem:
    """The same limit with ``factor`` times the count (an IPv6 /48's share)."""
    return type(item)(item.amount * factor, item.multiples, item.namespace) if factor != 1 else item


def counters(budget: str, keys: list[tuple[str, int]], items: list[RateLimitItem]) -> tuple[Counter, ...]:
    """The counters of ``budget`` for a client counted under ``keys`` (``address_keys``)."""
    return tuple(
        Counter(limit, limit.key_for("webhook", budget, key), limit.amount, limit.get_expiry())
        for key, factor in keys
        for limit in (scaled(item, factor) for item in items)
    )


class WebhookLimits:
    """The three budgets of ``POST /webhook`` over one storage (see the module docstring).

    Each counter is checked and charged through the storage's moving window
    (``acquire_entry``, ``get_moving_window``: what limits' ``MovingWindowRateLimiter``
    calls, with the keys it would build, built once per client). On the memory storage
    the same steps run synchronously (``MemoryRateStorage.take``...): no coroutine, no
    await, so no other request between a check and its charge."""

    def __init__(
        self,
        limits: list[RateLimitItem],
        failure_limits: list[RateLimitItem],
        *,
        key_by: str = "ip",
        store: RateStore | None = None,
        cache_size: int = 4096,
    ):
        if key_by not in ("ip", "principal"):
            raise ValueError("key_by must be 'ip' or 'principal'")
        self.limits = limits
        self.failure_limits = failure_limits
        self.key_by = key_by
        self.store: RateStore = store if store is not None else MemoryRateStorage()
        if not isinstance(self.store, Storage):
            raise TypeError(f"{type(self.store).__name__} is not a limits storage (see core.store.protocols.RateStore)")
        self._memory = self.store if isinstance(self.store, MemoryRateStorage) else None
        # per client address key (a /64 once for all its addresses): (its failure counters,
        # its RATE_LIMIT counters), bounded
        self._counters_of_key = functools.lru_cache(maxsize=cache_size)(self._build_counters)

    def _build_counters(self, key: str) -> tuple[tuple[Counter, ...], tuple[Counter, ...]]:
        keys = address_keys(key)
        return counters("auth-failures", keys, self.failure_limits), counters("requests", keys, self.limits)

    def _counters(self, address: str) -> tuple[tuple[Counter, ...], tuple[Counter, ...]]:
        return self._counters_of_key(address_key(address))

    @classmethod
    def from_settings(cls, settings: Any, *, store: RateStore | None = None) -> WebhookLimits:
        return cls(
            parse_rate_limits(settings.rate_limit),
            parse_rate_limits(settings.auth_failure_limit),
            key_by=settings.rate_limit_key,
            store=store,
        )

    async def before_request(self, address: str) -> None:
        """Before anything else: the failure budget (checked) and, keyed by address, RATE_LIMIT."""
        failures, requests = self._counters(address)
        if self._memory is not None:
            now = time.time()
            _check_now(self._memory, failures, now)
            if self.key_by == "ip":
                _take_now(self._memory, requests, now)
            return
        await self._check(failures)
        if self.key_by == "ip":
            await self._take(requests)

    async def check_failures(self, address: str) -> None:
        """429 once ``address`` has spent its failure budget (nothing is charged)."""
        failures = self._counters(address)[0]
        if self._memory is not None:
            _check_now(self._memory, failures, time.time())
        else:
            await self._check(failures)

    async def reserve_failure(self, address: str) -> None:
        """Right before authentication: charge the failure budget of ``address`` (each
        counter in one atomic step), or 429 when it is spent. ``release_failure`` gives it back."""
        failures = self._counters(address)[0]
        if self._memory is not None:
            _take_now(self._memory, failures, time.time())
        else:
            await self._take(failures)

    async def release_failure(self, address: str) -> None:
        """The request reserved by ``reserve_failure`` authenticated: give the charge back."""
        failures = self._counters(address)[0]
        if self._memory is not None:
            for counter in failures:
                self._memory.give_back(counter.key)
            return
        with self._store_errors():
            await asyncio.gather(*(self.store.refund(counter.key) for counter in failures))

    async def authenticated(self, principal: str) -> None:
        """After a successful authentication: RATE_LIMIT keyed by principal, if so configured."""
        if self.key_by == "principal":
            taken = counters("requests", [(f"principal:{principal}", 1)], self.limits)
            if self._memory is not None:
                _take_now(self._memory, taken, time.time())
            else:
                await self._take(taken)

    async def failed(self, address: str) -> None:
        """A request from ``address`` was refused before authentication (not reserved)."""
        with self._store_errors():
            await asyncio.gather(
                *(self.store.acquire_entry(c.key, c.amount, c.expiry) for c in self._counters(address)[0])
            )

    async def _check(self, counters: tuple[Counter, ...]) -> None:
        """429 when one of ``counters`` is spent (nothing is charged)."""
        spent, wait = False, 0.0
        with self._store_errors():
            # Together: a shared store answers them in one round trip (core.store.redis.batch).
            windows = await asyncio.gather(*(self.store.get_moving_window(c.key, c.amount, c.expiry) for c in counters))
        for counter, (start, count) in zip(counters, windows, strict=True):
            if count >= counter.amount:
                spent, wait = True, max(wait, start + counter.expiry - time.time())
        if spent:
            raise _refusal(wait)

    async def _take(self, counters: tuple[Counter, ...]) -> None:
        """Hit every counter, or none: a refusal refunds the hits the others made.

        The hits are sent together (a shared store answers them in one round trip), each
        still one atomic check-and-charge of its counter."""
        with self._store_errors():
            hits = await asyncio.gather(*(self.store.acquire_entry(c.key, c.amount, c.expiry) for c in counters))
            if all(hits):
                return
            await asyncio.gather(*(self.store.refund(c.key) for c, hit in zip(counters, hits, strict=True) if hit))
            refused = [c for c, hit in zip(counters, hits, strict=True) if not hit]
            windows = await asyncio.gather(*(self.store.get_moving_window(c.key, c.amount, c.expiry) for c in refused))
        raise _refusal(max(start + c.expiry for c, (start, _) in zip(refused, windows, strict=True)) - time.time())

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


def _check_now(store: MemoryRateStorage, counters: tuple[Counter, ...], now: float) -> None:
    """``WebhookLimits._check`` on the memory storage."""
    spent, wait = False, 0.0
    for counter in counters:
        count, first_expires = store.window(counter.key, now)
        if count >= counter.amount:
            spent, wait = True, max(wait, first_expires - now)
    if spent:
        raise _refusal(wait)


def _take_now(store: MemoryRateStorage, counters: tuple[Counter, ...], now: float) -> None:
    """``WebhookLimits._take`` on the memory storage."""
    for taken, counter in enumerate(counters):
        if not store.take(counter.key, counter.amount, counter.expiry, now):
            for done in reversed(counters[:taken]):
                store.give_back(done.key)
            raise _refusal(store.window(counter.key, now)[1] - now)


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
