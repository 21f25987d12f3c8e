"""IP allowlist: refuse (403) requests whose client address is not listed.

It never accepts a request on its own — HMAC or a token still has to — and abstains
when no address is configured (the default). The address is the client's after
TRUSTED_PROXIES processing (``core.web.proxy``): behind a proxy, configure that first, or
every request comes from the proxy.

``presets: [tradingview]`` adds the four addresses TradingView sends every alert from.
They are shared by every TradingView user: the allowlist keeps the rest of the internet
out, not other TradingView users, so the token stays necessary.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from core.config import PluginOptions
from core.hooks.manager import hookimpl
from core.pipeline.models import AuthResult, InboundRequest
from core.web.proxy import parse_address

PRESETS: dict[str, tuple[str, ...]] = {
    "tradingview": ("52.89.214.238", "34.212.75.30", "54.218.53.128", "52.32.178.7"),
}


class Plugin:
    class Options(PluginOptions):
        # Addresses and networks (CIDR) allowed to post alerts.
        allow: list[str] = Field(default_factory=list)
        # Named address lists: tradingview.
        presets: list[Literal["tradingview"]] = Field(default_factory=list)

        @field_validator("allow")
        @classmethod
        def _networks(cls, values: list[str]) -> list[str]:
            for value in values:
                try:
                    ipaddress.ip_network(str(value).strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{value!r} is not an IP address or network (CIDR)") from None
            return values

    def __init__(self, options: Plugin.Options):
        self.options = options
        entries = [*options.allow, *(a for preset in options.presets for a in PRESETS[preset])]
        self.networks = [ipaddress.ip_network(e.strip(), strict=False) for e in entries]

    @hookimpl(tryfirst=True)
    def authenticate(self, request: InboundRequest) -> AuthResult | None:
        if not self.networks:
            return None
        address = parse_address(request.remote_addr)
        if address is None or not any(address in network for network in self.networks):
            return AuthResult.reject(f"client address {request.remote_addr} is not in the ip_allowlist", status=403)
        return None
