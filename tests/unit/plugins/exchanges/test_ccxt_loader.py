"""plugins.exchanges.ccxt.loader: ccxt's packages with their exchanges imported on first use
are ccxt's packages, name for name, and import only what is asked for.

Each probe runs in a fresh interpreter: whether ccxt is loaded lazily is process state."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

DESCRIBE = """
import json, sys, types
{setup}
import ccxt, ccxt.async_support, ccxt.pro

def kind(value):
    if isinstance(value, type):
        return "class " + value.__module__ + "." + value.__qualname__
    if isinstance(value, types.ModuleType):
        return "module " + value.__name__
    if callable(value):
        return "callable " + value.__module__ + "." + value.__qualname__
    return type(value).__name__ + " " + repr(value)[:80]

described = {{}}
for package in (ccxt, ccxt.async_support, ccxt.pro):
    for name in package.exchanges:
        getattr(package, name)  # every exchange imported, as ccxt's own __init__ does
for package in (ccxt, ccxt.async_support, ccxt.pro):
    names = [n for n in dir(package) if not n.startswith("__")]
    described[package.__name__] = {{n: kind(getattr(package, n)) for n in names if n != "_exchange_ids"}}
print(json.dumps({{"lazy": type(ccxt).__name__ != "module", "packages": described}}))
"""

LAZY = "import plugins.exchanges.ccxt"


def _run(script: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_lazy_packages_hold_what_ccxts_own_hold_once_every_exchange_is_asked_for():
    real = _run(DESCRIBE.format(setup=""))
    lazy = _run(DESCRIBE.format(setup=LAZY))
    assert (real["lazy"], lazy["lazy"]) == (False, True)
    for package, names in real["packages"].items():
        assert lazy["packages"][package] == names, package


def test_only_the_exchanges_asked_for_are_imported_and_bound_as_classes():
    answer = _run(
        LAZY
        + """
import json, sys
import ccxt.async_support as ccxt_async, ccxt.pro as ccxt_pro
client = ccxt_pro.binanceusdm({})  # its module imports ccxt.async_support.binanceusdm and calls it as a class
loaded = sorted(m for m in sys.modules if m.count(".") == 2 and m.startswith(("ccxt.async_support.", "ccxt.pro.")))
sync = sorted(m for m in sys.modules if m.count(".") == 1 and m.split(".")[1] in ccxt_async.exchanges)
print(json.dumps({"loaded": loaded, "sync": sync, "classes": [isinstance(ccxt_async.binanceusdm, type),
      isinstance(ccxt_pro.binance, type), type(client).__module__]}))
"""
    )
    assert answer["sync"] == []
    assert [m for m in answer["loaded"] if not m.endswith(".base")] == [
        "ccxt.async_support.binance",
        "ccxt.async_support.binanceusdm",
        "ccxt.pro.binance",
        "ccxt.pro.binanceusdm",
    ]
    assert answer["classes"] == [True, True, "ccxt.pro.binanceusdm"]


def test_nothing_changes_in_a_process_that_imported_ccxt_first():
    answer = _run(
        """
import json, ccxt
from plugins.exchanges.ccxt import loader
print(json.dumps({"installed": loader.install(), "module": type(ccxt).__name__}))
"""
    )
    assert answer == {"installed": False, "module": "module"}
