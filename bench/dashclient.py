"""A browser on the dashboard's live alert feed, for ``python -m bench --dashboard``.

What a browser does with the page (core/dashboard/templates/dashboard/alerts.html and
base.html): GET the login page (it sets the login cookie and carries the CSRF token in
its form), POST /dashboard/login with that token and the password (the answer sets the
session cookie), open /dashboard/alerts with its stylesheet and scripts, then htmx polls
the feed (``hx-get="/dashboard/alerts/feed?…" hx-trigger="every 2s"``) with the headers
htmx sends, the CSRF header of ``hx-headers`` included. No SSE: the page only polls.

Its own process with a synchronous httpx client, so it shares nothing with the load
generator. It prints ``polling`` once logged in and the first poll answered 200, then
polls every ``--interval`` seconds until stopped (SIGTERM), rewriting ``--out`` (JSON:
polls, statuses, latencies) after every poll, so the figures survive the stop. Like a
browser, it takes the form's fields and the CSRF header from the pages themselves (and
imports nothing of core: its start stays short).
"""

from __future__ import annotations

import argparse
import collections
import html
import json
import os
import re
import sys
import time
from pathlib import Path

import httpx


def _attribute(page: str, pattern: str, what: str) -> str:
    found = re.search(pattern, page)
    if not found:
        raise SystemExit(f"dashclient: no {what} in the page")
    return html.unescape(found.group(1))


def open_feed(client: httpx.Client, base: str, password: str) -> tuple[str, dict[str, str]]:
    """Log in and open the alerts page like a browser; the feed's path and htmx's headers."""
    login_page = client.get(f"{base}/dashboard/login")
    login_page.raise_for_status()
    form = _attribute(login_page.text, r'(?s)(<form method="post" action="/dashboard/login">.*?</form>)', "login form")
    fields = {
        html.unescape(name): html.unescape(value)
        for name, value in re.findall(r'<input type="(?:hidden|text)" name="([^"]+)" value="([^"]*)"', form)
    }
    if not any("csrf" in name for name in fields):
        raise SystemExit("dashclient: no CSRF token in the login form")
    answer = client.post(f"{base}/dashboard/login", data={**fields, "password": password})
    if answer.status_code != 303:
        raise SystemExit(f"dashclient: login answered {answer.status_code}: {answer.text[:300]}")
    page = client.get(f"{base}/dashboard/alerts")
    page.raise_for_status()
    for asset in re.findall(r'(?:href|src)="(/dashboard/static/[^"]+)"', page.text):
        client.get(base + html.unescape(asset)).raise_for_status()
    feed = _attribute(page.text, r'hx-get="(/dashboard/alerts/feed[^"]*)"', "feed hx-get")
    hx_headers = json.loads(_attribute(page.text, r"hx-headers='([^']+)'", "hx-headers"))  # the CSRF header
    headers = {
        "HX-Request": "true",
        "HX-Trigger": "feed",
        "HX-Target": "feed",
        "HX-Current-URL": f"{base}/dashboard/alerts",
        **hx_headers,
    }
    return feed, headers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashclient")
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls (the page: 2)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    password = os.environ["BENCH_DASHBOARD_PASSWORD"]
    statuses: collections.Counter = collections.Counter()
    latencies: list[float] = []
    sent_at: list[float] = []  # wall clock, to count the polls that fell inside a load run
    with httpx.Client(timeout=10) as client:
        feed, headers = open_feed(client, args.url, password)
        started = time.monotonic()
        polls = 0
        while True:
            sent = time.perf_counter()
            sent_at.append(time.time())
            answer = client.get(args.url + feed, headers=headers)
            latencies.append((time.perf_counter() - sent) * 1000)
            statuses[str(answer.status_code)] += 1
            polls += 1
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "polls": polls,
                        "statuses": statuses,
                        "latencies_ms": latencies,
                        "sent_at": sent_at,
                        "rows_bytes": len(answer.content),
                    }
                )
            )
            tmp.replace(args.out)
            if polls == 1:
                if answer.status_code != 200:
                    raise SystemExit(f"dashclient: the feed answered {answer.status_code}: {answer.text[:300]}")
                print("polling", flush=True)
            time.sleep(max(0.0, started + polls * args.interval - time.monotonic()))


if __name__ == "__main__":
    sys.exit(main())
