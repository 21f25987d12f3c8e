"""The rate limiter's moving window in one process's memory (``core.web.ratelimit``):
the storage of the default, one worker without STATE_URL, next to the SQLite
(``core.store.sqlite.rate``) and Redis (``core.store.redis.rate``) ones.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque

from limits.aio.storage import MovingWindowSupport, Storage


class MemoryRateStorage(Storage, MovingWindowSupport):
    """The moving window in this process's memory: limits' storage interface, bounded,
    with a synchronous path for ``WebhookLimits``.

    limits' own ``MemoryStorage`` keeps a window newest first as a list of entry objects
    (each hit inserts at the front: a copy of the whole window), takes an asyncio lock per
    key, starts a task after every hit that walks every key it holds (0.1–3 ms per hit
    with 20,000 addresses) and is reached through a layer of error-wrapping coroutines per
    subclass: most of the rate limit's cost per alert. Its algorithm is small, so this is
    the same moving window written for one process instead: per counter a deque of the
    instants its entries expire, oldest first. A hit drops the expired ones from the left,
    refuses when ``limit`` are still live, else appends; ``refund`` pops the newest; the window
    starts at the oldest live entry. An entry is live while ``now <= expiry instant``, as
    in limits (``atime >= now - expiry``). ``take``, ``window`` and ``give_back`` do that
    synchronously — nothing is awaited between a check and its charge, so they are exact
    under concurrency — and the async interface (``acquire_entry``...) calls them.

    Memory: a hit trims its own counter (a window holds at most its limit), what was not
    hit lately goes in a sweep that runs inline at most every ``sweep_every`` seconds, and
    beyond ``max_keys`` the counters whose entries all expire soonest (of one period: the
    least recently hit) are dropped, down to 90 % so that the sweep is not repeated on
    every new key: rotating addresses cannot exhaust the memory.
    A dropped counter only ever forgets charges, never invents them.
    """

    STORAGE_SCHEME = None  # constructed directly, never from a limits storage URI

    def __init__(self, max_keys: int = 100_000, sweep_every: float = 10.0) -> None:
        super().__init__()
        self.max_keys = max_keys
        self.sweep_every = sweep_every
        self._swept_at = time.time()
        self.windows: dict[str, deque[float]] = {}  # key -> expiry instants, oldest first
        self.counters: dict[str, list[float]] = {}  # key -> [count, expiry instant] (incr/get)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def __len__(self) -> int:
        return len(self.windows) + len(self.counters)

    # -- the moving window, synchronously --------------------------------------------

    def take(self, key: str, limit: int, expiry: int, now: float, amount: int = 1) -> bool:
        """Check and charge ``amount`` entries of the window ``key`` (``limit`` per ``expiry`` s)."""
        if now - self._swept_at >= self.sweep_every:
            self.sweep(now)
        window = self.windows.get(key)
        if window is None:
            if amount > limit:
                return False
            if len(self) >= self.max_keys:
                self.sweep(now)
            window = self.windows[key] = deque()
        else:
            while window and window[0] < now:
                window.popleft()
            if len(window) + amount > limit:
                return False
        window.extend(itertools.repeat(now + expiry, amount))
        return True

    def window(self, key: str, now: float) -> tuple[int, float]:
        """The live entries of window ``key`` and the instant the oldest expires (``now`` if none)."""
        window = self.windows.get(key)
        if not window:
            return 0, now
        while window and window[0] < now:
            window.popleft()
        return len(window), window[0] if window else now

    def give_back(self, key: str) -> None:
        """Remove the newest entry of window ``key`` (a charge refunded)."""
        window = self.windows.get(key)
        if window:
            window.pop()

    # -- limits' interface -------------------------------------------------------------

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return self.take(key, limit, expiry, time.time(), amount)

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        count, first_expires = self.window(key, now)
        return (first_expires - expiry if count else now), count

    async def refund(self, key: str) -> None:
        self.give_back(key)

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        self._maybe_sweep(now, adding=key not in self.counters)
        counter = self.counters.get(key)
        if counter is None or counter[1] <= now:
            counter = self.counters[key] = [0, now + expiry]
        counter[0] += amount
        return int(counter[0])

    async def get(self, key: str) -> int:
        counter = self.counters.get(key)
        return int(counter[0]) if counter is not None and counter[1] > time.time() else 0

    async def get_expiry(self, key: str) -> float:
        now = time.time()
        counter = self.counters.get(key)
        return counter[1] if counter is not None and counter[1] > now else now

    async def clear(self, key: str) -> None:
        self.windows.pop(key, None)
        self.counters.pop(key, None)

    async def reset(self) -> int | None:
        keys = len(self)
        self.windows.clear()
        self.counters.clear()
        return keys

    async def check(self) -> bool:
        return True

    async def after_serving(self) -> None:
        pass

    # -- the bound ---------------------------------------------------------------------

    def _maybe_sweep(self, now: float, *, adding: bool) -> None:
        if (adding and len(self) >= self.max_keys) or now - self._swept_at >= self.sweep_every:
            self.sweep(now)

    def sweep(self, now: float) -> None:
        """Drop expired entries and counters, then, beyond the bound, the counters whose
        entries all expire soonest (with one period: the least recently hit)."""
        self._swept_at = now
        for key, window in list(self.windows.items()):
            while window and window[0] < now:
                window.popleft()
            if not window:
                del self.windows[key]
        for key, (_, expires_at) in list(self.counters.items()):
            if expires_at <= now:
                del self.counters[key]
        excess = len(self) - self.max_keys * 9 // 10
        if len(self) >= self.max_keys and excess > 0:
            # the newest entry of a window expires last: its instant orders windows by their last hit
            recency = [(window[-1], key) for key, window in self.windows.items()]
            recency += [(expires_at, key) for key, (_, expires_at) in self.counters.items()]
            for _, key in heapq.nsmallest(excess, recency):
                self.windows.pop(key, None)
                self.counters.pop(key, None)
