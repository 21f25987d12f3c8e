"""core.pipeline.replays.RecentKeys: a key in progress or admitted lately is refused at once;
one whose request ended unadmitted may come again; expired keys are new; the cache is bounded
(the journal holds every key)."""

from __future__ import annotations

import time

from core.pipeline.replays import RecentKeys


def test_a_key_in_progress_or_admitted_is_refused_and_a_released_one_may_come_again():
    keys = RecentKeys()
    assert keys.claim("a", None) is True
    assert keys.claim("a", None) is False  # the same request, concurrently
    keys.release("a")  # refused after authenticating (422, 503): nothing recorded
    assert keys.claim("a", None) is True
    keys.admitted("a")
    keys.release("a")  # admitted: it stays refused
    assert keys.claim("a", None) is False
    keys.release(None)  # a request without a key: nothing to do


def test_an_expired_key_is_new_and_the_oldest_are_forgotten_first():
    keys = RecentKeys(max_keys=3)
    assert keys.claim("old", time.time() - 1)
    assert keys.claim("old", time.time() + 60), "expired: new again"
    for name in ("b", "c", "d"):
        assert keys.claim(name, None)
    assert len(keys) == 3
    assert keys.claim("old", None), "forgotten here (the journal still refuses it)"
    assert not keys.claim("d", None)
