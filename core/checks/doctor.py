"""``python -m core doctor``: what to check before real money, in one run.

Server: the configuration as a start checks it, the webhook secret's strength, HTTPS
(REQUIRE_HTTPS, TRUSTED_PROXIES), RATE_LIMIT_KEY for TradingView, the IP allowlist,
DATA_DIR's permissions, the state backend (reachable; Redis persistence read with
``CONFIG GET appendonly/appendfsync``), credentials in alerts. Accounts: each executor's
markets are loaded as at startup; an executor with a ``preflight(symbols)`` coroutine
(the ccxt plugin's) adds its own findings — testnet or live, clock skew, keys valid (a
balance read), trading and withdrawal permissions, and whether the tickers given with
``--symbol`` resolve to a market.

A finding is ok, info, warning or blocker; any blocker makes the exit status 1.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Settings
from core.errors import ConfigError

LEVELS = ("ok", "info", "warning", "blocker")


@dataclass(frozen=True)
class Finding:
    level: str  # ok | info | warning | blocker
    subject: str  # "server", "state", "account main (binance)"
    message: str

    def line(self) -> str:
        return f"{self.level.upper():<8} {self.subject}: {self.message}"


async def run_doctor(settings: Settings, symbols: list[str] | None = None) -> list[Finding]:
    from core.hooks.manager import call_hook_safely
    from core.pipeline.router import Router

    try:
        router = Router(settings)
    except ConfigError as exc:
        return [Finding("blocker", "configuration", str(exc))]
    findings: list[Finding] = []
    try:
        try:
            await router.configure()
            findings.append(Finding("ok", "configuration", "check-config passes"))
        except ConfigError as exc:
            findings.append(Finding("blocker", "configuration", str(exc)))
        findings += server_findings(router)
        findings += await state_findings(router)
        await router.executors.start_all()  # loads the markets, as a start does
        for executor in router.executors:
            subject = f"account {executor.account} ({executor.exchange})"
            check = getattr(executor, "preflight", None)
            if check is None:
                state = "ready" if executor.ready else f"NOT READY: {executor.error}"
                findings.append(Finding("ok" if executor.ready else "blocker", subject, f"{executor.route}: {state}"))
                continue
            try:
                for level, message in await check(list(symbols or [])):
                    findings.append(Finding(level if level in LEVELS else "info", subject, message))
            except Exception as exc:
                findings.append(Finding("blocker", subject, f"preflight failed: {type(exc).__name__}: {exc}"[:300]))
    finally:
        await call_hook_safely(router.hook.router_shutdown, router=router)
        await router.executors.close_all()
        await router.state.aclose()
    return findings


def server_findings(router: Any) -> list[Finding]:
    s: Settings = router.settings
    found: list[Finding] = []

    def add(level: str, message: str, subject: str = "server") -> None:
        found.append(Finding(level, subject, message))

    secret = s.webhook_secret
    if not secret:
        add("info", "WEBHOOK_SECRET not set: HMAC signatures are off (tokens only)")
    elif len(secret) < 16 or len(set(secret)) < 8:
        add(
            "blocker",
            f"WEBHOOK_SECRET is weak ({len(secret)} characters, {len(set(secret))} distinct): use "
            '`python -c "import secrets; print(secrets.token_hex(32))"`',
        )
    elif len(secret) < 32:
        add("warning", f"WEBHOOK_SECRET has {len(secret)} characters: 32 or more random ones are advised")
    else:
        add("ok", f"WEBHOOK_SECRET: {len(secret)} characters")

    proxies = s.trusted_proxies.strip()
    if not s.require_https:
        add(
            "warning",
            "REQUIRE_HTTPS is off: alerts (and the token in them) may arrive over plain HTTP; serve behind "
            "TLS on 443 and set REQUIRE_HTTPS=true",
        )
    elif not proxies and not _hypercorn_has_tls():
        add(
            "warning",
            "REQUIRE_HTTPS is on but TRUSTED_PROXIES is empty: behind a TLS proxy every request looks like "
            "plain HTTP and is refused; set TRUSTED_PROXIES to the proxy's address (127.0.0.1 on the same host)",
        )
    else:
        add("ok", f"REQUIRE_HTTPS on; TRUSTED_PROXIES={proxies or '(none: hypercorn terminates TLS)'}")
    if proxies == "*" and not s.dyno:
        add(
            "warning",
            "TRUSTED_PROXIES=* believes any peer's X-Forwarded-For: only right where the platform's router "
            "is the only way in (Heroku); name the proxy's address instead",
        )

    if s.rate_limit_key == "ip":
        add(
            "info",
            "RATE_LIMIT_KEY=ip: TradingView sends every user's alerts from four addresses, so they share one "
            "budget; RATE_LIMIT_KEY=principal counts per token",
        )
    else:
        add("ok", "RATE_LIMIT_KEY=principal")

    allowlist = router.plugins.get("ip_allowlist")
    networks = getattr(allowlist, "networks", None)
    if allowlist is None:
        add("info", "ip_allowlist plugin disabled")
    elif not networks:
        add(
            "info",
            "no IP allowlist: any address may try a credential (ip_allowlist: presets: [tradingview] "
            "admits TradingView's four addresses only)",
        )
    else:
        add("ok", f"IP allowlist: {len(networks)} network(s)")

    if s.default_exchange.strip().lower() != "paper" and router.executors.default is None:
        add(
            "warning",
            f"DEFAULT_EXCHANGE={s.default_exchange} has no account (no DEFAULT_API_KEY/DEFAULT_API_SECRET, "
            "no account named 'default'): only alerts carrying their own keys can trade",
        )
    found += data_dir_findings(Path(s.data_dir))
    if router.options.allow_payload_credentials:
        add(
            "warning",
            "router.allow_payload_credentials is on: alerts may carry exchange keys (apiKey/secret); turn "
            "it off unless you use the classic payload",
        )
    else:
        add("ok", "credentials in alerts are refused")
    return found


def data_dir_findings(path: Path) -> list[Finding]:
    subject = f"DATA_DIR {path}"
    if not path.exists():
        return [Finding("blocker", subject, "does not exist")]
    if not os.access(path, os.W_OK | os.X_OK):
        return [Finding("blocker", subject, "not writable by this user")]
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return [Finding("warning", subject, f"mode {mode:o}: other users can read the journal and ledgers; chmod 700")]
    return [Finding("ok", subject, f"writable, mode {mode:o}")]


async def state_findings(router: Any) -> list[Finding]:
    state = router.state
    subject = f"state {state.description}"
    if not state.is_redis:
        level = "ok" if router.options.journal_synchronous == "FULL" else "info"
        return [
            Finding(
                level,
                subject,
                f"SQLite, synchronous={router.options.journal_synchronous} "
                f"({'survives a power loss' if level == 'ok' else 'survives a crash, not a power loss'}); "
                "shared by the workers of this machine only",
            )
        ]
    client = state.client
    try:
        await client.ping()
    except Exception as exc:
        return [Finding("blocker", subject, f"unreachable: {type(exc).__name__}: {exc}"[:300])]
    try:
        appendonly = (await client.config_get("appendonly")).get("appendonly")
        appendfsync = (await client.config_get("appendfsync")).get("appendfsync")
    except Exception as exc:
        return [
            Finding(
                "info",
                subject,
                f"reachable; persistence unknown (CONFIG GET refused: {type(exc).__name__}): "
                "check that the plan keeps data across restarts (AOF)",
            )
        ]
    if appendonly != "yes":
        return [
            Finding(
                "warning",
                subject,
                "reachable, but appendonly is 'no': alerts journaled since the last "
                "snapshot are lost if Redis restarts; set appendonly yes (appendfsync everysec or always)",
            )
        ]
    if appendfsync == "always":
        return [Finding("ok", subject, "reachable; AOF with appendfsync always")]
    if appendfsync == "everysec":
        return [
            Finding(
                "info",
                subject,
                "reachable; AOF with appendfsync everysec: up to 1 s of journal writes can be lost on a power loss",
            )
        ]
    return [
        Finding(
            "warning",
            subject,
            f"reachable; AOF with appendfsync {appendfsync}: the OS decides when writes reach the disk",
        )
    ]


def _hypercorn_has_tls() -> bool:
    path = Path("hypercorn.toml")
    try:
        return path.is_file() and "certfile" in path.read_text(encoding="utf-8")
    except OSError:
        return False
