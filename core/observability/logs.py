"""LOG_LEVEL and LOG_FORMAT (human text or JSON lines), with redaction always on.

Every record is redacted and has its control characters escaped when it is made
(``core.observability.redaction.RedactingRecordFactory``), whichever logger made it: a log line is one
line, whatever a request sent."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from core.observability.redaction import MASK, REDACTOR, install_redaction, is_secret_name

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # The message and exc were redacted and escaped when the record was made
        # (core.observability.redaction); extras are redacted one by one here. The JSON text itself is
        # never rewritten (a masked substring could break the line), and json.dumps
        # escapes every control and non-ASCII character.
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                data[key] = MASK if is_secret_name(key) else _redacted(value)
        if record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data, default=str)


def _redacted(value: object) -> object:
    """An extra field of a record, with secrets masked inside every string it holds."""
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if isinstance(value, dict):
        return {str(k): MASK if is_secret_name(k) else _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return REDACTOR.redact(str(value))


class _RouterHandler(logging.StreamHandler[TextIO]):
    """The root handler ``configure_logging`` installed (found again on a repeat call)."""


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once per process (repeat calls adjust level and format)."""
    install_redaction()
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    handler = next((h for h in root.handlers if isinstance(h, _RouterHandler)), None)
    if handler is None:
        handler = _RouterHandler(sys.stderr)
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # hypercorn has handlers of its own; don't print its lines twice through ours.
    for name in ("hypercorn.error", "hypercorn.access"):
        logging.getLogger(name).propagate = False
    # ccxt logs request bodies at DEBUG; keep it at WARNING unless asked for explicitly.
    logging.getLogger("ccxt").setLevel(max(root.level, logging.WARNING))
