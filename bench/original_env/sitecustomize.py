"""Points the original implementation at the benchmark's emulator through its process
environment only (``bench.original``): not part of its code, not a change to it.

Python imports ``sitecustomize`` at start-up from the first directory on ``sys.path`` that
has one; the benchmark puts this directory on the original's ``PYTHONPATH``. When
``BENCH_CCXT_CONFIG`` (JSON) is set, every ccxt async exchange constructed in that process
gets it deep-merged over the config its code passes: the emulator's URLs and options,
``enableRateLimit: false``, as the project's own benchmark accounts have them. Its API key
and secret still come from its own code (the alert's payload or its DEFAULT_API_KEY).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from typing import Any


def deep_merge(target: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = deep_merge(dict(target[key]), value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def install(overrides: dict[str, Any]) -> None:
    import ccxt.async_support as ccxt_async

    base = ccxt_async.Exchange
    original_init = base.__init__

    def __init__(self: Any, config: dict[str, Any] | None = None) -> None:
        original_init(self, deep_merge(dict(config or {}), overrides))

    base.__init__ = __init__


_config = os.environ.get("BENCH_CCXT_CONFIG", "")
if _config:
    try:
        install(json.loads(_config))
    except Exception as exc:  # not pointed at the emulator: the process must not run
        print(f"bench sitecustomize: BENCH_CCXT_CONFIG not applied: {type(exc).__name__}: {exc}", file=sys.stderr)
        os._exit(3)
