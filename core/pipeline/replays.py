"""Replay keys: a request accepted once is never accepted again.

An auth plugin that can recognise a replay (HMAC: the signature) declares the request's
key in its acceptance (``AuthResult.accept(..., replay_key=..., replay_expires_at=...)``)
instead of keeping a cache of its own. The router then

* refuses at once (401, "replayed signature") a key this process saw lately
  (``RecentKeys``: the keys of requests in progress and of those it admitted);
* records the key in the journal in the same step as the alert's admission
  (``Journal.admit``, ``AdmissionRequest.replay_key``): the authority across workers, machines and
  restarts. A key the journal remembers admits nothing (401 as well);
* records the key of a signed request that admits no alert (``GET /alerts/<id>``, the kill
  switch) on its own (``Journal.remember_replay``).

An authenticated request that is then refused (422, 403, 503: nothing admitted) records
nothing: sent again, it is accepted.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from core.store.protocols import Journal

MAX_RECENT_KEYS = 10_000  # a few MB at most: the journal holds every key, this only the recent ones


class RecentKeys:
    """The replay keys this process saw lately, each until it expires (a bounded cache of
    the journal's: the oldest are forgotten first, the journal still refuses them)."""

    def __init__(self, max_keys: int = MAX_RECENT_KEYS):
        self._keys: OrderedDict[str, tuple[float, bool]] = OrderedDict()  # key → (expires at, admitted)
        self._max = max_keys

    def __len__(self) -> int:
        return len(self._keys)

    def claim(self, key: str, expires_at: float | None) -> bool:
        """Take ``key`` for a request in progress: False when it is taken or was admitted
        (and has not expired), else True."""
        now = time.time()
        seen = self._keys.get(key)
        if seen is not None and seen[0] >= now:
            return False
        self._keys[key] = (math.inf if expires_at is None else expires_at, False)
        self._keys.move_to_end(key)
        while len(self._keys) > self._max:
            self._keys.popitem(last=False)
        return True

    def admitted(self, key: str) -> None:
        """The journal recorded ``key``: it stays refused until it expires."""
        seen = self._keys.get(key)
        if seen is not None:
            self._keys[key] = (seen[0], True)

    def release(self, key: str | None) -> None:
        """The request of ``key`` ended without being admitted: it may come again."""
        if key is None:
            return
        seen = self._keys.get(key)
        if seen is not None and not seen[1]:
            del self._keys[key]

    async def remember(self, journal: Journal, key: str, expires_at: float | None) -> bool:
        """Record ``key`` (claimed) in ``journal`` on its own: False if it remembered it."""
        try:
            fresh = await journal.remember_replay(key, expires_at)
        except BaseException:
            self.release(key)
            raise
        if fresh:
            self.admitted(key)
        return fresh
