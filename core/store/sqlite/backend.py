"""SQLite files under DATA_DIR: the default backend, shared by the workers of one machine
(``hypercorn --workers N``) on the same DATA_DIR."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from core.store.protocols import RateStore
from core.store.sqlite.database import private_dir
from core.store.sqlite.journal import SqliteJournal
from core.store.sqlite.risk import SqliteRiskStore
from core.store.sqlite.tokens import SqliteTokenStore


class SqliteBackend:
    """Opens each store in its own file under ``data_path`` (created 0700 when missing)."""

    kind: Literal["sqlite"] = "sqlite"

    def __init__(self, data_path: Path, *, journal_synchronous: str = "FULL"):
        self.data_path = data_path
        self.journal_synchronous = journal_synchronous

    @property
    def data_dir(self) -> Path:
        return private_dir(self.data_path)

    def journal(self) -> SqliteJournal:
        return SqliteJournal(
            self.data_dir / "journal.sqlite3",
            synchronous=self.journal_synchronous,
            replay_file=self.data_dir / "replay.sqlite3",  # an earlier version's replay keys, moved in
        )

    def token_store(self, *, synchronous: str = "FULL") -> SqliteTokenStore:
        return SqliteTokenStore(self.data_dir / "tokens.sqlite3", synchronous=synchronous)

    def rate_store(self) -> RateStore:
        from core.store.sqlite.rate import SqliteRateStorage

        return SqliteRateStorage(self.data_dir / "ratelimit.sqlite3")

    def risk_store(self) -> SqliteRiskStore:
        return SqliteRiskStore(self.data_dir / "risk.sqlite3")

    async def aclose(self) -> None:
        pass  # every store closes its own file
