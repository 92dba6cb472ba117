"""Revenue: MRR normalisation, movements, churn and LTV (stream/core/revenue.py), folded from events."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from itertools import groupby
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Subscription
from stream.codec import encode_state
from stream.core import revenue
from stream.core.ledger import DictStore, Ledger, Outcome, RejectedEvent, shard_index
from stream.core.links import AccountLink, Step
from stream.core.policy import Policy, UnknownCurrency
from stream.core.revenue import (
    ACCOUNT_BOUNDS,
    CHURNED_ACCOUNTS,
    MRR,
    MRR_BY_PLAN,
    MRR_MOVEMENT,
    MRR_MOVEMENT_ACCOUNTS,
    NEW_CUSTOMERS,
    PAYING_ACCOUNTS,
    AccountBounds,
    AccountState,
    account_facts,
    acquisition_channel,
    apply_account_link,
    apply_subscription,
    movement_kind,
    revenue_month,
    revenue_now,
    revenue_window,
    subscription_mrr,
)
from stream.core.totals import Delta, Totals
from stream.core.windows import Span, month_span, month_start, next_month_start, to_ms

POLICY = Policy(fx_rates={"EUR": Decimal("1.10")})


def ms(moment: str) -> int:
    return to_ms(datetime.fromisoformat(moment))


def subscription(
    event_id: str,
    at: str,
    status: str = "active",
    amount: str = "100",
    *,
    account: str = "acme",
    subscription_id: str = "sub-1",
    plan: str | None = "pro",
    interval: str = "month",
    interval_count: int = 1,
    quantity: int = 1,
    currency: str = "USD",
) -> Subscription:
    return Subscription(
        event_id=event_id,
        occurred_at=datetime.fromisoformat(at),
        account_id=account,
        subscription_id=subscription_id,
        status=status,
        plan=plan,
        amount=Decimal(amount),
        currency=currency,
        interval=interval,
        interval_count=interval_count,
        quantity=quantity,
    )


def link(account: str, contact: str, first_touch: str | None, channel: str) -> AccountLink:
    return AccountLink(account, contact, None if first_touch is None else ms(first_touch), channel, None)


def fold(*events: Subscription, policy: Policy = POLICY, shards: int = 1) -> Ledger:
    ledger = Ledger(policy, shards=shards)
    for event in events:
        ledger.fold(event)
    return ledger


def fold_link(ledger: Ledger, account_link: AccountLink) -> None:
    shard = ledger.shards[shard_index("account", account_link.account_id, len(ledger.shards))]
    shard.fold(account_link)


def end_of(label: str) -> int:
    return month_span(label).end_ms - 1


# -- subscription MRR ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "interval", "interval_count", "quantity", "expected_mrr"),
    [
        ("100", "month", 1, 1, "100"),
        ("1200", "year", 1, 1, "100"),  # 1200 / 12
        ("300", "quarter", 1, 1, "100"),  # 300 / 3
        ("12", "week", 1, 1, "52"),  # 12 × 52 / 12
        ("6", "week", 2, 1, "13"),  # 6 × 52 / 12 / 2
        ("12", "day", 1, 1, "365"),  # 12 × 365 / 12
        ("2400", "year", 2, 1, "100"),  # 2400 / 12 / 2
        ("50", "month", 1, 3, "150"),  # 50 × 3 seats
        ("100", "month", 1, 0, "0"),  # no seats, no MRR
        ("10", "day", 1, 1, "304.166667"),  # 10 × 365 / 12, kept to 6 places
    ],
)
def test_subscription_mrr_is_normalised_to_one_month(
    amount: str, interval: str, interval_count: int, quantity: int, expected_mrr: str
) -> None:
    ledger = fold(
        subscription(
            "e1",
            "2026-03-01T00:00:00+00:00",
            amount=amount,
            interval=interval,
            interval_count=interval_count,
            quantity=quantity,
        )
    )
    now = revenue_now(ledger.totals(), ms("2026-03-02T00:00:00+00:00"))
    assert now.mrr == Decimal(expected_mrr)
    assert now.arr == 12 * Decimal(expected_mrr)


@pytest.mark.parametrize(
    ("status", "expected_mrr", "expected_paying"),
    [("active", "100", 1), ("past_due", "100", 1), ("trialing", "0", 0), ("cancelled", "0", 0)],
)
def test_only_active_and_past_due_subscriptions_have_mrr(status: str, expected_mrr: str, expected_paying: int) -> None:
    ledger = fold(subscription("e1", "2026-03-01T00:00:00+00:00", status))
    now = revenue_now(ledger.totals(), ms("2026-03-31T00:00:00+00:00"))
    assert now.mrr == Decimal(expected_mrr)
    assert now.paying_customers == expected_paying


def test_money_in_another_currency_is_converted_at_the_configured_rate() -> None:
    ledger = fold(subscription("e1", "2026-03-01T00:00:00+00:00", amount="100", currency="EUR"))
    assert revenue_now(ledger.totals(), ms("2026-03-02T00:00:00+00:00")).mrr == Decimal("110")


def test_an_unknown_currency_raises_and_leaves_the_account_untouched() -> None:
    state = AccountState()
    apply_subscription(state, subscription("e1", "2026-03-01T00:00:00+00:00"), POLICY)
    before = (state.to_wire(), account_facts(state))
    with pytest.raises(UnknownCurrency, match="GBP"):
        apply_subscription(state, subscription("e2", "2026-03-05T00:00:00+00:00", currency="GBP"), POLICY)
    assert (state.to_wire(), account_facts(state)) == before

    ledger = Ledger(POLICY)
    with pytest.raises(RejectedEvent):
        ledger.fold(subscription("e2", "2026-03-05T00:00:00+00:00", currency="GBP"))
    assert revenue_now(ledger.totals(), ms("2026-04-01T00:00:00+00:00")).mrr == 0
    assert ledger.counts.rejected == 1


# -- movements ---------------------------------------------------------------------------


def test_trial_then_paid_is_new_business() -> None:
    ledger = fold(
        subscription("e1", "2026-03-01T00:00:00+00:00", "trialing"),
        subscription("e2", "2026-03-15T00:00:00+00:00", "active", "100"),
    )
    march = revenue_month(ledger.totals(), "2026-03", end_of("2026-03"))
    assert march.movements.new_business_mrr == 100
    assert march.movements.new_business_accounts == 1
    assert march.movements.net_new_mrr == 100
    assert march.mrr_at_start == 0
    assert march.mrr_at_end == 100
    assert revenue_window(ledger.totals(), month_span("2026-03")).new_customers == 1


def test_cancel_then_resubscribe_is_reactivation() -> None:
    ledger = fold(
        subscription("e1", "2026-01-10T00:00:00+00:00", "active", "100"),
        subscription("e2", "2026-02-10T00:00:00+00:00", "cancelled", "100"),
        subscription("e3", "2026-03-05T00:00:00+00:00", "active", "120", subscription_id="sub-2"),
    )
    totals = ledger.totals()
    february = revenue_month(totals, "2026-02", end_of("2026-02"))
    march = revenue_month(totals, "2026-03", end_of("2026-03"))
    assert february.movements.churned_mrr == 100
    assert february.movements.churn_accounts == 1
    assert february.customer_churn_rate == 1.0
    assert march.movements.reactivation_mrr == 120
    assert march.movements.reactivation_accounts == 1
    assert march.movements.new_business_mrr == 0
    # a reactivation is not a new customer: it was acquired once, in January
    assert revenue_window(totals, Span(0, ms("2026-04-01T00:00:00+00:00"))).new_customers == 1


def test_past_due_still_counts_and_is_no_movement() -> None:
    ledger = fold(
        subscription("e1", "2026-03-01T00:00:00+00:00", "active", "100"),
        subscription("e2", "2026-03-20T00:00:00+00:00", "past_due", "100"),
    )
    march = revenue_month(ledger.totals(), "2026-03", end_of("2026-03"))
    assert march.mrr_at_end == 100
    assert march.paying_customers_at_end == 1
    assert march.movements.churn_accounts == 0
    assert march.movements.new_business_accounts == 1


@pytest.mark.parametrize(
    ("from_amount", "to_amount", "expansion", "contraction"),
    [
        ("100", "250", "150", "0"),  # upgrade = expansion
        ("250", "100", "0", "150"),  # downgrade = contraction
        ("100", "100", "0", "0"),  # a plan rename at the same price moves nothing
    ],
)
def test_upgrade_is_expansion_and_downgrade_is_contraction(
    from_amount: str, to_amount: str, expansion: str, contraction: str
) -> None:
    ledger = fold(
        subscription("e1", "2026-02-01T00:00:00+00:00", amount=from_amount, plan="basic"),
        subscription("e2", "2026-03-10T00:00:00+00:00", amount=to_amount, plan="pro"),
    )
    totals = ledger.totals()
    march = revenue_month(totals, "2026-03", end_of("2026-03"))
    assert march.movements.expansion_mrr == Decimal(expansion)
    assert march.movements.contraction_mrr == Decimal(contraction)
    assert march.mrr_at_end == Decimal(to_amount)
    assert revenue_now(totals, end_of("2026-03")).mrr_by_plan == {"pro": Decimal(to_amount)}


def test_two_subscriptions_on_one_account_are_one_customer() -> None:
    ledger = fold(
        subscription("e1", "2026-01-05T00:00:00+00:00", amount="100", subscription_id="s1", plan="pro"),
        subscription("e2", "2026-02-03T00:00:00+00:00", amount="50", subscription_id="s2", plan="addon"),
        subscription("e3", "2026-03-07T00:00:00+00:00", "cancelled", "100", subscription_id="s1", plan="pro"),
        subscription("e4", "2026-04-09T00:00:00+00:00", "cancelled", "50", subscription_id="s2", plan="addon"),
    )
    totals = ledger.totals()
    february = revenue_now(totals, end_of("2026-02"))
    assert february.mrr == 150
    assert february.paying_customers == 1
    assert february.average_revenue_per_account == 150
    assert february.mrr_by_plan == {"addon": 50, "pro": 100}
    assert revenue_month(totals, "2026-02", end_of("2026-02")).movements.expansion_mrr == 50
    march = revenue_month(totals, "2026-03", end_of("2026-03"))
    assert (march.movements.contraction_mrr, march.movements.churned_mrr) == (Decimal(100), Decimal(0))
    april = revenue_month(totals, "2026-04", end_of("2026-04"))
    assert (april.movements.churned_mrr, april.churned_customers) == (Decimal(50), 1)
    assert revenue_now(totals, end_of("2026-04")).paying_customers == 0


def test_changes_at_the_same_instant_are_one_movement() -> None:
    # moving from one subscription to another at once is a plan change, not churn plus reactivation
    ledger = fold(
        subscription("e1", "2026-02-01T00:00:00+00:00", amount="100", subscription_id="s1"),
        subscription("e2", "2026-03-10T00:00:00+00:00", "cancelled", "100", subscription_id="s1"),
        subscription("e3", "2026-03-10T00:00:00+00:00", amount="180", subscription_id="s2"),
    )
    movements = revenue_month(ledger.totals(), "2026-03", end_of("2026-03")).movements
    assert movements.expansion_mrr == 80
    assert movements.expansion_accounts == 1
    assert (movements.churn_accounts, movements.reactivation_accounts) == (0, 0)


# -- churn, LTV, growth ------------------------------------------------------------------


def accounts_paying_500(count: int, since: str) -> list[Subscription]:
    return [subscription(f"start-{n}", since, amount="500", account=f"acct-{n}") for n in range(count)]


def cancel(n: int, at: str) -> Subscription:
    return subscription(f"cancel-{n}-{at}", at, "cancelled", "500", account=f"acct-{n}")


def test_ltv_is_arpa_over_monthly_customer_churn() -> None:
    # 20 accounts at 500/month at the start of February, 1 cancels: churn 1/20 = 5 %, LTV 500 / 0.05
    ledger = fold(*accounts_paying_500(20, "2026-01-15T00:00:00+00:00"), cancel(0, "2026-02-10T00:00:00+00:00"))
    february = revenue_month(ledger.totals(), "2026-02", end_of("2026-02"))
    assert february.paying_customers_at_start == 20
    assert february.churned_customers == 1
    assert february.customer_churn_rate == pytest.approx(0.05)
    assert february.average_revenue_per_account == 500  # 9,500 / 19
    assert february.lifetime_value == 10_000
    assert february.mrr_at_start == 10_000
    assert february.mrr_at_end == 9_500
    assert february.gross_mrr_churn_rate == pytest.approx(0.05)
    assert february.net_mrr_churn_rate == pytest.approx(0.05)
    assert february.net_revenue_retention == pytest.approx(0.95)
    assert february.quick_ratio == 0.0  # nothing gained, 500 lost
    assert february.revenue_growth_rate == pytest.approx(-0.05)  # (9,500 − 10,000) / 10,000


def test_ltv_is_absent_while_churn_is_zero_but_the_trailing_variant_averages_six_months() -> None:
    # January: 1 of 20 churns (5 %); February: 0 of 19 (0 %); December had no one paying at its start
    ledger = fold(*accounts_paying_500(20, "2025-12-15T00:00:00+00:00"), cancel(0, "2026-01-10T00:00:00+00:00"))
    february = revenue_month(ledger.totals(), "2026-02", end_of("2026-02"))
    assert february.customer_churn_rate == 0.0
    assert february.lifetime_value is None
    assert february.trailing_customer_churn_rate == pytest.approx(0.025)  # (5 % + 0 %) / 2
    assert february.lifetime_value_trailing_churn == 20_000  # 500 / 0.025


def test_rates_with_no_one_paying_at_the_start_are_absent() -> None:
    ledger = fold(subscription("e1", "2026-03-02T00:00:00+00:00"))
    march = revenue_month(ledger.totals(), "2026-03", end_of("2026-03"))
    assert march.customer_churn_rate is None
    assert march.gross_mrr_churn_rate is None
    assert march.net_revenue_retention is None
    assert march.quick_ratio is None  # nothing lost
    assert march.revenue_growth_rate is None
    assert march.lifetime_value is None
    empty = revenue_now(Totals(), ms("2026-03-02T00:00:00+00:00"))
    assert empty.average_revenue_per_account is None


@pytest.mark.parametrize(
    ("story", "expected_churned"),
    [
        (["start 02-10", "cancel 03-05"], 1),  # paying at the start of March, not at its end
        (["start 03-02", "cancel 03-20"], 0),  # joined and churned within March
        (["start 02-10", "cancel 03-05", "start 03-20"], 0),  # churned and reactivated within March
        (["start 02-10", "cancel 03-05", "start 03-10", "cancel 03-25"], 1),  # counted once
        (["start 02-10"], 0),
    ],
)
def test_customer_churn_rate_leaves_out_accounts_that_joined_or_came_back_within_the_month(
    story: list[str], expected_churned: int
) -> None:
    events = accounts_paying_500(9, "2026-01-05T00:00:00+00:00")  # 9 loyal accounts
    for step in story:
        what, day = step.split()
        status = "active" if what == "start" else "cancelled"
        events.append(subscription(f"x-{step}", f"2026-{day}T00:00:00+00:00", status, "500", account="mover"))
    march = revenue_month(fold(*events).totals(), "2026-03", end_of("2026-03"))
    paying_at_start = 10 if story[0] == "start 02-10" else 9
    assert march.paying_customers_at_start == paying_at_start
    assert march.churned_customers == expected_churned
    assert march.customer_churn_rate == pytest.approx(expected_churned / paying_at_start)


def test_a_churned_customer_is_counted_at_its_last_churn_in_the_month() -> None:
    ledger = fold(
        subscription("e1", "2026-02-10T00:00:00+00:00"),
        subscription("e2", "2026-03-05T00:00:00+00:00", "cancelled"),
        subscription("e3", "2026-03-10T00:00:00+00:00"),
        subscription("e4", "2026-03-25T00:00:00+00:00", "cancelled"),
    )
    totals = ledger.totals()
    assert totals.total(CHURNED_ACCOUNTS, Span(ms("2026-03-01T00:00:00+00:00"), ms("2026-03-25T00:00:00+00:00"))) == 0
    assert totals.total(CHURNED_ACCOUNTS, month_span("2026-03")) == 1


def test_mrr_is_readable_inside_a_month_whose_changes_cancel_out() -> None:
    # joined on the 5th and churned on the 20th: January nets to 0, yet on the 10th MRR was 50
    ledger = fold(
        subscription("e1", "2026-01-05T00:00:00+00:00", amount="50", plan=None),
        subscription("e2", "2026-01-20T00:00:00+00:00", "cancelled", "50", plan=None),
        subscription("e3", "2026-03-03T00:00:00+00:00", amount="100", account="globex"),
    )
    on_the_10th = revenue_now(ledger.totals(), ms("2026-01-10T00:00:00+00:00"))
    assert on_the_10th.mrr == 50
    assert on_the_10th.paying_customers == 1
    assert on_the_10th.mrr_by_plan == {"none": Decimal(50)}
    assert revenue_now(ledger.totals(), end_of("2026-03")).mrr_by_plan == {"pro": Decimal(100)}


def test_the_current_month_is_read_up_to_the_as_of_instant() -> None:
    ledger = fold(
        subscription("e1", "2026-02-10T00:00:00+00:00", amount="100"),
        subscription("e2", "2026-03-05T00:00:00+00:00", amount="300"),
        subscription("e3", "2026-03-20T00:00:00+00:00", amount="400"),
    )
    as_of = ms("2026-03-10T12:00:00+00:00")
    march = revenue_month(ledger.totals(), "2026-03", as_of)
    assert march.mrr_at_end == 300
    assert march.movements.expansion_mrr == 200
    assert march.movements.expansion_accounts == 1
    assert revenue_now(ledger.totals(), as_of).mrr == 300


# -- acquisition channel -----------------------------------------------------------------


def test_a_late_account_link_relabels_new_business_to_the_contacts_channel() -> None:
    ledger = fold(subscription("e1", "2026-03-05T00:00:00+00:00", amount="100"))
    march = month_span("2026-03")
    assert revenue_window(ledger.totals(), march).new_customers_by_channel == {"unknown": 1}

    fold_link(ledger, link("acme", "c1", "2026-02-01T00:00:00+00:00", "paid"))
    window = revenue_window(ledger.totals(), march)
    assert window.new_customers_by_channel == {"paid": 1}
    assert window.new_business_mrr_by_channel == {"paid": Decimal(100)}

    fold_link(ledger, link("acme", "c2", "2026-02-20T00:00:00+00:00", "organic"))  # a later first touch
    fold_link(ledger, link("acme", "c3", None, "unknown"))  # no touch sorts last
    assert revenue_window(ledger.totals(), march).new_customers_by_channel == {"paid": 1}

    fold_link(ledger, link("acme", "c2", "2026-01-15T00:00:00+00:00", "email"))  # c2's touch got earlier
    assert revenue_window(ledger.totals(), march).new_customers_by_channel == {"email": 1}
    assert revenue_now(ledger.totals(), end_of("2026-03")).paying_customers == 1


LINKS = [
    link("acme", "c1", "2026-02-01T00:00:00+00:00", "paid"),
    link("acme", "c2", "2026-02-20T00:00:00+00:00", "organic"),
    link("acme", "c2", "2026-01-15T00:00:00+00:00", "email"),
    link("acme", "c3", None, "unknown"),
    link("acme", "c1", "2026-02-01T00:00:00+00:00", "paid"),
]


@settings(max_examples=50, deadline=None)
@given(st.permutations(LINKS))
def test_the_account_channel_is_the_same_whatever_order_links_arrive_in(links: list[AccountLink]) -> None:
    ledger = fold(subscription("e1", "2026-03-05T00:00:00+00:00"))
    for account_link in links:
        fold_link(ledger, account_link)
    assert revenue_window(ledger.totals(), month_span("2026-03")).new_customers_by_channel == {"email": 1}


# -- order, duplicates, shards -----------------------------------------------------------

DAY = 86_400_000
BASE_MS = ms("2026-01-01T00:00:00+00:00")


def at(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat()


@st.composite
def account_histories(
    draw: st.DrawFn, accounts: tuple[str, ...] = ("acme", "globex"), size: int = 12
) -> list[Subscription]:
    """Random subscription events of two accounts, several subscriptions, ties in time included."""
    count = draw(st.integers(1, size))
    events = []
    for n in range(count):
        day = draw(st.integers(0, 120))
        events.append(
            subscription(
                f"ev-{n}",
                at(BASE_MS + day * DAY),
                draw(st.sampled_from(["trialing", "active", "past_due", "cancelled"])),
                draw(st.sampled_from(["50", "100", "300"])),
                account=draw(st.sampled_from(accounts)),
                subscription_id=draw(st.sampled_from(["s1", "s2"])),
                plan=draw(st.sampled_from(["pro", None])),
                interval=draw(st.sampled_from(["month", "year"])),
            )
        )
    return events


def contribution(ledger: Ledger) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """What all accounts contribute, fact by fact (to the millisecond, unlike the totals' retained buckets)."""
    counts: dict[Any, Any] = {}
    money: dict[Any, Any] = {}
    for shard in ledger.shards:
        assert isinstance(shard.store, DictStore)
        for state in shard.store.states["account"].values():
            assert isinstance(state, AccountState)
            state_counts, state_money = account_facts(state)
            for key, value in state_counts.items():
                counts[key] = counts.get(key, 0) + value
            for key, amount in state_money.items():
                money[key] = money.get(key, Decimal(0)) + amount
    return counts, money


def read_side(totals: Totals) -> list[object]:
    months = ["2026-01", "2026-02", "2026-03", "2026-04", "2026-05"]
    return [
        *(revenue_month(totals, label, end_of(label)) for label in months),
        revenue_now(totals, end_of("2026-05")),
        revenue_window(totals, Span(month_span("2026-02").start_ms, month_span("2026-04").end_ms)),
    ]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_out_of_order_events_of_an_account_give_the_same_totals(data: st.DataObject) -> None:
    events = data.draw(account_histories())
    shuffled = data.draw(st.permutations(events))
    in_order = fold(*sorted(events, key=lambda event: (event.occurred_ms, event.event_id)))
    out_of_order = fold(*shuffled)
    assert contribution(out_of_order) == contribution(in_order)
    assert read_side(out_of_order.totals()) == read_side(in_order.totals())


@settings(max_examples=40, deadline=None)
@given(account_histories())
def test_folding_every_event_twice_changes_nothing(events: list[Subscription]) -> None:
    once = fold(*events)
    twice = fold(*events, *events)
    assert contribution(twice) == contribution(once)
    assert read_side(twice.totals()) == read_side(once.totals())
    assert twice.counts.duplicates == len(events)
    assert Ledger(POLICY).fold(events[0]) is Outcome.ACCEPTED


@settings(max_examples=30, deadline=None)
@given(account_histories())
def test_folding_split_over_three_shards_equals_one_shard(events: list[Subscription]) -> None:
    assert read_side(fold(*events, shards=3).totals()) == read_side(fold(*events, shards=1).totals())


def test_a_repeated_link_changes_nothing() -> None:
    state = AccountState()
    apply_subscription(state, subscription("e1", "2026-03-05T00:00:00+00:00"), POLICY)
    first = apply_account_link(state, LINKS[0], POLICY)
    again = apply_account_link(state, LINKS[0], POLICY)
    assert first.delta.counts
    assert not again.delta.counts
    assert not again.delta.money


# -- bounded state -------------------------------------------------------------------------
#
# The reference below is the definition the account's bounded state must agree with: the
# whole timeline of the account's events walked in (event time, event_id) order, as the
# unbounded account of earlier releases did. The bounded account is held to it exactly
# while events arrive within its tail, and to its monthly sums beyond.

TINY = AccountBounds(tail_min_events=1, tail_max_events=3, exact_moments=2, month_moments=3, ended_subscriptions=1)
"""Bounds small enough that a dozen events freeze, compact and forget."""
NO_COMPACTION = AccountBounds(tail_min_events=1, tail_max_events=3, exact_moments=10_000, month_moments=10_000)


def reference_facts(events: list[Subscription], channel: str = "unknown") -> tuple[dict[Any, Any], dict[Any, Any]]:
    """The account's facts from all its events, by the definitions (stream/core/revenue.py)."""
    delta = Delta()
    ordered = sorted({event.event_id: event for event in events}.values(), key=lambda e: (e.occurred_ms, e.event_id))
    latest: dict[str, tuple[str, Decimal]] = {}
    mrr_now, has_paid = Decimal(0), False
    mrr_after: list[tuple[int, Decimal]] = []
    last_churn_in_month: dict[int, int] = {}
    for ts, same_instant in groupby(ordered, key=lambda event: event.occurred_ms):
        for event in same_instant:
            plan, mrr = event.plan or "none", subscription_mrr(event, POLICY)
            if event.subscription_id in latest:
                old_plan, old_mrr = latest[event.subscription_id]
                delta.add_money(MRR_BY_PLAN, (old_plan,), ts, -old_mrr)
            delta.add_money(MRR_BY_PLAN, (plan,), ts, mrr)
            latest[event.subscription_id] = (plan, mrr)
        new = sum((mrr for _, mrr in latest.values()), Decimal(0))
        if new == mrr_now:
            continue
        kind = movement_kind(mrr_now, new, has_paid).value
        delta.add_money(MRR, (), ts, new - mrr_now)
        delta.add_money(MRR_MOVEMENT, (kind, channel), ts, abs(new - mrr_now))
        delta.count(MRR_MOVEMENT_ACCOUNTS, (kind, channel), ts)
        delta.count(PAYING_ACCOUNTS, (channel,), ts, 1 if mrr_now == 0 else -1 if new == 0 else 0)
        if kind == "new":
            delta.count(NEW_CUSTOMERS, (channel,), ts)
        if new == 0:
            last_churn_in_month[month_start(ts)] = ts
        has_paid, mrr_now = True, new
        mrr_after.append((ts, new))

    def mrr_before(instant_ms: int) -> Decimal:
        earlier = [mrr for ts, mrr in mrr_after if ts < instant_ms]
        return earlier[-1] if earlier else Decimal(0)

    for start, churn_ms in last_churn_in_month.items():
        if mrr_before(start) > 0 and mrr_before(next_month_start(start)) == 0:
            delta.count(CHURNED_ACCOUNTS, (), churn_ms)
    return without_zeros(delta.counts), without_zeros(delta.money)


def without_zeros(facts: dict[Any, Any]) -> dict[Any, Any]:
    return {key: value for key, value in facts.items() if value != 0}


def all_time(facts: dict[Any, Any]) -> dict[Any, Any]:
    """The same facts summed over all time, per family and labels."""
    summed: dict[Any, Any] = {}
    for (family, labels, _), value in facts.items():
        summed[family, labels] = summed.get((family, labels), 0) + value
    return without_zeros(summed)


def by_month(facts: dict[Any, Any]) -> dict[Any, Any]:
    """The same facts summed per calendar month."""
    monthly: dict[Any, Any] = {}
    for (family, labels, ts), value in facts.items():
        key = (family, labels, month_start(ts))
        monthly[key] = monthly.get(key, 0) + value
    return without_zeros(monthly)


def folded_account(events: list[Subscription]) -> tuple[AccountState, Delta, list[Step]]:
    """One account folded event by event; the sum of its steps' deltas (what the totals received)."""
    state, received, steps = AccountState(), Delta(), []
    for event in events:
        step = apply_subscription(state, event, POLICY)
        received.absorb(step.delta)
        steps.append(step)
    return state, received, steps


def in_order(events: list[Subscription]) -> list[Subscription]:
    return sorted(events, key=lambda event: (event.occurred_ms, event.event_id))


def one_account(events: list[Subscription]) -> list[Subscription]:
    return [event.model_copy(update={"account_id": "acme"}) for event in events]


@settings(max_examples=150, deadline=None)
@given(account_histories(accounts=("acme",), size=30), st.sampled_from([ACCOUNT_BOUNDS, NO_COMPACTION, TINY]))
def test_an_account_in_order_contributes_exactly_its_definition(
    events: list[Subscription], bounds: AccountBounds
) -> None:
    if bounds is not ACCOUNT_BOUNDS:  # a tail of 3 cannot hold a burst of 4 at one instant: one per instant
        events = list({event.occurred_ms: event for event in events}.values())
    ordered = in_order(events)
    with patch.object(revenue, "ACCOUNT_BOUNDS", bounds):
        state, received, _ = folded_account(ordered)
    facts = account_facts(state)
    assert (without_zeros(received.counts), without_zeros(received.money)) == facts
    reference = reference_facts(ordered)
    if bounds is TINY:  # old instants moved to their month's start, the oldest months merged: nothing lost
        assert (all_time(facts[0]), all_time(facts[1])) == (all_time(reference[0]), all_time(reference[1]))
    else:
        assert facts == reference


@settings(max_examples=150, deadline=None)
@given(account_histories(accounts=("acme",), size=30), st.data())
def test_totals_rebuilt_from_a_bounded_account_equal_what_its_folds_sent(
    events: list[Subscription], data: st.DataObject
) -> None:
    """Any order, duplicates, late links, tiny bounds: the state alone re-contributes exactly what the folds sent."""
    items: list[Subscription | AccountLink] = [*events, *LINKS]
    arrivals = data.draw(st.lists(st.sampled_from(items), min_size=len(events), max_size=2 * len(events)))
    state, received = AccountState(), Delta()
    with patch.object(revenue, "ACCOUNT_BOUNDS", replace(TINY, contacts=2)):
        for item in arrivals:
            if isinstance(item, AccountLink):
                received.absorb(apply_account_link(state, item, POLICY).delta)
            else:
                received.absorb(apply_subscription(state, item, POLICY).delta)
        assert (without_zeros(received.counts), without_zeros(received.money)) == account_facts(state)
        assert len(state.tail) <= TINY.tail_max_events
        assert len(state.frozen_exact) <= TINY.exact_moments
        assert len(state.frozen_months) <= TINY.month_moments


@settings(max_examples=100, deadline=None)
@given(account_histories(accounts=("acme",), size=30), st.data())
def test_events_out_of_order_within_the_tail_land_exactly_where_they_belong(
    events: list[Subscription], data: st.DataObject
) -> None:
    """Each event arrives at most one place late; a tail of three holds it, whatever froze before.

    (One instant at a time: a burst of more events at one instant than the tail holds freezes whole.)
    """
    ordered = in_order(list({event.occurred_ms: event for event in events}.values()))
    arrivals = list(ordered)
    index = 0
    while index < len(arrivals) - 1:
        if data.draw(st.booleans()):
            arrivals[index], arrivals[index + 1] = arrivals[index + 1], arrivals[index]
            index += 1
        index += 1
    with patch.object(revenue, "ACCOUNT_BOUNDS", replace(NO_COMPACTION, tail_min_events=3, tail_max_events=3)):
        state, received, _ = folded_account(arrivals)
    assert account_facts(state) == reference_facts(ordered)
    assert (without_zeros(received.counts), without_zeros(received.money)) == account_facts(state)


def test_a_compacted_account_keeps_its_monthly_figures_exact() -> None:
    # one change a day for 90 days (Jan-Mar): with 2 exact instants kept, older ones sit at their month's start
    events = [
        subscription(f"d{n}", at(BASE_MS + n * DAY), amount=str(100 + 10 * (n % 3)), subscription_id="s1")
        for n in range(90)
    ]
    with patch.object(revenue, "ACCOUNT_BOUNDS", replace(TINY, month_moments=12)):
        state, received, _ = folded_account(events)
    counts, money = account_facts(state)
    assert (without_zeros(received.counts), without_zeros(received.money)) == (counts, money)
    reference_counts, reference_money = reference_facts(events)
    assert by_month(money) == by_month(reference_money)
    assert by_month(counts) == by_month(reference_counts)
    assert len(state.frozen_exact) == 2
    assert sorted(state.frozen_months) == [month_start(ms(m)) for m in ("2026-01-01", "2026-02-01", "2026-03-01")]


def test_beyond_the_month_bound_the_oldest_months_are_merged_into_the_oldest_kept_one() -> None:
    # new business in January, an expansion each month after: with 3 month points, Feb and Mar merge into Jan
    events = [
        subscription(f"m{n}", at(BASE_MS + n * 31 * DAY), amount=str(100 * (n + 1)), subscription_id="s1")
        for n in range(8)
    ]
    with patch.object(revenue, "ACCOUNT_BOUNDS", TINY):
        state, received, _ = folded_account(events)
    counts, money = account_facts(state)
    assert (without_zeros(received.counts), without_zeros(received.money)) == (counts, money)
    assert len(state.frozen_months) == 3
    oldest = min(state.frozen_months)
    assert oldest == month_start(BASE_MS)
    assert state.frozen_months[oldest].movements == {"new": (Decimal(100), 1), "expansion": (Decimal(200), 2)}
    assert sum(money.values()) == sum(reference_facts(events)[1].values())  # nothing lost, only moved
    assert money[MRR, (), BASE_MS] == 300  # January now carries what February and March added


def test_an_account_with_few_events_lands_a_very_late_event_exactly() -> None:
    # the tail keeps an account's newest 32 events however old: a typical account is exact in any order
    events = [
        subscription("e1", "2026-01-05T00:00:00+00:00", amount="100"),
        subscription("e2", "2026-03-05T00:00:00+00:00", "cancelled"),
        subscription("e3", "2026-05-05T00:00:00+00:00", amount="300", subscription_id="s2"),
        subscription("late", "2026-02-01T00:00:00+00:00", amount="150"),  # three months late
    ]
    state, _, _ = folded_account(events)
    assert state.frozen_until_ms is None
    assert account_facts(state) == reference_facts(events)


def test_an_event_within_the_horizon_lands_exactly_on_a_busy_account() -> None:
    # 120 changes one hour apart (5 days), then one dated 2 days before the newest: inside the tail
    events = [
        subscription(f"h{n}", at(BASE_MS + n * 3_600_000), amount=str(100 + n % 5), subscription_id="s1")
        for n in range(120)
    ]
    late = subscription("late", at(BASE_MS + 70 * 3_600_000 + 60_000), amount="900", subscription_id="s2")
    state, received, _ = folded_account([*events, late])
    assert account_facts(state) == reference_facts([*events, late])
    assert (without_zeros(received.counts), without_zeros(received.money)) == account_facts(state)


def test_the_tail_keeps_the_horizon_and_at_most_128_events() -> None:
    # one event every 30 minutes for 10 days: the horizon (7 days) would hold 336, the cap keeps 128
    events = [
        subscription(f"t{n}", at(BASE_MS + n * 1_800_000), amount=str(100 + n % 2), subscription_id="s1")
        for n in range(480)
    ]
    state, _, _ = folded_account(events)
    assert len(state.tail) == 128
    assert state.tail[0].event_id == "t352"
    # one a day: the tail keeps the 7-day horizon's events, but never fewer than 32
    daily = [subscription(f"d{n}", at(BASE_MS + n * DAY), amount=str(100 + n % 2)) for n in range(100)]
    state, _, _ = folded_account(daily)
    assert len(state.tail) == 32


# -- events older than the tail ------------------------------------------------------------

SMALL_TAIL = replace(NO_COMPACTION, tail_min_events=1, tail_max_events=1)
"""Only the newest event is kept: everything before it is frozen."""


def test_an_event_older_than_the_tail_whose_subscription_changed_since_changes_nothing() -> None:
    events = [
        subscription("e1", "2026-01-01T00:00:00+00:00", amount="100"),
        subscription("e2", "2026-02-01T00:00:00+00:00", amount="200"),
        subscription("e3", "2026-03-01T00:00:00+00:00", amount="300"),
    ]
    with patch.object(revenue, "ACCOUNT_BOUNDS", SMALL_TAIL):
        state, _, _ = folded_account(events)
        before = account_facts(state)
        assert state.frozen_until_ms == ms("2026-02-01T00:00:00+00:00") + 1
        stale = apply_subscription(state, subscription("x", "2026-01-15T00:00:00+00:00", "cancelled"), POLICY)
    assert not stale.duplicate
    assert (stale.delta.counts, stale.delta.money) == ({}, {})
    assert account_facts(state) == before


def test_an_event_older_than_the_tail_of_a_new_subscription_counts_from_the_tails_start() -> None:
    events = [
        subscription("e1", "2026-01-01T00:00:00+00:00", amount="100"),
        subscription("e2", "2026-02-01T00:00:00+00:00", amount="200"),
        subscription("e3", "2026-03-01T00:00:00+00:00", amount="300"),
    ]
    ledger = Ledger(POLICY)
    with patch.object(revenue, "ACCOUNT_BOUNDS", SMALL_TAIL):
        for event in events:
            ledger.fold(event)
        # an add-on dated 10 January arrives after January and February froze
        ledger.fold(subscription("addon", "2026-01-10T00:00:00+00:00", amount="50", subscription_id="s2"))
    totals = ledger.totals()
    assert revenue_now(totals, end_of("2026-01")).mrr == 100  # the frozen January is not rewritten
    february = revenue_month(totals, "2026-02", end_of("2026-02"))
    assert february.mrr_at_end == 250  # 200 + 50 from where the tail begins (1 February)
    assert (february.movements.expansion_mrr, february.movements.expansion_accounts) == (Decimal(150), 2)
    assert revenue_now(totals, end_of("2026-03")).mrr == 350


def test_a_duplicate_of_a_frozen_event_is_a_duplicate() -> None:
    events = [
        subscription("e1", "2026-01-01T00:00:00+00:00", amount="100"),
        subscription("e2", "2026-02-01T00:00:00+00:00", amount="200", subscription_id="s2"),
        subscription("e3", "2026-03-01T00:00:00+00:00", amount="300", subscription_id="s3"),
    ]
    with patch.object(revenue, "ACCOUNT_BOUNDS", SMALL_TAIL):
        state, _, _ = folded_account(events)
        before = account_facts(state)
        again = [apply_subscription(state, event, POLICY) for event in events]
    assert [step.duplicate for step in again] == [True, True, True]
    assert account_facts(state) == before


def test_a_re_sent_old_event_of_a_forgotten_cancelled_subscription_does_not_resurrect_it() -> None:
    events = [
        subscription("a-on", "2026-01-01T00:00:00+00:00", amount="100", subscription_id="a"),
        subscription("a-off", "2026-01-02T00:00:00+00:00", "cancelled", subscription_id="a"),
        subscription("b-on", "2026-01-03T00:00:00+00:00", amount="50", subscription_id="b"),
        subscription("b-off", "2026-01-04T00:00:00+00:00", "cancelled", subscription_id="b"),
        subscription("c-on", "2026-01-05T00:00:00+00:00", amount="70", subscription_id="c"),
    ]
    with patch.object(revenue, "ACCOUNT_BOUNDS", replace(SMALL_TAIL, ended_subscriptions=1)):
        state, _, _ = folded_account(events)
        assert sorted(state.subscriptions) == ["b", "c"]  # "a" ended longest ago: forgotten
        before = account_facts(state)
        resent = apply_subscription(state, events[0], POLICY)
    assert (resent.delta.counts, resent.delta.money) == ({}, {})
    assert state.head.mrr == 70
    assert account_facts(state) == before


# -- bounds of subscriptions and contacts ---------------------------------------------------


@pytest.mark.parametrize(
    ("spacing_ms", "story"),
    [
        (60_000, "one change a minute (the tail's cap)"),
        (6 * 3_600_000, "one change every 6 hours for almost 7 years (the month bound)"),
        (3_600_000, "a new trial every hour, cancelled the next (ended subscriptions)"),
    ],
)
def test_an_accounts_encoded_state_stays_flat_over_10000_subscription_events(spacing_ms: int, story: str) -> None:
    trials = "trial" in story
    state = AccountState()
    sizes = {}
    for n in range(10_000):
        if trials:
            event = subscription(
                f"ev-{n:05}",
                at(BASE_MS + n * spacing_ms),
                "trialing" if n % 2 == 0 else "cancelled",
                subscription_id=f"sub-{n // 2}",
            )
        else:
            event = subscription(f"ev-{n:05}", at(BASE_MS + n * spacing_ms), amount=str(100 + n % 7 * 10))
        apply_subscription(state, event, POLICY)
        if n + 1 in (8_000, 10_000):
            sizes[n + 1] = len(encode_state(state))
    assert sizes[10_000] <= sizes[8_000] * 1.05, story  # every bound is reached by then (60 months: 7,300)
    assert sizes[10_000] < 48_000, story
    assert len(state.subscriptions) <= ACCOUNT_BOUNDS.ended_subscriptions + ACCOUNT_BOUNDS.tail_max_events


def test_an_account_keeps_its_16_earliest_contacts_and_its_channel_is_the_earliest() -> None:
    state = AccountState()
    apply_subscription(state, subscription("e1", "2026-03-05T00:00:00+00:00"), POLICY)
    for n in range(20):
        apply_account_link(state, link("acme", f"c{n:02}", f"2026-02-{20 - n:02}T00:00:00+00:00", "paid"), POLICY)
    step = apply_account_link(state, link("acme", "first", "2026-01-01T00:00:00+00:00", "email"), POLICY)
    assert len(state.contacts) == 16
    assert "first" in state.contacts
    assert "c00" not in state.contacts  # the latest touches went first
    assert acquisition_channel(state) == "email"
    assert step.delta.counts[NEW_CUSTOMERS, ("email",), ms("2026-03-05T00:00:00+00:00")] == 1
    late = apply_account_link(state, link("acme", "late", "2026-02-28T00:00:00+00:00", "organic"), POLICY)
    assert "late" not in state.contacts
    assert (late.delta.counts, late.delta.money) == ({}, {})


def test_a_late_link_relabels_frozen_history_too() -> None:
    events = [
        subscription("e1", "2026-01-01T00:00:00+00:00", amount="100"),
        subscription("e2", "2026-02-01T00:00:00+00:00", amount="200"),
        subscription("e3", "2026-03-01T00:00:00+00:00", "cancelled"),
    ]
    ledger = Ledger(POLICY)
    with patch.object(revenue, "ACCOUNT_BOUNDS", SMALL_TAIL):
        for event in events:
            ledger.fold(event)
        fold_link(ledger, link("acme", "c1", "2025-12-01T00:00:00+00:00", "paid"))
    whole_quarter = Span(month_span("2026-01").start_ms, month_span("2026-03").end_ms)
    window = revenue_window(ledger.totals(), whole_quarter)
    assert window.new_customers_by_channel == {"paid": 1}
    amounts = ledger.totals().money_total_by(MRR_MOVEMENT, whole_quarter, 1)
    assert amounts == {"paid": Decimal(100) + Decimal(100) + Decimal(200)}  # new, expansion, churn
