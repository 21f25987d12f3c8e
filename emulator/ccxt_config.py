"""Constructor configs that point ccxt's real exchange classes at the emulator.

``ccxt_config(venue, base_url, api_key='emu-key-1', secret='emu-secret-1', **extra)``
returns the dict to pass to the ccxt constructor.  Nothing else is needed::

    import ccxt.async_support as ccxt_async
    import ccxt.pro as ccxt_pro

    spot_and_usdm = ccxt_async.binance(ccxt_config("binance", emu.base_url))
    usdm = ccxt_async.binanceusdm(ccxt_config("binanceusdm", emu.base_url))
    ws = ccxt_pro.binance(ccxt_config("binance", emu.base_url, enableRateLimit=False))
    bybit = ccxt_async.bybit(ccxt_config("bybit", emu.base_url))

What the config contains:

* ``apiKey`` / ``secret``;
* ``urls.api``: every REST base URL of the class (``public``, ``private``,
  ``fapiPublic``, ``fapiPrivateV2``, ``sapi``... - the path kept, the host
  replaced by ``base_url``), and for Binance ``urls.api.ws`` with
  ``ws-api.spot = ws://HOST/ws-api/v3``, ``ws-api.linear = ws://HOST/ws-fapi/v1``
  (stream URLs are rewritten too but not served).  Bybit's REST URLs become
  ``base_url + '/bybit'`` (its WebSocket URLs are rewritten, not served).  So no
  request can leave the loopback host;
* ``options`` that keep ``load_markets`` on served endpoints:
  binance ``fetchMarkets.types = ['spot', 'linear']``, binanceusdm ``['linear']``,
  bybit ``['spot', 'linear']``; binance(usdm) ``fetchCurrencies = False`` and
  ``fetchMargins = False`` (they need sapi endpoints the emulator does not
  serve).  Bybit keeps ``fetchCurrencies`` and discovers the unified account via
  ``/v5/user/query-api`` + ``/v5/account/info`` as in production;
* ``exceptions`` (Binance only, unless ``match_production_errors=False``): ccxt
  picks its USD-M specific error map by URL prefix
  (``https://fapi.binance.com/``), which a loopback URL never matches, so codes
  like -4164, -2022, -4116, -5022 would degrade to generic ``ExchangeError``.
  The config folds the USD-M map into the common map so every code maps to the
  class it maps to in production.

``extra`` is deep-merged last (e.g. ``enableRateLimit=False``, ``timeout=500``,
``options={'recvWindow': 5000}``).
"""

from __future__ import annotations

import copy
import functools
from typing import Any
from urllib.parse import urlsplit

VENUES = ("binance", "binanceusdm", "bybit")
BYBIT_PREFIX = "/bybit"
WS_API_PATHS = {"spot": "/ws-api/v3", "linear": "/ws-fapi/v1", "inverse": "/ws-dapi/v1"}


def _deep_merge(target: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _rebase(url: Any, http_base: str, ws_base: str) -> Any:
    if isinstance(url, dict):
        return {key: _rebase(value, http_base, ws_base) for key, value in url.items()}
    if not isinstance(url, str):
        return url
    parts = urlsplit(url.replace("{hostname}", "example.com"))
    base = ws_base if parts.scheme in ("ws", "wss") else http_base
    return base + parts.path


@functools.cache
def _describe(venue: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(urls.api, exceptions) of the ccxt.pro class, which includes the REST ones."""
    # ccxt internals: urls["api"] (REST URLs, WebSocket ones under "ws") and exceptions["linear"]
    # (binance's USD-M map, which get_exceptions_by_url picks by the production host);
    # checked by tests/unit/plugins/exchanges/test_ccxt_internals.py.
    import ccxt.pro as ccxt_pro

    exchange = getattr(ccxt_pro, venue)()
    return copy.deepcopy(exchange.urls["api"]), exchange.exceptions


def _production_exceptions(venue: str) -> dict[str, Any]:
    _, exceptions = _describe(venue)
    linear = exceptions.get("linear", {})
    return {
        "exact": {**exceptions.get("exact", {}), **linear.get("exact", {})},
        "broad": {**exceptions.get("broad", {}), **linear.get("broad", {})},
    }


def ccxt_config(
    venue: str,
    base_url: str,
    api_key: str = "emu-key-1",
    secret: str = "emu-secret-1",
    *,
    match_production_errors: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Constructor config for ccxt's ``venue`` class talking to the emulator at ``base_url``."""
    if venue not in VENUES:
        raise ValueError(f"venue must be one of {VENUES}, got {venue!r}")
    http_base = base_url.rstrip("/")
    ws_base = "ws" + http_base[len("http") :] if http_base.startswith("http") else http_base
    config: dict[str, Any] = {"apiKey": api_key, "secret": secret}
    api_urls, _ = _describe(venue)
    api = _rebase(api_urls, http_base, ws_base)
    if venue == "bybit":
        api.update({name: http_base + BYBIT_PREFIX for name in ("spot", "futures", "v2", "public", "private")})
        config["urls"] = {"api": api}
        config["options"] = {"fetchMarkets": {"types": ["spot", "linear"]}}
    else:
        api.setdefault("ws", {})["ws-api"] = {kind: ws_base + path for kind, path in WS_API_PATHS.items()}
        config["urls"] = {"api": api}
        types = ["spot", "linear"] if venue == "binance" else ["linear"]
        config["options"] = {"fetchMarkets": {"types": types}, "fetchCurrencies": False, "fetchMargins": False}
        if match_production_errors:
            config["exceptions"] = _production_exceptions(venue)
    return _deep_merge(config, extra)
