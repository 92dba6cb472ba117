"""Acquisition: spend, CPL, CAC, LTV:CAC, payback and ROI (stream/core/acquisition.py), folded from events."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Spend, Subscription, SubscriptionStatus
from stream.core.acquisition import SPEND, SpendState, acquisition_window, apply_spend, spend_delta
from stream.core.ledger import DictStore, Ledger, RejectedEvent, rebuild_totals, shard_index
from stream.core.links import AccountLink
from stream.core.policy import Policy, UnknownCurrency
from stream.core.totals import Totals
from stream.core.windows import Span, month_span, to_ms

POLICY = Policy(fx_rates={"EUR": Decimal("1.10")})
MARCH = month_span("2026-03")


def ms(moment: str) -> int:
    return to_ms(datetime.fromisoformat(moment))


def spend(
    event_id: str,
    amount: str,
    channel: str = "paid",
    category: str = "marketing",
    campaign: str | None = None,
    at: str = "2026-03-10T09:00:00+00:00",
    currency: str = "USD",
) -> Spend:
    return Spend(
        event_id=event_id,
        occurred_at=datetime.fromisoformat(at),
        channel=channel,
        campaign=campaign,
        category=category,
        amount=Decimal(amount),
        currency=currency,
    )


def paid_subscription(account: str, amount: str = "500", at: str = "2026-03-12T00:00:00+00:00") -> Subscription:
    return Subscription(
        event_id=f"sub-{account}-{at}",
        occurred_at=datetime.fromisoformat(at),
        account_id=account,
        subscription_id=f"sub-{account}",
        status="active",
        amount=Decimal(amount),
        currency="USD",
        interval="month",
    )


def cancelled_subscription(account: str, at: str) -> Subscription:
    return paid_subscription(account, at=at).model_copy(
        update={"status": SubscriptionStatus.CANCELLED, "event_id": f"x-{account}"}
    )


def fold(*events: Spend | Subscription, policy: Policy = POLICY, shards: int = 1) -> Ledger:
    ledger = Ledger(policy, shards=shards)
    for event in events:
        ledger.fold(event)
    return ledger


def acquired_through(ledger: Ledger, account: str, channel: str) -> None:
    """What the funnel tells an account once its contact's first touch is known."""
    shard = ledger.shards[shard_index("account", account, len(ledger.shards))]
    shard.fold(AccountLink(account, f"contact-{account}", ms("2026-02-01T00:00:00+00:00"), channel, None))


def leads_entered(totals: Totals, count: int, channel: str, campaign: str = "none") -> None:
    """New leads as the funnel writes them: `stage_entries` with labels (stage, channel, campaign)."""
    totals.add("stage_entries", ("lead", channel, campaign), ms("2026-03-15T00:00:00+00:00"), count)


# -- spend -------------------------------------------------------------------------------


def test_spend_is_summed_by_channel_and_category_in_the_reporting_currency() -> None:
    ledger = fold(
        spend("s1", "1000", "paid", "marketing"),
        spend("s2", "500", "paid", "sales"),
        spend("s3", "200", "social", "marketing", currency="EUR"),  # 200 × 1.10
    )
    window = acquisition_window(ledger.totals(), MARCH, POLICY)
    assert (window.marketing_spend, window.sales_spend, window.total_spend) == tuple(map(Decimal, (1220, 500, 1720)))
    assert window.by_channel["paid"].total_spend == 1500
    assert window.by_channel["social"].marketing_spend == Decimal("220")
    assert window.currency == "USD"


def test_spend_outside_the_window_is_left_out() -> None:
    ledger = fold(spend("s1", "1000", at="2026-02-28T23:59:00+00:00"), spend("s2", "300"))
    assert acquisition_window(ledger.totals(), MARCH, POLICY).total_spend == 300


def test_an_unknown_currency_raises_and_leaves_the_channel_untouched() -> None:
    state = SpendState()
    with pytest.raises(UnknownCurrency, match="GBP"):
        apply_spend(state, spend("s1", "100", currency="GBP"), POLICY)
    assert (state.spends, state.event_ids) == ({}, set())
    ledger = Ledger(POLICY)
    with pytest.raises(RejectedEvent):
        ledger.fold(spend("s1", "100", currency="GBP"))
    assert acquisition_window(ledger.totals(), MARCH, POLICY).total_spend == 0


def spend_states(ledger: Ledger) -> dict[str, SpendState]:
    found: dict[str, SpendState] = {}
    for shard in ledger.shards:
        assert isinstance(shard.store, DictStore)
        for key, state in shard.store.states["channel"].items():
            assert isinstance(state, SpendState)
            found[key] = state
    return found


def test_spend_is_kept_per_channel_and_day_one_amount_per_minute_category_and_campaign() -> None:
    ledger = fold(
        spend("s1", "100", at="2026-03-10T09:00:10+00:00"),
        spend("s2", "50", at="2026-03-10T09:00:50+00:00"),  # the same minute: one amount of 150
        spend("s3", "20", at="2026-03-10T09:00:50+00:00", campaign="spring"),
        spend("s4", "70", at="2026-03-11T00:00:00+00:00"),
        spend("s5", "30", "social", at="2026-03-10T23:59:59+00:00"),
    )
    states = spend_states(ledger)
    assert sorted(states) == ["paid/2026-03-10", "paid/2026-03-11", "social/2026-03-10"]
    nine = ms("2026-03-10T09:00:00+00:00")
    assert states["paid/2026-03-10"].spends == {
        (nine, "marketing", None): Decimal(150),
        (nine, "marketing", "spring"): Decimal(20),
    }
    assert states["paid/2026-03-10"].event_ids == {"s1", "s2", "s3"}
    delta = spend_delta("paid/2026-03-10", states["paid/2026-03-10"])
    assert delta.money == {
        (SPEND, ("paid", "marketing", "none"), nine): Decimal(150),
        (SPEND, ("paid", "marketing", "spring"), nine): Decimal(20),
    }


def test_a_channel_day_holds_one_amount_however_many_spend_events_share_its_minute() -> None:
    state = SpendState()
    for n in range(1_000):
        apply_spend(state, spend(f"s{n}", "0.25", at="2026-03-10T09:00:00+00:00"), POLICY)
    assert state.spends == {(ms("2026-03-10T09:00:00+00:00"), "marketing", None): Decimal("250.00")}


def test_a_duplicate_spend_is_a_duplicate_however_late_it_comes() -> None:
    # a channel-day is shorter than the dedupe horizon, so it remembers all of its event ids
    ledger = fold(spend("s1", "100", at="2026-01-10T09:00:00+00:00"))
    for day in range(1, 28):
        ledger.fold(spend(f"feb-{day}", "1", at=f"2026-02-{day:02}T09:00:00+00:00"))
    ledger.fold(spend("s1", "100", at="2026-01-10T09:00:00+00:00"))
    assert ledger.counts.duplicates == 1
    assert acquisition_window(ledger.totals(), month_span("2026-01"), POLICY).total_spend == 100


# -- CPL, CAC ----------------------------------------------------------------------------


def test_cac_is_all_spend_over_new_paying_customers() -> None:
    # 100,000 of spend (70,000 marketing, 30,000 sales) and 200 new paying customers: CAC 500
    ledger = fold(
        spend("m1", "70000", "paid", "marketing"),
        spend("s1", "30000", "paid", "sales"),
        *(paid_subscription(f"acct-{n}") for n in range(200)),
    )
    window = acquisition_window(ledger.totals(), MARCH, POLICY)
    assert window.new_customers == 200
    assert window.customer_acquisition_cost == 500


def test_cpl_is_marketing_spend_over_new_leads() -> None:
    # sales spend does not buy leads: 6,000 marketing / 120 leads = 50
    ledger = fold(spend("m1", "6000", "paid", "marketing"), spend("s1", "4000", "paid", "sales"))
    leads_entered(ledger.totals(), 120, "paid")
    window = acquisition_window(ledger.totals(), MARCH, POLICY)
    assert window.new_leads == 120
    assert window.cost_per_lead == 50


def test_cpl_and_cac_by_channel_use_the_first_touch_channel() -> None:
    ledger = fold(
        spend("m1", "4000", "paid", "marketing"),
        spend("m2", "1000", "email", "marketing"),
        *(paid_subscription(f"acct-{n}") for n in range(5)),
    )
    for n in range(4):
        acquired_through(ledger, f"acct-{n}", "paid")
    acquired_through(ledger, "acct-4", "email")
    leads_entered(ledger.totals(), 40, "paid")
    leads_entered(ledger.totals(), 50, "email")
    by_channel = acquisition_window(ledger.totals(), MARCH, POLICY).by_channel
    assert (by_channel["paid"].cost_per_lead, by_channel["paid"].customer_acquisition_cost) == (
        Decimal(100),
        Decimal(1000),
    )
    assert (by_channel["email"].cost_per_lead, by_channel["email"].customer_acquisition_cost) == (
        Decimal(20),
        Decimal(1000),
    )


def test_rates_without_leads_customers_or_spend_are_absent() -> None:
    window = acquisition_window(fold(spend("m1", "1000")).totals(), MARCH, POLICY)
    assert window.cost_per_lead is None
    assert window.customer_acquisition_cost is None
    assert window.ltv_to_cac_ratio is None
    assert window.cac_payback_months is None
    no_spend = acquisition_window(fold(paid_subscription("a")).totals(), MARCH, POLICY)
    assert no_spend.marketing_roi is None
    assert no_spend.customer_acquisition_cost == 0  # customers that cost nothing


# -- LTV:CAC, payback, ROI ---------------------------------------------------------------


def test_ltv_to_cac_and_payback_months() -> None:
    # February: 20 accounts at 500/month; in March one cancels and 5 join, all at 500.
    # Churn 1/20 = 5 %, ARPA (19 + 5) × 500 / 24 = 500, LTV 500 / 0.05 = 10,000.
    # March spend 5,000 for 5 new customers: CAC 1,000, LTV:CAC 10, payback 1,000 / 500 = 2 months.
    ledger = fold(
        *(paid_subscription(f"old-{n}", at="2026-02-05T00:00:00+00:00") for n in range(20)),
        cancelled_subscription("old-0", "2026-03-08T00:00:00+00:00"),
        *(paid_subscription(f"new-{n}") for n in range(5)),
        spend("m1", "5000"),
    )
    window = acquisition_window(ledger.totals(), MARCH, POLICY)
    assert window.customer_acquisition_cost == 1000
    assert window.lifetime_value == 10_000
    assert window.ltv_to_cac_ratio == pytest.approx(10.0)
    assert window.cac_payback_months == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("marketing_spend", "new_mrr", "expected_roi"),
    [
        ("10000", "1000", 0.2),  # (1,000 × 12 − 10,000) / 10,000
        ("12000", "1000", 0.0),
        ("24000", "1000", -0.5),
    ],
)
def test_marketing_roi_per_channel_is_annualised_new_mrr_over_spend(
    marketing_spend: str, new_mrr: str, expected_roi: float
) -> None:
    ledger = fold(
        spend("m1", marketing_spend, "paid"),
        spend("m2", "999", "social"),
        paid_subscription("acct-1", new_mrr),
    )
    acquired_through(ledger, "acct-1", "paid")
    window = acquisition_window(ledger.totals(), MARCH, POLICY)
    assert window.by_channel["paid"].new_business_mrr == Decimal(new_mrr)
    assert window.by_channel["paid"].marketing_roi == pytest.approx(expected_roi)
    assert window.by_channel["social"].marketing_roi == pytest.approx(-1.0)  # spent, nothing won


# -- campaigns ---------------------------------------------------------------------------


def test_campaigns_past_the_top_n_by_spend_are_summed_as_other() -> None:
    ledger = fold(
        spend("c1", "300", campaign="spring"),
        spend("c2", "200", campaign="brand"),
        spend("c3", "100", campaign="retarget"),
        spend("c4", "50", category="sales", campaign="outbound"),
        policy=Policy(campaign_top_n=2),
    )
    leads_entered(ledger.totals(), 3, "paid", "spring")
    leads_entered(ledger.totals(), 2, "paid", "retarget")
    campaigns = acquisition_window(ledger.totals(), MARCH, Policy(campaign_top_n=2)).by_campaign
    assert list(campaigns) == ["spring", "brand", "other"]
    assert campaigns["spring"].cost_per_lead == 100
    assert campaigns["brand"].cost_per_lead is None
    assert (campaigns["other"].marketing_spend, campaigns["other"].total_spend) == (
        Decimal(100),
        Decimal(150),
    )
    assert campaigns["other"].new_leads == 2


# -- order, duplicates, shards -----------------------------------------------------------

SPENDS = st.lists(
    st.builds(
        spend,
        event_id=st.sampled_from([f"e{n}" for n in range(8)]),
        amount=st.sampled_from(["10", "25.50", "100"]),
        channel=st.sampled_from(["paid", "social", "email"]),
        category=st.sampled_from(["marketing", "sales"]),
        campaign=st.sampled_from([None, "spring", "brand"]),
        at=st.sampled_from(["2026-02-27T10:00:00+00:00", "2026-03-03T10:00:00+00:00", "2026-03-30T23:59:00+00:00"]),
    ),
    max_size=10,
    unique_by=lambda event: event.event_id,
)


def spend_read_side(ledger: Ledger, totals: Totals | None = None) -> list[object]:
    totals = totals if totals is not None else ledger.totals()
    return [
        acquisition_window(totals, MARCH, POLICY),
        acquisition_window(totals, Span(ms("2026-02-01T00:00:00+00:00"), ms("2026-03-04T00:00:00+00:00")), POLICY),
        totals.money_total_by(SPEND, Span(0, MARCH.end_ms), 2),
    ]


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_spend_totals_are_the_same_in_any_order(data: st.DataObject) -> None:
    events = data.draw(SPENDS)
    shuffled = data.draw(st.permutations(events))
    assert spend_read_side(fold(*shuffled)) == spend_read_side(fold(*events))


@settings(max_examples=50, deadline=None)
@given(SPENDS)
def test_folding_every_spend_twice_changes_nothing(events: list[Spend]) -> None:
    twice = fold(*events, *events)
    assert spend_read_side(twice) == spend_read_side(fold(*events))
    assert twice.counts.duplicates == len(events)


@settings(max_examples=30, deadline=None)
@given(SPENDS)
def test_folding_spend_over_three_shards_equals_one_shard(events: list[Spend]) -> None:
    assert spend_read_side(fold(*events, shards=3)) == spend_read_side(fold(*events, shards=1))


@settings(max_examples=50, deadline=None)
@given(SPENDS, st.integers(1, 3))
def test_totals_rebuilt_from_spend_states_equal_the_folded_totals(events: list[Spend], shards: int) -> None:
    ledger = fold(*events, shards=shards)
    stores = [shard.store for shard in ledger.shards if isinstance(shard.store, DictStore)]
    rebuilt = rebuild_totals((item for store in stores for item in store.items()), POLICY)
    assert spend_read_side(ledger, rebuilt) == spend_read_side(ledger)
