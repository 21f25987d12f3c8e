"""The router as the pipeline's parts see it.

The engine and its parts (placement, settlement, reconciliation, recovery) never import
``core.pipeline.router``: they are given the router typed as one of these protocols. The
router owns the engine, not the other way round. Whatever is passed is also the ``router``
argument every hook receives (``core.hooks.host.PluginHost``).
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

from core.hooks.host import PluginHost
from core.trading.execution import ExecutorRegistry


class HookHost(PluginHost, Protocol):
    """The plugin host and the hooks to call with it."""

    @property
    def hook(self) -> pluggy.HookRelay:
        """One ``HookCaller`` per hook spec (``core.hooks.specs``)."""


class EngineHost(HookHost, Protocol):
    """What the execution engine needs of the router that owns it."""

    @property
    def journal(self) -> Any:
        """The journal (``core.store``'s SQLite or Redis journal); None before startup opened it."""

    @property
    def executors(self) -> ExecutorRegistry:
        """The configured accounts (recovery finds an orphaned alert's executor here)."""
