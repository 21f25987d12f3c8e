"""Secrets never reach a log line, an error body or the journal.

Alerts carry apiKey, secret and token values — valid requests, refused ones, and one that
makes a plugin raise with the secret in its message — and every captured log record,
every response body and the journal file are searched for them.
"""

from __future__ import annotations

import json
import logging

from core.errors import Unprocessable
from core.hooks.manager import hookimpl
from core.observability.redaction import Redactor
from tests.support import SECRET, alert_body, signed_headers

API_KEY = "AKIAsecretkeyvalue42"
API_SECRET = "sEcReT-value-0987654321"
TOKEN = "tok_9f8e7d6c5b4a39281706"
SHORT_SECRET = "x1y2z"


class LeakyPlugin:
    """Raises with the payload's secrets in the message, as careless code does."""

    @hookimpl
    def transform_payload(self, payload):
        if payload.get("explode") == "runtime":
            raise RuntimeError(f"cannot use key {payload.get('apiKey')} with secret {payload.get('secret')}")
        if payload.get("explode") == "refuse":
            raise Unprocessable(f"refusing secret {payload.get('secret')} and token {payload.get('token')}")
        logging.getLogger("leaky").info("payload seen: %s", payload)
        logging.getLogger("leaky").info("query string apiKey=%s&signature=%s", payload.get("apiKey"), "abc123def456")


async def test_secrets_never_appear_in_logs_bodies_or_journal(app_client, all_log_text, data_dir, write_plugins_yaml):
    write_plugins_yaml("router:\n  allow_payload_credentials: true\n")  # off by default; the keys must not leak when on
    secrets = dict(apiKey=API_KEY, secret=API_SECRET, token=TOKEN)
    requests = [
        (alert_body(id="ok-1", **secrets), True),  # valid (paper ignores the keys)
        (alert_body(id="ok-2", apiKey=API_KEY, secret=SHORT_SECRET, token=TOKEN), True),
        (alert_body(id="bad-auth", **secrets), False),  # unsigned → 401
        (alert_body(id="bad-amount", amount="-1", **secrets), True),  # 422
        (alert_body(id="raise-1", explode="runtime", **secrets), True),  # plugin raises → 500
        (alert_body(id="refuse-1", explode="refuse", **secrets), True),  # plugin refuses → 422
        (b'{"apiKey": "' + API_KEY.encode() + b'", "secret": "' + API_SECRET.encode() + b'", broken', True),  # 400
    ]
    bodies = []
    async with app_client(extra_plugins=[("leaky", LeakyPlugin())]) as (client, app):
        for body, sign in requests:
            headers = signed_headers(body) if sign else {"Content-Type": "application/json"}
            response = await client.post("/webhook", data=body, headers=headers)
            bodies.append((response.status_code, await response.get_data(as_text=True)))
        logging.getLogger("direct").warning("webhook secret is %s", SECRET)
    statuses = [status for status, _ in bodies]
    assert statuses == [200, 200, 401, 422, 500, 422, 400], bodies
    logs = all_log_text()
    journal = (data_dir / "journal.sqlite3").read_bytes().decode("latin-1")
    for value in (API_KEY, API_SECRET, TOKEN, SECRET):
        assert value not in logs, f"{value} leaked into the logs"
        assert value not in journal, f"{value} leaked into the journal"
        for status, text in bodies:
            assert value not in text, f"{value} leaked into a {status} body: {text}"
    # The short secret is too short to register as a value, but it is masked as a field.
    assert f'"secret": "{SHORT_SECRET}"' not in logs and f"'secret': '{SHORT_SECRET}'" not in logs
    assert "payload seen" in logs and "***" in logs  # the leaky log lines were written, masked
    assert "Traceback" in logs  # the plugin's crash was logged (redacted), not swallowed
    assert all("Traceback" not in text for _, text in bodies)


def test_redactor_masks_values_and_secret_fields():
    redactor = Redactor()
    redactor.add("verysecretvalue", static=True)
    redactor.add("abc")  # too short to register: masked by field patterns only
    text = redactor.redact(
        'x verysecretvalue y {"secret": "abc", "apiKey": "k"} apiKey=zzz&x=1 X-Signature: deadbeef token=t0k'
    )
    assert "verysecretvalue" not in text and '"abc"' not in text and "zzz" not in text
    assert "deadbeef" not in text and "t0k" not in text
    assert "x=1" in text


def test_dynamic_secrets_are_bounded():
    redactor = Redactor(max_values=3)
    for i in range(10):
        redactor.add(f"dynamic-secret-{i}")
    assert len(redactor._dynamic) == 3
    assert redactor.redact("dynamic-secret-9") == "***"


def test_json_log_format_is_redacted():
    import io

    from core.observability.logs import JsonFormatter
    from core.observability.redaction import install_redaction

    install_redaction()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("jsontest")
    logger.addHandler(handler)
    try:
        logger.warning("sending apiKey=%s", "plainkey123", extra={"secret": "also-hidden-99"})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    record = json.loads(line)
    assert "plainkey123" not in line and "also-hidden-99" not in line
    assert record["logger"] == "jsontest" and record["level"] == "WARNING"
