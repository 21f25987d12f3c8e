"""Fixtures of the store contract suite: the deployment's ``StateBackend`` on the backend
``state_url`` names (each contract module parametrizes it over SQLite and Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.config import RouterOptions, Settings
from core.store.factory import StateBackend, StateOptions


@pytest.fixture
async def backend(data_dir: Path, state_url: str, state_prefix: str) -> AsyncIterator[StateBackend]:
    settings = Settings.from_env(
        env_file=None, environ={"DATA_DIR": str(data_dir), "STATE_URL": state_url, "STATE_PREFIX": state_prefix}
    )
    state = StateBackend(settings, StateOptions(), RouterOptions(worker_stale_after=0.5))
    yield state
    await state.aclose()
