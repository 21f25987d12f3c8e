"""An alert as the Redis journal stores it (a hash of strings), read back as a row."""

from __future__ import annotations

from typing import Any

from core.store.journal import AlertRow, decode_json_fields

_JSON_FIELDS = ("payload", "result")
_NUMBER_FIELDS = {
    "received_at": float,
    "updated_at": float,
    "seq": int,
    "duplicates": int,
    "http_status": int,
    "explicit_id": int,
    "attempts": int,
    "authenticated_at": float,
    "journaled_at": float,
}
_EMPTY_IS_NONE = ("error_code", "error_message", "principal", "owner", "client_order_id")


def decode_alert(raw: dict[str, str], problems: list[str] | None = None) -> AlertRow:
    """The stored hash as a row. A field that cannot be decoded is None and named in
    ``unreadable`` (and in ``problems``), never an exception."""
    data: dict[str, Any] = dict(raw)
    problems = [] if problems is None else problems
    for key, number in _NUMBER_FIELDS.items():
        if data.get(key) not in (None, ""):
            try:
                data[key] = number(float(data[key])) if number is int else number(data[key])
            except (TypeError, ValueError, OverflowError):
                data[key] = None
                problems.append(f"{key} is not a number")
        else:
            data[key] = None
    decode_json_fields(data, _JSON_FIELDS, "", problems)
    for key in _EMPTY_IS_NONE:
        data[key] = data.get(key) or None
    if problems:
        data["unreadable"] = problems
    return data
