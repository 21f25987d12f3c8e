"""The client's address and scheme behind reverse proxies (TRUSTED_PROXIES).

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are set by whoever sends the request, so
they mean something only when the direct peer is a proxy we run or chose. This ASGI
middleware rewrites ``scope["client"]`` and ``scope["scheme"]`` from them **only when
the direct peer is trusted**; everything downstream (rate-limit keys, the IP allowlist,
REQUIRE_HTTPS, logs) then sees the real client.

TRUSTED_PROXIES is a comma-separated list of addresses and networks (``127.0.0.1``,
``10.0.0.0/8``, ``::1``); empty trusts nobody (the default). ``*`` trusts whatever
direct peer connects — only for platforms where the app cannot be reached except through
their router (Heroku) — and still walks X-Forwarded-For against the listed networks.

The client is the right-most X-Forwarded-For entry that is not itself a trusted proxy:
each trusted proxy appends the address it saw, and entries further left were written by
the client and prove nothing. The scheme is the right-most X-Forwarded-Proto value (the
nearest proxy's), when it is ``http`` or ``https``. hypercorn's ``ProxyFixMiddleware``
trusts a number of hops from any peer, which is why it is not used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import TypeVar, cast

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope, WWWScope

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = frozenset({"http", "https"})

S = TypeVar("S", bound=WWWScope)


def extend_scope(scope: S, extra: Mapping[str, object]) -> S:
    """A copy of ``scope`` with ``extra`` keys added (``direct_client``, ``core.web.intake``'s
    ``AUTHENTICATED``). An ASGI scope is a plain dict that servers and middlewares may add
    keys to; hypercorn's TypedDicts list only the keys of the spec, hence the cast."""
    return cast(S, {**scope, **extra})


def parse_address(text: str) -> Address | None:
    """An IP address from a header entry or ASGI scope (``1.2.3.4``, ``1.2.3.4:80``,
    ``[::1]:80``, ``::ffff:1.2.3.4`` → ``1.2.3.4``); ``None`` when it is not one."""
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class TrustedProxies:
    """The parsed TRUSTED_PROXIES setting."""

    def __init__(self, spec: str = ""):
        self.any_peer = False
        self.networks: list[Network] = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            if part == "*":
                self.any_peer = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"{part!r} is not an IP address or network (CIDR), or *") from None

    @property
    def enabled(self) -> bool:
        return self.any_peer or bool(self.networks)

    def is_proxy(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def peer_is_trusted(self, peer: str) -> bool:
        if self.any_peer:
            return True
        address = parse_address(peer)
        return address is not None and self.is_proxy(address)

    def client(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The client's address, given a trusted peer and the X-Forwarded-For entries."""
        client = peer
        for entry in reversed(list(forwarded_for)):
            address = parse_address(entry)
            if address is None:
                break  # written by no proxy of ours: stop at the last hop we trust
            client = str(address)
            if not self.is_proxy(address):
                break
        return client


def _header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    values: list[str] = []
    for key, value in headers:
        if key.lower() == name:
            values.extend(v.strip() for v in value.decode("latin-1").split(",") if v.strip())
    return values


class ProxyHeadersMiddleware:
    """ASGI middleware applying TRUSTED_PROXIES; configured with ``trust()`` at startup
    (settings are read when the server starts), trusting nobody until then."""

    def __init__(self, app: ASGIFramework, trusted: TrustedProxies | None = None):
        self.app = app
        self.trusted = trusted or TrustedProxies()

    def trust(self, trusted: TrustedProxies | str) -> None:
        self.trusted = trusted if isinstance(trusted, TrustedProxies) else TrustedProxies(trusted)

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if (scope["type"] == "http" or scope["type"] == "websocket") and self.trusted.enabled:
            scope = self.rewrite(scope)
        await self.app(scope, receive, send)

    def rewrite(self, scope: WWWScope) -> WWWScope:
        client = scope.get("client")
        peer = client[0] if client else ""
        if not peer or not self.trusted.peer_is_trusted(peer):
            return scope
        headers = scope.get("headers") or []
        # direct_client: the connection's own peer (hypercorn logs it; core.web.intake)
        scope = extend_scope(scope, {"direct_client": client})
        forwarded_for = _header_values(headers, b"x-forwarded-for")
        if forwarded_for:
            scope["client"] = (self.trusted.client(peer, forwarded_for), 0)
        proto = _header_values(headers, b"x-forwarded-proto")
        if proto and proto[-1].lower() in SCHEMES and scope["type"] == "http":
            scope["scheme"] = proto[-1].lower()
        return scope
