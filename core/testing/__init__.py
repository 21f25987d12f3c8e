"""Test support shipped with the router for plugin authors.

``core.testing.conformance`` is the executor conformance kit (what an author provides to it,
the ``VenueAdapter``, is in ``core.testing.adapter``); ``core.testing.pytest_plugin``
exposes it as the ``conformance`` fixture (``pytest_plugins = ["core.testing.pytest_plugin"]``
in your conftest.py). See docs/plugins/execution.md.
"""

from core.testing.conformance import (
    ACCOUNT,
    CASES,
    FAULTS,
    NEVER_DOUBLES,
    CaseReport,
    ConformanceFailure,
    ConformanceKit,
    FaultInjector,
    VenueAdapter,
)

__all__ = [
    "ACCOUNT",
    "CASES",
    "FAULTS",
    "NEVER_DOUBLES",
    "CaseReport",
    "ConformanceFailure",
    "ConformanceKit",
    "FaultInjector",
    "VenueAdapter",
]
