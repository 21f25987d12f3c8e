"""pytest plugin: the ``conformance`` fixture, a ``ConformanceKit`` working in ``tmp_path``.

In your conftest.py::

    pytest_plugins = ["core.testing.pytest_plugin"]

and in a test (with pytest-asyncio or anyio running async tests)::

    from core.testing import CASES

    @pytest.mark.parametrize("case", CASES)
    async def test_my_executor_keeps_the_promises(conformance, case):
        await conformance.check(case, MyVenueAdapter())
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.testing.conformance import ConformanceKit


@pytest.fixture
def conformance(tmp_path: Path) -> ConformanceKit:
    """The executor conformance kit; ``await conformance.check(case, adapter)``."""
    return ConformanceKit(tmp_path)
