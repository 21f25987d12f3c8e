"""The built-in risk limits (``check_risk``) and strategy position sync (``after_execute``).

Configured by the ``risk`` section of plugins.yaml: ``defaults`` apply to every account,
``accounts.<name>`` override them field by field, ``strategies.<name>`` set how a
strategy's ``position_size`` is compared with the exchange. Every limit is optional.

Which orders a limit looks at: only **opening** orders. An order that can only lower risk
(reduce-only, a close, a cancel, an order that shrinks the position it was computed from)
is never refused by these limits, nor by a halt.

Reads of the exchange (the last price, the position, the equity) go through the
executor's optional ``fetch_*`` methods. A limit that needs a read the venue's plugin does
not provide, or whose read fails, **refuses** the opening order (fails closed) and says
why: a configured limit that cannot be checked must not be skipped silently.
``max_price_deviation`` is the one exception: an alert without a price has nothing to
compare, so that limit is skipped for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import logging
import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator

from core.config import PluginOptions
from core.errors import RiskLimitExceeded, WebhookError
from core.hooks.manager import call_hook_safely, hookimpl
from core.pipeline.models import Alert, OrderRequest, OrderResult

log = logging.getLogger(__name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")


def _fmt(value: Any) -> str:
    if isinstance(value, Decimal):
        text = format(value.quantize(Decimal("0.01")) if abs(value) >= 1 else value.normalize(), "f")
        return text
    return str(value)


class Limits(PluginOptions):
    """The limits of one account (``defaults`` or ``accounts.<name>``)."""

    # Largest value of one order, in the quote currency (amount × the alert's or the last price).
    max_order_notional: Decimal | None = Field(None, gt=0)
    # Largest value of the position after the order, in the quote currency.
    max_position_notional: Decimal | None = Field(None, gt=0)
    # Highest leverage an order may set.
    max_leverage: int | None = Field(None, ge=1)
    # Opening orders per account in any 60 seconds, counted across workers and machines.
    max_orders_per_minute: int | None = Field(None, ge=1)
    # Largest difference, in percent, between the alert's price and the exchange's last price.
    max_price_deviation: Decimal | None = Field(None, gt=0)
    # Loss in the equity currency since the start of the UTC day that halts the account until the next
    # UTC day (a manual resume lets it trade again that day).
    max_daily_loss: Decimal | None = Field(None, gt=0)
    # The currency equity is read in, for max_daily_loss.
    equity_currency: str = Field("USDT", pattern=r"^[A-Za-z0-9]{1,16}$")
    # The markets opening orders may trade (unified symbols; * and ? wildcards), e.g. ["BTC/USDT:USDT", "ETH/*"].
    symbols: list[str] | None = None
    # When opening orders may be sent (UTC): {"mon-fri": ["08:00-20:00"], "sat": ["10:00-12:00"]};
    # days not named are closed.
    trading_hours: dict[str, list[str]] | None = None

    @field_validator("trading_hours")
    @classmethod
    def _hours(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is None:
            return None
        for key, ranges in value.items():
            days = key.lower().split("-")
            if not 1 <= len(days) <= 2 or any(d not in DAYS for d in days):
                raise ValueError(f"'{key}': a day (mon … sun) or a range of days (mon-fri)")
            for text in ranges:
                m = _RANGE.match(text)
                if (
                    not m
                    or (int(m[3]) * 60 + int(m[4])) <= (int(m[1]) * 60 + int(m[2]))
                    or (m[3] == "24" and m[4] != "00")
                ):
                    raise ValueError(f"'{text}': a UTC range HH:MM-HH:MM whose end is after its start (up to 24:00)")
        return value

    def open_at(self, now: dt.datetime) -> bool:
        assert self.trading_hours is not None
        day = now.weekday()
        minute = now.hour * 60 + now.minute
        for key, ranges in self.trading_hours.items():
            days = [DAYS.index(d) for d in key.lower().split("-")]
            first, last = days[0], days[-1]
            in_days = first <= day <= last if first <= last else (day >= first or day <= last)
            if not in_days:
                continue
            for text in ranges:
                m = _RANGE.match(text)
                assert m
                if int(m[1]) * 60 + int(m[2]) <= minute < int(m[3]) * 60 + int(m[4]):
                    return True
        return False


class Strategy(PluginOptions):
    """How a strategy's ``position_size`` maps to the account's position."""

    # Account position = the strategy's position_size × ratio.
    ratio: Decimal = Field(Decimal(1), gt=0)
    # What to do when the exchange's position differs: notify, correct (one target order), halt.
    on_mismatch: Literal["notify", "correct", "halt"] = "notify"
    # A difference up to this many contracts (or base units) is no mismatch.
    tolerance: Decimal = Field(Decimal(0), ge=0)


class PositionMismatch(WebhookError):
    """A strategy's expected position differs from the account's (reported via on_error)."""

    status = 409
    code = "position_mismatch"


class Plugin:
    class Options(PluginOptions):
        # Limits of every account.
        defaults: Limits = Field(default_factory=Limits)
        # Per-account overrides of the defaults (only the fields given).
        accounts: dict[str, Limits] = Field(default_factory=dict)
        # Strategies whose alerts carry "strategy" and "position_size".
        strategies: dict[str, Strategy] = Field(default_factory=dict)

    def __init__(self, options: Plugin.Options):
        self.options = options
        self._by_account: dict[str, Limits] = {}
        self._overrides = {name.lower(): limits for name, limits in options.accounts.items()}
        self._strategies = {name.lower(): s for name, s in options.strategies.items()}
        self._sync_tasks: set[asyncio.Task] = set()

    def limits_for(self, account: str) -> Limits:
        key = account.lower()
        limits = self._by_account.get(key)
        if limits is None:
            override = self._overrides.get(key)
            limits = (
                self.options.defaults
                if override is None
                else self.options.defaults.model_copy(
                    update={f: getattr(override, f) for f in override.model_fields_set}
                )
            )
            self._by_account[key] = limits
        return limits

    # ------------------------------------------------------------ limits

    @hookimpl
    async def check_risk(self, alert: Alert, order: OrderRequest, executor, reducing: bool, router) -> None:
        if reducing or order.action != "create":
            return
        limits = self.limits_for(executor.account)
        symbol = order.symbol
        if limits.symbols is not None and not any(
            fnmatch.fnmatchcase(symbol.upper(), p.upper()) for p in limits.symbols
        ):
            raise RiskLimitExceeded(
                "symbols",
                f"refused by symbols: {symbol} is not in the allow-list {', '.join(limits.symbols) or '(empty)'}",
                value=limits.symbols,
                figure=symbol,
            )
        if limits.trading_hours is not None:
            now = dt.datetime.now(dt.UTC)
            if not limits.open_at(now):
                hours = "; ".join(f"{k} {', '.join(v)}" for k, v in limits.trading_hours.items())
                raise RiskLimitExceeded(
                    "trading_hours",
                    f"refused by trading_hours: {now:%a %H:%M} UTC is outside {hours}",
                    value=limits.trading_hours,
                    figure=f"{now:%a %H:%M}",
                )
        if limits.max_leverage is not None and order.leverage is not None and order.leverage > limits.max_leverage:
            raise RiskLimitExceeded(
                "max_leverage",
                f"refused by max_leverage: leverage {order.leverage} is above the limit {limits.max_leverage}",
                value=limits.max_leverage,
                figure=order.leverage,
            )
        reads = _Reads(executor, symbol)
        if limits.max_price_deviation is not None and alert.price is not None:
            last = await reads.need("max_price_deviation", reads.last_price)
            deviation = abs(alert.price - last) / last * 100 if last else Decimal("Infinity")
            if deviation > limits.max_price_deviation:
                raise RiskLimitExceeded(
                    "max_price_deviation",
                    f"refused by max_price_deviation: the alert's price "
                    f"{_fmt(alert.price)} is {_fmt(deviation)}% from the last price {_fmt(last)}, above "
                    f"the limit {_fmt(limits.max_price_deviation)}%",
                    value=limits.max_price_deviation,
                    figure=deviation,
                )
        quote = _quote(symbol)
        if limits.max_order_notional is not None or limits.max_position_notional is not None:
            price = (
                Decimal(order.price)
                if order.price
                else Decimal(order.reference_price)
                if order.reference_price
                else alert.price or await reads.need("max_order_notional", reads.last_price)
            )
            amount = (
                Decimal(order.amount) if order.amount else (Decimal(order.cost) / price if order.cost else Decimal(0))
            )
            notional = Decimal(order.cost) if order.cost and not order.amount else amount * price
            if limits.max_order_notional is not None and notional > limits.max_order_notional:
                raise RiskLimitExceeded(
                    "max_order_notional",
                    f"refused by max_order_notional: the order is worth "
                    f"{_fmt(notional)} {quote}, above the limit {_fmt(limits.max_order_notional)} {quote}",
                    value=limits.max_order_notional,
                    figure=notional,
                )
            if limits.max_position_notional is not None:
                held = (
                    Decimal(order.position_before)
                    if order.position_before is not None
                    else await reads.need("max_position_notional", reads.position)
                )
                after = held + (amount if order.side == "buy" else -amount)
                value = abs(after) * price
                if value > limits.max_position_notional:
                    raise RiskLimitExceeded(
                        "max_position_notional",
                        f"refused by max_position_notional: the position "
                        f"after the order would be {_fmt(after)} {symbol} worth {_fmt(value)} {quote}, "
                        f"above the limit {_fmt(limits.max_position_notional)} {quote}",
                        value=limits.max_position_notional,
                        figure=value,
                    )
        if limits.max_daily_loss is not None:
            await self._check_daily_loss(limits, executor, router)
        if limits.max_orders_per_minute is not None:  # last: only an order about to be sent is counted
            counted, seen = await router.kill_switch.store.count_order(
                f"opm:{executor.account.lower()}", limits.max_orders_per_minute, 60.0
            )
            if not counted:
                raise RiskLimitExceeded(
                    "max_orders_per_minute",
                    f"refused by max_orders_per_minute: {seen} opening "
                    f"orders were sent on account '{executor.account}' in the last 60 s; the limit is "
                    f"{limits.max_orders_per_minute}",
                    value=limits.max_orders_per_minute,
                    figure=seen + 1,
                )

    @hookimpl
    async def describe_risk_limits(self, account: str, router) -> list[dict[str, Any]]:
        """The account's limits in force (defaults merged with its overrides); the use of
        ``max_orders_per_minute`` is read from the risk store, nothing from the exchange."""
        limits = self.limits_for(account)
        override = self._overrides.get(account.lower())
        overridden = override.model_fields_set if override is not None else set()
        described = []
        for name in Limits.model_fields:
            value = getattr(limits, name)
            if value is None or name == "equity_currency":
                continue
            plain = format(value.normalize(), "f") if isinstance(value, Decimal) else str(value)
            if name == "max_daily_loss":
                text = f"{plain} {limits.equity_currency}"
            elif name in ("max_order_notional", "max_position_notional"):
                text = f"{plain} (quote currency)"
            elif name == "max_price_deviation":
                text = f"{plain} %"
            elif name == "symbols":
                text = ", ".join(value) or "(none)"
            elif name == "trading_hours":
                text = "; ".join(f"{k} {', '.join(v)}" for k, v in value.items()) + " UTC"
            else:
                text = plain
            used = None
            if name == "max_orders_per_minute":
                used = (
                    str(await router.kill_switch.store.recent_orders(f"opm:{account.lower()}", 60.0))
                    + " in the last 60 s"
                )
            described.append(
                {"limit": name, "value": text, "source": "account" if name in overridden else "default", "used": used}
            )
        return described

    async def _check_daily_loss(self, limits: Limits, executor, router) -> None:
        currency = limits.equity_currency.upper()
        now = dt.datetime.now(dt.UTC)
        try:
            equity = await executor.fetch_equity(currency)
        except Exception as exc:
            raise _unchecked("max_daily_loss", exc) from None
        start = await router.kill_switch.store.baseline(executor.account.lower(), now.strftime("%Y-%m-%d"), equity)
        loss = start - equity
        if loss >= limits.max_daily_loss:
            # Halt once a day: the halt check before this hook let the order through, so an
            # account halted earlier today has been resumed by hand; that decision stands.
            marker = Decimal(int(now.timestamp() * 1000))
            first = await router.kill_switch.store.baseline(
                executor.account.lower(), now.strftime("%Y-%m-%d#halted"), marker
            )
            if first != marker:
                return
            tomorrow = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
            reason = (
                f"max_daily_loss: equity {_fmt(equity)} {currency} is {_fmt(loss)} below the day's start "
                f"{_fmt(start)}; the limit is {_fmt(limits.max_daily_loss)}"
            )
            await router.kill_switch.halt(
                executor.account, reason=reason, by="max_daily_loss", until=tomorrow.timestamp()
            )
            raise RiskLimitExceeded(
                "max_daily_loss",
                f"refused by {reason}; account '{executor.account}' is halted "
                f"until {tomorrow:%Y-%m-%d %H:%M}Z or a resume",
                value=limits.max_daily_loss,
                figure=loss,
            )

    # ------------------------------------------------------------ strategy position sync

    @hookimpl
    def after_execute(self, alert: Alert, order: OrderRequest, result: OrderResult, state: str, router) -> None:
        # The TradingView transform reads "position_size" as target_position; on an order
        # alert (a side and an amount) that is the strategy's position after the order.
        name, size = alert.raw.get("strategy"), alert.raw.get("position_size", alert.target_position)
        if name is None or size is None or order.action != "create":
            return
        if alert.alert_id and alert.alert_id.endswith("-sync"):
            return  # a correction is not checked again
        executor = router.executors.get(order.account)
        if executor is None:
            return  # an alert carrying its own credentials: no configured account to keep in sync
        task = asyncio.get_running_loop().create_task(
            self._sync(alert, order, executor, str(name), size, router), name=f"position-sync-{alert.alert_id}"
        )
        self._sync_tasks.add(task)
        task.add_done_callback(self._sync_tasks.discard)

    async def _sync(self, alert: Alert, order: OrderRequest, executor, name: str, size: Any, router) -> None:
        strategy = self._strategies.get(name.lower(), Strategy())
        try:
            expected = Decimal(str(size)) * strategy.ratio
            actual = await executor.fetch_position(order.symbol)
        except Exception as exc:
            log.warning("position sync of strategy %s on %s: cannot compare: %s", name, executor.account, exc)
            return
        if abs(actual - expected) <= strategy.tolerance:
            return
        message = (
            f"strategy '{name}' expects {_fmt(expected)} {order.symbol} on account '{executor.account}' "
            f"(position_size {size} × ratio {_fmt(strategy.ratio)}) but the exchange holds {_fmt(actual)}"
        )
        log.warning("position mismatch: %s; on_mismatch=%s", message, strategy.on_mismatch)
        try:
            if strategy.on_mismatch == "halt":
                await router.kill_switch.halt(
                    executor.account, reason=f"position mismatch: {message}", by=f"strategy:{name}"
                )
                message += f"; account '{executor.account}' halted"
            elif strategy.on_mismatch == "correct":
                correction = Alert(
                    alert_id=f"{(alert.alert_id or '')[:123]}-sync",
                    action="target",
                    target_position=expected,
                    symbol=order.symbol,
                    account=executor.account,
                    raw={"strategy": name},
                )
                row = await router.kill_switch.place(correction, executor, principal=f"strategy:{name}")
                message += f"; correction {correction.alert_id}: {row.get('state')}"
        except Exception as exc:
            log.exception("position sync of strategy %s failed", name)
            message += f"; {strategy.on_mismatch} failed: {exc}"
        await call_hook_safely(
            router.hook.on_error,
            alert=alert,
            order=order,
            error=PositionMismatch(message),
            state="mismatch",
            router=router,
        )

    @hookimpl
    async def router_shutdown(self, router) -> None:
        tasks = list(self._sync_tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=5)


class _Reads:
    """The exchange reads of one check, each made at most once."""

    def __init__(self, executor, symbol: str):
        self.executor = executor
        self.symbol = symbol
        self._cache: dict[str, Decimal] = {}

    async def last_price(self) -> Decimal:
        return await self.executor.fetch_last_price(self.symbol)

    async def position(self) -> Decimal:
        return await self.executor.fetch_position(self.symbol)

    async def need(self, limit: str, read) -> Decimal:
        key = read.__name__
        if key not in self._cache:
            try:
                self._cache[key] = await read()
            except Exception as exc:
                raise _unchecked(limit, exc) from None
        return self._cache[key]


def _unchecked(limit: str, exc: BaseException) -> RiskLimitExceeded:
    reason = str(exc)[:200] or type(exc).__name__
    return RiskLimitExceeded(
        limit,
        f"refused by {limit}: the limit could not be checked ({reason}); opening orders are refused until it can be",
        value=None,
        figure=None,
    )


def _quote(symbol: str) -> str:
    return symbol.split("/")[1].split(":")[0] if "/" in symbol else ""
