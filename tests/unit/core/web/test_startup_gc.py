"""The cyclic GC is paused while the app is imported and while the router starts (no
passes over the ~10^5 objects a start builds, ~80 ms of CPU per start: issue 14), and it
is on again afterwards, whether the start succeeded or failed; once serving, its young
generation is collected every ``GC_YOUNG_THRESHOLD`` allocations."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from core.web.app import GC_YOUNG_THRESHOLD, create_app
from tests.support import ROOT


def test_the_gc_is_on_after_importing_the_app():
    probe = "import gc, core.web.app; print(gc.isenabled(), gc.get_freeze_count() > 10000)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]  # on again, what the import built frozen


async def test_the_gc_is_on_after_a_start(make_settings):
    before = gc.get_threshold()
    app = create_app(make_settings())
    await app.startup()
    try:
        assert gc.isenabled()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        await app.shutdown()
        gc.set_threshold(*before)


async def test_the_gc_is_on_after_a_failed_start(make_settings, write_plugins_yaml, monkeypatch):
    write_plugins_yaml("router:\n  no_such_option: 1\n")
    monkeypatch.setattr("core.web.app.startup_failed", lambda exc: None)  # not a worker: nothing exits
    app = create_app(make_settings())
    with pytest.raises(Exception):  # noqa: B017 - which error is the configuration's business
        await app.startup()
    assert gc.isenabled()
