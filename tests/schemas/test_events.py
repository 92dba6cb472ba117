"""The input contract (README, "Input events"): what is accepted, what is refused and why."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from schemas.channels import Channel
from schemas.events import EVENT_ADAPTER, FormFill, SiteVisit, StageChange, Subscription
from schemas.parsing import InvalidEvent, parse_message

NOW_MS = 1_795_435_200_000
"""2026-11-23T12:00:00Z: the wall clock the events here are judged against."""


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


def parse_one(obj: Any) -> Any:
    [item] = parse_message(orjson.dumps(obj), now_ms=NOW_MS)
    return item


def reason_of(obj: Any) -> str:
    item = parse_one(obj)
    assert isinstance(item, InvalidEvent), item
    return item.reason


def test_a_minimal_site_visit_is_valid_and_direct() -> None:
    event = parse_one(visit())
    assert isinstance(event, SiteVisit)
    assert event.channel is Channel.DIRECT
    assert event.occurred_ms == 1_795_424_400_000


def test_timestamps_with_any_offset_are_normalised_to_the_same_instant() -> None:
    a = parse_one(visit(occurred_at="2026-11-23T10:00:00+01:00"))
    b = parse_one(visit(occurred_at="2026-11-23T09:00:00Z"))
    assert a.occurred_ms == b.occurred_ms


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"occurred_at": "2026-11-23T09:00:00"}, "occurred_at: timestamp has no UTC offset"),
        ({"occurred_at": 1795424400}, "occurred_at: Value error, must be an RFC 3339 timestamp"),
        ({"occurred_at": "yesterday"}, "occurred_at: Value error, must be an RFC 3339 timestamp"),
        ({"occurred_at": "2026-13-23T09:00:00Z"}, "occurred_at: Input should be a valid datetime"),
        ({"pageviews": 0}, "pageviews: Input should be greater than or equal to 1"),
        ({"engaged_seconds": -1}, "engaged_seconds: Input should be greater than or equal to 0"),
        ({"event_id": ""}, "event_id: String should have at least 1 character"),
        ({"event_id": "x" * 129}, "event_id: String should have at most 128 characters"),
        ({"channel": "tv"}, "channel: Input should be 'organic'"),
        ({"type": "page_view"}, "type: unknown event type 'page_view'"),
        ({"schema_version": 2}, "schema_version: Input should be 1"),
    ],
)
def test_invalid_site_visits_are_refused_with_a_reason_naming_the_field(fields: dict[str, Any], reason: str) -> None:
    assert reason_of(visit(**fields)).startswith(reason)


def test_a_missing_field_and_a_missing_type_are_named() -> None:
    without_visitor = visit()
    del without_visitor["visitor_id"]
    assert reason_of(without_visitor) == "visitor_id: Field required"
    without_type = visit()
    del without_type["type"]
    assert reason_of(without_type).startswith("type: missing")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"42", "not a JSON object (got int)"),
        (b'"hello"', "not a JSON object (got str)"),
        (b"null", "not a JSON object (got null)"),
        (b"[]", "empty envelope"),
    ],
)
def test_messages_that_are_not_events_are_refused(payload: bytes, reason: str) -> None:
    [item] = parse_message(payload, now_ms=NOW_MS)
    assert isinstance(item, InvalidEvent)
    assert item.reason.startswith(reason)


def test_an_envelope_keeps_good_events_and_reports_the_bad_one_by_position() -> None:
    items = parse_message(
        orjson.dumps([visit(event_id="a"), visit(event_id="b", pageviews=0), visit(event_id="c")]), now_ms=NOW_MS
    )
    assert [type(item).__name__ for item in items] == ["SiteVisit", "InvalidEvent", "SiteVisit"]
    bad = items[1]
    assert isinstance(bad, InvalidEvent)
    assert bad.index == 1


@pytest.mark.parametrize(
    ("utm", "referrer", "channel"),
    [
        ({"source": "google", "medium": "cpc"}, None, Channel.PAID),
        ({"source": "linkedin", "medium": "paid_social"}, None, Channel.PAID),
        ({"source": "newsletter", "medium": "email"}, None, Channel.EMAIL),
        ({"source": "linkedin", "medium": "social"}, None, Channel.SOCIAL),
        ({"source": "facebook.com"}, None, Channel.SOCIAL),
        ({"source": "google", "medium": "organic"}, None, Channel.ORGANIC),
        ({"source": "partner.io", "medium": "referral"}, None, Channel.REFERRAL),
        ({"source": "saastr", "medium": "conference"}, None, Channel.EVENT),
        ({"source": "podcast", "medium": "audio"}, None, Channel.OTHER),
        (None, "https://www.google.co.uk/search?q=x", Channel.ORGANIC),
        (None, "https://t.co/abc", Channel.SOCIAL),
        (None, "https://blog.example.com/post", Channel.REFERRAL),
        (None, None, Channel.DIRECT),
        ({}, None, Channel.DIRECT),
    ],
)
def test_a_session_without_channel_gets_ga4s_default_grouping(
    utm: dict[str, str] | None, referrer: str | None, channel: Channel
) -> None:
    event = parse_one(visit(utm=utm, referrer=referrer))
    assert event.channel is channel


def test_an_explicit_channel_wins_over_utm() -> None:
    assert parse_one(visit(channel="event", utm={"medium": "cpc"})).channel is Channel.EVENT


def test_a_session_that_saw_pricing_is_marked() -> None:
    assert parse_one(visit(pages=["/", "/pricing/enterprise"])).viewed_pricing
    assert not parse_one(visit(pages=["/blog"], landing_page="/")).viewed_pricing


def test_values_cached_from_the_fields_follow_a_copy_that_changes_them() -> None:
    event = parse_one(visit(pages=["/pricing"]))
    assert event.occurred_ms == 1_795_424_400_000
    assert event.viewed_pricing
    moved = event.model_copy(update={"occurred_at": event.occurred_at.replace(hour=10), "pages": ["/blog"]})
    assert moved.occurred_ms == 1_795_428_000_000
    assert not moved.viewed_pricing
    assert event == parse_one(visit(pages=["/pricing"]))  # a cached value is not a field: equality ignores it
    assert set(event.model_dump()) == set(SiteVisit.model_fields)


def test_a_form_fill_without_channel_or_utm_waits_for_the_visitors_session() -> None:
    fill = parse_one(
        {
            "event_id": "f1",
            "type": "form_fill",
            "occurred_at": "2026-11-23T09:00:00Z",
            "form_id": "demo",
            "form_type": "demo_request",
            "contact_id": "c1",
            "visitor_id": "v1",
        }
    )
    assert isinstance(fill, FormFill)
    assert fill.channel is None


def test_money_is_decimal_and_must_be_finite_and_not_negative() -> None:
    base = {
        "event_id": "s1",
        "type": "subscription",
        "occurred_at": "2026-11-23T09:00:00Z",
        "account_id": "a1",
        "subscription_id": "sub1",
        "status": "active",
        "currency": "USD",
        "interval": "month",
    }
    event = parse_one(base | {"amount": 19.99})
    assert isinstance(event, Subscription)
    assert event.amount == Decimal("19.99")
    assert (event.interval_count, event.quantity) == (1, 1)
    assert reason_of(base | {"amount": -1}).startswith("amount: Input should be greater than or equal to 0")
    assert reason_of(base | {"amount": "NaN"}).startswith("amount:")
    assert reason_of(base | {"amount": 10, "currency": "usd"}).startswith("currency: String should match")


def test_a_stage_change_to_an_unknown_stage_is_refused() -> None:
    base = {
        "event_id": "x1",
        "type": "stage_change",
        "occurred_at": "2026-11-23T09:00:00Z",
        "contact_id": "c1",
    }
    assert isinstance(parse_one(base | {"to_stage": "mql"}), StageChange)
    assert reason_of(base | {"to_stage": "hot"}).startswith("to_stage: Input should be 'subscriber'")


def test_unknown_extra_fields_are_ignored_for_forward_compatibility() -> None:
    assert isinstance(parse_one(visit(device="mobile")), SiteVisit)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("utm", {"campaign": "c" * 201}),
        ("referrer", "https://example.com/" + "r" * 2048),
        ("pages", ["/p"] * 201),
        ("pages", ["/" + "p" * 2048]),
        ("source", "s" * 201),
    ],
)
def test_free_text_is_capped_so_one_event_cannot_make_an_output_huge(field: str, value: object) -> None:
    event = {
        "event_id": "e1",
        "type": "site_visit",
        "occurred_at": "2026-11-23T09:00:00Z",
        "session_id": "s1",
        "visitor_id": "v1",
        "pageviews": 1,
        "engaged_seconds": 0,
        field: value,
    }
    with pytest.raises(ValidationError):
        EVENT_ADAPTER.validate_python(event)
