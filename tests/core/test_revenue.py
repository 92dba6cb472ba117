"""Revenue: MRR normalisation, movements, churn and LTV (DESIGN §4 Revenue), folded from events."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Subscription
from stream.core.ledger import Ledger, Outcome, RejectedEvent, shard_index
from stream.core.links import AccountLink
from stream.core.policy import Policy, UnknownCurrency
from stream.core.revenue import (
    CHURNED_ACCOUNTS,
    AccountState,
    account_facts,
    apply_account_link,
    apply_subscription,
    revenue_month,
    revenue_now,
    revenue_window,
)
from stream.core.totals import Totals
from stream.core.windows import Span, month_span, to_ms

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


def series(totals: Totals) -> dict[tuple[str, tuple[str, ...]], dict[int, object]]:
    """Every non-empty series, minute by minute: two totals are equal when this is."""
    found: dict[tuple[str, tuple[str, ...]], dict[int, object]] = {}
    for family, by_labels in [*totals.counts.items(), *totals.money.items()]:
        for labels, bucket_series in by_labels.items():  # type: ignore[attr-defined]
            if bucket_series.minutes:
                found[(family, labels)] = dict(bucket_series.minutes)
    return found


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
    before = (dict(state.subscription_changes), account_facts(state))
    with pytest.raises(UnknownCurrency, match="GBP"):
        apply_subscription(state, subscription("e2", "2026-03-05T00:00:00+00:00", currency="GBP"), POLICY)
    assert (dict(state.subscription_changes), account_facts(state)) == before

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


@st.composite
def account_histories(draw: st.DrawFn) -> list[Subscription]:
    """Random subscription events of two accounts, several subscriptions, ties in time included."""
    count = draw(st.integers(1, 12))
    events = []
    for n in range(count):
        day = draw(st.integers(0, 120))
        events.append(
            subscription(
                f"ev-{n}",
                datetime.fromtimestamp((BASE_MS + day * DAY) / 1000, tz=UTC).isoformat(),
                draw(st.sampled_from(["trialing", "active", "past_due", "cancelled"])),
                draw(st.sampled_from(["50", "100", "300"])),
                account=draw(st.sampled_from(["acme", "globex"])),
                subscription_id=draw(st.sampled_from(["s1", "s2"])),
                plan=draw(st.sampled_from(["pro", None])),
                interval=draw(st.sampled_from(["month", "year"])),
            )
        )
    return events


def read_side(totals: Totals) -> list[object]:
    months = ["2026-01", "2026-02", "2026-03", "2026-04", "2026-05"]
    return [
        *(revenue_month(totals, label, end_of(label)) for label in months),
        revenue_now(totals, end_of("2026-05")),
        revenue_window(totals, Span(BASE_MS + 10 * DAY, BASE_MS + 70 * DAY)),
    ]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_out_of_order_events_of_an_account_give_the_same_totals(data: st.DataObject) -> None:
    events = data.draw(account_histories())
    shuffled = data.draw(st.permutations(events))
    in_order = fold(*sorted(events, key=lambda event: (event.occurred_ms, event.event_id)))
    out_of_order = fold(*shuffled)
    assert series(out_of_order.totals()) == series(in_order.totals())
    assert read_side(out_of_order.totals()) == read_side(in_order.totals())


@settings(max_examples=40, deadline=None)
@given(account_histories())
def test_folding_every_event_twice_changes_nothing(events: list[Subscription]) -> None:
    once = fold(*events)
    twice = fold(*events, *events)
    assert series(twice.totals()) == series(once.totals())
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
