"""Loopback exchange emulator: Binance (spot, USD-M, WebSocket API), Bybit v5 and Alpaca v2.

It is the test double of the real venues: ccxt's unmodified classes
(``ccxt.async_support.binance``/``binanceusdm``/``bybit`` and ``ccxt.pro.binance``
for WebSocket API order placement) run against it, configured only through
their constructor dict (see :func:`ccxt_config`); the Alpaca plugin (no ccxt) talks to
its Trading API v2 under ``/alpaca``. Tests and the benchmark import it like any library.

Run it as a process (installed with the project; ``python -m emulator --help`` lists the
options)::

    python -m emulator --port 9000                  # http://127.0.0.1:9000
    python -m emulator --port 0 --price BTC/USDT=50000 --account mykey:mysecret

It prints ``emulator listening on http://127.0.0.1:PORT`` once it accepts connections and
serves until SIGTERM/SIGINT; drive it with :class:`EmulatorControl` (the HTTP control API
under ``/_emu/``: prices, faults, the order log). Its default keys are
``emu-key-1``/``emu-secret-1`` (and ``emu-key-2``/``emu-secret-2``). A ccxt account reaches it
through the ``ccxt: {urls: {api: ...}}`` mapping of plugins.yaml (the README's "Real ccxt
demo" shows one); :func:`ccxt_config` builds the complete mapping for a venue.

In-process::

    from emulator import Emulator, ccxt_config
    import ccxt.async_support as ccxt

    async with Emulator() as emu:
        exchange = ccxt.binance(ccxt_config("binance", emu.base_url))
        await exchange.create_order("BTC/USDT", "market", "buy", 0.01)
        assert emu.orders()[0]["status"] == "FILLED"
        await exchange.close()

Modules: ``markets`` (instrument catalogue), ``state`` (venue-neutral books and
accounting), ``faults`` (fault queue), ``dispatch`` (the routes, faults and log shared by
all transports), ``binance``/``binance_render``/``binance_ws``, ``bybit`` and ``alpaca``
(venue dialects), ``server`` (aiohttp app + control API), ``control`` (control clients),
``ccxt_config`` (ccxt constructor configs), ``__main__`` (the command line).
"""

from .ccxt_config import ccxt_config
from .control import AsyncEmulatorControl, EmulatorControl, EmulatorControlError
from .faults import FAULT_KINDS
from .server import Emulator

__all__ = ["AsyncEmulatorControl", "Emulator", "EmulatorControl", "EmulatorControlError", "FAULT_KINDS", "ccxt_config"]
