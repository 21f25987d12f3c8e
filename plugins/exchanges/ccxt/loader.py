"""ccxt's packages with their exchanges imported on first use, not all at once.

``ccxt/__init__.py``, ``ccxt/async_support/__init__.py`` and ``ccxt/pro/__init__.py`` each
import every exchange class they have (about a hundred each, ~50 MiB and ~0.5 s for the
synchronous ones alone), and Python runs ``ccxt/__init__.py`` before any submodule: a
server that uses one asynchronous exchange class imports them all, synchronous ones
included. ``install()`` (run by this package's ``__init__``, before any of its modules
imports ccxt) puts a finder first on ``sys.meta_path`` that loads those three packages
from ccxt's own ``__init__`` source minus the lines importing the exchanges
(``from ccxt.async_support.binance import binance``): versions, errors, constants, base
classes and the ``exchanges`` lists are ccxt's, unchanged. An exchange class is imported
when it is first asked for (``ccxt.async_support.binance``) and then bound on the package
as ccxt's ``__init__`` binds it (the class, not its module: ccxt's own code calls
``ccxt.async_support.binanceusdm()``).

Nothing happens in a process that imported ccxt before (the packages are then whole);
tests/unit/plugins/exchanges/test_ccxt_loader.py compares the lazy packages with ccxt's.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import threading
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PACKAGES = frozenset({"ccxt", "ccxt.async_support", "ccxt.pro"})
# ``from ccxt.async_support.binance import binance``: the line importing an exchange of the package
_EXCHANGE_IMPORT = re.compile(r"^from (?P<package>ccxt(?:\.async_support|\.pro)?)\.(?P<id>\w+) import (?P=id)\b")


class LazyExchangePackage(types.ModuleType):
    """A ccxt package whose exchange classes are imported when first asked for."""

    _exchange_ids: frozenset[str] = frozenset()

    def __getattr__(self, name: str) -> Any:
        if name in self._exchange_ids:
            importlib.import_module(f"{self.__name__}.{name}")  # binds the class (__setattr__)
            return self.__dict__[name]
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        # The import system binds a loaded submodule on its package: an exchange's module
        # is bound as its class, as ccxt's own __init__ leaves it.
        if isinstance(value, types.ModuleType) and name in self._exchange_ids:
            exchange = getattr(value, name, None)
            value = exchange if isinstance(exchange, type) else value
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | self._exchange_ids)


class _Loader(importlib.abc.Loader):
    def __init__(self, origin: str):
        self.origin = origin

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return LazyExchangePackage(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        kept: list[str] = []
        ids: set[str] = set()
        for line in Path(self.origin).read_text(encoding="utf-8").splitlines():
            found = _EXCHANGE_IMPORT.match(line)
            if found and found["package"] == module.__name__:
                ids.add(found["id"])
                kept.append("")  # line numbers stay ccxt's
            else:
                kept.append(line)
        module.__dict__["_exchange_ids"] = frozenset(ids)
        exec(compile("\n".join(kept), self.origin, "exec"), module.__dict__)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in PACKAGES:
            return None
        real = importlib.machinery.PathFinder.find_spec(fullname, path)
        if real is None or real.origin is None or not real.submodule_search_locations:
            return None
        return importlib.util.spec_from_file_location(
            fullname,
            real.origin,
            loader=_Loader(real.origin),
            submodule_search_locations=list(real.submodule_search_locations),
        )


_FINDER = _Finder()
_lock = threading.Lock()


def install() -> bool:
    """Load ccxt's packages lazily from now on in this process; False (nothing changes)
    when ccxt was imported already."""
    with _lock:
        if _FINDER in sys.meta_path:
            return True
        if any(name in sys.modules for name in PACKAGES):
            return False
        sys.meta_path.insert(0, _FINDER)
        return True
