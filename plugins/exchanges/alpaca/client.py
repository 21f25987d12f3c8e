"""An async client for Alpaca's Trading API v2 over httpx.

Why not the official SDK: ``alpaca-py``'s ``TradingClient`` is synchronous (built on
``requests``; the maintainers' issue alpacahq/alpaca-py#453 "Expose async client" is
open), so in this async server each call would block the event loop or need a thread.
The REST API is small and documented; one ``httpx.AsyncClient`` per account keeps the
connection warm and never blocks.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from core.errors import OutcomeUnknown
from plugins.exchanges.alpaca.errors import from_response, from_transport

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"
# The clock is re-read at its next open/close and at least this often.
CLOCK_MAX_AGE = 60.0


class NotFound(Exception):
    """Alpaca answered 404: the order (or asset, or position) does not exist."""


class AlpacaClient:
    """One account's REST session: keys in headers, JSON in and out, errors translated."""

    def __init__(
        self,
        base_url: str,
        key_id: str,
        secret_key: str,
        *,
        timeout: float = 10.0,
        clock_max_age: float = CLOCK_MAX_AGE,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.clock_max_age = clock_max_age
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            headers={"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret_key, "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        )
        self._clock: tuple[bool, float] | None = None  # (is_open, valid until on the monotonic clock)

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None, placing: bool = False
    ) -> Any:
        """Send one request; the parsed JSON (None for 204). Raises ``NotFound`` on 404 of a
        read, else the translated error (``errors.py``)."""
        try:
            response = await self._http.request(method, path, params=params, json=json)
        except httpx.HTTPError as exc:
            raise from_transport(exc, placing=placing) from None
        if response.status_code == 404 and not placing:
            raise NotFound(path)
        if response.status_code >= 400:
            raise from_response(response, placing=placing)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            if placing:
                raise OutcomeUnknown(f"Alpaca answered {response.status_code} with a body that is not JSON") from None
            raise from_transport(httpx.DecodingError("not JSON"), placing=False) from None

    # ------------------------------------------------------------ endpoints

    async def assets(self, asset_class: str) -> list[dict[str, Any]]:
        return await self.request("GET", "/v2/assets", params={"status": "active", "asset_class": asset_class})

    async def account(self) -> dict[str, Any]:
        return await self.request("GET", "/v2/account")

    async def submit_order(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", "/v2/orders", json=body, placing=True)

    async def order(self, order_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/v2/orders/{quote(order_id, safe='')}")

    async def order_by_client_id(self, client_order_id: str) -> dict[str, Any]:
        return await self.request("GET", "/v2/orders:by_client_order_id", params={"client_order_id": client_order_id})

    async def open_orders(self, symbol: str) -> list[dict[str, Any]]:
        return await self.request("GET", "/v2/orders", params={"status": "open", "symbols": symbol, "limit": 500})

    async def cancel_order(self, order_id: str) -> None:
        await self.request("DELETE", f"/v2/orders/{quote(order_id, safe='')}", placing=True)

    async def position(self, symbol: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", f"/v2/positions/{quote(symbol.replace('/', ''), safe='')}")
        except NotFound:
            return None

    async def market_is_open(self) -> bool:
        """Whether the US stock market is open now, from ``GET /v2/clock``; kept until the
        clock's next open/close (at most ``clock_max_age`` seconds), so alerts rarely pay for the call."""
        now = time.monotonic()
        if self._clock is not None and now < self._clock[1]:
            return self._clock[0]
        clock = await self.request("GET", "/v2/clock")
        is_open = bool(clock.get("is_open"))
        valid = self.clock_max_age
        try:
            stamp = datetime.fromisoformat(str(clock["timestamp"]))  # Python 3.11 reads "Z" and offsets
            change = datetime.fromisoformat(str(clock["next_close" if is_open else "next_open"]))
            valid = max(0.0, min(self.clock_max_age, (change - stamp).total_seconds()))
        except (KeyError, ValueError, TypeError):
            pass
        self._clock = (is_open, now + valid)
        return is_open
