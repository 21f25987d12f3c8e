"""Clients for the emulator's HTTP control API (``/_emu/...``).

:class:`EmulatorControl` is synchronous (stdlib ``urllib`` only);
:class:`AsyncEmulatorControl` has the same methods as coroutines (aiohttp).
Both are meant for tests and benchmarks that run the emulator as a separate
process (``python -m emulator --port 0``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode


class EmulatorControlError(RuntimeError):
    """The control API answered with an error status."""


class _ControlMethods:
    """Endpoint wrappers; ``_request`` returns a value (sync) or an awaitable (async)."""

    base_url: str

    def _request(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        raise NotImplementedError

    @staticmethod
    def _query(filters: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in filters.items() if v is not None}

    def health(self) -> Any:
        return self._request("GET", "/_emu/health")

    def reset(self) -> Any:
        return self._request("POST", "/_emu/reset")

    def add_fault(self, kind: str, **spec: Any) -> Any:
        """Queue one fault, e.g. ``add_fault('rate_limit', match={'route': 'order.place'}, count=2)``."""
        return self._request("POST", "/_emu/faults", body={"kind": kind, **spec})

    def add_faults(self, faults: list[dict[str, Any]]) -> Any:
        return self._request("POST", "/_emu/faults", body=faults)

    def clear_faults(self, fault_id: int | None = None) -> Any:
        return self._request("DELETE", "/_emu/faults", query=self._query({"id": fault_id}))

    def faults(self) -> Any:
        return self._request("GET", "/_emu/faults")

    def orders(self, **filters: Any) -> Any:
        """Booked orders; filter on any field, e.g. ``orders(client_order_id='abc', venue='binance')``."""
        return self._request("GET", "/_emu/orders", query=self._query(filters))

    def requests(self, **filters: Any) -> Any:
        return self._request("GET", "/_emu/requests", query=self._query(filters))

    def set_price(self, symbol: str, price: Any, venue: str | None = None, market_type: str | None = None) -> Any:
        body = self._query({"symbol": symbol, "price": str(price), "venue": venue, "market_type": market_type})
        return self._request("POST", "/_emu/price", body=body)

    def prices(self) -> Any:
        return self._request("GET", "/_emu/prices")

    def positions(self, key: str | None = None) -> Any:
        return self._request("GET", "/_emu/positions", query=self._query({"key": key}))

    def balances(self, key: str | None = None) -> Any:
        return self._request("GET", "/_emu/balances", query=self._query({"key": key}))

    def accounts(self) -> Any:
        return self._request("GET", "/_emu/accounts")

    def add_account(self, key: str, secret: str, balances: dict[str, dict[str, Any]] | None = None) -> Any:
        return self._request(
            "POST", "/_emu/accounts", body=self._query({"key": key, "secret": secret, "balances": balances})
        )

    def set_clock_offset(self, offset_ms: int) -> Any:
        """The venues' clock runs ``offset_ms`` ahead of the host's (negative: behind)."""
        return self._request("POST", "/_emu/clock", body={"offset_ms": offset_ms})

    def set_api_restrictions(self, key: str, **flags: bool) -> Any:
        """Binance apiRestrictions of ``key``, e.g. ``enableWithdrawals=True``."""
        return self._request("POST", "/_emu/api_restrictions", body={"key": key, **flags})

    def unhandled(self) -> Any:
        return self._request("GET", "/_emu/unhandled")

    def alpaca_clock(self, is_open: bool | None = None) -> Any:
        """Alpaca's market clock: read it, or open/close the market (opening executes queued orders)."""
        if is_open is None:
            return self._request("GET", "/_emu/alpaca/clock")
        return self._request("POST", "/_emu/alpaca/clock", body={"is_open": is_open})


class EmulatorControl(_ControlMethods):
    """Blocking control client: ``EmulatorControl('http://127.0.0.1:9000').orders()``."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise EmulatorControlError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from exc

    def wait_until(
        self, predicate: Callable[[EmulatorControl], Any], timeout: float = 5.0, interval: float = 0.02
    ) -> Any:
        """Poll ``predicate(self)`` until truthy (for a separate-process emulator); return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met within timeout")
            time.sleep(interval)


class AsyncEmulatorControl(_ControlMethods):
    """Async control client; use ``async with AsyncEmulatorControl(url) as control:``."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session: Any = None

    async def __aenter__(self) -> AsyncEmulatorControl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        async with self._session.request(method, self.base_url + path, params=query, json=body) as response:
            text = await response.text()
            if response.status >= 400:
                raise EmulatorControlError(f"{method} {path}: {response.status} {text}")
            return json.loads(text) if text else None
