"""Rate limits of ``POST /webhook``: RATE_LIMIT per client and a stricter budget for
requests that fail before they authenticate (AUTH_FAILURE_LIMIT).

Built on quart-rate-limiter's parts: its ``RateLimit`` (count per period), its stores
(``RateLimiterStoreABC``: memory here, its ``RedisStore`` for several processes or
machines) and its algorithm, GCRA, which spreads ``N/period`` evenly and allows a burst
of ``N``. Its ``RateLimiter`` extension is not used: it checks and charges every limit
in ``before_request`` with one key function, while the webhook needs a budget that is
*checked* on every request but *charged* only by failures, and a limit keyed by the
authenticated principal, which is known only after authentication. Its default key
(``access_route[0]``) also trusts any client's X-Forwarded-For; here the key is the
address ``core.web.proxy`` established.

The order on a request:

1. the failure budget of the client's address is checked, not charged: once spent,
   the address gets 429 before its request is even parsed or authenticated;
2. ``RATE_LIMIT_KEY=ip`` (default): RATE_LIMIT is checked and charged for the address;
3. a request refused before authentication starts (400, 413, 415) charges the failure
   budget of its address;
4. right before authentication the failure budget is **reserved**: checked and charged
   in one atomic step of the store, and given back when authentication succeeds. So
   however many bad requests one address has in flight at once, no more of them reach
   authentication than its budget allows (checking first and charging after the answer
   let 60 of 1,000 concurrent ones through a budget of 5);
5. ``RATE_LIMIT_KEY=principal``: after authentication, RATE_LIMIT is checked and
   charged for the principal (``token:<label>``, ``hmac``).

Every step that checks and charges is one atomic step of the store (memory: no await
in between; SQLite: one ``BEGIN IMMEDIATE`` transaction; Redis: one Lua script), so the
workers of a machine, or the machines sharing a Redis, cannot overspend a budget together.

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
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

from quart_rate_limiter import RateLimit
from quart_rate_limiter.store import RateLimiterStoreABC

from core.errors import RateLimited
from core.store.sqlite.database import transaction

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_LIMIT = re.compile(r"^\s*(\d{1,9})\s*(?:/|per)\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
DISABLED = frozenset({"off", "none", "0"})


def parse_rate_limits(text: str) -> list[RateLimit]:
    """``"10/minute"``, ``"3/second,100/hour"`` → limits; ``"off"`` → none.

    Raises ``ValueError`` with a message naming the part that is wrong.
    """
    if text.strip().lower() in DISABLED:
        return []
    limits = []
    for part in text.split(","):
        match = _LIMIT.match(part)
        if match is None:
            raise ValueError(
                f"{part.strip()!r} is not N/second, N/minute, N/hour or N/day (several separated by commas, or off)"
            )
        count = int(match.group(1))
        if count <= 0:
            raise ValueError(f"{part.strip()!r}: the count must be at least 1")
        limits.append(RateLimit(count, timedelta(seconds=PERIODS[match.group(2).lower()])))
    return limits


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


# One GCRA step over several keys: (store key, inverse = period/count, period).
Entry = tuple[str, float, float]


def gcra_reserve(tats: dict[str, float], entries: list[Entry], now: float) -> tuple[float, dict[str, float]]:
    """The wait (0 when allowed) and, when allowed, the new theoretical arrival times.

    quart-rate-limiter's GCRA: a request moves the key's arrival time by period/count and
    is refused while that would put it more than one period ahead of now. All keys or
    none are charged."""
    wait = 0.0
    updated: dict[str, float] = {}
    for key, inverse, period in entries:
        tat = max(tats.get(key, now), now) + inverse
        wait = max(wait, tat - now - period)
        updated[key] = tat
    return (wait, {}) if wait > 0 else (0.0, updated)


class BoundedMemoryStore(RateLimiterStoreABC):
    """quart-rate-limiter's memory store, bounded: a theoretical arrival time in the past
    means the same as no entry, so those are dropped when the store grows, and beyond
    ``max_keys`` the oldest entries go. Rotating addresses cannot exhaust the memory."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.time):
        self._tats: dict[str, datetime] = {}
        self._max = max_keys
        self._clock = clock

    async def get(self, key: str, default: datetime) -> datetime:
        return self._tats.get(key, default)

    async def set(self, key: str, tat: datetime) -> None:
        self._tats.pop(key, None)  # re-insert: dict order is then oldest-written first
        self._tats[key] = tat
        if len(self._tats) > self._max:
            now = datetime.fromtimestamp(self._clock(), UTC)
            self._tats = {k: v for k, v in self._tats.items() if v > now}
            while len(self._tats) > self._max:
                del self._tats[next(iter(self._tats))]

    def __len__(self) -> int:
        return len(self._tats)

    async def reserve(self, entries: list[Entry], now: float) -> float:
        # No await between reading and writing: atomic within the process.
        tats = {key: self._tats[key].timestamp() for key, _, _ in entries if key in self._tats}
        wait, updated = gcra_reserve(tats, entries, now)
        for key, tat in updated.items():
            await self.set(key, datetime.fromtimestamp(tat, UTC))
        return wait

    async def release(self, entries: list[Entry], now: float) -> None:
        for key, inverse, _ in entries:
            if key in self._tats:
                self._tats[key] = self._tats[key] - timedelta(seconds=inverse)

    async def before_serving(self) -> None:
        pass

    async def after_serving(self) -> None:
        pass


class WebhookLimits:
    """The three budgets of ``POST /webhook`` over one store (see the module docstring)."""

    def __init__(
        self,
        limits: list[RateLimit],
        failure_limits: list[RateLimit],
        *,
        key_by: str = "ip",
        store: RateLimiterStoreABC | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if key_by not in ("ip", "principal"):
            raise ValueError("key_by must be 'ip' or 'principal'")
        self.limits = limits
        self.failure_limits = failure_limits
        self.key_by = key_by
        self.store = (
            store if store is not None else BoundedMemoryStore(clock=clock)
        )  # an empty store is falsy (__len__)
        self._clock = clock

    @classmethod
    def from_settings(
        cls, settings, *, store: RateLimiterStoreABC | None = None, clock: Callable[[], float] = time.time
    ) -> WebhookLimits:
        return cls(
            parse_rate_limits(settings.rate_limit),
            parse_rate_limits(settings.auth_failure_limit),
            key_by=settings.rate_limit_key,
            store=store,
            clock=clock,
        )

    async def before_request(self, address: str) -> None:
        """Before anything else: the failure budget (checked) and, keyed by address, RATE_LIMIT."""
        await self.check_failures(address)
        if self.key_by == "ip":
            await self._reserve(self._address_entries("requests", address, self.limits))

    async def check_failures(self, address: str) -> None:
        """429 once ``address`` has spent its failure budget (nothing is charged)."""
        await self._check(self._address_entries("auth-failures", address, self.failure_limits))

    async def reserve_failure(self, address: str) -> None:
        """Right before authentication: charge the failure budget of ``address`` in one
        atomic step, or 429 when it is spent. ``release_failure`` gives it back."""
        await self._reserve(self._address_entries("auth-failures", address, self.failure_limits))

    async def release_failure(self, address: str) -> None:
        """The request reserved by ``reserve_failure`` authenticated: give the charge back."""
        entries = self._address_entries("auth-failures", address, self.failure_limits)
        release = getattr(self.store, "release", None)
        if release is not None:
            await release(entries, self._clock())
            return
        now = self._clock()  # a store of quart-rate-limiter's interface only: not atomic
        for key, inverse, _ in entries:
            tat = await self._tat(key, now)
            await self.store.set(key, datetime.fromtimestamp(tat - inverse, UTC))

    async def authenticated(self, principal: str) -> None:
        """After a successful authentication: RATE_LIMIT keyed by principal, if so configured."""
        if self.key_by == "principal":
            await self._reserve(
                [
                    (
                        self._key("requests", f"principal:{principal}", limit),
                        limit.inverse,
                        limit.period.total_seconds(),
                    )
                    for limit in self.limits
                ]
            )

    async def failed(self, address: str) -> None:
        """A request from ``address`` was refused before authentication (not reserved)."""
        now = self._clock()
        for key, inverse, _ in self._address_entries("auth-failures", address, self.failure_limits):
            tat = max(await self._tat(key, now), now) + inverse
            await self.store.set(key, datetime.fromtimestamp(tat, UTC))

    def _address_entries(self, budget: str, address: str, limits: list[RateLimit]) -> list[Entry]:
        return [
            (self._key(budget, key, limit), limit.inverse / scale, limit.period.total_seconds())
            for key, scale in address_keys(address)
            for limit in limits
        ]

    # GCRA, as quart-rate-limiter computes it (see ``gcra_reserve``).

    async def _reserve(self, entries: list[Entry]) -> None:
        if not entries:
            return
        now = self._clock()
        reserve = getattr(self.store, "reserve", None)
        if reserve is not None:
            wait = await reserve(entries, now)
        else:  # a store of quart-rate-limiter's interface only: check, then charge
            wait, updated = gcra_reserve({key: await self._tat(key, now) for key, _, _ in entries}, entries, now)
            for key, tat in updated.items():
                await self.store.set(key, datetime.fromtimestamp(tat, UTC))
        self._refuse_if(wait)

    async def _check(self, entries: list[Entry]) -> None:
        now = self._clock()
        wait = 0.0
        for key, inverse, period in entries:
            tat = max(await self._tat(key, now), now)
            wait = max(wait, tat + inverse - now - period)
        self._refuse_if(wait)

    @staticmethod
    def _refuse_if(wait: float) -> None:
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(
                f"too many requests; retry after {retry_after} s", headers={"Retry-After": str(retry_after)}
            )

    async def _tat(self, key: str, now: float) -> float:
        default = datetime.fromtimestamp(now, UTC)
        stored = await self.store.get(key, default)
        if stored.tzinfo is None:
            stored = stored.replace(tzinfo=UTC)
        return stored.timestamp()

    @staticmethod
    def _key(budget: str, key: str, limit: RateLimit) -> str:
        return f"webhook-{budget}-{limit.key}-{key}"


class SqliteRateStore(RateLimiterStoreABC):
    """Theoretical arrival times in ``DATA_DIR/ratelimit.sqlite3``, so the workers of one
    machine (``hypercorn --workers N``) count against the same limits."""

    SCHEMA = "CREATE TABLE IF NOT EXISTS tats (key TEXT PRIMARY KEY, tat REAL NOT NULL) WITHOUT ROWID;"

    def __init__(self, path, *, clock: Callable[[], float] = time.time):
        from core.store.sqlite.database import SqliteDatabase

        # OFF: a limit forgotten in a power cut is harmless; speed matters on every request.
        # inline: these tiny statements run on the event loop (no fsync, no lock wait;
        # another worker's write sends them to the database thread instead).
        self.db = SqliteDatabase(path, synchronous="OFF", schema=self.SCHEMA, inline=True)
        self._clock = clock
        self._writes = 0

    async def get(self, key: str, default: datetime) -> datetime:
        row = await self.db.run(lambda conn: conn.execute("SELECT tat FROM tats WHERE key = ?", (key,)).fetchone())
        return default if row is None else datetime.fromtimestamp(row[0], UTC)

    async def set(self, key: str, tat: datetime) -> None:
        self._writes += 1
        prune = self._writes % 1000 == 0

        def write(conn) -> None:
            conn.execute(
                "INSERT INTO tats (key, tat) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET tat = excluded.tat",
                (key, tat.timestamp()),
            )
            if prune:
                conn.execute("DELETE FROM tats WHERE tat < ?", (self._clock(),))

        await self.db.run(write)

    async def reserve(self, entries: list[Entry], now: float) -> float:
        keys = [key for key, _, _ in entries]

        def reserve(conn) -> float:
            with transaction(conn):  # BEGIN IMMEDIATE: no other worker between read and write
                marks = ",".join("?" * len(keys))
                tats = dict(conn.execute(f"SELECT key, tat FROM tats WHERE key IN ({marks})", keys).fetchall())
                wait, updated = gcra_reserve(tats, entries, now)
                conn.executemany(
                    "INSERT INTO tats (key, tat) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET tat = excluded.tat",
                    list(updated.items()),
                )
                return wait

        return await self.db.run(reserve)

    async def release(self, entries: list[Entry], now: float) -> None:
        await self.db.run(
            lambda conn: conn.executemany(
                "UPDATE tats SET tat = tat - ? WHERE key = ?", [(inverse, key) for key, inverse, _ in entries]
            )
        )

    async def before_serving(self) -> None:
        pass

    async def after_serving(self) -> None:
        self.db.close()


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
