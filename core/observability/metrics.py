"""Prometheus metrics at ``GET /metrics``: a service of core's, which the app owns.

``core.web.app`` builds a ``Metrics`` at startup (unless ``router.disabled`` names
``metrics``), serves ``GET /metrics`` from it and counts every webhook answer into it; the
service learns the alerts' outcomes through the pipeline's hooks, as any observer does. Its
options are the ``metrics`` section of plugins.yaml (``MetricsOptions``).

What is measured (all names carry the ``ccxt_webhook_`` prefix):

* ``webhook_requests_total{status}`` — every answer of ``POST /webhook`` by HTTP status,
  refused requests (401, 422, 429, ...) included; counted by ``core.web.app``.
* ``alerts_total{outcome}`` — journaled alerts by how they ended (filled, submitted,
  reconciled, rejected, failed, unknown, expired), from ``after_execute`` / ``on_error``.
  A duplicate is answered but is not a new alert.
* ``order_latency_seconds{exchange,route}`` — from handing the order to the exchange
  (``execute_order``) to the exchange's answer: a booking or a refusal.
* ``exchange_errors_total{exchange,type}`` — order errors (``core.errors``) that ended an
  alert, by the venue client's exception class (ccxt's InsufficientFunds, ...).
* ``orders_in_flight`` — orders sent whose fate is not settled yet (answer or reconciliation).
* ``journal_backlog{state}`` — alerts in the journal still received / submitting / unknown,
  read from the journal (shared by all workers) when scraped.

Multi-worker safe: hypercorn ``--workers N`` runs N processes; each writes its samples to
memory-mapped files in one directory (prometheus_client's multiprocess mode) and a scrape,
whichever worker serves it, merges them all. The directory is ``metrics.directory`` in
plugins.yaml, else ``$PROMETHEUS_MULTIPROC_DIR``, else ``DATA_DIR/metrics``. hypercorn's
master never runs the app, so each worker removes, when it starts, the files of processes
that are gone (a previous run) and never a running sibling's.

Recorded in memory, written in batches: the pipeline's recording is a dict update; a
worker writes what it counted to its files at most ``metrics.flush_interval`` seconds later
(default 1), and at once before it serves a scrape and as it stops. So a scrape served by
one worker includes all of its own counts and its siblings' up to that interval ago; a
worker killed outright (``kill -9``) loses at most that interval of its counts.

Recording never raises into the pipeline: a metrics failure is logged, the order goes on.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from pydantic import Field

from core.config import PluginOptions
from core.errors import OrderError
from core.hooks.manager import hookimpl, observes_only
from core.observability.redaction import REDACTOR
from core.pipeline.events import EVENT_STATES, AlertEvent, error_type, event_from_error
from core.pipeline.models import Alert, OrderRequest, OrderResult
from core.pipeline.outcomes import AlertExpired, OutcomeStillUnknown
from core.store.sqlite.database import private_dir
from core.trading.execution import Executor

if TYPE_CHECKING:
    from core.pipeline.router import Router
    from core.store.protocols import Journal

log = logging.getLogger(__name__)

NAMESPACE = "ccxt_webhook"
BACKLOG_STATES = ("received", "submitting", "unknown")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_TRACKED_ORDERS = 10_000
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The name ``router.disabled`` turns the service off by, and its section in plugins.yaml.
SERVICE_NAME = "metrics"


# This process's id, for prometheus_client's sample files: read once (and again in a forked
# child) instead of a getpid() system call on every sample update.
_pid = os.getpid()


def _process_id() -> int:
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class MetricsRecorder:
    """One worker's metrics, in prometheus_client's multiprocess mode in ``directory``."""

    def __init__(self, directory: Path, flush_interval: float = 1.0):
        self.directory = directory
        self.flush_interval = flush_interval
        private_dir(directory)  # 0700: the samples name accounts and exchanges
        for path in _process_files(directory, lambda pid: pid == os.getpid() or not _alive(pid)):
            path.unlink(missing_ok=True)  # left by a process that is gone: a previous run
        # prometheus_client picks its value class when imported, from this variable; the
        # router reads its settings at startup, so it is set (and the class made) here.
        self._previous = (os.environ.get(MULTIPROC_ENV), values.ValueClass)
        os.environ[MULTIPROC_ENV] = str(directory)
        self._value_class = values.MultiProcessValue(process_identifier=_process_id)  # type: ignore[no-untyped-call]
        values.ValueClass = self._value_class
        self._sent: OrderedDict[str, tuple[float, str]] = OrderedDict()  # client order id → (start, route)
        self._failed_once = False
        self.webhook_requests = Counter(
            "webhook_requests",
            "Answers of POST /webhook by HTTP status.",
            ["status"],
            namespace=NAMESPACE,
            registry=None,
        )
        self.alerts = Counter(
            "alerts",
            "Journaled alerts by outcome (the alert's final state).",
            ["outcome"],
            namespace=NAMESPACE,
            registry=None,
        )
        self.order_latency = Histogram(
            "order_latency_seconds",
            "Seconds from sending an order to the exchange's answer.",
            ["exchange", "route"],
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.exchange_errors = Counter(
            "exchange_errors",
            "Exchange errors that ended an alert, by exception class.",
            ["exchange", "type"],
            namespace=NAMESPACE,
            registry=None,
        )
        self.orders_in_flight = Gauge(
            "orders_in_flight",
            "Orders sent whose outcome is not settled yet.",
            namespace=NAMESPACE,
            multiprocess_mode="livesum",
            registry=None,
        )
        # Each label set's child, looked up once: labels() converts, checks and locks on every call.
        self._children: dict[tuple[object, ...], Any] = {}
        # The samples ``flush`` updates (memory-mapped, shared with the other workers): each
        # label value's child, looked up once.
        self._answered: dict[int, Any] = {}
        self._finished: dict[str, Any] = {}
        self._latency: dict[tuple[str, str], Any] = {}
        for outcome in EVENT_STATES:
            self._finished[outcome] = self._child(self.alerts, outcome)  # exported as 0 until the first one
        # What was counted and not yet written to the files (``flush``): per label value.
        self._answers: dict[int, int] = {}
        self._outcomes: dict[str, int] = {}
        self._latencies: dict[tuple[str, str], list[float]] = {}
        self._in_flight = 0
        self._flush_timer: asyncio.TimerHandle | None = None

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def close(self) -> None:
        self.flush()
        close = getattr(self._value_class, "close_all_files", None)  # not in every prometheus-client release
        if close is not None:
            close()
        previous_dir, previous_class = self._previous
        if values.ValueClass is self._value_class:
            values.ValueClass = previous_class
            if previous_dir is None:
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = previous_dir

    # ------------------------------------------------------------ recording

    def _failed(self, what: str, exc: Exception) -> None:
        """A recording failed: logged once, never raised."""
        if not self._failed_once:  # once: a broken metrics directory must not flood the log
            self._failed_once = True
            log.error("recording metrics failed (%s); the pipeline is not affected", what, exc_info=exc)

    def webhook_answered(self, status: int) -> None:
        answers = self._answers
        answers[status] = answers.get(status, 0) + 1
        self._written_soon()

    def order_sent(self, order: OrderRequest, executor: Executor) -> None:
        try:
            coid = order.client_order_id
            sent = self._sent
            if coid not in sent:
                self._in_flight += 1  # a retry of the same order is not another one
            sent[coid] = (time.perf_counter(), executor.route)
            sent.move_to_end(coid)
            while len(sent) > MAX_TRACKED_ORDERS:
                sent.popitem(last=False)
                self._in_flight -= 1
            self._written_soon()
        except Exception as exc:
            self._failed("order sent", exc)

    def alert_finished(self, event: AlertEvent, error: BaseException | None = None) -> None:
        """An alert ended as ``event`` says (``error``: the exception that ended it)."""
        self.order_finished(event.state, event.exchange, event.client_order_id, event.route, error)

    def order_finished(
        self,
        state: str,
        exchange: str | None,
        client_order_id: str | None,
        route: str | None,
        error: BaseException | None = None,
    ) -> None:
        """An alert ended in ``state`` (``alert_finished`` without building the event): its
        order (``client_order_id``, None without one) on ``exchange`` through ``route``."""
        try:
            outcomes = self._outcomes
            outcomes[state] = outcomes.get(state, 0) + 1
            exchange = exchange or "unknown"
            sent = self._sent.pop(client_order_id, None) if client_order_id else None
            if sent is not None:
                self._in_flight -= 1
                if _exchange_answered(state, error):
                    started, sent_route = sent
                    key = (exchange, route or sent_route)
                    latencies = self._latencies.get(key)
                    if latencies is None:
                        latencies = self._latencies[key] = []
                    latencies.append(time.perf_counter() - started)
            if isinstance(error, OrderError):  # rare: written at once
                self._child(self.exchange_errors, exchange, error_type(error)).inc()
            self._written_soon()
        except Exception as exc:
            self._failed("alert finished", exc)

    # ------------------------------------------------------------ writing

    def _written_soon(self) -> None:
        """Have ``flush`` run ``flush_interval`` seconds from now (once per interval, not per
        count); with no event loop running (a script, a test), at once."""
        if self._flush_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_timer = loop.call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        """Write what was counted since the last flush to this worker's sample files: one
        update per label value, whatever the number of alerts. Never raises."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        answers, self._answers = self._answers, {}
        outcomes, self._outcomes = self._outcomes, {}
        latencies, self._latencies = self._latencies, {}
        in_flight, self._in_flight = self._in_flight, 0
        # Each label value on its own: one that fails (logged once) does not keep the others out.
        for status, count in answers.items():
            self._write(self._answered, status, self.webhook_requests, count)
        for state, count in outcomes.items():
            self._write(self._finished, state, self.alerts, count)
        if in_flight:
            self._write(None, None, self.orders_in_flight, in_flight)
        for key, seconds in latencies.items():
            self._write(self._latency, key, self.order_latency, seconds)

    def _write(self, children: dict[Any, Any] | None, key: Any, metric: Any, amount: float | list[float]) -> None:
        """Add ``amount`` (a count, or a histogram's amounts) to ``metric``'s sample for the
        label value(s) ``key``, its child looked up once in ``children`` (None: no labels)."""
        try:
            if children is None:
                child = metric
            else:
                child = children.get(key)
                if child is None:
                    labels = key if isinstance(key, tuple) else (str(key),)
                    child = children[key] = self._child(metric, *labels)
            if isinstance(amount, list):
                observe_all(child, amount)
            else:
                child.inc(amount)
        except Exception as exc:
            self._failed("writing the samples", exc)

    # ------------------------------------------------------------ scraping

    async def exposition(
        self, journal: Journal | None, accept: str = "", halted: dict[str, int] | None = None
    ) -> tuple[bytes, str]:
        """Every worker's samples plus the journal's backlog, in the format ``accept``
        asks for (Prometheus text by default, OpenMetrics on request); and its media type."""
        self.flush()  # this worker's own counts, up to now
        backlog = None
        if journal is not None:
            try:
                backlog = await journal_backlog(journal)
            except Exception as exc:
                log.warning("metrics: journal backlog unavailable: %s", exc)
        encoder, content_type = choose_encoder(accept)
        body = await asyncio.to_thread(self._generate, backlog, encoder, halted)
        return body, content_type

    def _generate(
        self,
        backlog: dict[str, int] | None,
        encoder: Callable[[CollectorRegistry], bytes],
        halted: dict[str, int] | None = None,
    ) -> bytes:
        for path in _process_files(self.directory, lambda pid: not _alive(pid)):
            if path.name.startswith("gauge_live"):
                # A dead worker's orders are not in flight.
                mark_process_dead(_pid_of(path), str(self.directory))  # type: ignore[no-untyped-call]
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.directory))  # type: ignore[no-untyped-call]
        if backlog is not None:
            registry.register(_BacklogCollector(backlog))
        if halted is not None:
            registry.register(_HaltCollector(halted))
        return bytes(encoder(registry))


def observe_all(histogram: Any, amounts: list[float]) -> None:
    """``histogram.observe(a)`` for each of ``amounts`` (one label set's child), as one update
    of its sum and one of each bucket that gets any: a bucket file write per bucket, not two
    per amount. Through the child's own sum and buckets when it has prometheus_client's
    layout (``_sum``, ``_upper_bounds``, one ``_buckets`` value per bound; a test compares
    the result with ``observe``'s), else one ``observe`` per amount."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect.bisect_left(bounds, amount)] += 1  # the first bound >= amount (the last is +Inf)
    total.inc(math.fsum(amounts))
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)


def _exchange_answered(state: str, error: BaseException | None) -> bool:
    """Whether the exchange answered the order (booked or refused it): what latency means."""
    if error is None:
        return state != "reconciled"  # found by a lookup later: no answer to time
    if isinstance(error, OrderError):
        return not (error.may_be_booked or error.retry)  # refused by the exchange, not lost or never sent
    return not isinstance(error, (AlertExpired, OutcomeStillUnknown))


class _BacklogCollector:
    def __init__(self, counts: dict[str, int]):
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{NAMESPACE}_journal_backlog", "Alerts in the journal not finished yet, by state.", labels=["state"]
        )
        for state in BACKLOG_STATES:
            family.add_metric([state], self.counts.get(state, 0))
        yield family


class _HaltCollector:
    def __init__(self, halted: dict[str, int]):
        self.halted = halted

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{NAMESPACE}_account_halted",
            "1 while the kill switch halts the account's opening orders.",
            labels=["account"],
        )
        for account, value in sorted(self.halted.items()):
            family.add_metric([account], value)
        yield family


async def account_halts(router: Router) -> dict[str, int] | None:
    """Account → 1 when halted (by its own halt or one of every account), else 0."""
    try:
        halts = await router.kill_switch.halts()
    except Exception as exc:
        log.warning("metrics: halts unavailable: %s", exc)
        return None
    return {e.account: int(e.account.lower() in halts or "*" in halts) for e in router.executors}


async def journal_backlog(journal: Journal) -> dict[str, int]:
    """Alerts per unfinished state, from the journal's own statistics (any backend)."""
    by_state = (await journal.stats()).get("alerts", {})
    return {state: int(by_state.get(state, 0)) for state in BACKLOG_STATES}


def _pid_of(path: Path) -> int | None:
    tail = path.stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _process_files(directory: Path, which: Callable[[int], bool]) -> list[Path]:
    """The sample files (``<type>_<pid>.db``) of the processes ``which(pid)`` selects."""
    found = []
    for path in directory.glob("*.db"):
        pid = _pid_of(path)
        if pid is not None and which(pid):
            found.append(path)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process: not ours to judge
    return True


def metrics_directory(configured: str, router: Router) -> Path:
    """``metrics.directory``, else ``$PROMETHEUS_MULTIPROC_DIR``, else ``DATA_DIR/metrics``."""
    chosen = configured or router.settings.environ.get(MULTIPROC_ENV, "")
    path = Path(chosen) if chosen else router.data_dir / "metrics"
    return path if path.is_absolute() else Path.cwd() / path


class MetricsOptions(PluginOptions):
    """The ``metrics`` section of plugins.yaml (a section of core's, like ``router`` and ``state``)."""

    # A bearer token GET /metrics accepts besides METRICS_TOKEN and a signed request line.
    bearer_token: str = Field("", repr=False)
    # Open GET /metrics to anyone (a scraper on a private network); default: credentials.
    public: bool = False
    # The directory the workers share their samples in (see the module docstring).
    directory: str = ""
    # Seconds a worker keeps its counts in memory before writing them to that directory
    # (a scrape it serves itself always includes them).
    flush_interval: float = Field(1.0, gt=0, le=60)


def metrics_options(router: Router) -> MetricsOptions | None:
    """The validated ``metrics`` section, or None when ``router.disabled`` names ``metrics``.
    A mistake in the section is a ``ConfigError`` of one line (``check-config`` runs this too)."""
    if SERVICE_NAME in router.options.disabled:
        return None
    options = router.plugins_file.validate(SERVICE_NAME, MetricsOptions)
    if not isinstance(options, MetricsOptions):  # validate() returns the model it was given
        raise TypeError(f"metrics options validated as {type(options).__name__}")
    return options


class Metrics:
    """Core's metrics service: owned by the app (``core.web.app`` builds it at startup,
    serves ``GET /metrics`` from it and counts every webhook answer into it). It learns
    the alerts' outcomes the way any observer does, through the pipeline's hooks
    (``execute_order`` observes only, ``after_execute``, ``on_error``): the app registers it
    with the plugin manager under the name ``metrics`` (source ``core``)."""

    def __init__(self, options: MetricsOptions, directory: Path):
        self.options = options
        self.directory = directory
        self.recorder: MetricsRecorder | None = None
        REDACTOR.add(options.bearer_token, static=True)

    @classmethod
    def for_router(cls, router: Router) -> Metrics | None:
        """The service configured for ``router`` (not started), or None when it is disabled."""
        options = metrics_options(router)
        if options is None:
            return None
        return cls(options, metrics_directory(options.directory, router))

    def start(self) -> None:
        """Open this worker's sample files (dropping those of processes that are gone)."""
        if self.recorder is None:
            self.recorder = MetricsRecorder(self.directory, self.options.flush_interval)

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    async def exposition(self, router: Router, accept: str = "") -> tuple[bytes, str]:
        """The scrape's body and media type (``MetricsRecorder.exposition``)."""
        if self.recorder is None:
            raise RuntimeError("the metrics service is not started")
        return await self.recorder.exposition(router.journal, accept, await account_halts(router))

    def webhook_answered(self, status: int) -> None:
        if self.recorder is not None:
            self.recorder.webhook_answered(status)

    # ------------------------------------------------------------ the pipeline's outcomes, through the hooks

    @hookimpl(tryfirst=True)
    @observes_only
    def execute_order(self, order: OrderRequest, executor: Executor) -> None:
        """Only notes when the order left (for its latency); never claims it."""
        if self.recorder is not None:
            self.recorder.order_sent(order, executor)

    @hookimpl
    def after_execute(self, alert: Alert, order: OrderRequest, result: OrderResult, state: str) -> None:
        if self.recorder is not None:  # what event_from_result would report, without building the event
            self.recorder.order_finished(state, result.exchange, result.client_order_id, result.route)

    @hookimpl
    def on_error(
        self, alert: Alert, order: OrderRequest | None, error: BaseException, state: str, router: Router
    ) -> None:
        if self.recorder is not None:
            self.recorder.alert_finished(event_from_error(alert, order, error, state, router), error)
