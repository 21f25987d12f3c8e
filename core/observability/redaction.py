"""Secret redaction, built into the logging path itself.

Every ``LogRecord`` created in the process goes through ``RedactingRecordFactory``: the
final message, the formatted exception and the stack are rewritten before any handler or
formatter sees them, so no call site (ours, hypercorn's, ccxt's) can leak a secret by
forgetting to scrub it. Two mechanisms:

* known values: the webhook secret, account keys, tokens and payload ``apiKey``/``secret``
  values are registered with the process's ``Redactor`` and replaced wherever they appear;
* known keys: ``"secret": "..."``, ``apiKey=...``, ``X-Signature: ...`` and the like are
  masked by pattern, which also covers values never registered.

Only values that are trusted are registered: configured secrets, and the token or
credentials of a request *after* it authenticated. A value from a request that did not
authenticate is never registered (it would let anyone choose what the logs mask).

Log lines are also made safe to print: control characters (CR, LF, ESC, C1, Unicode line
separators and bidi overrides) in the message, the exception text and the stack are
escaped as ``\\xNN``/``\\uNNNN``, so a request path with ``%0d%0a`` cannot forge a line
and escape codes never reach a terminal.

This redaction is for *text* (logs, error messages). Data — the journal, answers — keeps
secrets out structurally: ``without_secrets`` drops secret-named fields before anything
is serialised, and serialised JSON is never rewritten.

Error bodies built by ``core.web.app`` go through the same ``Redactor``.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable
from types import TracebackType
from typing import Any

MASK = "***"
# Values shorter than this are not registered (they would mask ordinary words);
# the key patterns still mask them where they appear as a field.
MIN_SECRET_LENGTH = 6

_SECRET_KEYS = (
    r"(?:secret|api[_-]?secret|api[_-]?key|apikey|token|password|passphrase"
    r"|signature|x-signature|x-mbx-apikey|private[_-]?key)"
)
_KEY_PATTERNS = [
    # "key": "value"  and  'key': 'value'
    re.compile(r"""(?i)(["']""" + _SECRET_KEYS + r"""["']\s*:\s*)(["'])(?:(?!\2).)*\2"""),
    # key=value in query strings and headers rendered as text
    re.compile(r"(?i)(\b" + _SECRET_KEYS + r"=)[^&\s\"',;]+"),
    # key: value (headers)
    re.compile(r"(?i)(\b" + _SECRET_KEYS + r":\s+)[^\s\"',;]+"),
]
# Every key pattern needs one of the key names, each of which contains one of these
# stems: ASCII text without any is left as it is, after a few substring checks instead of
# three substitutions (every log record is redacted). Other text takes the
# patterns (under IGNORECASE, non-ASCII letters such as "ſ" match ASCII ones).
_KEY_STEMS = ("secret", "api", "token", "password", "passphrase", "signature", "private")


def _may_name_a_secret(text: str) -> bool:
    if not text.isascii():
        return True
    lowered = text.lower()
    return any(stem in lowered for stem in _KEY_STEMS)


_NOT_A_LETTER = re.compile(r"[^a-z]")
# Field names (letters only, lower case) that hold secrets anywhere in a payload or params.
_SECRET_NAME_STEMS = ("secret", "apikey", "password", "passphrase", "token", "signature", "privatekey")


def is_secret_name(name: object) -> bool:
    """Whether a field called ``name`` holds a secret (apiKey, api_secret, X-Signature, ...)."""
    return isinstance(name, str) and _names_a_secret(name)


@functools.lru_cache(maxsize=4096)  # field names repeat on every journal row: decide each once (bounded)
def _names_a_secret(name: str) -> bool:
    letters = _NOT_A_LETTER.sub("", name.lower())
    return any(stem in letters for stem in _SECRET_NAME_STEMS)


_LEAVES = frozenset({str, int, float, bool, type(None)})
# Field names (exact ``str``) already found to name no secret: a dict whose names are all
# here is checked by one set operation in C instead of a call per field. Bounded: a payload
# may bring any number of names; at the bound the set starts again (the names in use are
# back after one more look each).
_PLAIN_NAMES: set[str] = set()
_PLAIN_NAMES_MAX = 4096


def without_secrets(value: Any) -> Any:
    """``value`` with every secret-named field removed, at any depth. Used before data is
    serialised for storage: what it returns is serialised, never changed. A dict or list
    with nothing to drop at any depth is returned as it is; otherwise the dicts and lists
    on the way to a dropped field are copied. Nothing else is touched."""
    if isinstance(value, dict):
        if _PLAIN_NAMES.issuperset(value):  # no name here to drop: only in the values, if any
            # Every value a leaf or empty (falsy: "", 0, None, {} and [] alike): nothing to
            # visit. Decided in C; only a dict with a non-empty dict or list inside goes on
            # (or one holding an object whose truth cannot be told, such as an array's).
            try:
                if _LEAVES.issuperset(map(type, filter(None, value.values()))):
                    return value
            except Exception:  # any error of a value's __bool__: visit the values one by one
                pass
            cleaned = {k: c for k, v in value.items() if type(v) not in _LEAVES and (c := without_secrets(v)) is not v}
            return {**value, **cleaned} if cleaned else value
        kept = {
            k: v if type(v) in _LEAVES else without_secrets(v)
            for k, v in value.items()
            if not (isinstance(k, str) and _names_a_secret(k))
        }
        if len(_PLAIN_NAMES) >= _PLAIN_NAMES_MAX:
            _PLAIN_NAMES.clear()
        _PLAIN_NAMES.update(k for k in kept if type(k) is str)
        return kept
    if isinstance(value, list):
        if _LEAVES.issuperset(map(type, value)):
            return value
        return [v if type(v) in _LEAVES else without_secrets(v) for v in value]
    return value


# C0 controls (incl. TAB, CR, LF, ESC), DEL, C1 controls, the Unicode line/paragraph
# separators and the bidi embedding/override/isolate marks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# In a traceback the line breaks are its own; everything else is escaped.
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters written as ``\\xNN``/``\\uNNNN`` (one line, printable)."""
    pattern = _CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(_escape_one, text) if pattern.search(text) else text


class Redactor:
    """Replaces registered secret values and secret-looking fields in text."""

    def __init__(self, max_values: int = 4096):
        self._static: set[str] = set()
        self._dynamic: OrderedDict[str, None] = OrderedDict()
        self._max = max_values
        self._lock = threading.Lock()
        self._longest_first: list[str] | None = None  # the values in masking order, until one is added

    def add(self, value: object, *, static: bool = False) -> None:
        """Register a secret. Static ones (config) stay; dynamic ones (payload) are bounded LRU."""
        if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if static:
                if value not in self._static:
                    self._static.add(value)
                    self._longest_first = None
                return
            if value not in self._dynamic:
                self._longest_first = None
            self._dynamic[value] = None
            self._dynamic.move_to_end(value)
            while len(self._dynamic) > self._max:
                self._dynamic.popitem(last=False)

    def redact(self, text: str) -> str:
        if not text:
            return text
        with self._lock:
            values = self._longest_first
            if values is None:
                # Longest first so a secret containing another is masked whole.
                values = self._longest_first = sorted([*self._static, *self._dynamic], key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        if not _may_name_a_secret(text):
            return text
        for pattern in _KEY_PATTERNS:
            text = pattern.sub(
                lambda m: m.group(1) + (m.group(2) + MASK + m.group(2) if m.lastindex and m.lastindex >= 2 else MASK),
                text,
            )
        return text


REDACTOR = Redactor()
"""The process's redactor: logging is process-wide, so its redaction is too."""


class RedactingRecordFactory:
    """A LogRecord factory whose records carry an already-redacted message and traceback,
    with control characters escaped (a log line is one line, whatever a request sent)."""

    def __init__(self, previous: Callable[..., logging.LogRecord], redactor: Redactor):
        self.previous = previous
        self.redactor = redactor

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg = escape_controls(self.redactor.redact(message))
        record.args = None
        if record.exc_info:
            exc_type, exc, tb = record.exc_info
            if exc_type is not None and exc is not None:
                record.exc_text = self._traceback(exc_type, exc, tb)
                record.exc_info = None
        if record.stack_info:
            record.stack_info = escape_controls(self.redactor.redact(record.stack_info), keep_newlines=True)
        return record

    def _traceback(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> str:
        """The traceback, redacted; its own line breaks kept, while an exception's message
        (which may quote a request) is escaped to one line like any message."""
        chunks = []
        for chunk in traceback.TracebackException(exc_type, exc, tb).format():
            chunk = self.redactor.redact(chunk)
            if chunk.startswith(_TRACEBACK_FRAMING):
                chunks.append(escape_controls(chunk, keep_newlines=True))
            else:  # "ValueError: <message>", notes: one line each
                chunks.append(escape_controls(chunk.rstrip("\n")) + "\n")
        return "".join(chunks).rstrip("\n")


# Traceback chunks written by Python itself (frames, headers, chaining), not by the exception.
_TRACEBACK_FRAMING = (
    '  File "',
    "Traceback (most recent call last):",
    "\nThe above exception was",
    "\nDuring handling of the above exception",
    "  [Previous line repeated",
)

_install_lock = threading.Lock()


def install_redaction(redactor: Redactor = REDACTOR) -> None:
    """Make every LogRecord of this process redacted (idempotent)."""
    with _install_lock:
        current = logging.getLogRecordFactory()
        if isinstance(current, RedactingRecordFactory):
            return
        logging.setLogRecordFactory(RedactingRecordFactory(current, redactor))
