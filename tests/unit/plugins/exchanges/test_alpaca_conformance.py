"""The Alpaca plugin passes the executor conformance kit (core.testing).

Its executor talks HTTP to the Alpaca emulator (a process on 127.0.0.1), and the
emulator produces the faults itself — the reply dropped after booking, the connection
dropped before booking, a 429 — so what is tested is the plugin's own translation of
Alpaca's answers and its lookup by client order id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.testing import ACCOUNT, CASES, VenueAdapter
from core.trading.execution import Executor
from emulator.control import AsyncEmulatorControl
from plugins.exchanges.alpaca import AccountOptions
from plugins.exchanges.alpaca.executor import AlpacaExecutor

pytest_plugins = ["core.testing.pytest_plugin"]


class AlpacaEmulatorAdapter(VenueAdapter):
    """The Alpaca plugin against the emulator's Alpaca API; the emulator injects the faults."""

    def __init__(self, url: str):
        self.url = url
        self.control = AsyncEmulatorControl(url)

    async def make_executor(self, data_dir: Path) -> Executor:
        options = AccountOptions(
            api_key="emu-key-1", secret="emu-secret-1", base_url=self.url + "/alpaca", clock_max_age=0, timeout=5
        )
        return AlpacaExecutor(ACCOUNT, options)

    async def booked(self, client_order_id: str) -> int:
        return len(await self.control.orders(venue="alpaca", client_order_id=client_order_id))

    def alert(self, alert_id: str) -> dict[str, Any]:
        return {"symbol": "NASDAQ:AAPL", "side": "buy", "amount": "1", "price": "190"}

    def refused_alert(self, alert_id: str) -> dict[str, Any]:
        return {**self.alert(alert_id), "amount": "100000"}  # 19M USD of AAPL: insufficient buying power

    def resting_alert(self, alert_id: str) -> dict[str, Any]:
        return {**self.alert(alert_id), "order_type": "limit", "price": "100"}

    async def inject(self, fault: str) -> bool:
        kind = {"lose_reply": "drop_after_book", "not_sent": "drop_before_book", "rate_limit": "rate_limit"}.get(fault)
        if kind is None:
            return False
        await self.control.add_fault(kind, match={"venue": "alpaca", "route": "order.place"}, count=1)
        return True

    async def close(self) -> None:
        await self.control.clear_faults()
        await self.control.close()


@pytest.mark.parametrize("case", CASES)
async def test_alpaca_executor_against_the_emulator_passes(conformance, emulator, case):
    report = await conformance.check(case, AlpacaEmulatorAdapter(emulator.url))
    assert report.booked <= 1
    if case in ("lost_reply_after_booking", "crash_between_send_and_journal"):
        # Alpaca is asked by client order id: the order is found, not merely "unknown".
        assert (report.state, report.booked) == ("reconciled", 1)
    if case in ("rate_limited", "timeout_before_sending", "resend_of_the_same_alert"):
        assert (report.state, report.booked) == ("filled", 1)
    if case == "rejection":
        assert (report.state, report.booked) == ("rejected", 0)
