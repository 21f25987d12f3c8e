"""Knowing whether a WebSocket order left the process — the proof a REST fallback needs.

ccxt.pro's ``create_order_ws`` queues its message until the connection is up and sends
it from a callback; when it fails, the error alone does not say whether the message was
written (a dial failure and a connection dropped after sending both end as a
``NetworkError``). ``WsOrderGate`` wraps the ``send`` of every WebSocket client of one
ccxt instance and watches for the client order ids of orders in flight:

* a message carrying a tracked id that is handed to an open socket marks the order
  **sent** — from then on its outcome may only be learnt from the exchange;
* an order whose attempt ended before that is **abandoned**: the gate swallows its
  message should ccxt still try to send it later (a connection that comes up after we
  gave up), so "not sent" stays true for good and the order may go over REST instead.

Client order ids are 32 random-looking characters, so finding one in a message's text
cannot match another order's message.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any

log = logging.getLogger(__name__)

PENDING, SENT, ABANDONED = "pending", "sent", "abandoned"


class WsTicket:
    """One order's passage through the gate."""

    def __init__(self, gate: WsOrderGate, client_order_id: str):
        self.gate = gate
        self.client_order_id = client_order_id

    @property
    def sent(self) -> bool:
        """Whether the order's message was handed to an open socket (it may have arrived)."""
        return self.gate._state(self.client_order_id) == SENT

    def settle(self) -> bool:
        """End tracking; True if the message was sent, else it is abandoned for good."""
        return self.gate._settle(self.client_order_id)


class WsOrderGate:
    """Tracks, per client order id, whether a WebSocket order message reached the socket."""

    def __init__(self, remember_abandoned: int = 1024):
        self._orders: dict[str, str] = {}
        self._abandoned: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_abandoned

    def attach(self, exchange: Any) -> None:
        """Route every WebSocket client the ccxt instance creates through the gate."""
        # ccxt internal: Exchange.client(url), which watch() calls as self.client(url) to get (or
        # make) the connection of a URL; shadowed here by an instance attribute.
        make_client = exchange.client  # the bound method of ccxt's class

        def client(url: str) -> Any:
            ws = make_client(url)
            if getattr(ws, "_router_order_gate", None) is not self:
                self._wrap(ws)
            return ws

        exchange.client = client  # an instance attribute: ccxt calls self.client(url)

    def track(self, client_order_id: str) -> WsTicket:
        self._orders[client_order_id] = PENDING
        return WsTicket(self, client_order_id)

    def _state(self, client_order_id: str) -> str | None:
        if client_order_id in self._abandoned:
            return ABANDONED
        return self._orders.get(client_order_id)

    def _settle(self, client_order_id: str) -> bool:
        state = self._orders.pop(client_order_id, None)
        if state == SENT:
            return True
        self._abandoned[client_order_id] = None
        while len(self._abandoned) > self._remember:
            self._abandoned.popitem(last=False)
        return False

    def _wrap(self, ws: Any) -> None:
        # ccxt internals: Client.send(message), the coroutine every WebSocket message goes
        # through, and Client.closed(); both shadowed or read on the connection instance.
        send = ws.send

        async def gated_send(message: Any) -> Any:
            if self._orders or self._abandoned:
                text = message if isinstance(message, str) else json.dumps(message, default=str)
                for client_order_id in self._abandoned:
                    if client_order_id in text:
                        log.info(
                            "WebSocket order %s was given up before it was sent; not sending it now", client_order_id
                        )
                        return None
                for client_order_id, state in self._orders.items():
                    if state == PENDING and client_order_id in text:
                        # ccxt's send raises before writing when the socket is closed; only an
                        # open socket can have carried the message. No await between the
                        # check and ccxt's own write.
                        if not ws.closed():
                            self._orders[client_order_id] = SENT
                        break
            return await send(message)

        ws.send = gated_send
        ws._router_order_gate = self
