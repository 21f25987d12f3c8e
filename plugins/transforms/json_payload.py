"""The built-in body parser: JSON sent as application/json or text/plain (TradingView).

Registered ``trylast`` so a user's parser for other formats can claim a body first.
Refuses what is not JSON (400), not UTF-8 (400), nested deeper than
``router.max_json_depth`` (400), or sent with another media type (415).
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import BadRequest, UnsupportedMediaType
from core.hooks.manager import hookimpl

ACCEPTED_TYPES = frozenset({"application/json", "text/plain", ""})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# One decoder for every body: json.loads with an argument builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


@hookimpl(trylast=True)
def parse_payload(body: bytes, content_type: str, router) -> dict[str, Any]:
    if content_type not in ACCEPTED_TYPES:
        raise UnsupportedMediaType(
            f"content type '{content_type[:60]}' is not supported; send application/json or text/plain JSON"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid UTF-8") from None
    if not text.strip():
        raise BadRequest("the body is empty; send the alert as JSON")
    # Checked on the text, before json recurses into a "[[[[…" bomb.
    limit = router.options.max_json_depth
    if text.count("[") + text.count("{") > limit and _nesting_depth(text) > limit:
        raise BadRequest(f"the JSON is nested deeper than {limit} levels")
    try:
        if text.startswith("\ufeff"):  # as json.loads: a UTF-8 BOM is not JSON
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        payload = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {str(exc)[:120]}") from None
    return payload


def _nesting_depth(text: str) -> int:
    """The deepest bracket nesting of the JSON text, brackets inside strings not counted."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest
