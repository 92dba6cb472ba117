"""The parsing path under fuzzing: arbitrary bytes, arbitrary JSON, valid events with one field changed.

Whatever comes in, the parser and the intake answer with events and counted rejections, never an
exception; every event they accept lies within every bound of the contract; every dead letter fits a
default broker and has a reason kind from the bounded set.
"""

from __future__ import annotations

import math
import re
import time
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas.deadletter import DEADLETTER_MESSAGE_LIMIT, DeadLetter
from schemas.events import (
    MAX_AMOUNT_DIGITS,
    MAX_ENGAGED_SECONDS,
    MAX_INTERVAL_COUNT,
    MAX_PAGEVIEWS,
    MAX_QUANTITY,
    UNPRINTABLE_CHARS,
    Event,
    FormFill,
    SiteVisit,
    Spend,
    StageChange,
    Subscription,
)
from schemas.parsing import InputLimits, InvalidEvent, parse_message
from stream.app.intake import Intake, Origin
from stream.core.policy import Policy
from tests.strategies import as_json_fields, events_as_fields, json_values

NOW_MS = int(time.time() * 1000)
LIMITS = InputLimits(max_message_bytes=64 * 1024, max_envelope_events=50)
"""Small limits, so the fuzzer reaches them."""
KINDS = {
    "not_json",
    "not_object",
    "empty_envelope",
    "invalid",
    "future",
    "too_old",
    "duplicate_key",
    "too_large",
    "unknown_currency",
    "late",
}
ID_FIELDS = {"event_id", "session_id", "visitor_id", "contact_id", "account_id", "subscription_id", "form_id"}
FIELD_NAMES = sorted(
    {name for cls in (SiteVisit, FormFill, StageChange, Subscription, Spend) for name in cls.model_fields}
)
"""Every field name of the contract."""
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


UNPRINTABLE = re.compile(f"[{UNPRINTABLE_CHARS}]")


def unprintable(text: str) -> bool:
    return UNPRINTABLE.search(text) is not None


def assert_within_bounds(event: Event) -> None:
    """Every bound of the contract, checked on an accepted event."""
    assert LIMITS.earliest_ms <= event.occurred_ms <= NOW_MS + LIMITS.max_future_ms
    for name, value in event:
        if isinstance(value, str):
            assert len(value) <= 2048, name
            if name in ID_FIELDS:
                assert not unprintable(value), name
                assert value.strip(), name
        if isinstance(value, Decimal):
            assert value.is_finite()
            assert value >= 0
            assert len(value.as_tuple().digits) <= MAX_AMOUNT_DIGITS
        if isinstance(value, BaseModel):  # utm
            for label in value.model_dump().values():
                assert label is None or (len(label) <= 200 and not unprintable(label))
    if isinstance(event, SiteVisit):
        assert type(event.pageviews) is int
        assert 1 <= event.pageviews <= MAX_PAGEVIEWS
        assert math.isfinite(event.engaged_seconds)
        assert 0 <= event.engaged_seconds <= MAX_ENGAGED_SECONDS
        assert event.pages is None or (len(event.pages) <= 200 and all(len(p) <= 2048 for p in event.pages))
    if isinstance(event, Subscription):
        assert type(event.quantity) is int
        assert 0 <= event.quantity <= MAX_QUANTITY
        assert type(event.interval_count) is int
        assert 1 <= event.interval_count <= MAX_INTERVAL_COUNT


def judge_everywhere(payload: bytes) -> None:
    """The parser and the intake on one message: no exception, counts that add up, bounded outputs."""
    items = parse_message(payload, now_ms=NOW_MS, limits=LIMITS)
    assert 1 <= len(items) <= LIMITS.max_envelope_events
    for item in items:
        if isinstance(item, InvalidEvent):
            assert 0 < len(item.reason) <= 1_000
            assert not unprintable(item.reason)
        else:
            assert_within_bounds(item)
    intake = Intake(Policy(limits=LIMITS), partitions=4)
    judged = intake.judge(payload, Origin("site.visits", 1, 7), None, NOW_MS)
    assert judged.read == len(items) == judged.invalid + judged.rejected + len(judged.events)
    assert len(judged.dead_letters) == judged.invalid + judged.rejected
    for kind, letter in judged.dead_letters:
        assert kind in KINDS
        assert len(letter) <= DEADLETTER_MESSAGE_LIMIT
        assert DeadLetter.model_validate_json(letter).key is not None
    for _, event in judged.events:
        assert_within_bounds(event)


@FUZZ
@given(payload=st.binary(max_size=600))
def test_arbitrary_bytes_are_events_or_counted_rejections(payload: bytes) -> None:
    judge_everywhere(payload)


@FUZZ
@given(value=json_values)
def test_arbitrary_json_is_events_or_counted_rejections(value: Any) -> None:
    judge_everywhere(orjson.dumps(value))


@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {"type": st.sampled_from(["site_visit", "form_fill", "stage_change", "subscription", "spend"])},
        optional=dict.fromkeys([name for name in FIELD_NAMES if name != "type"], json_values),
    )
)
def test_objects_with_the_contracts_field_names_and_any_values_never_break_it(fields: dict[str, Any]) -> None:
    judge_everywhere(orjson.dumps(fields))


@FUZZ
@given(
    fields=events_as_fields,
    change=st.one_of(
        st.tuples(st.just("set"), st.text(max_size=16), json_values),
        st.tuples(st.just("delete"), st.just(""), st.none()),
        st.tuples(st.just("repeat"), st.just(""), json_values),
    ),
    which=st.integers(min_value=0),
    envelope=st.booleans(),
)
def test_a_valid_event_with_one_field_changed_is_accepted_within_bounds_or_rejected(
    fields: dict[str, Any], change: tuple[str, str, Any], which: int, envelope: bool
) -> None:
    event = as_json_fields(fields)
    names = sorted(event)
    action, new_name, value = change
    target = names[which % len(names)]
    payload: bytes
    if action == "set":
        event[new_name or target] = value
        payload = orjson.dumps(event)
    elif action == "delete":
        del event[target]
        payload = orjson.dumps(event)
    else:  # the same key again, at the end: the message must be refused, not read either way
        payload = orjson.dumps(event)[:-1] + b"," + orjson.dumps(target) + b":" + orjson.dumps(value) + b"}"
    if envelope:
        payload = b"[" + orjson.dumps(as_json_fields(fields)) + b"," + payload + b"]"
    judge_everywhere(payload)
    items = parse_message(payload, now_ms=NOW_MS, limits=LIMITS)
    if action == "repeat":
        assert isinstance(items[-1], InvalidEvent)
        assert items[-1].reason.startswith("duplicate key")
    if envelope:  # the untouched neighbour is always kept
        assert not isinstance(items[0], InvalidEvent)
