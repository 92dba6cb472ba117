"""The simulator: a deterministic, valid, believable stream of a B2B SaaS company's events."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schemas.channels import Channel
from schemas.events import EVENT_ADAPTER, SiteVisit
from stream.core.divergence import divergence_verdicts
from stream.core.ledger import Ledger
from stream.core.policy import Policy
from stream.core.windows import DAY_MS, HOUR_MS, to_ms
from stream.simulation import _SOURCES, Scenario, generate, generate_count

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)
SMALL = Scenario(start=MONDAY, days=21, visits_per_day=600, existing_customers=150)
LEAD_STAGES = {"lead", "mql", "sql", "opportunity", "customer"}


@pytest.fixture(scope="module")
def events() -> list[dict[str, object]]:
    return list(generate(SMALL, seed=11))


def ms(event: dict[str, object]) -> int:
    return to_ms(datetime.fromisoformat(str(event["occurred_at"])))


def test_the_same_seed_gives_the_same_events_and_another_seed_does_not() -> None:
    scenario = replace(SMALL, days=3)
    assert list(generate(scenario, 5)) == list(generate(scenario, 5))
    assert list(generate(scenario, 5)) != list(generate(scenario, 6))


def test_every_event_validates_against_the_event_contract(events: list[dict[str, object]]) -> None:
    for event in events:
        EVENT_ADAPTER.validate_python(event)


def test_the_mix_holds_all_five_event_types_and_every_part_of_the_story(
    events: list[dict[str, object]],
) -> None:
    types = Counter(e["type"] for e in events)
    assert set(types) == {"site_visit", "form_fill", "stage_change", "subscription", "spend"}
    assert types["site_visit"] > 0.9 * len(events)
    stages = {e["to_stage"] for e in events if e["type"] == "stage_change"}
    assert stages == {"subscriber", "lead", "mql", "sql", "opportunity", "customer", "disqualified", "lost"}
    statuses = {e["status"] for e in events if e["type"] == "subscription"}
    assert statuses == {"trialing", "active", "past_due", "cancelled"}
    assert {e["currency"] for e in events if e["type"] == "subscription"} == {"USD", "EUR"}
    assert {e["interval"] for e in events if e["type"] == "subscription"} == {"month", "year"}
    assert {e["category"] for e in events if e["type"] == "spend"} == {"marketing", "sales"}


def test_sessions_carry_utm_referrer_and_sometimes_leave_the_channel_to_be_derived(
    events: list[dict[str, object]],
) -> None:
    sessions = [e for e in events if e["type"] == "site_visit"]
    assert any("utm" in e for e in sessions)
    assert any("referrer" in e for e in sessions)
    assert any("channel" not in e for e in sessions)
    assert any("channel" in e for e in sessions)
    assert any("contact_id" in e for e in sessions), "returning known visitors name their contact"
    derived = {EVENT_ADAPTER.validate_python(e).channel for e in sessions if "channel" not in e}  # type: ignore[union-attr]
    assert derived == set(Channel)


@pytest.mark.parametrize("channel", list(Channel))
def test_every_way_a_channel_s_sessions_arrive_derives_back_to_that_channel(channel: Channel) -> None:
    for utm, referrer in _SOURCES[channel]:
        visit = SiteVisit.model_validate(
            {
                "event_id": "e",
                "occurred_at": "2026-03-02T10:00:00Z",
                "session_id": "s",
                "visitor_id": "v",
                "pageviews": 1,
                "engaged_seconds": 0,
                "utm": utm,
                "referrer": referrer,
            }
        )
        assert visit.channel is channel, (utm, referrer)


def test_forms_name_their_visitor_and_session_so_visitors_link_to_contacts(
    events: list[dict[str, object]],
) -> None:
    forms = [e for e in events if e["type"] == "form_fill"]
    session_ids = {e["session_id"] for e in events if e["type"] == "site_visit"}
    assert forms
    assert all(f["session_id"] in session_ids and "visitor_id" in f for f in forms)


def test_opportunities_and_customers_carry_a_deal_amount_and_an_account(
    events: list[dict[str, object]],
) -> None:
    deals = [e for e in events if e["type"] == "stage_change" and e["to_stage"] in {"opportunity", "customer"}]
    assert deals
    for deal in deals:
        assert float(str(deal["amount"])) > 0
        assert deal["currency"] in {"USD", "EUR"}
        assert "account_id" in deal


def test_ids_are_unique(events: list[dict[str, object]]) -> None:
    event_ids = [e["event_id"] for e in events]
    assert len(event_ids) == len(set(event_ids))
    session_ids = [e["session_id"] for e in events if e["type"] == "site_visit"]
    assert len(session_ids) == len(set(session_ids))


def test_events_come_in_event_time_order(events: list[dict[str, object]]) -> None:
    times = [ms(e) for e in events]
    assert times == sorted(times)


def test_the_existing_paying_base_comes_first_dated_before_the_start(events: list[dict[str, object]]) -> None:
    before = [e for e in events if ms(e) < to_ms(MONDAY)]
    assert len(before) == 150
    assert all(e["type"] == "subscription" and e["status"] == "active" for e in before)


def test_each_day_has_marketing_spend_per_channel_and_each_month_one_sales_spend(
    events: list[dict[str, object]],
) -> None:
    spend = [e for e in events if e["type"] == "spend"]
    marketing_days = {(str(e["occurred_at"])[:10], e["channel"]) for e in spend if e["category"] == "marketing"}
    assert len(marketing_days) == 21 * 7  # every channel but direct, every day
    sales = [str(e["occurred_at"])[:10] for e in spend if e["category"] == "sales"]
    assert sales == ["2026-03-02"]  # the start; the next 1st of a month is after the 21 days


def test_generate_count_gives_exactly_n_events() -> None:
    assert sum(1 for _ in generate_count(12_345, 3)) == 12_345


def test_the_events_before_an_instant_do_not_depend_on_how_many_days_are_asked_for() -> None:
    short = replace(SMALL, days=4)
    first = list(generate(short, 9))
    longer = list(itertools.islice(generate(replace(SMALL, days=30), 9), len(first)))
    assert first == longer
    assert list(generate_count(len(first), 9, short)) == first


def sessions_and_new_leads(events: list[dict[str, object]], start_ms: int, end_ms: int) -> tuple[int, int]:
    """Sessions in [start, end), and contacts whose lead moment (first lead-or-later stage) is in it."""
    sessions = sum(1 for e in events if e["type"] == "site_visit" and start_ms <= ms(e) < end_ms)
    lead_moment: dict[object, int] = {}
    for e in events:
        if e["type"] == "stage_change" and e["to_stage"] in LEAD_STAGES:
            lead_moment.setdefault(e["contact_id"], ms(e))
    leads = sum(1 for moment in lead_moment.values() if start_ms <= moment < end_ms)
    return sessions, leads


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_incident_raises_sessions_and_lowers_leads_per_session_against_the_day_before(seed: int) -> None:
    incident = MONDAY + timedelta(days=2, hours=8)  # Wednesday 08:00-16:00
    scenario = replace(SMALL, days=3, visits_per_day=6000, incident_start=incident, incident_hours=8)
    events = list(generate(scenario, seed))
    start = to_ms(incident)
    sessions_now, leads_now = sessions_and_new_leads(events, start, start + 8 * HOUR_MS)
    sessions_before, leads_before = sessions_and_new_leads(events, start - DAY_MS, start - DAY_MS + 8 * HOUR_MS)
    # traffic × 1.6 (± the day's 8 % noise); leads per session × 0.4
    assert sessions_now / sessions_before == pytest.approx(1.6, abs=0.25)
    assert (leads_now / sessions_now) / (leads_before / sessions_before) < 0.7


def test_a_scripted_closing_incident_covers_the_last_day_of_a_generated_count() -> None:
    events = list(generate_count(80_000, 4, incident=True))
    end = ms(events[-1]) + 1
    sessions_now, leads_now = sessions_and_new_leads(events, end - DAY_MS, end)
    sessions_before, leads_before = sessions_and_new_leads(events, end - 2 * DAY_MS, end - DAY_MS)
    assert sessions_now >= 1.2 * sessions_before
    assert leads_now / sessions_now <= 0.8 * leads_before / sessions_before


def test_a_simulated_incident_day_fires_the_overall_divergence_verdict_once_folded() -> None:
    incident_day = MONDAY + timedelta(days=2)
    scenario = replace(SMALL, days=3, visits_per_day=3000, incident_start=incident_day, incident_hours=24)
    policy = Policy(fx_rates={"EUR": Decimal("1.08")})
    ledger = Ledger(policy)
    for event in generate(scenario, 8):
        ledger.fold(EVENT_ADAPTER.validate_python(event))
    as_of = to_ms(incident_day) + DAY_MS - 1  # the window is the incident day, the baseline the day before
    overall = divergence_verdicts(ledger.totals(), as_of, policy)[0]
    assert overall.scope == "overall"
    assert overall.firing, overall.reason
    assert overall.sessions_change is not None
    assert overall.sessions_change >= 0.2
