"""What a plugin may use of the running router: the ``PluginHost`` every hook receives.

Hooks get it as their ``router`` argument (the name is kept so plugins written before
this existed keep working). Plugins use nothing else of the router: what is here is
stable; the rest of ``core.pipeline.router.Router`` is not part of the plugin API.

* ``settings`` — the environment settings (``core.config.Settings``): DEFAULT_EXCHANGE,
  USE_WEBSOCKETS, ... Read-only. A plugin's own options reach it once, through its
  ``Options`` model, never through the environment.
* ``options`` — the ``router`` section of plugins.yaml (``core.config.RouterOptions``).
* ``data_dir`` — the directory (``DATA_DIR``) a plugin may keep files in (ledgers, caches).
* ``config_path`` — the plugins.yaml in use, for error messages naming the file.
* ``journal`` — the journal's read side (``JournalReader``): an alert and its order
  attempts by id, recent alerts, counts by state.
* ``logger(name)`` — a logger under ``plugins.<name>``; every record passes the
  redactor, so a registered secret never reaches a log line.
* ``register_secret(value)`` — mask ``value`` in logs, error bodies and the journal.
  Register every credential a plugin holds, as soon as it has it.
* ``plugin_state(name)`` — a dict the plugin may keep state in for the life of the
  router (one per plugin name; gone at shutdown).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from core.config import RouterOptions, Settings


@runtime_checkable
class JournalReader(Protocol):
    """The journal as a plugin may read it (the SQLite and Redis journals both are one)."""

    async def get(self, alert_id: str) -> dict[str, Any] | None:
        """One alert with its order attempts (``orders``), or None."""

    async def list(self, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
        """The most recent alerts, newest first, optionally of one state."""

    async def stats(self) -> dict[str, Any]:
        """Counts: ``{"alerts": {state: n}, ...}``."""


@runtime_checkable
class PluginHost(Protocol):
    """The router as plugins see it (``core.pipeline.router.Router`` implements it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def options(self) -> RouterOptions: ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def config_path(self) -> Path: ...

    @property
    def journal(self) -> JournalReader | None:
        """None before startup opened it and after shutdown."""

    def logger(self, name: str) -> logging.Logger: ...

    def register_secret(self, value: str | None) -> None: ...

    def plugin_state(self, name: str) -> dict[str, Any]: ...
