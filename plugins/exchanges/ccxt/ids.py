"""ccxt's exchange ids, known without importing ccxt.

Importing any part of ccxt runs its package ``__init__``, which imports every exchange
class it has (about a hundred, synchronous and asynchronous: ~1 s and ~75 MiB). A
deployment without a ccxt account (the paper exchange, the default) needs only the ids:
to validate a name in plugins.yaml and to suggest the right one. They are the modules
of ``ccxt.async_support``, read from the installed package's directory, which is what
``ccxt.async_support.exchanges`` lists (tests/unit/plugins/exchanges/test_ccxt_internals.py
checks that they agree).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
from pathlib import Path


@functools.cache
def exchange_ids() -> frozenset[str]:
    """Every ccxt exchange id (``binance``, ``bybit``, ...); empty when ccxt is not installed."""
    spec = importlib.util.find_spec("ccxt")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    ids: set[str] = set()
    for location in spec.submodule_search_locations:
        folder = Path(location) / "async_support"
        ids.update(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_") and p.stem.isidentifier())
    return frozenset(ids)


def is_ccxt_exchange(exchange_id: str) -> bool:
    return exchange_id in exchange_ids()


def unknown_exchange_message(exchange_id: str) -> str | None:
    """Why ``exchange_id`` is not a ccxt exchange, with a did-you-mean; None if it is one."""
    value = exchange_id.strip().lower()
    if value in exchange_ids():
        return None
    close = difflib.get_close_matches(value, sorted(exchange_ids()), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown ccxt exchange {value!r}{hint}"


def suggests_exchange(exchange_id: str) -> bool:
    """Whether ``exchange_id`` is not a ccxt id but close to one: a typo, most likely."""
    value = exchange_id.strip().lower()
    return value not in exchange_ids() and bool(
        difflib.get_close_matches(value, sorted(exchange_ids()), n=1, cutoff=0.75)
    )
