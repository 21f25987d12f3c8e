"""Issue 11, finding 9: a request cannot forge log lines or send escape codes to a terminal.

Every log record is escaped where it is made (``core.observability.redaction``): CR, LF, ESC, the other
C0/C1 controls, Unicode line separators and bidi overrides become ``\\xNN``/``\\uNNNN``,
in the text and the JSON format, in hypercorn's access log as in ours.
"""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest

from core.observability.logs import JsonFormatter, TextFormatter
from core.observability.redaction import install_redaction
from tests.support import ServerProcess, base_env

HOSTILE = "/x\r\n2026-01-01 00:00:00,000 INFO    core.pipeline.router: forged\x1b[2J\x9b\u2028\u202e"


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_every_log_field_is_one_printable_line(formatter):
    install_redaction()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("test.injection")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("request for %s", HOSTILE)
        try:
            raise ValueError(f"bad path {HOSTILE}")
        except ValueError:
            logger.exception("failed on %s", HOSTILE)
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    for forbidden in ("\r", "\x1b", "\x9b", "\u2028", "\u202e"):
        assert forbidden not in output
    lines = output.splitlines()
    assert not any(line.startswith("2026-01-01") for line in lines), output
    if isinstance(formatter, JsonFormatter):
        records = [json.loads(line) for line in lines]
        assert len(records) == 2
        output = "\n".join([records[0]["message"], records[1]["message"], records[1]["exc"]])
    escaped = r"/x\x0d\x0a2026-01-01 00:00:00,000 INFO    core.pipeline.router: forged\x1b[2J\x9b\u2028\u202e"
    assert output.count(escaped) == 3, output  # the two messages and the exception's


@pytest.mark.slow
def test_the_access_log_escapes_the_decoded_path(tmp_path, data_dir):
    server = ServerProcess(base_env(data_dir), tmp_path, extra_args=["--access-logfile", "-"]).start()
    try:
        httpx.get(server.url + "/a%0d%0aINFO%20forged%1b%5b31m%e2%80%a8end", timeout=5)
        httpx.get(server.url + "/", timeout=5)  # a later line: the one before was written in full
    finally:
        server.stop()
    log = server.log()
    assert "forged" in log
    assert "\x1b" not in log and "\u2028" not in log
    assert not any(line.startswith("INFO forged") for line in log.splitlines()), log
    assert r"/a\x0d\x0aINFO forged\x1b[31m\u2028end" in log


def test_a_json_log_line_stays_valid_json_whatever_value_is_masked():
    """Masking is applied to fields, not to the JSON text: a registered value that matches
    the line's own punctuation cannot break it."""
    from core.observability.redaction import REDACTOR

    REDACTOR.add('", "level', static=True)
    install_redaction()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.json-line")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("plain", extra={"detail": {"note": 'x", "level y', "apiKey": "k"}})
    finally:
        logger.removeHandler(handler)
        REDACTOR._static.discard('", "level')
        REDACTOR._longest_first = None
    record = json.loads(stream.getvalue())
    assert record["level"] == "WARNING" and record["detail"] == {"note": "x*** y", "apiKey": "***"}
