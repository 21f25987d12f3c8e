"""The doctor's checks of a ccxt account (``python -m core doctor``).

Testnet or live, the clock's skew against the exchange's, whether the keys work (a balance
read), the key's trading and withdrawal permissions where ccxt can read them (binance,
bybit), and whether each TradingView ticker resolves to a market.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async

from plugins.exchanges.ccxt.accounts import UNIFIED_TYPE
from plugins.exchanges.ccxt.markets import market_book

# Clock skew against the exchange: binance refuses a request stamped 1 s ahead of its clock
# or older than recvWindow; a few hundred ms is normal network jitter.
SKEW_WARNING_MS = 500
SKEW_BLOCKER_MS = 1000


async def account_preflight(executor: Any, symbols: list[str]) -> list[tuple[str, str]]:
    """``(level, message)`` findings for one ccxt account whose markets are loaded (or not):
    testnet or live, clock skew, keys (a balance read), trading and withdrawal permissions,
    and whether each of ``symbols`` (TradingView tickers) resolves to a market."""
    client, options = executor.client, executor.options
    findings: list[tuple[str, str]] = []
    if options.sandbox:
        findings.append(("ok", f"testnet (sandbox): orders go to {_api_host(client)}, no real money"))
    else:
        findings.append(("info", f"LIVE: orders go to {_api_host(client)} and trade real money"))

    if client.has.get("fetchTime"):
        try:
            before = client.milliseconds()
            server = await client.fetch_time()
            after = client.milliseconds()
            skew = int(server - (before + after) / 2)
            ahead = "ahead of" if skew > 0 else "behind"
            text = f"the exchange's clock is {abs(skew) / 1000:.1f} s {ahead} this machine's"
            if abs(skew) >= SKEW_BLOCKER_MS:
                findings.append(
                    (
                        "blocker",
                        f"{text}: signed requests (orders) will be refused; sync the clock "
                        "(chrony/systemd-timesyncd) or set ccxt: {options: {adjustForTimeDifference: true}}",
                    )
                )
            elif abs(skew) >= SKEW_WARNING_MS:
                findings.append(("warning", f"{text}; sync the clock (chrony/systemd-timesyncd)"))
            else:
                findings.append(("ok", f"clock skew {skew} ms"))
            # The remaining checks sign requests: compensate here (this client only) so they can run
            # (ccxt internal: options["timeDifference"], subtracted from the clock by binance's nonce()).
            client.options["timeDifference"] = -skew
        except Exception as exc:
            findings.append(("warning", f"could not read the exchange's time: {_short(exc)}"))

    if executor.ready:
        findings.append(("ok", f"market list loaded: {len(client.markets)} markets"))
        book = market_book(client)
        for symbol in symbols:
            try:
                market = book.resolve(symbol, None, executor.default_type)
                findings.append(("ok", f"{symbol} → {market.symbol}"))
            except Exception as exc:
                findings.append(
                    ("blocker", f"market {symbol!r} is missing: {getattr(exc, 'message', None) or _short(exc)}")
                )
    else:
        findings.append(("blocker", f"market list not loaded: {executor.error or 'unknown error'}"))

    if options.public:
        findings.append(("info", "public account (no keys): market data only, it cannot trade"))
        return findings
    try:
        balance = await client.fetch_balance()
        held = sorted(k for k, v in (balance.get("total") or {}).items() if v)
        findings.append(
            ("ok", f"keys valid: balance read ({', '.join(held[:6]) or 'empty'}{'…' if len(held) > 6 else ''})")
        )
    except (ccxt_async.AuthenticationError, ccxt_async.PermissionDenied) as exc:
        findings.append(("blocker", f"the exchange refused the keys: {_short(exc)}"))
    except Exception as exc:
        findings.append(("blocker", f"balance read failed: {_short(exc)}"))
    findings += await _permissions(executor)
    return findings


WITHDRAWAL_WARNING = (
    "THIS KEY CAN WITHDRAW FUNDS: anyone who obtains it can empty the account. "
    "Create a key with withdrawals disabled (and an IP whitelist) for the router"
)


async def _permissions(executor: Any) -> list[tuple[str, str]]:
    client, options = executor.client, executor.options
    names = {cls.__name__ for cls in type(client).__mro__}
    trades_contracts = bool(options.market_types) and any(UNIFIED_TYPE[t] != "spot" for t in options.market_types)
    try:
        if "binance" in names:
            if "binanceusdm" in names or "binancecoinm" in names:
                trades_contracts = True
            restrictions = await client.sapi_get_account_apirestrictions()  # ccxt's implicit API method
            found = []
            if restrictions.get("enableWithdrawals"):
                found.append(("warning", WITHDRAWAL_WARNING))
            else:
                found.append(("ok", "withdrawals disabled for this key"))
            spot = restrictions.get("enableSpotAndMarginTrading")
            futures = restrictions.get("enableFutures")
            if trades_contracts and not futures:
                found.append(("blocker", "the key may not trade futures (enable 'Futures' for the key)"))
            elif not trades_contracts and not spot:
                found.append(("blocker", "the key may not trade spot (enable 'Spot & Margin Trading' for the key)"))
            else:
                found.append(("ok", "trading permitted"))
            return found
        if "bybit" in names:
            info = (await client.private_get_v5_user_query_api()).get("result") or {}  # ccxt's implicit API
            permissions = info.get("permissions") or {}
            found = [
                ("warning", WITHDRAWAL_WARNING)
                if "Withdraw" in (permissions.get("Wallet") or [])
                else ("ok", "withdrawals disabled for this key")
            ]
            found.append(
                ("blocker", "the key is read-only: it cannot trade")
                if str(info.get("readOnly")) == "1"
                else ("ok", "trading permitted")
            )
            return found
    except Exception as exc:
        return [
            (
                "warning",
                f"could not read the key's permissions ({_short(exc)}): check on the exchange that "
                "trading is on and withdrawals are off",
            )
        ]
    return [
        (
            "info",
            f"ccxt cannot read key permissions on {executor.exchange}: check on the exchange that trading "
            "is on and withdrawals are off",
        )
    ]


def _api_host(client: Any) -> str:
    api = client.urls.get("api")
    first = api if isinstance(api, str) else next((v for v in (api or {}).values() if isinstance(v, str)), "")
    return urlsplit(first).netloc or "?"


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
