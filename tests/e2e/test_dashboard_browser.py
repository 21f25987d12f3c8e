"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright's Python API) against the real server (hypercorn, a process) trading on the
exchange emulator through ccxt's real binance class. Alerts are sent with
``simulate_tradingview.py``, as a user would.

Screenshots of every page (1100 px and 360 px wide) go to ``tests/output/dashboard/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ccxt_support import emulator_account, plugins_yaml, send_alert, tradingview_alert
from tests.support import ROOT, SECRET, ServerProcess, base_env

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PASSWORD = "browser-test-password-42"
SHOTS = ROOT / "tests" / "output" / "dashboard"
PAGES = ("alerts", "accounts", "latency", "tokens", "risk")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and os.environ.get("CI", "").lower() != "true",
        reason=f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, emulator):
    data = tmp_path_factory.mktemp("dashboard")
    (data / "plugins.yaml").write_text(
        plugins_yaml(
            {"binance": emulator_account("binance", emulator.url)},
            risk={"defaults": {"max_orders_per_minute": 100}, "accounts": {"binance": {"max_order_notional": 100000}}},
        )
    )
    process = ServerProcess(base_env(data, DEFAULT_EXCHANGE="binance", DASHBOARD_PASSWORD=PASSWORD), data).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh browser context (no cookies), logged in, on the alerts page. Console
    errors (a CSP violation, a failed script) fail the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(server.url + "/dashboard")
    assert "/dashboard/login" in tab.url
    tab.fill("input[name=password]", PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/dashboard/alerts")
    yield tab
    context.close()
    assert not errors, errors


def simulate(server: ServerProcess, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python simulate_tradingview.py`` from a directory of its own (no .env of the repo)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")} | {"WEBHOOK_SECRET": SECRET}
    return subprocess.run(
        [sys.executable, str(ROOT / "simulate_tradingview.py"), "--url", server.url + "/webhook", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def shoot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def test_an_alert_appears_live_and_its_page_shows_the_timeline_and_the_exchange_order(page, server, emulator, tmp_path):
    from playwright.sync_api import expect

    page.evaluate("window.notReloaded = true")
    alert_id = unique("live")
    sent = simulate(server, tmp_path, "--id", alert_id, "--symbol", "BINANCE:BTCUSDT", "--amount", "0.001")
    assert sent.returncode == 0 and "HTTP 200" in sent.stdout, sent.stdout + sent.stderr
    row = page.locator(f'#feed a[title="{alert_id}"]')
    expect(row).to_be_visible(timeout=10_000)  # the feed polls; no reload
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#feed tr", has=page.locator(f'a[title="{alert_id}"]'))).to_contain_text("filled")
    shoot(page, "alerts")

    row.click()
    page.wait_for_url(f"**/dashboard/alert/{alert_id}")
    client_order_id = page.locator("table td code").first.inner_text()
    booked = emulator.control.orders(client_order_id=client_order_id)
    assert len(booked) == 1
    expect(page.locator(".exchange-order-id").first).to_have_text(str(booked[0]["order_id"]))
    timeline = page.locator("#timeline li")
    expect(timeline).to_have_count(6)
    for step in ("received", "authenticated", "journaled", "sent", "answered", "filled"):
        item = page.locator("#timeline li", has=page.locator(".step", has_text=re.compile(f"^{step}$")))
        expect(item.locator(".at")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$"))
    expect(page.locator("#timeline li.timed .delta").first).to_have_text(re.compile(r"^\+\d+\.\d (ms|s)$"))
    shoot(page, "alert")


def test_a_refused_alert_shows_the_reason(page, server, tmp_path):
    from playwright.sync_api import expect

    alert_id = unique("refused")
    sent = simulate(server, tmp_path, "--id", alert_id, "--symbol", "BINANCE:NOSUCHUSDT")
    assert "HTTP 422" in sent.stdout, sent.stdout
    page.goto(f"{server.url}/dashboard/alerts?state=problems")
    row = page.locator(f'#feed a[title="{alert_id}"]')
    expect(row).to_be_visible(timeout=10_000)
    expect(page.locator("#feed tr", has=page.locator(f'a[title="{alert_id}"]'))).to_contain_text("unknown_symbol")
    row.click()
    expect(page.locator("#alert-state")).to_have_text("rejected")
    expect(page.locator("#alert-reason")).to_contain_text("unknown_symbol")
    expect(page.locator("#alert-reason")).to_contain_text("NOSUCHUSDT")
    shoot(page, "alert-refused")


def test_a_token_issued_in_the_page_trades_and_once_revoked_gets_401(page, server, tmp_path):
    from playwright.sync_api import expect

    page.goto(server.url + "/dashboard/tokens")
    label = unique("web")[:40]
    page.fill("input[name=label]", label)
    page.click("#issue")
    token = page.locator("#new-token").input_value()
    assert len(token) >= 40
    message = page.locator("#tv-message").input_value()
    assert f'"token": "{token}"' in message and "{{strategy.order.action}}" in message
    page.click("button[data-copy=new-token]")
    expect(page.locator("button[data-copy=new-token]")).to_have_text("Copied")
    shoot(page, "tokens-issued")

    sent = simulate(server, tmp_path, "--token", token, "--id", unique("tok"))
    assert "HTTP 200" in sent.stdout, sent.stdout

    page.goto(server.url + "/dashboard/tokens")
    assert token not in page.content()  # shown once only
    row = page.locator("#token-list tr", has_text=label)
    expect(row.locator("td").nth(4)).not_to_have_text("—")  # last used is recorded
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button", has_text="Revoke").click()
    expect(page.locator("#token-list tr", has_text=label)).to_have_count(0)
    shoot(page, "tokens")

    refused = simulate(server, tmp_path, "--token", token, "--id", unique("tok"))
    assert "HTTP 401" in refused.stdout, refused.stdout


def test_halt_from_the_page_makes_the_next_opening_alert_refused(page, server, emulator, tmp_path):
    from playwright.sync_api import expect

    opened = send_alert(server.url, tradingview_alert("BTCUSDT.P", unique("pos"), contracts="0.002"))
    assert opened.status_code == 200, opened.text  # a position for the closing alert below
    page.goto(server.url + "/dashboard/risk")
    expect(page.locator("#risk-state-binance")).to_have_text("running")
    limits = page.locator("#account-risk-binance table.limits")
    expect(limits).to_contain_text("max_order_notional")  # the account's override
    expect(limits.locator("tr", has_text="max_orders_per_minute")).to_contain_text(
        re.compile(r"[1-9]\d* in the last 60 s")
    )
    shoot(page, "risk")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.fill("#account-risk-binance input[name=reason]", "browser test")
    page.click("#risk-halt-binance")
    expect(page.locator("#risk-state-binance")).to_have_text("HALTED")
    assert asked and asked[0].startswith("Halt account binance"), asked
    expect(page.locator("#account-risk-binance .halt-reason")).to_have_text("browser test")
    expect(page.locator("#account-risk-binance .halt-by")).to_have_text("dashboard")
    shoot(page, "risk-halted")

    refused = simulate(server, tmp_path, "--id", unique("halted"))
    assert "HTTP 422" in refused.stdout and '"risk_limit"' in refused.stdout, refused.stdout
    assert "refused by halt: account 'binance' is halted (browser test; by dashboard" in refused.stdout
    closed = send_alert(server.url, tradingview_alert("BTCUSDT.P", unique("close"), action="close"))
    assert closed.status_code == 200, closed.text  # closing orders pass a halt

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#risk-resume-binance")
    expect(page.locator("#risk-state-binance")).to_have_text("running")
    traded = simulate(server, tmp_path, "--id", unique("resumed"))
    assert "HTTP 200" in traded.stdout, traded.stdout


def test_accounts_show_the_exchange_balances_and_refresh(page, server, emulator, tmp_path):
    from playwright.sync_api import expect

    page.goto(server.url + "/dashboard/accounts")
    account = page.locator("#account-binance")
    expect(account).to_contain_text("ready")
    expect(account).to_contain_text("live")  # no sandbox: a live account as far as the router knows
    usdt = account.locator("tr", has=page.locator("td", has_text=re.compile("^USDT$")))
    expect(usdt).to_have_count(1)
    before = usdt.locator("td").nth(3).inner_text()
    simulate(server, tmp_path, "--id", unique("acct"), "--amount", "0.001")
    page.click("#refresh")
    expect(usdt.locator("td").nth(3)).not_to_have_text(before)
    assert emulator.control.balances("emu-key-1")  # what the page reads is the emulator's account
    shoot(page, "accounts")

    # The exchange refuses to show the balances: the page says so, the rest still shows.
    emulator.control.add_fault("key_error", match={"route": "GET /api/v3/account"}, count=1)
    try:
        page.click("#refresh")
        expect(account.locator("p.note")).to_contain_text(re.compile(r"^\w+: binance .*-2015"))
        expect(account).to_contain_text("ready")
        shoot(page, "accounts-refused")
    finally:
        emulator.control.clear_faults()


def test_latency_plots_and_outcomes(page, server, tmp_path):
    from playwright.sync_api import expect

    simulate(server, tmp_path, "--id", unique("lat"))
    page.goto(server.url + "/dashboard/latency")
    expect(page.locator("#plot-answer canvas")).to_have_count(1)
    expect(page.locator("#plot-round-trip canvas")).to_have_count(1)
    expect(page.locator("#plot-round-trip")).to_contain_text("binance")
    expect(page.locator("#outcomes")).to_contain_text("filled")
    shoot(page, "latency")


def test_every_page_fits_a_360_px_screen_and_shows_no_secret(page, server):
    page.set_viewport_size({"width": 360, "height": 740})
    for name in PAGES:
        page.goto(f"{server.url}/dashboard/{name}")
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"{name} is {width} px wide"
        html = page.content()
        for secret in (SECRET, PASSWORD, "emu-key-1", "emu-secret-1"):  # the account's exchange keys included
            assert secret not in html, (name, secret[:6])
        shoot(page, f"{name}-360")
    first = page.goto(f"{server.url}/dashboard/alerts")
    assert first is not None and first.ok
    link = page.locator("#feed a").first
    if link.count():
        link.click()
        page.wait_for_load_state("networkidle")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        shoot(page, "alert-360")


def test_logout_ends_the_session(page, server):
    page.click("header .logout button")
    page.wait_for_url("**/dashboard/login")
    shoot(page, "login")
    page.goto(server.url + "/dashboard/tokens")
    assert "/dashboard/login" in page.url
    assert page.locator("input[name=password]").count() == 1


def test_screenshots_are_kept_out_of_git():
    ignored = subprocess.run(["git", "check-ignore", "-q", str(SHOTS / "alerts.png")], cwd=ROOT)
    if shutil.which("git") is None or ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0
