"""Series: the leading indicators by hour and day, and each month's traffic, against hand-computed numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.events import EVENT_ADAPTER
from schemas.snapshot.series import DAILY_POINTS, HOURLY_POINTS
from stream.core.ledger import Ledger
from stream.core.policy import Policy
from stream.core.series import bucket_starts, build_series
from stream.core.totals import Totals
from stream.core.windows import DAY_MS, HOUR_MS, to_ms

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
"""A Monday; the last day of November, so the next day is another month."""


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


def visit(n: int, hours: float, channel: str, visitor: str, pageviews: int = 1) -> dict[str, Any]:
    return {
        "type": "site_visit",
        "event_id": f"sv-{n}",
        "occurred_at": at(hours),
        "session_id": f"s-{n}",
        "visitor_id": visitor,
        "channel": channel,
        "pageviews": pageviews,
        "engaged_seconds": 0,
    }


def lead(n: int, hours: float, contact: str, visitor: str) -> list[dict[str, Any]]:
    """A form fill in the visitor's session, then the contact's lead moment: the lead gets the visit's channel."""
    return [
        {
            "type": "form_fill",
            "event_id": f"ff-{n}",
            "occurred_at": at(hours),
            "form_id": "demo",
            "form_type": "demo_request",
            "contact_id": contact,
            "visitor_id": visitor,
        },
        {
            "type": "stage_change",
            "event_id": f"sc-{n}",
            "occurred_at": at(hours),
            "contact_id": contact,
            "to_stage": "lead",
        },
    ]


def folded(events: list[dict[str, Any]]) -> Totals:
    ledger = Ledger(Policy())
    ledger.fold_all(EVENT_ADAPTER.validate_python(raw) for raw in events)
    return ledger.totals()


# Hour 0 (09:00): 3 sessions (2 paid, one of them engaged; 1 organic), one paid lead.
# Hour 2 (11:00): 1 organic session, engaged.
# Day +1 (next day 10:30, December): 2 paid sessions by a new visitor and a returning one, one paid lead.
EVENTS = [
    visit(1, 0.1, "paid", "v1", pageviews=3),
    visit(2, 0.2, "paid", "v2"),
    visit(3, 0.3, "organic", "v3"),
    *lead(1, 0.5, "c1", "v1"),
    visit(4, 2.5, "organic", "v3", pageviews=2),
    visit(5, 25.5, "paid", "v4"),
    visit(6, 25.6, "paid", "v1"),
    *lead(2, 25.7, "c2", "v4"),
]
AS_OF = to_ms(T0 + timedelta(hours=25.7))


def test_hourly_buckets_start_at_the_first_events_hour_and_end_at_the_as_of_hour() -> None:
    series = build_series(folded(EVENTS), AS_OF, to_ms(T0), Policy())
    hourly = series.hourly
    assert hourly.times[0] == T0
    assert hourly.times[-1] == T0 + timedelta(hours=25)
    assert len(hourly.times) == 26
    assert hourly.end == T0 + timedelta(hours=25, minutes=43)  # the minute after 10:42 of the next day
    overall = hourly.overall
    assert overall.sessions[:4] == [3, 0, 1, 0]
    assert overall.sessions[25] == 2
    assert sum(overall.sessions) == 6
    assert overall.engaged_sessions[:3] == [1, 0, 1]
    assert sum(overall.engaged_sessions) == 2
    assert overall.new_leads[0] == 1
    assert overall.new_leads[25] == 1
    assert sum(overall.new_leads) == 2
    assert overall.visit_to_lead_rate[0] == 1 / 3
    assert overall.visit_to_lead_rate[2] == 0.0
    assert overall.visit_to_lead_rate[1] is None  # no sessions: no sample, never 0
    assert overall.visit_to_lead_rate[25] == 1 / 2
    assert set(hourly.by_channel) == {"organic", "paid"}
    paid = hourly.by_channel["paid"]
    assert paid.sessions[0] == 2
    assert paid.new_leads[0] == 1
    assert paid.visit_to_lead_rate[0] == 1 / 2
    assert hourly.by_channel["organic"].new_leads[0] == 0
    assert hourly.by_channel["organic"].visit_to_lead_rate[0] == 0


def test_daily_buckets_are_utc_days() -> None:
    daily = build_series(folded(EVENTS), AS_OF, to_ms(T0), Policy()).daily
    assert daily.step == "day"
    assert daily.step_seconds == 86_400
    assert daily.times == [datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)]
    assert daily.overall.sessions == [4, 2]
    assert daily.overall.engaged_sessions == [2, 0]
    assert daily.overall.new_leads == [1, 1]
    assert daily.overall.visit_to_lead_rate == [1 / 4, 1 / 2]
    assert daily.by_channel["paid"].sessions == [2, 2]
    assert daily.by_channel["organic"].sessions == [2, 0]


def test_months_carry_traffic_with_the_unique_visitors_of_each_month() -> None:
    months = build_series(folded(EVENTS), AS_OF, to_ms(T0), Policy()).months
    assert list(months) == ["2026-11", "2026-12"]
    november, december = months["2026-11"], months["2026-12"]
    assert (november.sessions, november.engaged_sessions, november.new_leads) == (4, 2, 1)
    assert november.visit_to_lead_rate == 1 / 4
    assert november.unique_visitors == 3  # v1, v2 and v3 (twice)
    assert (november.by_channel["paid"].unique_visitors, november.by_channel["organic"].unique_visitors) == (2, 1)
    assert (december.sessions, december.new_leads, december.visit_to_lead_rate) == (2, 1, 1 / 2)
    assert december.unique_visitors == 2  # v4 and v1 came back in December
    assert december.by_channel["paid"].unique_visitors == 2
    assert november.by_channel["organic"].sessions == 2
    assert november.by_channel["paid"].new_leads == 1


def test_the_number_of_points_is_fixed_however_long_the_history() -> None:
    first = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
    as_of = to_ms(datetime(2026, 11, 30, 9, 30, tzinfo=UTC))
    hours = bucket_starts(first, as_of, HOUR_MS, HOURLY_POINTS)
    days = bucket_starts(first, as_of, DAY_MS, DAILY_POINTS)
    assert len(hours) == 168
    assert hours[-1] == to_ms(datetime(2026, 11, 30, 9, tzinfo=UTC))
    assert len(days) == 90
    assert days[-1] == to_ms(datetime(2026, 11, 30, tzinfo=UTC))
    assert days[0] == to_ms(datetime(2026, 9, 2, tzinfo=UTC))
    policy = Policy(snapshot_months=3)
    totals = folded([visit(1, -24 * 400, "paid", "v1"), visit(2, 0, "paid", "v1")])
    series = build_series(totals, to_ms(T0), to_ms(T0) - 400 * DAY_MS, policy)
    assert len(series.hourly.times) == 168
    assert len(series.daily.times) == 90
    assert list(series.months) == ["2026-09", "2026-10", "2026-11"]
    assert series.daily.overall.sessions[-1] == 1
    assert sum(series.daily.overall.sessions) == 1


def test_no_events_gives_empty_series() -> None:
    series = build_series(Totals(), None, None, Policy())
    assert series.as_of is None
    assert series.months == {}
    assert series.hourly.times == []
    assert series.hourly.overall.sessions == []
    assert series.daily.by_channel == {}
