"""GET /metrics: a known mix of alerts is counted exactly, the exposition parses with
prometheus_client's own parser, gauges follow orders in flight and the journal backlog,
stale worker files are dropped, and several hypercorn workers add up."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from core.errors import OrderRejected, OutcomeUnknown
from core.observability.metrics import LATENCY_BUCKETS, MetricsRecorder, observe_all
from core.pipeline.models import OrderRequest
from tests.scripted_executor import ScriptedExecutor, ScriptedPlugin
from tests.support import MONITOR, SECRET, alert_body, signed_headers
from tests.unit.core.pipeline.test_engine import FAST

P = "ccxt_webhook_"


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample as {(name, labels): value}, through prometheus_client's parser."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((P + name, frozenset(labels.items())), 0.0)


async def scrape(client, **headers: str) -> dict:
    response = await client.get("/metrics", headers=headers or MONITOR)
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(await response.get_data(as_text=True))


async def post(client, **fields) -> int:
    body = alert_body(account="script", **fields)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    return response.status_code


@pytest.fixture
def scripted(write_plugins_yaml) -> ScriptedExecutor:
    write_plugins_yaml(FAST.format(budget=1.0, resubmit_after=0.2))
    return ScriptedExecutor()


async def test_a_known_mix_of_alerts_is_counted_exactly(app_client, scripted):
    scripted.script = [
        "ok",
        "ok",
        OrderRejected("scripted: balance too low"),
        "ok",
        OrderRejected("scripted: balance too low"),
    ]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, _app):
        statuses = [await post(client, id=f"mix-{i}") for i in range(5)]  # filled, filled, rejected, filled, rejected
        statuses.append(await post(client, id="mix-0"))  # a resend: answered, not a new alert
        statuses.append(await post(client, id="mix-bad", amount="lots"))  # not an alert: 422 before the journal
        for _ in range(2):  # wrong signature: 401
            body = alert_body(account="script", id="mix-forged")
            statuses.append(
                (
                    await client.post("/webhook", data=body, headers=signed_headers(body, secret="wrong-secret-123"))
                ).status_code
            )
        samples = await scrape(client)
    assert statuses == [200, 200, 422, 200, 422, 200, 422, 401, 401]
    assert value(samples, "webhook_requests_total", status="200") == 4
    assert value(samples, "webhook_requests_total", status="422") == 3
    assert value(samples, "webhook_requests_total", status="401") == 2
    assert sum(v for (name, _), v in samples.items() if name == P + "webhook_requests_total") == 9
    assert value(samples, "alerts_total", outcome="filled") == 3
    assert value(samples, "alerts_total", outcome="rejected") == 2
    for outcome in ("submitted", "reconciled", "failed", "unknown", "expired"):
        assert (P + "alerts_total", frozenset({("outcome", outcome)})) in samples  # exported, at 0
        assert value(samples, "alerts_total", outcome=outcome) == 0
    # Five orders reached the exchange and got an answer (three fills, two refusals).
    assert value(samples, "order_latency_seconds_count", exchange="scripted", route="rest") == 5
    assert value(samples, "order_latency_seconds_bucket", exchange="scripted", route="rest", le="+Inf") == 5
    assert value(samples, "exchange_errors_total", exchange="scripted", type="OrderRejected") == 2
    assert value(samples, "orders_in_flight") == 0
    for state in ("received", "submitting", "unknown"):
        assert (P + "journal_backlog", frozenset({("state", state)})) in samples
        assert value(samples, "journal_backlog", state=state) == 0


async def test_orders_in_flight_and_backlog_follow_a_hanging_order(app_client, scripted, write_plugins_yaml):
    write_plugins_yaml(FAST.format(budget=0.2, resubmit_after=0.2))
    release = asyncio.Event()
    scripted.script = [("wait", release)]
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        assert await post(client, id="hang-1") == 202  # past the answer budget, still executing
        during = await scrape(client)
        release.set()
        await app.extensions["router"].engine.inflight["hang-1"]
        after = await scrape(client)
    assert value(during, "orders_in_flight") == 1
    # Journaled "received" until its outcome: nothing is written between its admission and the answer.
    assert value(during, "journal_backlog", state="received") == 1
    assert value(during, "alerts_total", outcome="filled") == 0
    assert value(during, "webhook_requests_total", status="202") == 1
    assert value(after, "orders_in_flight") == 0
    assert value(after, "journal_backlog", state="received") == 0
    assert value(after, "alerts_total", outcome="filled") == 1
    assert value(after, "order_latency_seconds_count", exchange="scripted", route="rest") == 1


async def test_a_reconciled_order_counts_once_and_has_no_latency(app_client, scripted):
    scripted.script = [("book_then_raise", OutcomeUnknown("scripted: no answer"))]  # booked, answer lost
    async with app_client(extra_plugins=[("scripted", ScriptedPlugin(scripted))]) as (client, app):
        body = alert_body(account="script", id="lost-answer-1")
        response = await client.post("/webhook", data=body, headers=signed_headers(body))
        task = app.extensions["router"].engine.inflight.get("lost-answer-1")
        if task is not None:  # answered 202 before the lookup found it
            await task
        samples = await scrape(client)
    assert response.status_code in (200, 202)
    assert value(samples, "alerts_total", outcome="reconciled") == 1
    assert sum(v for (name, _), v in samples.items() if name == P + "alerts_total") == 1
    assert (
        value(samples, "order_latency_seconds_count", exchange="scripted", route="rest") == 0
    )  # the answer never came
    assert (
        value(samples, "exchange_errors_total", exchange="scripted", type="RequestTimeout") == 0
    )  # it did not end the alert
    assert value(samples, "orders_in_flight") == 0


async def test_paper_alerts_are_counted_by_exchange_and_route(app_client):
    async with app_client() as (client, _app):
        body = alert_body(id="paper-1")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        samples = await scrape(client)
    assert value(samples, "alerts_total", outcome="filled") == 1
    assert value(samples, "order_latency_seconds_count", exchange="paper", route="paper") == 1


async def test_a_bearer_token_guards_the_metrics_when_configured(app_client, write_plugins_yaml, all_log_text):
    token = "scrape-token-0123456789"
    write_plugins_yaml(f"metrics:\n  bearer_token: {token}\n")
    async with app_client() as (client, _app):
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer nope-nope-nope"})).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": f"Basic {token}"})).status_code == 401
        samples = await scrape(client, Authorization=f"Bearer {token}")
    assert (P + "journal_backlog", frozenset({("state", "received")})) in samples
    assert token not in all_log_text()


async def test_metrics_can_be_switched_off(app_client, write_plugins_yaml):
    write_plugins_yaml("router:\n  disabled: [metrics]\n")
    async with app_client() as (client, _app):
        assert (await client.get("/metrics")).status_code == 404
        body = alert_body(id="off-1")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200


async def test_metrics_are_a_core_service_the_app_owns(app_client):
    """Core builds the service, serves /metrics itself and lists it as ``core``; the module
    knows nothing of the web app (it used to import core.web.app for its view)."""
    import ast
    import inspect

    import core.observability.metrics as module

    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(inspect.getsource(module)))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert not {name for name in imported if name and name.startswith(("core.web", "plugins"))}, imported
    async with app_client() as (client, app):
        health = await (await client.get("/", headers=MONITOR)).get_json()
        service = app.extensions["metrics"]
        assert isinstance(service, module.Metrics)
        assert app.extensions["router"].plugins.get("metrics") is service  # observes through the hooks
        rule = next(r for r in app.url_map.iter_rules() if r.rule == "/metrics")
        assert rule.endpoint == "serve_metrics"  # the app's own route, not a plugin's
    assert {"name": "metrics", "source": "core"} in health["plugins"]


@pytest.mark.parametrize("disabled", [False, True])
async def test_a_mistake_in_the_metrics_section_stops_startup_and_check_config(
    make_settings, write_plugins_yaml, disabled
):
    from core.checks.preflight import check_config
    from core.errors import ConfigError
    from core.web.app import create_app

    path = write_plugins_yaml("metrics:\n  publik: true\n" + ("router:\n  disabled: [metrics]\n" if disabled else ""))
    settings = make_settings()
    if disabled:  # switched off: its section is not read
        assert await check_config(settings)
        return
    with pytest.raises(ConfigError) as info:
        await check_config(settings)
    assert str(info.value) == f"{path}: plugin 'metrics': field 'publik': no such option"
    with pytest.raises(Exception, match="plugin 'metrics': field 'publik'"):
        async with create_app(settings).test_app():
            pass


async def test_files_of_processes_that_are_gone_are_dropped_at_startup(app_client, data_dir):
    async with app_client() as (client, _app):
        body = alert_body(id="old-run-1")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
    folder = data_dir / "metrics"
    ours = sorted(folder.glob("counter_*.db"))
    assert len(ours) == 1
    # The same samples as left by a process that has exited, and by one still running
    # (pid 1 never exits: it stands for a sibling worker).
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    shutil.copy(ours[0], folder / f"counter_{gone.pid}.db")
    ours[0].rename(folder / "counter_1.db")
    async with app_client() as (client, _app):
        assert not (folder / f"counter_{gone.pid}.db").exists()
        body = alert_body(id="new-run-1")
        assert (await client.post("/webhook", data=body, headers=signed_headers(body))).status_code == 200
        samples = await scrape(client)
    # This run's alert plus the running sibling's; the exited process's copy is gone.
    assert value(samples, "alerts_total", outcome="filled") == 2


# ---------------------------------------------------------------- several workers


def per_worker_webhook_answers(folder: Path) -> dict[str, float]:
    """Each worker's own count of webhook answers, read from its sample file."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)]):
            if metric.name == P + "webhook_requests":
                counts[path.stem] = sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return counts


def written_answers(folder: Path, expected: int, deadline: float) -> dict[str, float]:
    """Each worker's count of webhook answers once their files add up to ``expected``: a
    worker writes its counts by itself within ``metrics.flush_interval`` (bounded wait)."""
    while True:
        counts = per_worker_webhook_answers(folder)
        if sum(counts.values()) == expected:
            return counts
        assert time.monotonic() < deadline, f"the workers' files hold {counts}, not {expected} answers in all"
        time.sleep(0.02)  # polling the files for a condition, bounded by the deadline


@pytest.mark.slow
def test_metrics_add_up_over_several_workers(server_factory, data_dir):
    (data_dir / "plugins.yaml").write_text("router:\n  journal_synchronous: NORMAL\nmetrics:\n  flush_interval: 0.1\n")
    server = server_factory(workers=2)
    folder = data_dir / "metrics"
    sent = 0

    async def burst(count: int) -> list[int]:
        # No keep-alive: every alert opens a connection, which either worker may accept.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:

            async def one(i: int) -> int:
                body = alert_body(id=f"mw-{sent + i}", amount="0.0001")
                return (await client.post("/webhook", content=body, headers=signed_headers(body))).status_code

            return await asyncio.gather(*(one(i) for i in range(count)))

    deadline = time.monotonic() + 60
    while True:  # until both workers have answered some alerts (bounded)
        statuses = asyncio.run(burst(20))
        assert statuses == [200] * 20, statuses
        sent += 20
        served = written_answers(folder, sent, deadline)
        if len([c for c in served.values() if c > 0]) >= 2:
            break
        assert time.monotonic() < deadline, f"one worker served everything: {served}"
    forged = alert_body(id="mw-forged")
    assert (
        httpx.post(
            server.url + "/webhook", content=forged, headers=signed_headers(forged, secret="not-" + SECRET)
        ).status_code
        == 401
    )

    written_answers(folder, sent + 1, deadline)  # no scrape needed: each worker writes by itself
    for _ in range(4):  # whichever worker serves the scrape, it reports every worker's alerts
        with httpx.Client(base_url=server.url, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            response = client.get("/metrics", headers=MONITOR)
        assert response.status_code == 200
        samples = parse(response.text)
        assert value(samples, "alerts_total", outcome="filled") == sent
        assert value(samples, "webhook_requests_total", status="200") == sent
        assert value(samples, "webhook_requests_total", status="401") == 1
        assert value(samples, "order_latency_seconds_count", exchange="paper", route="paper") == sent
        assert value(samples, "orders_in_flight") == 0
        assert value(samples, "journal_backlog", state="received") == 0
    assert json.loads(httpx.get(server.url + "/").text)["status"] == "ok"


# ---------------------------------------------------------------- recording in memory


def file_samples(folder: Path) -> dict:
    """What this process's sample files hold now (not what it holds in memory)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return parse(generate_latest(registry).decode())


async def test_counts_are_written_to_the_files_by_a_timer_not_per_alert(tmp_path):
    recorder = MetricsRecorder(tmp_path / "metrics", flush_interval=0.5)
    try:
        loop = asyncio.get_running_loop()
        before = loop.time()
        for _ in range(3):
            recorder.webhook_answered(200)
            recorder.order_finished("filled", "paper", None, "paper")
        recorder.webhook_answered(422)
        # Nothing written yet: one timer, due flush_interval from the first count.
        assert value(file_samples(tmp_path / "metrics"), "webhook_requests_total", status="200") == 0
        timer = recorder._flush_timer
        assert timer is not None and before + 0.5 <= timer.when() <= loop.time() + 0.5
        written = loop.create_future()
        # Due just after the timer (timers due at the same time run in no set order).
        loop.call_at(timer.when() + 0.01, lambda: written.set_result(None))
        await written
        assert recorder._flush_timer is None
        samples = file_samples(tmp_path / "metrics")
        assert value(samples, "webhook_requests_total", status="200") == 3
        assert value(samples, "webhook_requests_total", status="422") == 1
        assert value(samples, "alerts_total", outcome="filled") == 3
        recorder.webhook_answered(200)  # a new interval, a new timer
        assert recorder._flush_timer is not None and recorder._flush_timer is not timer
    finally:
        recorder.close()  # writes what is still in memory
    assert value(file_samples(tmp_path / "metrics"), "webhook_requests_total", status="200") == 4


async def test_a_scrape_includes_the_counts_not_yet_written(tmp_path):
    recorder = MetricsRecorder(tmp_path / "metrics", flush_interval=60)
    try:
        order = OrderRequest(
            account="a",
            exchange="paper",
            symbol="BTC/USDT",
            market_type="spot",
            side="buy",
            order_type="market",
            amount="1",
            client_order_id="c-1",
        )
        recorder.order_sent(order, PaperLike())
        recorder.webhook_answered(200)
        body, _media_type = await recorder.exposition(None)
        samples = parse(body.decode())
        assert value(samples, "webhook_requests_total", status="200") == 1
        assert value(samples, "orders_in_flight") == 1
        recorder.order_finished("filled", "paper", "c-1", "paper")
        samples = parse((await recorder.exposition(None))[0].decode())
        assert value(samples, "orders_in_flight") == 0
        assert value(samples, "order_latency_seconds_count", exchange="paper", route="paper") == 1
    finally:
        recorder.close()


class PaperLike:
    route = "paper"


def test_many_latencies_written_at_once_equal_one_observe_each():
    amounts = [0.0, 0.004, 0.005, 0.0050001, 0.01, 0.3, 2.5, 29.0, 30.0, 31.0, 1e9, 0.02, 0.02]
    by_one = Histogram("one", "h", ["x"], buckets=LATENCY_BUCKETS, registry=None).labels("y")
    at_once = Histogram("many", "h", ["x"], buckets=LATENCY_BUCKETS, registry=None).labels("y")
    for amount in amounts:
        by_one.observe(amount)
    observe_all(at_once, amounts)

    def samples(child) -> list[tuple[str, dict, float]]:
        return [(s.name, s.labels, s.value) for s in child._samples()]

    assert [(n, lbl) for n, lbl, _ in samples(at_once)] == [(n, lbl) for n, lbl, _ in samples(by_one)]
    for (_, _, got), (_, _, want) in zip(samples(at_once), samples(by_one), strict=True):
        assert got == pytest.approx(want)

    class Opaque:  # a histogram without prometheus_client's layout: one observe per amount
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, amount: float) -> None:
            self.seen.append(amount)

    opaque = Opaque()
    observe_all(opaque, amounts)
    assert opaque.seen == amounts


def test_a_failing_recording_is_logged_once_and_never_raised(tmp_path, caplog):
    recorder = MetricsRecorder(tmp_path / "metrics")
    try:
        recorder.webhook_answered(200)
        recorder.order_finished("filled", "paper", None, "paper")

        class Broken:
            def inc(self, amount: float) -> None:
                raise OSError("disk gone")

        recorder._answered[200] = recorder._finished["filled"] = Broken()
        with caplog.at_level("ERROR", logger="core.observability.metrics"):
            recorder.webhook_answered(200)
            recorder.order_finished("filled", "paper", None, "paper")
            recorder.webhook_answered(200)
        failures = [r for r in caplog.records if "recording metrics failed" in r.getMessage()]
        assert len(failures) == 1
        assert "(writing the samples)" in failures[0].getMessage()
        assert "OSError: disk gone" in caplog.text  # with its traceback (the redactor may have formatted it)
        recorder.webhook_answered(404)  # another status still counts
        samples = parse(recorder._generate(None, generate_latest).decode())
        assert value(samples, "webhook_requests_total", status="200") == 1
        assert value(samples, "webhook_requests_total", status="404") == 1
        assert value(samples, "alerts_total", outcome="filled") == 1
    finally:
        recorder.close()


def test_samples_are_filed_under_this_process_id_also_in_a_forked_child(tmp_path):
    import multiprocessing
    import os

    from core.observability import metrics

    assert metrics._process_id() == os.getpid()
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        child_pid, seen = pool.apply(_pids)
    assert child_pid != os.getpid() and seen == child_pid


def _pids() -> tuple[int, int]:
    import os

    from core.observability import metrics

    return os.getpid(), metrics._process_id()
