"""Turning raw message bytes into events, with a reason a person can act on when that fails.

A message is one event (a JSON object) or an envelope (a JSON array of
events). Each event of an envelope is judged on its own: one bad event is
reported alone while its neighbours are kept (DESIGN §3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.events import EVENT_ADAPTER, Event

MAX_REASON_ERRORS = 5


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """An event that could not be read: why, and where it sat in its message."""

    reason: str
    index: int | None = None
    """Position inside an envelope; None for a single-event message."""
    raw: Any = None
    """The decoded JSON of the event when the message itself was valid JSON."""


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad field: `pageviews: Input should be greater than or equal to 1`."""
    parts: list[str] = []
    for item in error.errors(include_url=False)[:MAX_REASON_ERRORS]:
        loc = [str(p) for p in item["loc"]]
        # a discriminated union puts the chosen tag first: ('site_visit', 'pageviews')
        if loc and loc[0] in {"site_visit", "form_fill", "stage_change", "subscription", "spend"}:
            loc = loc[1:]
        where = ".".join(loc) or "event"
        msg = str(item["msg"])
        if item["type"] == "union_tag_invalid":
            msg = f"unknown event type {item['input'].get('type')!r} " if isinstance(item["input"], dict) else msg
            msg += "(expected site_visit, form_fill, stage_change, subscription or spend)"
            where = "type"
        elif item["type"] == "union_tag_not_found":
            where, msg = "type", "missing (expected site_visit, form_fill, stage_change, subscription or spend)"
        elif item["type"] == "timezone_aware":
            msg = "timestamp has no UTC offset (write e.g. 2026-11-23T09:00:00Z or +01:00)"
        parts.append(f"{where}: {msg}")
    more = error.error_count() - MAX_REASON_ERRORS
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def validate_event(obj: Any, index: int | None = None) -> Event | InvalidEvent:
    """Validate one decoded JSON value as an event."""
    if not isinstance(obj, dict):
        kind = type(obj).__name__.replace("NoneType", "null").replace("dict", "object").replace("list", "array")
        return InvalidEvent(f"not a JSON object (got {kind})", index, obj)
    try:
        return EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        return InvalidEvent(describe_validation_error(exc), index, obj)


def parse_message(payload: bytes | str) -> list[Event | InvalidEvent]:
    """All events of one message, in order; bad ones as `InvalidEvent` with the reason."""
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return [InvalidEvent(f"not JSON: {exc}")]
    if isinstance(decoded, list):
        if not decoded:
            return [InvalidEvent("empty envelope: a JSON array must hold at least one event")]
        return [validate_event(item, i) for i, item in enumerate(decoded)]
    return [validate_event(decoded)]
