"""Slow and stuck connections against the real server (issue 11, findings 2 and 14):
a deadline for the body, a cap on requests in flight per address checked before the body
is read, one log line per address per interval for these refusals, the open-file limit
raised at worker start, and workers that exit when hypercorn's master is SIGKILLed."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from core.web.intake import RefusalLog, RefusedAccessFilter
from tests.abuse_support import client_from
from tests.support import ServerProcess, alert_body, base_env, signed_headers

PLUGINS_YAML = "router:\n  body_timeout: {body_timeout}\n  max_inflight_per_address: 4\n"


def start_server(
    root: Path, *, body_timeout: float, port: int | None = None, preexec=None, extra_args: list[str] | None = None
) -> ServerProcess:
    data = root / "data"
    data.mkdir(exist_ok=True)
    (data / "plugins.yaml").write_text(PLUGINS_YAML.format(body_timeout=body_timeout))
    server = ServerProcess(base_env(data), root, port=port, extra_args=extra_args or [])
    server.preexec = preexec
    return server.start()


def open_slow_body(server: ServerProcess, source: str, *, sent: bytes = b'{"symbol":') -> socket.socket:
    """A POST whose headers are complete and whose body (100 bytes announced) never is."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20, source_address=(source, 0))
    sock.sendall(
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + sent
    )
    return sock


def read_status(sock: socket.socket) -> int:
    """The status of the answer on ``sock`` (waits at most the socket's timeout)."""
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed without an answer: {head!r}")
        head += chunk
    return int(head.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("intake"), body_timeout=1)
    yield server
    server.stop()


def test_a_body_that_does_not_arrive_in_time_gets_408(server):
    with open_slow_body(server, "127.0.0.21") as sock:
        assert read_status(sock) == 408  # Quart alone waited 60 s
    with client_from("127.0.0.21", base_url=server.url) as http:
        body = alert_body(id="after-408")
        assert http.post("/webhook", content=body, headers=signed_headers(body)).status_code == 200


@pytest.mark.parametrize(
    "sent", [b"", b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Le"], ids=["idle", "partial-headers"]
)
def test_a_connection_whose_headers_never_complete_is_closed_by_the_keep_alive_timeout(server, sent):
    """hypercorn.toml has no read_timeout (a task and a timer per socket read): headers that
    stop arriving are the keep-alive timeout's (5 s), as docs/security.md's table says."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=20, source_address=("127.0.0.22", 0)) as sock:
        sock.sendall(sent)
        opened = time.monotonic()
        assert sock.recv(4096) == b""  # closed by the server, long before the socket's own 20 s
        assert time.monotonic() - opened < 15


@pytest.fixture(scope="module")
def patient_server(tmp_path_factory):
    """Bodies may take 30 s: a refusal seen sooner was decided before the body was read.
    With hypercorn's access log (off by default), whose refusal lines are throttled too."""
    server = start_server(tmp_path_factory.mktemp("intake-cap"), body_timeout=30, extra_args=["--access-logfile", "-"])
    yield server
    server.stop()


def test_requests_in_flight_per_address_are_capped_before_the_body_is_read(patient_server):
    server = patient_server
    slow = [open_slow_body(server, "127.0.0.22") for _ in range(4)]
    try:
        with (
            client_from("127.0.0.22", base_url=server.url) as same,
            client_from("127.0.0.23", base_url=server.url) as other,
        ):
            deadline = time.monotonic() + 15
            status = None
            while time.monotonic() < deadline:  # polls until the four slow requests are in flight
                status = same.get("/").status_code
                if status == 429:
                    break
            assert status == 429
            # A POST whose body never comes is refused at once, not after body_timeout.
            with open_slow_body(server, "127.0.0.22", sent=b"") as fifth:
                fifth.settimeout(10)
                assert read_status(fifth) == 429
            # Other addresses are served meanwhile.
            assert other.get("/").status_code == 200
            body = alert_body(id="while-capped")
            assert other.post("/webhook", content=body, headers=signed_headers(body)).status_code == 200
            for _ in range(5):  # each answered after core.web.intake.REFUSAL_DELAY
                assert same.get("/").status_code == 429
    finally:
        for sock in slow:
            sock.close()
    log = server.log()
    intake_lines = [line for line in log.splitlines() if "core.web.intake" in line and "127.0.0.22" in line]
    access_429 = [line for line in log.splitlines() if "127.0.0.22" in line and '" 429 ' in line]
    assert len(intake_lines) == 1, intake_lines
    assert len(access_429) == 1, access_429  # several refusals, one access line


def test_refusal_logs_write_one_line_per_address_per_interval():
    now = [0.0]
    refusals = RefusalLog(interval=60, clock=lambda: now[0])
    assert [refusals.note("198.51.100.1", "x") for _ in range(5)] == [True, False, False, False, False]
    assert refusals.note("198.51.100.2", "x") is True
    now[0] = 61
    assert refusals.note("198.51.100.1", "x") is True
    from core.web.intake import _note_refused_peer

    access = RefusedAccessFilter(interval=60, clock=lambda: now[0])

    def line(peer: str, status: str = "429"):
        import logging

        return logging.LogRecord(
            "hypercorn.access", 20, "", 0, f'{peer} - - [t] "GET / 1.1" {status} 1 "-" "-"', None, None
        )

    for port in (1, 2, 3):
        _note_refused_peer({"client": ("198.51.100.1", port)}, "198.51.100.1")
    assert [access.filter(line(f"198.51.100.1:{port}")) for port in (1, 2, 3)] == [True, False, False]
    assert access.filter(line("198.51.100.1:4")), "a line of a request the guard did not refuse passes"
    _note_refused_peer({"client": ("10.0.0.1", 9), "direct_client": ("127.0.0.1", 5)}, "203.0.113.5")
    assert access.filter(line("127.0.0.1:5", "408")), "keyed by the client behind the trusted proxy"


def worker_pids(master: int) -> list[int]:
    """hypercorn's worker processes: children of ``master`` started by multiprocessing."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == master and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def running(pid: int) -> bool:
    """``pid`` exists and is not a zombie (a reparented one may wait long to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def soft_file_limit(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return tuple(line.split()[3:5])  # type: ignore[return-value]
    raise AssertionError("no open-file limit")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc (Linux)")
def test_workers_raise_the_open_file_limit_to_the_hard_limit(tmp_path):
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"the hard limit here is {hard}")
    server = start_server(
        tmp_path, body_timeout=5, preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    )
    try:
        assert soft_file_limit(server.proc.pid)[0] == "1024"  # the master as started
        [worker] = worker_pids(server.proc.pid)
        worker_soft, worker_hard = soft_file_limit(worker)
        assert worker_soft == worker_hard != "1024"
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc (Linux)")
def test_workers_exit_when_the_master_is_killed_and_the_port_can_be_reused(tmp_path):
    (tmp_path / "first").mkdir()
    first = start_server(tmp_path / "first", body_timeout=5)
    workers = worker_pids(first.proc.pid)
    assert workers
    os.kill(first.proc.pid, signal.SIGKILL)  # the master only, not its process group
    first.proc.wait(10)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and any(running(pid) for pid in workers):
        time.sleep(0.1)  # polls the real condition (the worker gone), bounded
    alive = [pid for pid in workers if running(pid)]
    for pid in alive:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"the worker outlived its master:\n{first.log()[-3000:]}"
    (tmp_path / "second").mkdir()
    second = start_server(tmp_path / "second", body_timeout=5, port=first.port)
    try:
        assert httpx.get(second.url + "/", timeout=5).status_code == 200
    finally:
        second.stop()
        first.stop()


async def test_an_address_that_authenticated_may_have_more_in_flight():
    import asyncio

    from core.web.intake import PROVEN_FACTOR, IntakeGuard

    release = asyncio.Event()
    inside = 0  # requests the guard let through to the app
    arrived = asyncio.Condition()

    async def app(scope, receive, send):
        nonlocal inside
        async with arrived:
            inside += 1
            arrived.notify_all()
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = IntakeGuard(app, max_inflight=2, body_timeout=5)
    statuses: list[int] = []

    async def request(address: str) -> None:
        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await guard({"type": "http", "method": "GET", "client": (address, 1), "headers": []}, receive, send)

    async def until_inside(n: int) -> None:
        async with arrived:
            await asyncio.wait_for(arrived.wait_for(lambda: inside >= n), 5)
        assert guard.inflight("198.51.100.5") == n

    held = [asyncio.create_task(request("198.51.100.5")) for _ in range(2)]
    await until_inside(2)
    await request("198.51.100.5")
    assert statuses == [429]
    guard.vouch("198.51.100.5")
    more = [asyncio.create_task(request("198.51.100.5")) for _ in range(2 * PROVEN_FACTOR - 2)]
    await until_inside(2 * PROVEN_FACTOR)
    release.set()
    await asyncio.gather(*held, *more)
    assert statuses == [429] + [200] * (2 * PROVEN_FACTOR)


async def _through_guard(queued: list[dict], *, body_timeout: float = 5) -> tuple[list[int], list[bytes | None]]:
    """POST through an IntakeGuard whose ``receive`` is, as hypercorn's, the ``get`` of an
    ``asyncio.Queue`` holding ``queued`` (nothing more ever arrives). (statuses, bodies the app got)."""
    import asyncio

    from core.web.asgi import BODY
    from core.web.intake import IntakeGuard

    got: list[bytes | None] = []

    async def app(scope, receive, send):
        got.append(scope.get(BODY))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = IntakeGuard(app, max_inflight=4, body_timeout=body_timeout)
    guard.vouch("198.51.100.7")  # a proven address: no queue of unproven ones in the way
    messages: asyncio.Queue = asyncio.Queue(10)
    for message in queued:
        messages.put_nowait(message)
    statuses: list[int] = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {"type": "http", "method": "POST", "client": ("198.51.100.7", 1), "headers": []}
    await guard(scope, messages.get, send)
    return statuses, got


async def test_a_body_already_queued_is_taken_without_arming_the_deadline(monkeypatch):
    import asyncio

    armed: list[float | None] = []
    reschedule = asyncio.Timeout.reschedule

    def spy(self, when):
        armed.append(when)
        reschedule(self, when)

    monkeypatch.setattr(asyncio.Timeout, "reschedule", spy)
    parts = [
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.request", "body": b"1}", "more_body": False},
    ]
    assert await _through_guard(parts) == ([200], [b'{"a":1}'])
    assert [when for when in armed if when is not None] == []


async def test_the_deadline_still_holds_for_a_body_whose_rest_must_be_waited_for():
    parts = [{"type": "http.request", "body": b'{"a":', "more_body": True}]  # the rest never comes
    assert await _through_guard(parts, body_timeout=0.05) == ([408], [])
