"""Stopping the server never abandons an order in flight."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.ccxt_support import EmulatorProcess, emulator_account, plugins_yaml
from tests.support import ServerProcess, base_env, signed_headers

pytestmark = pytest.mark.slow


def test_sigterm_to_the_process_group_waits_for_the_order_in_flight(tmp_path, data_dir):
    emulator = EmulatorProcess(tmp_path).start()
    try:
        (data_dir / "plugins.yaml").write_text(plugins_yaml({"emu": emulator_account("binance", emulator.url)}))
        server = ServerProcess(base_env(data_dir), tmp_path).start()
        # Held past the 2.5 s answer budget: the request gets 202 and the order is still in flight.
        emulator.control.add_fault("delay_after_book", seconds=4, match={"route": "order.place"})
        body = json.dumps(
            {"account": "emu", "symbol": "BTCUSDT", "side": "buy", "amount": "0.001", "id": "stop-1"}
        ).encode()
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                httpx.post, server.url + "/webhook", content=body, headers=signed_headers(body), timeout=10
            )
            deadline = time.monotonic() + 10
            while not emulator.control.orders() and time.monotonic() < deadline:
                time.sleep(0.02)  # until the emulator has booked it (its reply is held back 4 s)
            answer = pending.result()
            assert answer.status_code == 202
            os.killpg(server.proc.pid, signal.SIGTERM)  # as Heroku and systemd stop a service
        assert server.proc.wait(30) == 0
        from core.store.sqlite.journal import SqliteJournal as Journal

        journal = Journal(data_dir / "journal.sqlite3")
        try:
            row = journal.get_sync("stop-1")
        finally:
            journal.close()
        assert row["state"] == "filled", row["state"]  # recorded before the process exited
        assert len(emulator.control.orders()) == 1
        assert "waiting up to" in server.log()
    finally:
        emulator.stop()
