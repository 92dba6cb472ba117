"""Each bound of the input contract (README, "Input events"): just inside is accepted, just outside is refused
with a reason that names the field or the setting."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from schemas.events import (
    MAX_ENGAGED_SECONDS,
    MAX_INTERVAL_COUNT,
    MAX_PAGEVIEWS,
    MAX_QUANTITY,
    EventBase,
    FormFill,
    SiteVisit,
    Spend,
    StageChange,
    Subscription,
    Utm,
)
from schemas.parsing import DAY_MS, InputLimits, InvalidEvent, parse_message, printable
from stream.settings import SettingsError, load_settings

NOW_MS = 1_795_435_200_000
"""2026-11-23T12:00:00Z."""
HOUR_MS = 3_600_000


def visit(**fields: Any) -> dict[str, Any]:
    return {
        "event_id": "e1",
        "type": "site_visit",
        "occurred_at": "2026-11-23T09:00:00Z",
        "session_id": "s1",
        "visitor_id": "v1",
        "pageviews": 1,
        "engaged_seconds": 0,
    } | fields


def subscription(**fields: Any) -> dict[str, Any]:
    return {
        "event_id": "s1",
        "type": "subscription",
        "occurred_at": "2026-11-23T09:00:00Z",
        "account_id": "a1",
        "subscription_id": "sub1",
        "status": "active",
        "amount": "49.99",
        "currency": "USD",
        "interval": "month",
    } | fields


DEFAULTS = InputLimits()


def judge(payload: bytes, limits: InputLimits = DEFAULTS, now_ms: int = NOW_MS) -> list[Any]:
    return parse_message(payload, now_ms=now_ms, limits=limits)


def one(obj: Any, limits: InputLimits = DEFAULTS, now_ms: int = NOW_MS) -> Any:
    [item] = judge(orjson.dumps(obj), limits, now_ms)
    return item


def reason(obj: Any, limits: InputLimits = DEFAULTS) -> str:
    item = one(obj, limits)
    assert isinstance(item, InvalidEvent), item
    return item.reason


def accepted(obj: Any) -> bool:
    return not isinstance(one(obj), InvalidEvent)


# -- event time ---------------------------------------------------------------------------


def test_an_event_at_the_floor_counts_and_one_millisecond_before_it_is_too_old() -> None:
    assert accepted(visit(occurred_at="2000-01-01T00:00:00Z"))
    assert reason(visit(occurred_at="1999-12-31T23:59:59.999Z")) == (
        "too old: occurred_at 1999-12-31T23:59:59.999000Z is before 2000-01-01T00:00:00Z (LEADLAG_MIN_EVENT_TIME)"
    )


def test_an_event_a_day_past_the_wall_clock_counts_and_one_a_second_later_is_future() -> None:
    assert accepted(visit(occurred_at="2026-11-24T12:00:00Z"))
    assert reason(visit(occurred_at="2026-11-24T12:00:01Z")) == (
        "future: occurred_at 2026-11-24T12:00:01Z is more than 24 h after the wall clock "
        "(2026-11-23T12:00:00Z; LEADLAG_MAX_FUTURE_HOURS)"
    )


@pytest.mark.parametrize(
    ("occurred_at", "prefix"),
    [
        ("9999-12-31T23:59:59Z", "future:"),
        ("9999-12-31T23:59:59-01:00", "future:"),  # year 10000 in UTC
        ("0001-01-01T00:00:00Z", "too old:"),
        ("0001-01-01T00:00:00+01:00", "too old:"),  # year 0 in UTC
        ("2062-03-01T00:00:00Z", "future:"),
        ("1000-02-01T00:00:00Z", "too old:"),
    ],
)
def test_instants_that_once_broke_the_snapshot_are_refused(occurred_at: str, prefix: str) -> None:
    assert reason(visit(occurred_at=occurred_at)).startswith(prefix)


def test_the_time_bounds_follow_the_limits_and_the_clock_given() -> None:
    limits = InputLimits(earliest_ms=NOW_MS - DAY_MS, max_future_ms=HOUR_MS)
    assert reason(visit(occurred_at="2026-11-22T11:59:59Z"), limits).startswith("too old:")
    assert reason(visit(occurred_at="2026-11-23T13:00:01Z"), limits).startswith("future: occurred_at")
    assert not isinstance(one(visit(occurred_at="2026-11-23T13:00:01Z"), limits, NOW_MS + 1000), InvalidEvent)


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0",
        "1763888400",
        "1795424400.5",
        "-1",
        "2026-11-23",
        "yesterday",
        "2026-11-23T09:00:00Z ",
        " 2026-11-23T09:00:00Z",
    ],
)
def test_a_timestamp_is_an_rfc_3339_string_never_a_number_in_a_string(occurred_at: str) -> None:
    assert reason(visit(occurred_at=occurred_at)).startswith("occurred_at: Value error, must be an RFC 3339 timestamp")


@pytest.mark.parametrize("occurred_at", [1795424400, 1795424400.0, True, None, ["2026-11-23T09:00:00Z"]])
def test_a_timestamp_of_another_json_type_is_refused(occurred_at: Any) -> None:
    assert reason(visit(occurred_at=occurred_at)).startswith("occurred_at:")


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-11-23T09:00:00Z",
        "2026-11-23t09:00:00z",
        "2026-11-23 09:00:00+01:00",
        "2026-11-23T09:00:00.123456789-05:30",
    ],
)
def test_rfc_3339_timestamps_in_their_allowed_spellings_are_accepted(occurred_at: str) -> None:
    assert accepted(visit(occurred_at=occurred_at))


# -- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        ({"pageviews": MAX_PAGEVIEWS}, True),
        ({"pageviews": MAX_PAGEVIEWS + 1}, False),
        ({"pageviews": 2**63}, False),
        ({"engaged_seconds": MAX_ENGAGED_SECONDS}, True),
        ({"engaged_seconds": 12.5}, True),
        ({"engaged_seconds": 86_400.001}, False),
        ({"engaged_seconds": 1e308}, False),
        ({"engaged_seconds": -0.001}, False),
    ],
)
def test_site_visit_numbers_are_bounded(fields: dict[str, Any], ok: bool) -> None:
    assert accepted(visit(**fields)) is ok


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        ({"quantity": MAX_QUANTITY}, True),
        ({"quantity": MAX_QUANTITY + 1}, False),
        ({"quantity": 10**18}, False),
        ({"quantity": 0}, True),
        ({"interval_count": MAX_INTERVAL_COUNT}, True),
        ({"interval_count": MAX_INTERVAL_COUNT + 1}, False),
        ({"amount": "99999999999999.999999"}, True),  # 20 digits, 6 after the point
        ({"amount": "99999999999999999999"}, True),
        ({"amount": "100000000000000000000"}, False),  # 21 digits
        ({"amount": "0.0000001"}, False),  # 7 after the point
        ({"amount": 1e20}, False),
    ],
)
def test_subscription_numbers_are_bounded(fields: dict[str, Any], ok: bool) -> None:
    assert accepted(subscription(**fields)) is ok


def test_two_maximal_sessions_sum_without_overflow() -> None:
    """The largest engaged time and amounts keep every sum, and every ratio of sums, a finite float."""
    biggest = Decimal("99999999999999999999") * MAX_QUANTITY * 10**9
    assert float(biggest) < 1e36
    assert 2 * MAX_ENGAGED_SECONDS * 10**12 < 1e18


# -- strict types -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, "1", "2", 1.0, 2.5, None, [1], {"n": 1}])
@pytest.mark.parametrize("field", ["pageviews"])
def test_an_integer_field_takes_only_a_json_integer(field: str, value: Any) -> None:
    assert reason(visit(**{field: value})).startswith(f"{field}: ")


@pytest.mark.parametrize("value", [True, "1", 1.0])
@pytest.mark.parametrize("field", ["quantity", "interval_count", "schema_version"])
def test_subscription_integers_and_the_schema_version_take_only_a_json_integer(field: str, value: Any) -> None:
    assert reason(subscription(**{field: value})).startswith(f"{field}: ")


@pytest.mark.parametrize("value", [True, "30", "30.5", None])
def test_engaged_seconds_takes_only_a_json_number(value: Any) -> None:
    assert reason(visit(engaged_seconds=value)).startswith("engaged_seconds: ")


@pytest.mark.parametrize("amount", ["49.99", 49.99, 49, "49", "0", "1e3", "1E-2", "007"])
def test_amounts_are_json_numbers_or_plain_decimal_strings(amount: Any) -> None:
    assert accepted(subscription(amount=amount))


@pytest.mark.parametrize(
    "amount",
    ["1_000", " 10 ", "10 ", "+5", "", ".5", "5.", "0x10", "1,000", "ten", "NaN", "Infinity", "-1", True, None],
)
def test_amounts_a_person_would_not_write_are_refused(amount: Any) -> None:
    assert reason(subscription(amount=amount)).startswith("amount:")


# -- ids, labels and text -----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "   ",
        "\t",
        "\n",
        "\u00a0",
        "v\x00",
        "v\x1b[31m",
        "v\x7f",
        "v\x85",
        "v\x9b31m",
        "a\u2028b",
        "a\u2029b",
        "s\u202egnp",
        "x\u2066",
    ],
)
@pytest.mark.parametrize("field", ["event_id", "visitor_id", "session_id", "contact_id"])
def test_ids_must_be_printable_and_more_than_spaces(field: str, bad: str) -> None:
    assert reason(visit(**{field: bad})) == (
        f"{field}: must be printable: more than spaces, no control characters or escape sequences"
    )


@pytest.mark.parametrize("good", ["a", "v-1", " padded ", "café", "日本", "😀", "[/bold]", "a b", "x\u200dy"])
def test_printable_ids_of_any_script_are_accepted(good: str) -> None:
    assert accepted(visit(event_id=good, visitor_id=good))


def test_labels_may_be_empty_but_hold_no_control_characters() -> None:
    assert accepted(visit(utm={"source": "", "campaign": "Spring Sale"}))
    assert reason(visit(utm={"campaign": "a\x1b[2Jb"})) == (
        "utm.campaign: must be printable: no control characters or escape sequences"
    )
    assert reason(visit(source="feed\nforged")).startswith("source: must be printable")


def _strings(schema: Any) -> list[dict[str, Any]]:
    """Every string schema inside `schema`."""
    if isinstance(schema, list):
        return [found for item in schema for found in _strings(item)]
    if not isinstance(schema, dict):
        return []
    here = [schema] if schema.get("type") == "string" else []
    return here + [found for value in schema.values() for found in _strings(value)]


@pytest.mark.parametrize("model", [EventBase, SiteVisit, FormFill, StageChange, Subscription, Spend, Utm])
def test_every_free_text_field_is_capped(model: type[BaseModel]) -> None:
    """Each string field has a maximum length, or a fixed set or shape of values; paths are capped by count
    and, each, by a validator."""
    for name, prop in model.model_json_schema(mode="validation")["properties"].items():
        for string in _strings(prop):
            if name == "pages":
                continue
            bounded = any(key in string for key in ("maxLength", "enum", "const", "format"))  # format: date-time
            assert bounded or string.get("pattern") == "^[A-Z]{3}$", name
    if model is SiteVisit:
        assert '"maxItems": 200' in json.dumps(SiteVisit.model_json_schema()["properties"]["pages"])
        assert (
            reason(visit(pages=["/" + "p" * 2048]))
            == "pages: Value error, a path in pages is longer than 2048 characters"
        )


# -- whole messages -----------------------------------------------------------------------


def test_a_message_over_the_size_limit_is_one_rejection() -> None:
    limits = InputLimits(max_message_bytes=1024)
    fits = orjson.dumps(visit(referrer="r" * (1024 - len(orjson.dumps(visit(referrer=""))))))
    assert len(fits) == 1024
    assert not isinstance(judge(fits, limits)[0], InvalidEvent)
    [item] = judge(fits[:-1] + b" }", limits)
    assert isinstance(item, InvalidEvent)
    assert item.index is None
    assert item.reason == "too large: message over 1,024 bytes (LEADLAG_MAX_MESSAGE_BYTES)"


def test_an_envelope_over_the_event_limit_is_one_rejection_not_one_per_event() -> None:
    limits = InputLimits(max_envelope_events=3)
    assert len(judge(orjson.dumps([visit(event_id=str(n)) for n in range(3)]), limits)) == 3
    [item] = judge(orjson.dumps([{}] * 4), limits)
    assert isinstance(item, InvalidEvent)
    assert item.index is None
    assert item.reason == "too large: envelope of 4 events, over 3 (LEADLAG_MAX_ENVELOPE_EVENTS)"


def test_three_megabytes_of_empty_objects_are_one_rejection() -> None:
    payload = b"[" + b",".join([b"{}"] * (1024 * 1024 + 1)) + b"]"
    [item] = judge(payload)
    assert isinstance(item, InvalidEvent)
    assert item.reason.startswith("too large")


# -- repeated keys ------------------------------------------------------------------------

VISIT = orjson.dumps(visit())[1:-1]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":"form_fill",' + VISIT + b"}",
        b"{" + VISIT + b',"event_id":"e2"}',
        b'{"pageviews" : 2, ' + VISIT + b"}",
        b'{"pageviews"\n:\t2,' + VISIT + b"}",
        b"{" + VISIT + b',"utm":{"source":"a","source":"b"}}',
        b"{" + VISIT + b',"extra":{"x":1,"x":2}}',
        b"{" + VISIT + b',"extra":[{"k":1,"k":2}]}',
    ],
)
def test_a_key_given_twice_anywhere_refuses_the_event(payload: bytes) -> None:
    [item] = judge(payload)
    assert isinstance(item, InvalidEvent)
    assert item.reason.startswith("duplicate key ")


def test_in_an_envelope_only_the_event_with_a_repeated_key_is_refused() -> None:
    good = orjson.dumps(visit(event_id="ok"))
    payload = b"[" + good + b",{" + VISIT + b',"type":"spend"},' + good + b"]"
    items = judge(payload)
    assert [isinstance(item, InvalidEvent) for item in items] == [False, True, False]
    assert items[1].index == 1
    assert items[1].reason == ("duplicate key 'type' in an object: each name may appear once (which value would win?)")


@pytest.mark.parametrize(
    "payload",
    [
        orjson.dumps(visit(referrer='https://x.test/?q="a":"b"', utm={"campaign": 'say \\":'})),
        json.dumps(visit(landing_page="/a b"), indent=2).encode(),
        json.dumps(visit(), separators=(" , ", " : ")).encode(),
        orjson.dumps(visit(extra={"nested": {"deeper": [{"a": 1}, {"a": 2}]}})),
        orjson.dumps([visit(event_id="a", extra={"x": 1}), visit(event_id="b", extra={"x": 1})]),
    ],
)
def test_no_false_alarm_on_quotes_spaces_or_nested_objects(payload: bytes) -> None:
    assert all(not isinstance(item, InvalidEvent) for item in judge(payload))


# -- printing -----------------------------------------------------------------------------


def test_printable_escapes_what_could_rewrite_a_terminal_and_cuts_long_text() -> None:
    assert printable("a\x1b[31mb\nc\rd\u202ee\x9bf\tg") == "a\\x1b[31mb\\nc\\rd\\u202ee\\x9bf\\tg"
    assert printable("ok [/bold] :fire: é") == "ok [/bold] :fire: é"
    assert printable("x" * 5000, 100) == "x" * 99 + "…"


def test_a_reason_quotes_at_most_a_little_of_the_input() -> None:
    text = reason(visit(type="t" * 100_000))
    assert len(text) < 200
    assert text.startswith("type: unknown event type 'tttt")


# -- settings -----------------------------------------------------------------------------


def test_the_limits_come_from_settings_with_documented_defaults() -> None:
    assert load_settings().policy().limits == InputLimits()
    limits = (
        load_settings(
            min_event_time="2020-01-01T00:00:00Z",
            max_future_hours=1.5,
            max_message_bytes=2048,
            max_envelope_events=5,
            deadletter_max_bytes=4096,
        )
        .policy()
        .limits
    )
    assert limits == InputLimits(1_577_836_800_000, 5_400_000, 2048, 5, 4096)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("min_event_time", "0"),
        ("min_event_time", "2020-01-01"),
        ("min_event_time", "1969-12-31T23:59:59Z"),
        ("max_future_hours", "-1"),
        ("max_future_hours", "soon"),
        ("max_message_bytes", "100"),
        ("max_envelope_events", "0"),
        ("deadletter_max_bytes", "2000000"),
    ],
)
def test_a_bad_limit_stops_start_up_naming_the_variable(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"LEADLAG_{name.upper()}", value)
    with pytest.raises(SettingsError, match=f"LEADLAG_{name.upper()}"):
        load_settings()
