"""Loopback exchange emulator for ccxt's Binance, Binance USD-M and Bybit classes.

It is the test double of the real venues: ccxt's unmodified classes
(``ccxt.async_support.binance``/``binanceusdm``/``bybit`` and ``ccxt.pro.binance``
for WebSocket API order placement) run against it, configured only through
their constructor dict (see :func:`ccxt_config`).

In-process::

    from emulator import Emulator, ccxt_config
    import ccxt.async_support as ccxt

    async with Emulator() as emu:
        exchange = ccxt.binance(ccxt_config("binance", emu.base_url))
        await exchange.create_order("BTC/USDT", "market", "buy", 0.01)
        assert emu.orders()[0]["status"] == "FILLED"
        await exchange.close()

As a process: ``python -m emulator --port 0`` prints
``emulator listening on http://127.0.0.1:PORT`` and serves until SIGTERM/SIGINT;
drive it with :class:`EmulatorControl` (HTTP control API under ``/_emu/``).

Modules: ``markets`` (instrument catalogue), ``state`` (venue-neutral books and
accounting), ``faults`` (fault queue), ``dispatch`` (fault/log pipeline shared by
all transports), ``binance``/``binance_render``/``binance_ws``, ``bybit`` and
``alpaca`` (venue dialects; Alpaca's Trading API v2 for the non-ccxt Alpaca plugin),
``server`` (aiohttp app + control API), ``control`` (control clients), ``ccxt_config``
(ccxt constructor configs).
"""

from .ccxt_config import ccxt_config
from .control import AsyncEmulatorControl, EmulatorControl, EmulatorControlError
from .faults import FAULT_KINDS
from .server import Emulator

__all__ = ["AsyncEmulatorControl", "Emulator", "EmulatorControl", "EmulatorControlError", "FAULT_KINDS", "ccxt_config"]
