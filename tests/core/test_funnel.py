"""Funnel: stage entries, exits, staleness, conversion, time to convert, pipeline (stream/core/funnel.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.channels import NO_CAMPAIGN, UNKNOWN_CHANNEL
from schemas.events import Event, FormFill, SiteVisit, Stage, StageChange
from stream.core import funnel
from stream.core.attribution import ATTRIBUTION_CREDIT, attribution_window
from stream.core.funnel import (
    FORM_FILLS,
    IN_STAGE,
    STAGE_ENTRIES,
    STAGE_EXITS,
    ContactState,
    apply_form_fill,
    apply_stage_change,
    apply_touch,
    contact_facts,
    funnel_window,
    lead_cohorts,
)
from stream.core.ledger import Ledger, RejectedEvent, Shard
from stream.core.links import AccountLink, Link, Step, Touch, VisitorLink
from stream.core.policy import Policy
from stream.core.totals import BEGINNING_MS, Facts, MoneyFacts, Totals
from stream.core.windows import DAY_MS, Span, to_ms

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_MS = to_ms(T0)
EVERYTHING = Span(BEGINNING_MS, T0_MS + 400 * DAY_MS)
POLICY = Policy(fx_rates={"EUR": Decimal("1.1")})

_serial = iter(range(10**9))


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def stage(contact: str, to_stage: str, days: float = 0, hours: float = 0, **fields: Any) -> StageChange:
    return StageChange.model_validate(
        {
            "event_id": fields.pop("event_id", f"sc-{next(_serial)}"),
            "occurred_at": at(days, hours),
            "contact_id": contact,
            "to_stage": to_stage,
        }
        | fields
    )


def fill(contact: str, days: float = 0, hours: float = 0, **fields: Any) -> FormFill:
    return FormFill.model_validate(
        {
            "event_id": fields.pop("event_id", f"ff-{next(_serial)}"),
            "occurred_at": at(days, hours),
            "form_id": "f1",
            "form_type": fields.pop("form_type", "demo_request"),
            "contact_id": contact,
        }
        | fields
    )


def visit(visitor: str, days: float = 0, hours: float = 0, **fields: Any) -> SiteVisit:
    n = next(_serial)
    return SiteVisit.model_validate(
        {
            "event_id": fields.pop("event_id", f"sv-{n}"),
            "occurred_at": at(days, hours),
            "session_id": fields.pop("session_id", f"s-{n}"),
            "visitor_id": visitor,
            "pageviews": 1,
            "engaged_seconds": 0,
        }
        | fields
    )


def touch(contact: str, channel: str, days: float = 0, hours: float = 0, **fields: Any) -> Touch:
    n = next(_serial)
    defaults: dict[str, Any] = {
        "visitor_id": "v1",
        "session_event_id": f"sv-{n}",
        "session_id": f"s-{n}",
        "campaign": None,
    }
    values = defaults | fields
    return Touch(
        contact,
        values["visitor_id"],
        values["session_event_id"],
        values["session_id"],
        to_ms(at(days, hours)),
        channel,
        values["campaign"],
    )


def folded(*events: Event, policy: Policy = POLICY) -> Totals:
    ledger = Ledger(policy)
    for event in events:
        ledger.fold(event)
    return ledger.totals()


def entries(totals: Totals, span: Span = EVERYTHING) -> dict[str, float]:
    return totals.total_by(STAGE_ENTRIES, span, 0)


def days_span(first: float, last: float) -> Span:
    return Span(to_ms(at(first)), to_ms(at(last)))


# -- stage entries ------------------------------------------------------------------------


def test_a_skip_counts_each_passed_through_stage_once_at_the_skip_moment() -> None:
    totals = folded(stage("c1", "subscriber", 0), stage("c1", "sql", 3))
    assert entries(totals) == {"subscriber": 1, "lead": 1, "mql": 1, "sql": 1}
    assert entries(totals, days_span(3, 4)) == {"lead": 1, "mql": 1, "sql": 1}


def test_re_entering_a_stage_already_reached_does_not_count_again() -> None:
    totals = folded(stage("c1", "lead", 0), stage("c1", "mql", 1), stage("c1", "lead", 2), stage("c1", "mql", 3))
    assert entries(totals) == {"subscriber": 1, "lead": 1, "mql": 1}


def test_a_contact_created_straight_as_mql_is_one_new_lead() -> None:
    totals = folded(stage("c1", "mql", 0))
    assert totals.total(STAGE_ENTRIES, EVERYTHING, {0: "lead"}) == 1
    assert entries(totals) == {"subscriber": 1, "lead": 1, "mql": 1}


def test_an_exit_is_counted_from_the_stage_the_contact_sits_in() -> None:
    totals = folded(stage("c1", "lead", 0), stage("c1", "sql", 2), stage("c1", "disqualified", 5, reason="budget"))
    assert totals.total_by(STAGE_EXITS, EVERYTHING, 0) == {"sql": 1}
    # nobody sits anywhere after the exit; the sql stint lasted 3 days
    assert totals.total_by(IN_STAGE, Span(BEGINNING_MS, to_ms(at(6))), 0) == {}
    assert totals.total_by(IN_STAGE, Span(BEGINNING_MS, to_ms(at(4))), 0) == {"sql": 1}
    window = funnel_window(totals, EVERYTHING, POLICY)
    assert window.time_in_stage["sql"].count == 1
    assert window.time_in_stage["sql"].mean_seconds == 3 * 86400
    assert window.time_in_stage["lead"].count == 1  # lead was sat in for 2 days; mql was passed through
    assert window.time_in_stage["mql"].count == 0


def test_a_stage_change_after_an_exit_reopens_the_contact_in_that_stage() -> None:
    totals = folded(stage("c1", "mql", 0), stage("c1", "lost", 1), stage("c1", "lead", 2), stage("c1", "sql", 3))
    assert entries(totals) == {"subscriber": 1, "lead": 1, "mql": 1, "sql": 1}
    assert totals.total_by(STAGE_EXITS, EVERYTHING, 0) == {"mql": 1}
    assert totals.total_by(IN_STAGE, Span(BEGINNING_MS, to_ms(at(2, 1))), 0) == {"lead": 1}
    assert totals.total_by(IN_STAGE, Span(BEGINNING_MS, to_ms(at(4))), 0) == {"sql": 1}


def test_a_backward_stage_change_keeps_the_contact_where_it_was() -> None:
    totals = folded(stage("c1", "sql", 0), stage("c1", "lead", 1))
    assert totals.total_by(IN_STAGE, Span(BEGINNING_MS, to_ms(at(2))), 0) == {"sql": 1}


# -- conversion ---------------------------------------------------------------------------


def test_ten_customers_of_two_hundred_leads_is_five_percent_by_period_and_by_cohort() -> None:
    events: list[Event] = []
    for n in range(200):
        events.append(stage(f"c{n}", "lead", days=n % 28))  # all in January
        if n < 10:
            events.append(stage(f"c{n}", "opportunity", days=30, amount="100"))
            events.append(stage(f"c{n}", "customer", days=40 + n))  # February
        elif n < 30:
            events.append(stage(f"c{n}", "mql", days=29))
    totals = folded(*events)

    window = funnel_window(totals, days_span(0, 60), POLICY)
    assert window.stages["lead"].entries == 200
    assert window.stages["customer"].entries == 10
    assert window.period_conversion["lead_to_customer"] == pytest.approx(10 / 200)
    assert window.period_conversion["lead_to_mql"] == pytest.approx(30 / 200)
    assert window.period_conversion["opportunity_to_customer"] == pytest.approx(1.0)

    first_thirty_days = funnel_window(totals, days_span(0, 30), POLICY).period_conversion
    assert first_thirty_days["lead_to_customer"] == 0.0  # ten customers, all later
    assert first_thirty_days["opportunity_to_customer"] is None  # no opportunity entered yet

    cohort = lead_cohorts(totals, to_ms(at(60)))["2026-01"]
    assert (cohort.size, cohort.reached["customer"]) == (200, 10)
    assert cohort.conversion["customer"] == pytest.approx(0.05)
    assert cohort.conversion["mql"] == pytest.approx(30 / 200)
    # "so far": as of January 31st nobody had become a customer yet
    assert lead_cohorts(totals, to_ms(at(30, 12)))["2026-01"].conversion["customer"] == 0.0


def test_a_lead_cohort_is_split_by_the_first_touch_channel_of_its_contacts() -> None:
    totals = folded(
        fill("c1", days=0, channel="paid"),
        stage("c1", "lead", 0),
        stage("c1", "customer", 5),
        fill("c2", days=0, channel="paid"),
        stage("c2", "lead", 1),
        stage("c3", "lead", 2),  # no touchpoint: unknown
        stage("c3", "mql", 3),
    )
    cohort = lead_cohorts(totals, to_ms(at(10)))["2026-01"]
    paid, unknown = cohort.by_channel["paid"], cohort.by_channel[UNKNOWN_CHANNEL]
    assert (cohort.size, cohort.reached["customer"], cohort.reached["mql"]) == (3, 1, 2)
    assert (paid.size, paid.reached["customer"], paid.conversion["customer"]) == (2, 1, 0.5)
    assert (unknown.size, unknown.reached["mql"], unknown.conversion["customer"]) == (1, 1, 0.0)


def test_win_rate_average_deal_value_and_sales_velocity_by_hand() -> None:
    totals = folded(
        stage("won", "lead", 0),
        stage("won", "opportunity", 5, amount="7000"),
        stage("won", "customer", 20, amount="8000"),  # deal value is the latest amount: 8000
        stage("lost", "lead", 0),
        stage("lost", "opportunity", 3, amount="5000"),
        stage("lost", "lost", 10),
        stage("open1", "opportunity", 1, amount="10000"),
        stage("open2", "opportunity", 2, amount="20000", currency="EUR"),  # 22000 USD
    )
    window = funnel_window(totals, days_span(0, 30), POLICY)
    assert (window.opportunities_won, window.opportunities_lost) == (1, 1)
    assert window.win_rate == 0.5
    assert window.won_amount == Decimal("8000")
    assert window.average_deal_value == Decimal("8000")
    assert window.average_sales_cycle_days == pytest.approx(20.0)
    assert window.open_opportunities == 2
    assert window.pipeline_amount == Decimal("32000")
    # 2 open × 8000 average deal × 0.5 win rate / 20 days
    assert window.sales_velocity == Decimal("400")


def test_pipeline_and_weighted_pipeline_as_of_the_window_end_by_hand() -> None:
    totals = folded(
        stage("a", "opportunity", 1, amount="10000"),  # 10000 × 0.3
        stage("b", "opportunity", 2, amount="20000", currency="EUR"),  # 22000 × 0.3
        stage("c", "sql", 2, amount="4000"),  # 4000 × 0.1 while in sql
        stage("c", "opportunity", 6),  # amount stays 4000, now × 0.3
        stage("d", "opportunity", 3, amount="5000"),
        stage("d", "lost", 5),
        stage("e", "opportunity", 3, amount="1000"),
        stage("e", "opportunity", 4, amount="1500"),  # a revised amount moves the pipeline
    )
    day4 = funnel_window(totals, days_span(3, 4.5), POLICY)
    assert day4.open_opportunities == 4  # a, b, d, e
    assert day4.pipeline_amount == Decimal("38500")  # 10000 + 22000 + 5000 + 1500
    assert day4.weighted_pipeline == Decimal("11950.0")  # 38500 × 0.3 + 4000 × 0.1
    day7 = funnel_window(totals, days_span(6, 7), POLICY)
    assert day7.open_opportunities == 4  # a, b, c, e
    assert day7.pipeline_amount == Decimal("37500")
    assert day7.weighted_pipeline == Decimal("11250.0")  # 37500 × 0.3
    assert day7.stages["opportunity"].in_stage == 4


# -- drop-off and staleness -----------------------------------------------------------------


def test_lead_drop_off_counts_exits_and_stale_leads_over_entries() -> None:
    totals = folded(
        stage("quits", "lead", 0),
        stage("quits", "disqualified", 5),
        stage("moves", "lead", 0),
        stage("moves", "mql", 10),
        stage("sits", "lead", 0),  # stale at day 30
        stage("sits-then-quits", "lead", 0),  # stale at day 30, disqualified at 40: one drop-off
        stage("sits-then-quits", "disqualified", 40),
        stage("leaves-in-time", "lead", 0),
        stage("leaves-in-time", "mql", 30),  # exactly at the limit: not stale
    )
    window = funnel_window(totals, days_span(0, 60), POLICY)
    lead = window.stages["lead"]
    assert (lead.entries, lead.exits, lead.became_stale, lead.drop_offs) == (5, 2, 2, 3)
    assert lead.drop_off_rate == pytest.approx(3 / 5)
    # "moves" sat in mql from day 10: stale at day 40; "leaves-in-time" goes stale at day 60, the window's end
    assert window.stages["mql"].drop_off_rate == pytest.approx(1 / 2)
    # staleness happens at entry + 30 days: not yet in the first 29 days
    early = funnel_window(totals, days_span(0, 29), POLICY)
    assert (early.stages["lead"].became_stale, early.stages["lead"].drop_offs) == (0, 1)


def test_staleness_limits_come_from_the_policy() -> None:
    policy = Policy(staleness_days={Stage.LEAD: 3})
    totals = folded(stage("c1", "lead", 0), policy=policy)
    assert funnel_window(totals, days_span(0, 4), policy).stages["lead"].became_stale == 1


# -- time to convert --------------------------------------------------------------------------


def test_time_to_convert_is_a_histogram_from_the_lead_moment() -> None:
    totals = folded(
        stage("c1", "lead", 0),
        stage("c1", "mql", 0, hours=2),  # 7200 s -> le 21600
        stage("c1", "sql", 2),  # 172800 s -> le 259200
        stage("c2", "lead", 0),
        stage("c2", "sql", 0, hours=0.5),  # mql and sql both at 1800 s -> le 3600
    )
    window = funnel_window(totals, days_span(0, 3), POLICY)
    mql = window.time_to_stage["mql"]
    assert mql.count == 2
    assert mql.mean_seconds == pytest.approx((7200 + 1800) / 2)
    assert mql.buckets["3600"] == 1
    assert mql.buckets["21600"] == 2
    assert mql.buckets["+Inf"] == 2
    sql = window.time_to_stage["sql"]
    assert (sql.buckets["3600"], sql.buckets["86400"], sql.buckets["259200"]) == (1, 1, 2)
    assert "lead" not in window.time_to_stage


def test_a_stage_with_nothing_in_the_window_reads_zero_counts_no_mean_and_no_rate() -> None:
    """Stages nothing reached in the window (shared empty models in the build) read as empty, overall and by
    channel, next to a stage that did."""
    totals = folded(fill("c1", days=0, channel="paid"), stage("c1", "lead", 0), stage("c1", "mql", 0, hours=2))
    window = funnel_window(totals, days_span(0, 1), POLICY)
    for funnel_of in (window, window.by_channel["paid"]):
        empty_histogram = {"count": 0, "mean_seconds": None, "buckets": dict.fromkeys(funnel.BUCKET_LABELS, 0)}
        assert funnel_of.time_to_stage["sql"].model_dump() == empty_histogram
        assert funnel_of.time_in_stage["customer"].model_dump() == empty_histogram
        assert funnel_of.time_to_stage["mql"].count == 1
        assert funnel_of.stages["customer"].model_dump() == {
            "entries": 0,
            "exits": 0,
            "became_stale": 0,
            "drop_offs": 0,
            "drop_off_rate": None,
            "in_stage": 0,
        }
        assert funnel_of.stages["lead"].entries == 1


def test_time_to_convert_by_channel_counts_each_contact_under_its_first_touch_channel() -> None:
    totals = folded(
        fill("c1", days=0, channel="paid"),
        stage("c1", "lead", 0),
        stage("c1", "mql", 0, hours=2),
        stage("c2", "lead", 0),  # no touchpoint: unknown
        stage("c2", "mql", 0, hours=0.5),
    )
    window = funnel_window(totals, days_span(0, 1), POLICY)
    paid, unknown = (
        window.by_channel["paid"].time_to_stage["mql"],
        window.by_channel[UNKNOWN_CHANNEL].time_to_stage["mql"],
    )
    assert (paid.count, paid.mean_seconds) == (1, 7200)
    assert (unknown.count, unknown.mean_seconds) == (1, 1800)
    assert window.time_to_stage["mql"].count == paid.count + unknown.count


def test_time_in_stage_by_channel_counts_each_stint_under_the_contacts_first_touch_channel() -> None:
    totals = folded(
        fill("c1", days=0, channel="paid"),
        stage("c1", "lead", 0),
        stage("c1", "mql", 2),  # 2 days in lead
        stage("c2", "lead", 0),  # no touchpoint: unknown
        stage("c2", "mql", 0, hours=6),  # 6 hours in lead
        stage("c2", "sql", 1),  # 18 hours in mql
    )
    window = funnel_window(totals, days_span(0, 3), POLICY)
    paid, unknown = window.by_channel["paid"], window.by_channel[UNKNOWN_CHANNEL]
    assert (paid.time_in_stage["lead"].count, paid.time_in_stage["lead"].mean_seconds) == (1, 2 * 86400)
    assert (unknown.time_in_stage["lead"].count, unknown.time_in_stage["lead"].mean_seconds) == (1, 6 * 3600)
    assert (paid.time_in_stage["mql"].count, unknown.time_in_stage["mql"].mean_seconds) == (0, 18 * 3600)
    assert window.time_in_stage["lead"].count == 2
    assert window.time_in_stage["lead"].mean_seconds == (2 * 86400 + 6 * 3600) / 2


# -- channels and touchpoints ------------------------------------------------------------------


def test_the_contact_s_channel_is_its_first_touchpoint_and_a_late_touch_relabels_it() -> None:
    shard = Shard(POLICY)
    shard.fold(fill("c1", days=1, channel="paid", utm={"source": "google", "medium": "cpc", "campaign": "q1"}))
    shard.fold(stage("c1", "lead", 1))
    assert shard.totals.total_by(STAGE_ENTRIES, EVERYTHING, 1, {0: "lead"}) == {"paid": 1}
    assert shard.totals.total_by(STAGE_ENTRIES, EVERYTHING, 2, {0: "lead"}) == {"q1": 1}
    shard.fold(touch("c1", "organic", days=0))  # a session from the day before arrives late
    assert shard.totals.total_by(STAGE_ENTRIES, EVERYTHING, 1, {0: "lead"}) == {"organic": 1}
    assert shard.totals.total_by(STAGE_ENTRIES, EVERYTHING, 2, {0: "lead"}) == {NO_CAMPAIGN: 1}
    # the form fill keeps its own channel
    assert shard.totals.total_by("form_fills", EVERYTHING, 1) == {"paid": 1}


def test_a_contact_with_no_touchpoint_is_unknown() -> None:
    totals = folded(stage("c1", "lead", 0))
    assert totals.total_by(STAGE_ENTRIES, EVERYTHING, 1) == {UNKNOWN_CHANNEL: 2}


@pytest.mark.parametrize(
    ("fill_fields", "expected_channel"),
    [
        ({"channel": "email"}, "email"),  # its own channel
        ({"session_id": "s-same", "visitor_id": "v1"}, "social"),  # its session's channel
        ({"visitor_id": "v1"}, "paid"),  # the visitor's latest session at or before the fill
        ({"visitor_id": "v2"}, UNKNOWN_CHANNEL),  # nothing supplies one
    ],
)
def test_a_form_fill_takes_its_channel_from_itself_its_session_or_its_visitor_s_last_session(
    fill_fields: dict[str, Any], expected_channel: str
) -> None:
    state = ContactState()
    apply_touch(state, touch("c1", "organic", days=0, visitor_id="v1"), POLICY)
    apply_touch(state, touch("c1", "paid", days=1, visitor_id="v1"), POLICY)
    apply_touch(state, touch("c1", "social", days=0, hours=1, visitor_id="v1", session_id="s-same"), POLICY)
    apply_touch(state, touch("c1", "direct", days=3, visitor_id="v1"), POLICY)  # after the fill
    step = apply_form_fill(state, fill("c1", days=2, form_type="contact", **fill_fields), POLICY)
    added = {labels[1] for (family, labels, _), value in step.delta.counts.items() if family == "form_fills"}
    assert added == {expected_channel}


def test_a_form_fill_asks_its_visitor_for_sessions_and_an_account_hears_of_the_first_touch() -> None:
    state = ContactState()
    step = apply_form_fill(state, fill("c1", days=2, visitor_id="v9", channel="email"), POLICY)
    assert step.emitted == [VisitorLink("v9", "c1")]
    step = apply_stage_change(state, stage("c1", "opportunity", 3, account_id="acme"), POLICY)
    assert step.emitted == [AccountLink("acme", "c1", to_ms(at(2)), "email", None)]
    # nothing new to tell: nothing sent
    assert apply_stage_change(state, stage("c1", "customer", 4), POLICY).emitted == []
    # an earlier touch is news
    step = apply_touch(state, touch("c1", "organic", days=1, campaign="launch"), POLICY)
    assert step.emitted == [AccountLink("acme", "c1", to_ms(at(1)), "organic", "launch")]


def test_a_touch_from_the_same_session_twice_changes_nothing() -> None:
    state = ContactState()
    same = touch("c1", "organic", days=1)
    apply_touch(state, same, POLICY)
    assert apply_touch(state, same, POLICY).duplicate


def test_the_funnel_writes_attribution_credits_at_each_conversion() -> None:
    shard = Shard(POLICY)
    for item in (
        touch("c1", "organic", days=0),
        touch("c1", "paid", days=1),
        touch("c1", "email", days=2),
        touch("c1", "social", days=3),
        stage("c1", "lead", 3),
        stage("c1", "opportunity", 10),
        stage("c2", "lead", 5),  # no touchpoint: unknown
    ):
        shard.fold(item)
    window = attribution_window(shard.totals, days_span(0, 30))
    lead = window.by_conversion["lead"]
    assert lead.conversions == 2
    assert lead.credits["u_shaped"] == pytest.approx(
        {"organic": 0.4, "paid": 0.1, "email": 0.1, "social": 0.4, "unknown": 1}
    )
    opportunity = window.by_conversion["opportunity"]
    assert opportunity.conversions == 1
    assert opportunity.credits["last_touch"] == {"social": 1.0}
    assert shard.totals.total(ATTRIBUTION_CREDIT, days_span(0, 30), {0: "linear"}) == pytest.approx(3)


# -- bad input ------------------------------------------------------------------------------


def test_an_unknown_currency_leaves_nothing_behind() -> None:
    ledger = Ledger(POLICY)
    with pytest.raises(RejectedEvent, match="unknown currency 'GBP'"):
        ledger.fold(stage("c1", "opportunity", 1, amount="10", currency="GBP"))
    assert ledger.totals().families() == set()
    assert ledger.shards[0].store.get("contact", "c1") is None


# -- bounded state: the attribution lookback, the caps -------------------------------------

ContactItem = StageChange | FormFill | Touch


def apply_to_contact(state: ContactState, item: ContactItem, policy: Policy = POLICY) -> Step:
    if isinstance(item, StageChange):
        return apply_stage_change(state, item, policy)
    if isinstance(item, FormFill):
        return apply_form_fill(state, item, policy)
    return apply_touch(state, item, policy)


def significant(facts: dict[Any, Any]) -> dict[Any, Any]:
    """Facts rounded to 9 significant digits, without the float residue of moved facts."""
    return {
        key: float(f"{value:.9g}") if isinstance(value, float) else value
        for key, value in facts.items()
        if abs(value) >= 1e-9
    }


def fold_contact(items: list[ContactItem], policy: Policy = POLICY) -> tuple[ContactState, Facts, MoneyFacts]:
    """One contact folded item by item: its state and the sum of every delta the folds emitted."""
    state = ContactState()
    counts: Facts = {}
    money: MoneyFacts = {}
    for item in items:
        step = apply_to_contact(state, item, policy)
        for key, value in step.delta.counts.items():
            counts[key] = counts.get(key, 0) + value
        for key, amount in step.delta.money.items():
            money[key] = money.get(key, Decimal(0)) + amount
    return state, significant(counts), significant(money)


def credits(facts: Facts, conversion: str, model: str) -> dict[str, float]:
    """The attribution credit per channel of one conversion under one model, from a contact's facts."""
    return {
        labels[2]: round(value, 9)
        for (family, labels, _), value in facts.items()
        if family == ATTRIBUTION_CREDIT and labels[:2] == (model, conversion) and abs(value) >= 1e-9
    }


def entries_by_channel(facts: Facts) -> dict[tuple[str, str], float]:
    return {(labels[0], labels[1]): value for (family, labels, _), value in facts.items() if family == STAGE_ENTRIES}


def test_a_conversion_credits_only_the_touches_within_the_lookback_before_it() -> None:
    # organic at day 0 is 120 days before the lead: outside the 90-day lookback, so no credit;
    # it is still the contact's first touch, and labels every stage entry
    state, facts, _ = fold_contact(
        [
            touch("c1", "organic", days=0),
            touch("c1", "paid", days=30),  # exactly 90 days before the lead: inside (inclusive)
            touch("c1", "email", days=100),
            stage("c1", "lead", 120),
        ]
    )
    assert facts == significant(contact_facts(state, POLICY)[0])
    assert credits(facts, "lead", "first_touch") == {"paid": 1.0}
    assert credits(facts, "lead", "last_touch") == {"email": 1.0}
    assert credits(facts, "lead", "linear") == {"paid": 0.5, "email": 0.5}
    # U-shaped: first in the window (paid) 40 %, lead creation (email) 40 %, no touch between: 10 % each
    assert credits(facts, "lead", "u_shaped") == {"paid": 0.5, "email": 0.5}
    assert entries_by_channel(facts) == {("subscriber", "organic"): 1, ("lead", "organic"): 1}


def test_a_conversion_with_no_touch_in_its_lookback_credits_unknown() -> None:
    _, facts, _ = fold_contact([touch("c1", "organic", days=0), stage("c1", "lead", 91)])
    assert credits(facts, "lead", "linear") == {UNKNOWN_CHANNEL: 1.0}
    assert entries_by_channel(facts)[("lead", "organic")] == 1


def test_the_lookback_is_a_setting() -> None:
    policy = Policy(attribution_lookback_ms=10 * DAY_MS)
    _, facts, _ = fold_contact(
        [touch("c1", "organic", days=0), touch("c1", "paid", days=15), stage("c1", "lead", 20)], policy
    )
    assert credits(facts, "lead", "linear") == {"paid": 1.0}


def test_a_form_fill_takes_no_channel_from_a_session_older_than_the_lookback() -> None:
    state = ContactState()
    apply_touch(state, touch("c1", "paid", days=0, visitor_id="v1"), POLICY)
    step = apply_form_fill(state, fill("c1", days=91, visitor_id="v1"), POLICY)
    assert {labels[1] for (family, labels, _) in step.delta.counts if family == FORM_FILLS} == {UNKNOWN_CHANNEL}
    step = apply_form_fill(state, fill("c1", days=89, visitor_id="v1"), POLICY)
    assert {labels[1] for (family, labels, _) in step.delta.counts if family == FORM_FILLS} == {"paid"}


def test_past_the_cap_the_oldest_touch_outside_every_conversion_window_goes_first() -> None:
    policy = Policy(max_touches=3)
    state, facts, _ = fold_contact(
        [
            touch("c1", "organic", days=0, session_event_id="t0"),
            touch("c1", "paid", days=1, session_event_id="t1"),
            stage("c1", "lead", 1),
            touch("c1", "email", days=2, session_event_id="t2"),  # after the lead: no credit now
            touch("c1", "social", days=3, session_event_id="t3"),  # the fourth: t2 goes, not t1
        ],
        policy,
    )
    assert list(state.touches) == ["t0", "t1", "t3"]
    assert facts == significant(contact_facts(state, policy)[0])
    assert credits(facts, "lead", "linear") == {"organic": 0.5, "paid": 0.5}


def test_past_the_cap_the_first_touch_stays_and_the_oldest_of_the_rest_goes() -> None:
    policy = Policy(max_touches=3)
    items: list[ContactItem] = [touch("c1", "organic", days=0, session_event_id="t0")]
    items += [touch("c1", "paid", days=day, session_event_id=f"t{day}") for day in (1, 2, 3, 4)]
    state, facts, _ = fold_contact([*items, stage("c1", "lead", 5)], policy)
    assert list(state.touches) == ["t0", "t3", "t4"]
    # the lead's window holds what is kept: the first touch and the latest two
    assert credits(facts, "lead", "linear") == {"organic": round(1 / 3, 9), "paid": round(2 / 3, 9)}
    assert entries_by_channel(facts)[("lead", "organic")] == 1


def test_a_touch_earlier_than_every_kept_one_becomes_the_first_and_relabels_the_contact() -> None:
    policy = Policy(max_touches=2)
    state, facts, _ = fold_contact(
        [
            touch("c1", "paid", days=2, session_event_id="t2"),
            touch("c1", "email", days=3, session_event_id="t3"),
            stage("c1", "lead", 10),
            touch("c1", "organic", days=1, session_event_id="t1"),
        ],
        policy,
    )
    assert list(state.touches) == ["t1", "t3"]
    assert entries_by_channel(facts)[("lead", "organic")] == 1
    assert credits(facts, "lead", "first_touch") == {"organic": 1.0}
    assert facts == significant(contact_facts(state, policy)[0])


def test_a_contact_keeps_at_most_max_touches_however_many_sessions_it_sees() -> None:
    state = ContactState()
    apply_stage_change(state, stage("c1", "lead", 0), POLICY)
    for n in range(10_000):
        apply_touch(state, touch("c1", "paid", hours=n, session_event_id=f"sv-{n:05}"), POLICY)
    assert len(state.touches) == POLICY.max_touches == 100
    assert next(iter(state.touches)) == "sv-00000"  # the first touch, kept from the start
    assert list(state.touches)[-1] == "sv-09999"


def test_a_session_after_every_conversion_moves_no_fact() -> None:
    state = ContactState()
    apply_touch(state, touch("c1", "organic", days=0), POLICY)
    apply_stage_change(state, stage("c1", "lead", 1), POLICY)
    step = apply_touch(state, touch("c1", "paid", days=2), POLICY)
    assert (step.delta.counts, step.delta.money, step.emitted) == ({}, {}, [])


def test_only_the_earliest_stage_changes_count_past_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(funnel, "STAGE_CHANGES_KEPT", 3)
    state, facts, _ = fold_contact(
        [
            stage("c1", "lead", 1, event_id="lead"),
            stage("c1", "mql", 2, event_id="mql"),
            stage("c1", "sql", 3, event_id="sql"),
            stage("c1", "opportunity", 4, event_id="opp"),  # the fourth, and the latest: not counted
            stage("c1", "subscriber", 0, event_id="sub"),  # earlier than all: in, and "sql" out
        ]
    )
    assert list(state.stage_changes) == ["sub", "lead", "mql"]
    assert {stage for stage, _ in entries_by_channel(facts)} == {"subscriber", "lead", "mql"}
    assert facts == significant(contact_facts(state, POLICY)[0])
    # what is not kept is still known within the dedupe horizon
    assert apply_stage_change(state, stage("c1", "opportunity", 4, event_id="opp"), POLICY).duplicate
    assert apply_stage_change(state, stage("c1", "sql", 3, event_id="sql"), POLICY).duplicate


def test_only_the_earliest_form_fills_count_past_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(funnel, "FORM_FILLS_KEPT", 2)
    state = ContactState()
    for day in (1, 2, 3):
        apply_form_fill(state, fill("c1", days=day, event_id=f"ff{day}", channel="email"), POLICY)
    step = apply_form_fill(state, fill("c1", days=0, event_id="ff0", channel="paid", visitor_id="v1"), POLICY)
    assert list(state.form_fills) == ["ff0", "ff1"]
    assert step.emitted == [VisitorLink("v1", "c1")]
    moved = {
        (labels[1], ts): value for (family, labels, ts), value in step.delta.counts.items() if family == FORM_FILLS
    }
    assert moved == {("paid", to_ms(at(0))): 1, ("email", to_ms(at(2))): -1}
    assert contact_facts(state, POLICY)[0] == {
        (FORM_FILLS, ("demo_request", "paid", NO_CAMPAIGN), to_ms(at(0))): 1,
        (FORM_FILLS, ("demo_request", "email", NO_CAMPAIGN), to_ms(at(1))): 1,
    }
    # the fill past the cap and the one it displaced are still known within the dedupe horizon
    for event_id, day in (("ff2", 2), ("ff3", 3)):
        assert apply_form_fill(state, fill("c1", days=day, event_id=event_id, channel="email"), POLICY).duplicate


def test_with_a_grace_period_a_touch_that_can_never_earn_credit_again_is_dropped() -> None:
    # grace 1 day, lookback 10 days: a touch older than 11 days before the newest event, outside every
    # conversion's window, can never be in one (no event more than a day late is accepted)
    policy = Policy(grace_ms=DAY_MS, attribution_lookback_ms=10 * DAY_MS)
    state, facts, _ = fold_contact(
        [
            touch("c1", "organic", days=0, session_event_id="first"),
            touch("c1", "paid", days=2, session_event_id="before-window"),
            touch("c1", "email", days=15, session_event_id="in-window"),
            stage("c1", "lead", 20),
            touch("c1", "social", days=25, session_event_id="after"),
            touch("c1", "direct", days=40, session_event_id="newest"),
        ],
        policy,
    )
    # newest 40: kept are the first, the lead's window [10, 20], and what is newer than 40 - 11 = 29
    assert list(state.touches) == ["first", "in-window", "newest"]
    assert credits(facts, "lead", "linear") == {"email": 1.0}
    assert facts == significant(contact_facts(state, policy)[0])


# -- duplicates re-send their links ------------------------------------------------------------


def test_a_duplicate_changes_nothing_and_sends_its_links_again() -> None:
    state = ContactState()
    apply_touch(state, touch("c1", "organic", days=0, session_event_id="sv1"), POLICY)
    form = fill("c1", days=1, visitor_id="v9", channel="email")
    apply_form_fill(state, form, POLICY)
    change = stage("c1", "opportunity", 2, account_id="acme")
    first = apply_stage_change(state, change, POLICY)
    account_link = AccountLink("acme", "c1", to_ms(at(0)), "organic", None)
    assert first.emitted == [account_link]

    expected: list[tuple[ContactItem, list[Link]]] = [
        (change, [account_link]),
        (form, [VisitorLink("v9", "c1"), account_link]),
        (touch("c1", "organic", days=0, session_event_id="sv1"), [account_link]),
    ]
    for item, links in expected:
        step = apply_to_contact(state, item)
        assert step.duplicate
        assert (step.delta.counts, step.delta.money) == ({}, {})
        assert step.emitted == links


def test_a_replayed_form_fill_repairs_the_visitor_link_a_crash_lost() -> None:
    """A worker killed after storing the contact and before sending its links: the replay sends them."""
    session = visit("v1", days=0, channel="paid", event_id="sv1")
    form = fill("c1", days=1, visitor_id="v1")
    lead = stage("c1", "lead", 1)

    uninterrupted = Ledger(POLICY)
    uninterrupted.fold_all([session, form, lead])

    crashed = Ledger(POLICY)
    crashed.fold(session)
    crashed.shards[0].fold(form)  # stored, its VisitorLink never sent
    crashed.fold(lead)
    assert crashed.totals().total_by(STAGE_ENTRIES, EVERYTHING, 1, {0: "lead"}) == {UNKNOWN_CHANNEL: 1}
    crashed.fold(form)  # the replayed tail: a duplicate, whose link now reaches the visitor
    assert crashed.totals().total_by(STAGE_ENTRIES, EVERYTHING, 1, {0: "lead"}) == {"paid": 1}
    assert read_side(crashed.totals()) == read_side(uninterrupted.totals())


# -- order, duplicates, partitions -----------------------------------------------------------

STAGES = ["subscriber", "lead", "mql", "sql", "opportunity", "customer", "disqualified", "lost"]


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """A few contacts and visitors with stage changes, fills and sessions over four months."""
    events: list[Event] = []
    times = st.integers(0, 120 * 24)  # hours
    for n in range(draw(st.integers(1, 25))):
        contact = f"c{draw(st.integers(0, 3))}"
        hours = draw(times)
        kind = draw(st.sampled_from(["stage", "stage", "fill", "visit"]))
        if kind == "stage":
            amount = draw(st.sampled_from([None, "1000", "2500.50"]))
            fields: dict[str, Any] = {"event_id": f"sc{n}"}
            if amount is not None:
                fields |= {"amount": amount, "currency": draw(st.sampled_from(["USD", "EUR"]))}
            if draw(st.booleans()):
                fields["account_id"] = draw(st.sampled_from(["acme", "globex"]))
            events.append(stage(contact, draw(st.sampled_from(STAGES)), hours=hours, **fields))
        elif kind == "fill":
            fields = {"event_id": f"ff{n}", "visitor_id": f"v{draw(st.integers(0, 2))}"}
            if draw(st.booleans()):
                fields["channel"] = draw(st.sampled_from(["email", "event"]))
            events.append(fill(contact, hours=hours, **fields))
        else:
            fields = {"event_id": f"sv{n}", "channel": draw(st.sampled_from(["organic", "paid", "social"]))}
            if draw(st.booleans()):
                fields["contact_id"] = contact
            events.append(visit(f"v{draw(st.integers(0, 2))}", hours=hours, **fields))
    return events


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items() if not (isinstance(item, float) and abs(item) < 1e-9)}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def read_side(totals: Totals) -> Any:
    spans = [EVERYTHING, days_span(0, 30), days_span(30, 61), days_span(100, 101)]
    return rounded(
        [
            [funnel_window(totals, span, POLICY).model_dump() for span in spans],
            [attribution_window(totals, span).model_dump() for span in spans],
            {month: cohort.model_dump() for month, cohort in lead_cohorts(totals, to_ms(at(200))).items()},
        ]
    )


@settings(max_examples=100, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_totals(events: list[Event], random: Any) -> None:
    shuffled = list(events)
    random.shuffle(shuffled)
    assert read_side(folded(*shuffled)) == read_side(folded(*events))


@settings(max_examples=60, deadline=None)
@given(histories())
def test_folding_every_event_twice_changes_nothing(events: list[Event]) -> None:
    twice = folded(*events, *events)
    assert read_side(twice) == read_side(folded(*events))


@settings(max_examples=60, deadline=None)
@given(histories())
def test_three_shards_read_the_same_as_one(events: list[Event]) -> None:
    ledger = Ledger(POLICY, shards=3)
    ledger.fold_all(events)
    assert read_side(ledger.totals()) == read_side(folded(*events))


# -- one contact: order, duplicates, bounds ---------------------------------------------------


@st.composite
def contact_items(draw: st.DrawFn, max_size: int = 30) -> list[ContactItem]:
    """One contact's stage changes, form fills and sessions over 200 days (beyond the 90-day lookback)."""
    items: list[ContactItem] = []
    for n in range(draw(st.integers(1, max_size))):
        hours = draw(st.integers(0, 200 * 24))
        kind = draw(st.sampled_from(["stage", "fill", "touch", "touch"]))
        if kind == "stage":
            fields: dict[str, Any] = {"event_id": f"sc{n}"}
            if draw(st.booleans()):
                fields |= {"amount": draw(st.sampled_from(["1000", "2500.50"])), "currency": "USD"}
            if draw(st.booleans()):
                fields["account_id"] = draw(st.sampled_from(["acme", "globex"]))
            items.append(stage("c1", draw(st.sampled_from(STAGES)), hours=hours, **fields))
        elif kind == "fill":
            fields = {
                "event_id": f"ff{n}",
                "visitor_id": draw(st.sampled_from([None, "v0", "v1"])),
                "session_id": draw(st.sampled_from([None, "s0", "s1", "s2"])),
            }
            if draw(st.booleans()):
                fields["channel"] = "email"
            items.append(fill("c1", hours=hours, **fields))
        else:
            items.append(
                touch(
                    "c1",
                    draw(st.sampled_from(["organic", "paid", "social"])),
                    hours=hours,
                    session_event_id=f"sv{n}",
                    session_id=draw(st.sampled_from(["s0", "s1", "s2", "s3"])),
                    visitor_id=draw(st.sampled_from(["v0", "v1"])),
                    campaign=draw(st.sampled_from([None, "spring"])),
                )
            )
    return items


def time_of(item: ContactItem) -> int:
    return item.ts_ms if isinstance(item, Touch) else item.occurred_ms


@settings(max_examples=150, deadline=None)
@given(contact_items(), st.randoms(use_true_random=False))
def test_below_the_caps_any_order_and_any_duplicates_give_the_same_contact(
    items: list[ContactItem], random: Any
) -> None:
    shuffled = [*items, *random.sample(items, len(items) // 2)]
    random.shuffle(shuffled)
    state, emitted, emitted_money = fold_contact(items)
    other, other_emitted, other_money = fold_contact(shuffled)
    assert (other.stage_changes, other.form_fills, other.touches) == (
        state.stage_changes,
        state.form_fills,
        state.touches,
    )
    facts, money = contact_facts(state, POLICY)
    assert emitted == other_emitted == significant(facts)
    assert emitted_money == other_money == significant(money)


@settings(max_examples=150, deadline=None)
@given(
    contact_items(max_size=40),
    st.randoms(use_true_random=False),
    st.integers(2, 5),
    st.sampled_from([None, DAY_MS]),
    st.sampled_from([30 * DAY_MS, 90 * DAY_MS]),
)
def test_past_the_caps_the_contact_stays_bounded_and_its_facts_are_what_its_folds_emitted(
    items: list[ContactItem], random: Any, max_touches: int, grace_ms: int | None, lookback_ms: int
) -> None:
    policy = Policy(max_touches=max_touches, grace_ms=grace_ms, attribution_lookback_ms=lookback_ms)
    shuffled = [*items, *random.sample(items, len(items) // 3)]
    random.shuffle(shuffled)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(funnel, "STAGE_CHANGES_KEPT", 4)
        patch.setattr(funnel, "FORM_FILLS_KEPT", 3)
        state, emitted, emitted_money = fold_contact(shuffled, policy)
    assert len(state.stage_changes) <= 4
    assert len(state.form_fills) <= 3
    assert len(state.touches) <= max_touches
    facts, money = contact_facts(state, policy)
    assert emitted == significant(facts)
    assert emitted_money == significant(money)


@settings(max_examples=150, deadline=None)
@given(contact_items(max_size=40), st.randoms(use_true_random=False))
def test_with_a_grace_period_the_touches_dropped_would_never_have_changed_a_number(
    items: list[ContactItem], random: Any
) -> None:
    """What the ledger accepts under a grace period, folded with and without dropping touches: equal facts."""
    grace = 2 * DAY_MS
    shuffled = sorted(items, key=lambda item: time_of(item) + random.uniform(0, 3 * grace))  # some arrive late
    accepted: list[ContactItem] = []
    watermark: int | None = None
    for item in shuffled:
        ts = time_of(item)
        if not isinstance(item, Touch) and watermark is not None and ts < watermark - grace:
            continue  # late: the ledger sends it to the dead letter
        accepted.append(item)
        watermark = ts if watermark is None else max(watermark, ts)
    lookback = 30 * DAY_MS
    dropping, emitted, _ = fold_contact(accepted, Policy(grace_ms=grace, attribution_lookback_ms=lookback))
    keeping, kept_emitted, _ = fold_contact(accepted, Policy(attribution_lookback_ms=lookback))
    assert set(dropping.touches) <= set(keeping.touches)
    assert emitted == kept_emitted
