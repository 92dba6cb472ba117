"""Traffic: sessions, unique visitors, engagement and visit→lead (stream/core/traffic.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import SiteVisit
from stream.core.ledger import Shard
from stream.core.links import Touch, VisitorLink
from stream.core.policy import Policy
from stream.core.totals import Totals
from stream.core.traffic import (
    MONTH_VISITORS,
    MONTH_VISITORS_ALL,
    VISITOR_SESSIONS_KEPT,
    VisitorState,
    apply_site_visit,
    apply_visitor_link,
    top_campaigns,
    traffic_window,
)
from stream.core.windows import Span, Window, month_label, month_span, to_ms, window_span

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def visit(n: int, visitor: str = "v1", minutes: int = 0, **fields: Any) -> SiteVisit:
    return SiteVisit.model_validate(
        {
            "event_id": f"sv-{n}",
            "occurred_at": T0 + timedelta(minutes=minutes),
            "session_id": f"s-{n}",
            "visitor_id": visitor,
            "pageviews": 1,
            "engaged_seconds": 0,
        }
        | fields
    )


def folded(*visits: SiteVisit) -> Totals:
    shard = Shard(Policy())
    for v in visits:
        shard.fold(v)
    return shard.totals


LAST_HOUR = window_span(Window.LAST_1H, to_ms(T0 + timedelta(minutes=59)))


def test_sessions_engagement_and_bounce_computed_by_hand() -> None:
    totals = folded(
        visit(1, pageviews=3, engaged_seconds=40, channel="paid"),  # engaged by pageviews and time
        visit(2, pageviews=1, engaged_seconds=10, channel="paid"),  # engaged by time (≥ 10 s)
        visit(3, pageviews=1, engaged_seconds=9.5, channel="organic"),  # bounced
        visit(4, visitor="v2", pageviews=2, engaged_seconds=0.5, channel="organic"),  # engaged by pageviews
    )
    window = traffic_window(totals, LAST_HOUR)
    assert window.sessions == 4
    assert window.engaged_sessions == 3
    assert window.engagement_rate == pytest.approx(0.75)
    assert window.bounce_rate == pytest.approx(0.25)
    assert window.average_engaged_seconds == pytest.approx((40 + 10 + 9.5 + 0.5) / 4)
    assert window.pageviews_per_session == pytest.approx(7 / 4)
    assert window.by_channel["paid"].sessions == 2
    assert window.by_channel["organic"].bounce_rate == pytest.approx(0.5)


def test_a_visitor_with_many_sessions_is_one_unique_visitor_overall_and_per_channel() -> None:
    totals = folded(
        visit(1, channel="paid"), visit(2, channel="paid"), visit(3, channel="email"), visit(4, visitor="v2")
    )
    window = traffic_window(totals, LAST_HOUR)
    assert window.unique_visitors == 2
    assert window.by_channel["paid"].unique_visitors == 1
    assert window.by_channel["email"].unique_visitors == 1


def test_a_repeated_event_id_counts_once() -> None:
    state = VisitorState()
    assert not apply_site_visit(state, visit(1)).duplicate
    assert apply_site_visit(state, visit(1)).duplicate
    assert traffic_window(folded(visit(1), visit(1)), LAST_HOUR).sessions == 1


def test_sessions_outside_the_window_are_not_counted() -> None:
    totals = folded(visit(1, minutes=-1), visit(2, minutes=0), visit(3, minutes=59), visit(4, minutes=60))
    assert traffic_window(totals, LAST_HOUR).sessions == 2


def test_rates_are_absent_when_there_are_no_sessions() -> None:
    window = traffic_window(Totals(), LAST_HOUR)
    assert window.sessions == 0
    assert window.engagement_rate is None
    assert window.bounce_rate is None
    assert window.visit_to_lead_rate is None
    assert window.by_channel == {}


def test_visit_to_lead_is_new_leads_over_sessions_in_the_same_channel() -> None:
    totals = folded(*(visit(n, visitor=f"v{n}", channel="paid") for n in range(200)))
    for n in range(10):
        totals.add("stage_entries", ("lead", "paid", "none"), to_ms(T0) + n, 1)
    totals.add("stage_entries", ("lead", "email", "none"), to_ms(T0), 1)
    window = traffic_window(totals, LAST_HOUR)
    assert window.by_channel["paid"].visit_to_lead_rate == pytest.approx(0.05)
    assert window.by_channel["email"].new_leads == 1
    assert window.by_channel["email"].visit_to_lead_rate is None  # no email sessions: absent, not infinite
    assert window.visit_to_lead_rate == pytest.approx(11 / 200)


def test_campaigns_beyond_the_top_n_are_summed_as_other() -> None:
    assert top_campaigns({"a": 5, "b": 3, "c": 2, "d": 1}, 2) == {"a": 5, "b": 3, "other": 3}


def test_a_session_naming_its_contact_sends_every_session_of_the_visitor_to_it() -> None:
    state = VisitorState()
    apply_site_visit(state, visit(1))
    step = apply_site_visit(state, visit(2, minutes=5, contact_id="c1", channel="email"))
    assert sorted((t.contact_id, t.session_event_id) for t in step.emitted if isinstance(t, Touch)) == [
        ("c1", "sv-1"),
        ("c1", "sv-2"),
    ]
    later = apply_site_visit(state, visit(3, minutes=9))
    assert [(t.contact_id, t.session_event_id) for t in later.emitted if isinstance(t, Touch)] == [("c1", "sv-3")]


def test_a_repeated_visitor_link_sends_the_kept_sessions_again_to_repair_what_a_crash_lost() -> None:
    state = VisitorState()
    apply_site_visit(state, visit(1, channel="paid"))
    first = apply_visitor_link(state, VisitorLink("v1", "c9"))
    assert [(t.contact_id, t.channel) for t in first.emitted if isinstance(t, Touch)] == [("c9", "paid")]
    assert apply_visitor_link(state, VisitorLink("v1", "c9")).emitted == first.emitted
    assert state.contacts == ["c9"]


def test_a_duplicate_session_sends_its_touch_again_and_counts_nothing() -> None:
    state = VisitorState()
    apply_site_visit(state, visit(1, contact_id="c1"))
    again = apply_site_visit(state, visit(1, contact_id="c1"))
    assert again.duplicate
    assert not again.delta.counts
    assert [(t.contact_id, t.session_event_id) for t in again.emitted if isinstance(t, Touch)] == [("c1", "sv-1")]


def test_a_visitor_keeps_its_first_session_and_its_latest_ones_however_many_it_has() -> None:
    state = VisitorState()
    for n in range(1000):
        apply_site_visit(state, visit(n, minutes=n * 10, channel="paid" if n % 2 else "email"))
    assert len(state.sessions) == VISITOR_SESSIONS_KEPT + 1
    assert state.sessions[0].event_id == "sv-0"
    assert [s.event_id for s in state.sessions[1:]] == [f"sv-{n}" for n in range(990, 1000)]
    assert state.last_visits == {"paid": to_ms(T0) + 999 * 10 * 60_000, "email": to_ms(T0) + 998 * 10 * 60_000}
    assert len(state.recent) <= 2 * 7 * 24 * 6 + 16  # the ids of the dedupe horizon (7 days of 10-minute visits)


def test_a_session_older_than_the_dedupe_horizon_is_counted_again() -> None:
    """Documented bound: ids are remembered for 7 days (event time) after the visitor's newest event."""
    shard = Shard(Policy())
    shard.fold(visit(1))
    shard.fold(visit(2, minutes=8 * 24 * 60))
    shard.fold(visit(1))
    assert shard.totals.total("sessions", Span(to_ms(T0), to_ms(T0) + 60_000)) == 2


def test_unique_visitors_count_each_visitor_once_at_its_last_visit_in_every_window() -> None:
    totals = folded(visit(1, channel="paid"), visit(2, minutes=90, channel="email"), visit(3, visitor="v2", minutes=30))
    as_of = to_ms(T0 + timedelta(minutes=90))
    last_hour, last_day = window_span(Window.LAST_1H, as_of), window_span(Window.LAST_24H, as_of)
    assert traffic_window(totals, last_hour).unique_visitors == 1
    assert traffic_window(totals, last_day).unique_visitors == 2
    assert traffic_window(totals, last_day).by_channel["paid"].unique_visitors == 1
    assert "paid" not in traffic_window(totals, last_hour).by_channel


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(range(5)))
def test_the_touches_a_contact_receives_do_not_depend_on_arrival_order(order: list[int]) -> None:
    items: list[SiteVisit | VisitorLink] = [
        visit(1, channel="paid"),
        visit(2, minutes=3, channel="email"),
        visit(3, minutes=7, contact_id="c1"),
        VisitorLink("v1", "c2"),
        visit(4, minutes=9, channel="social"),
    ]
    state = VisitorState()
    received: set[tuple[str, str]] = set()
    for index in order:
        item = items[index]
        step = apply_site_visit(state, item) if isinstance(item, SiteVisit) else apply_visitor_link(state, item)
        received |= {(t.contact_id, t.session_event_id) for t in step.emitted if isinstance(t, Touch)}
    assert received == {(c, f"sv-{n}") for c in ("c1", "c2") for n in (1, 2, 3, 4)}


def test_unique_visitors_over_a_month_union_the_days() -> None:
    totals = folded(visit(1), visit(2, minutes=24 * 60 * 3), visit(3, visitor="v2", minutes=24 * 60 * 5))
    month = Span(to_ms(datetime(2026, 11, 1, tzinfo=UTC)), to_ms(datetime(2026, 12, 1, tzinfo=UTC)))
    assert traffic_window(totals, month).unique_visitors == 2


MONTHS = [month_span(label) for label in ("2026-09", "2026-10", "2026-11")]
"""Sessions of the month tests: visitor v1 in Sep (paid) and Nov (paid, email); v2 in Oct and Nov (organic)."""
MONTH_VISITS = [
    visit(1, channel="paid", minutes=-60 * 24 * 60),
    visit(2, visitor="v2", channel="organic", minutes=-30 * 24 * 60),
    visit(3, channel="paid"),
    visit(4, channel="email", minutes=5),
    visit(5, visitor="v2", channel="organic", minutes=9),
    visit(6, channel="paid", minutes=20),
]


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(range(len(MONTH_VISITS))))
def test_each_past_month_counts_its_distinct_visitors_whatever_the_arrival_order(order: list[int]) -> None:
    totals = folded(*(MONTH_VISITS[index] for index in order))

    assert [totals.total(MONTH_VISITORS_ALL, month) for month in MONTHS] == [1, 1, 2]
    assert [totals.total_by(MONTH_VISITORS, month, 0) for month in MONTHS] == [
        {"paid": 1},
        {"organic": 1},
        {"paid": 1, "email": 1, "organic": 1},
    ]


def test_a_visitor_remembers_only_the_latest_months_the_snapshot_lists() -> None:
    policy = Policy(snapshot_months=2)
    state = VisitorState()
    for n, days in enumerate((-60, -30, 0)):
        apply_site_visit(state, visit(n, minutes=days * 24 * 60), policy)

    assert [month_label(month) for month in state.months] == ["2026-10", "2026-11"]
    older = apply_site_visit(state, visit(9, minutes=-90 * 24 * 60), policy)
    assert older.delta.counts.get((MONTH_VISITORS_ALL, (), month_span("2026-08").start_ms)) is None
    assert len(state.months) == 2
