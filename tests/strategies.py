"""Hypothesis strategies: small worlds of mixed events with few ids, so entities collide and link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from schemas.events import EVENT_ADAPTER, Event

START = datetime(2026, 9, 1, tzinfo=UTC)
SPAN_MINUTES = 75 * 24 * 60

visitors = st.sampled_from([f"v{i}" for i in range(6)])
contacts = st.sampled_from([f"c{i}" for i in range(5)])
accounts = st.sampled_from([f"a{i}" for i in range(3)])
channels = st.sampled_from(["organic", "paid", "direct", "referral", "social", "email", "event", "other"])
campaigns = st.sampled_from([None, "spring", "launch"])
moments = st.integers(min_value=0, max_value=SPAN_MINUTES).map(lambda m: START + timedelta(minutes=m))
money = st.sampled_from([Decimal("0"), Decimal("49"), Decimal("99.5"), Decimal("1200"), Decimal("5000")])


@st.composite
def site_visits(draw: st.DrawFn) -> dict[str, Any]:
    campaign = draw(campaigns)
    return {
        "type": "site_visit",
        "occurred_at": draw(moments),
        "session_id": f"s{draw(st.integers(0, 10_000))}",
        "visitor_id": draw(visitors),
        "contact_id": draw(st.one_of(st.none(), contacts)),
        "channel": draw(st.one_of(st.none(), channels)),
        "utm": None if campaign is None else {"source": "google", "medium": "cpc", "campaign": campaign},
        "pageviews": draw(st.integers(1, 6)),
        "engaged_seconds": draw(st.sampled_from([0, 4.5, 12, 300])),
        "pages": draw(st.sampled_from([None, ["/"], ["/", "/pricing"]])),
    }


@st.composite
def form_fills(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "form_fill",
        "occurred_at": draw(moments),
        "form_id": "f",
        "form_type": draw(st.sampled_from(["demo_request", "newsletter", "trial_signup", "webinar_registration"])),
        "contact_id": draw(contacts),
        "visitor_id": draw(st.one_of(st.none(), visitors)),
        "channel": draw(st.one_of(st.none(), channels)),
    }


@st.composite
def stage_changes(draw: st.DrawFn) -> dict[str, Any]:
    stage = draw(
        st.sampled_from(["subscriber", "lead", "mql", "sql", "opportunity", "customer", "disqualified", "lost"])
    )
    return {
        "type": "stage_change",
        "occurred_at": draw(moments),
        "contact_id": draw(contacts),
        "account_id": draw(st.one_of(st.none(), accounts)),
        "to_stage": stage,
        "amount": draw(money) if stage in {"opportunity", "customer"} and draw(st.booleans()) else None,
    }


@st.composite
def subscriptions(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "subscription",
        "occurred_at": draw(moments),
        "account_id": draw(accounts),
        "subscription_id": f"sub{draw(st.integers(0, 2))}",
        "status": draw(st.sampled_from(["trialing", "active", "past_due", "cancelled"])),
        "plan": draw(st.sampled_from([None, "pro", "team"])),
        "amount": draw(money),
        "currency": draw(st.sampled_from(["USD", "USD", "EUR"])),
        "interval": draw(st.sampled_from(["month", "year", "quarter", "week"])),
        "quantity": draw(st.integers(0, 3)),
    }


@st.composite
def spends(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "spend",
        "occurred_at": draw(moments),
        "channel": draw(channels),
        "campaign": draw(campaigns),
        "category": draw(st.sampled_from(["marketing", "sales"])),
        "amount": draw(money),
        "currency": "USD",
    }


@st.composite
def event_lists(draw: st.DrawFn, max_size: int = 40) -> list[Event]:
    """Distinct events (unique event_id) of every type, in a random order."""
    raw = draw(
        st.lists(st.one_of(site_visits(), form_fills(), stage_changes(), subscriptions(), spends()), max_size=max_size)
    )
    return [EVENT_ADAPTER.validate_python({**fields, "event_id": f"e{i}"}) for i, fields in enumerate(raw)]


events_as_fields = st.one_of(site_visits(), form_fills(), stage_changes(), subscriptions(), spends())
"""One event of any type, as the field dict the strategies above draw (Python values: datetime, Decimal)."""


def as_json_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """An event's fields as a producer writes them in JSON: RFC 3339 strings for instants, strings for amounts."""
    converted: dict[str, Any] = {"event_id": "e"}
    for name, value in fields.items():
        if isinstance(value, datetime):
            converted[name] = value.isoformat().replace("+00:00", "Z")
        elif isinstance(value, Decimal):
            converted[name] = str(value)
        else:
            converted[name] = value
    return converted


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what orjson writes
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", " ", "0", "1", "1763888400", "1_000", " 10 ", "NaN", "[/bold]", "\x1b[31m", "\n", "\u202e"]),
    st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2062-01-01T00:00:00Z", "2026-11-23T09:00:00"]),
    st.sampled_from([2**63, 10**18, 1e308, -1, 0, 1.5, 86_401, 100_001, 10**15]),
)
"""JSON values, with a bias to the ones that broke leadlag once (issue 10)."""

json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
"""Any JSON value, nested a little."""
