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
from prometheus_client import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from core.errors import OrderRejected, OutcomeUnknown
from core.observability.metrics import MetricsRecorder
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


@pytest.mark.slow
def test_metrics_add_up_over_several_workers(server_factory, data_dir):
    (data_dir / "plugins.yaml").write_text("router:\n  journal_synchronous: NORMAL\n")
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
        served = per_worker_webhook_answers(folder)
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

    assert sum(per_worker_webhook_answers(folder).values()) == sent + 1
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


def test_a_failing_recording_is_logged_once_and_never_raised(tmp_path, caplog):
    recorder = MetricsRecorder(tmp_path / "metrics")
    try:
        recorder.webhook_answered(200)
        recorder.order_finished("filled", "paper", None, "paper")

        def broken(*_args: object) -> None:
            raise OSError("disk gone")

        recorder._answered[200] = broken
        recorder._finished["filled"] = broken
        with caplog.at_level("ERROR", logger="core.observability.metrics"):
            recorder.webhook_answered(200)
            recorder.order_finished("filled", "paper", None, "paper")
            recorder.webhook_answered(200)
        failures = [r for r in caplog.records if "recording metrics failed" in r.getMessage()]
        assert len(failures) == 1
        assert "(webhook)" in failures[0].getMessage()
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
