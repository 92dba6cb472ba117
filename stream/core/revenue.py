"""Revenue (lagging, ChartMogul-style): MRR, its movements, churn and lifetime value, per account.

The account is the entity: its state is the set of subscription events it has
seen and, per contact, the earliest first touch it was told. Everything it
contributes to the totals is recomputed from that set by walking its timeline
in (ts_ms, event_id) order, and each fold applies the difference between the
facts before and after (`Delta.between`). So a late event that rewrites the
account's history, or a late link that changes its acquisition channel, moves
its facts to where they belong, whatever order things arrive in.

Current-state quantities (MRR, paying accounts) are written as signed changes
at the moment they happen, so a sum from the beginning up to an instant reads
their value at that instant.
"""

from __future__ import annotations

from bisect import bisect_left
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from fractions import Fraction
from itertools import groupby
from typing import NamedTuple, TypeVar

from schemas.channels import UNKNOWN_CHANNEL
from schemas.events import BillingInterval, Subscription, SubscriptionStatus
from schemas.snapshot.revenue import MrrMovements, RevenueMonth, RevenueNow, RevenueWindow
from stream.core.links import AccountLink, Step
from stream.core.policy import Policy
from stream.core.rates import ratio, whole
from stream.core.totals import BEGINNING_MS, Delta, FactKey, Facts, MoneyFacts, Totals
from stream.core.windows import (
    MINUTE_MS,
    Span,
    floor_minute,
    month_label,
    month_span,
    month_start,
    next_month_start,
    previous_month_start,
)

MRR = "mrr"
"""Money, labels (); signed change of total MRR at each change time."""
MRR_BY_PLAN = "mrr_by_plan"
"""Money, labels (plan or "none",); signed, from each subscription's own changes."""
MRR_MOVEMENT = "mrr_movement"
"""Money, labels (kind, channel); the movement's magnitude at its time."""
MRR_MOVEMENT_ACCOUNTS = "mrr_movement_accounts"
"""Count, labels (kind, channel); one per movement."""
PAYING_ACCOUNTS = "paying_accounts"
"""Count, labels (channel,); +1 when account MRR goes 0 -> >0, -1 when >0 -> 0."""
CHURNED_ACCOUNTS = "churned_accounts"
"""Count, labels (); the customer-churn numerator (see `churned_customer_months`)."""
NEW_CUSTOMERS = "new_customers"
"""Count, labels (channel,); one at each new-business movement."""

NO_PLAN = "none"
TRAILING_CHURN_MONTHS = 6
MRR_PLACES = Decimal("0.000001")
"""MRR is kept to 6 decimal places (the input's precision), so sums of +x and -x cancel exactly."""


class MovementKind(StrEnum):
    NEW = "new"
    EXPANSION = "expansion"
    REACTIVATION = "reactivation"
    CONTRACTION = "contraction"
    CHURN = "churn"


MONTHS_FACTOR: dict[BillingInterval, Fraction] = {
    BillingInterval.DAY: Fraction(365, 12),
    BillingInterval.WEEK: Fraction(52, 12),
    BillingInterval.MONTH: Fraction(1),
    BillingInterval.QUARTER: Fraction(1, 3),
    BillingInterval.YEAR: Fraction(1, 12),
}
"""Billing periods per month, by interval."""

V = TypeVar("V", float, Decimal)

PAYING_STATUSES = frozenset({SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE})


class SubscriptionChange(NamedTuple):
    """One subscription event as the account keeps it (money already in the reporting currency)."""

    ts_ms: int
    subscription_id: str
    status: str
    plan: str | None
    mrr: Decimal


class ContactTouch(NamedTuple):
    """The earliest first touch the account has been told for one of its contacts."""

    first_touch_ms: int | None
    channel: str
    campaign: str | None


class AccountState:
    """One account's subscription events (by event_id) and its contacts' first touches."""

    __slots__ = ("contacts", "subscription_changes")

    def __init__(self) -> None:
        self.subscription_changes: dict[str, SubscriptionChange] = {}
        """event_id -> the subscription's state after that event."""
        self.contacts: dict[str, ContactTouch] = {}
        """contact_id -> its earliest first touch so far."""


# -- write side ------------------------------------------------------------------------


def subscription_mrr(event: Subscription, policy: Policy) -> Decimal:
    """Subscription MRR = amount × quantity × months-factor / interval_count, in the reporting currency.

    For `active` and `past_due` (a failed payment is not churn yet); 0 for `trialing`
    and `cancelled`. Months-factor: month 1, year 1/12, quarter 1/3, week 52/12,
    day 365/12. Raises `UnknownCurrency` for a currency with no rate, even when the
    MRR would be 0, since the event is bad input either way.
    """
    amount = policy.to_reporting(event.amount, event.currency)
    if event.status not in PAYING_STATUSES:
        return Decimal(0)
    factor = MONTHS_FACTOR[event.interval]
    mrr = amount * event.quantity * factor.numerator / (factor.denominator * event.interval_count)
    return mrr.quantize(MRR_PLACES, rounding=ROUND_HALF_EVEN)


def _touch_order(touch: ContactTouch) -> tuple[bool, int, str, str]:
    """Earliest first touch first; a contact with no touch (None) last; ties broken by the labels."""
    return (touch.first_touch_ms is None, touch.first_touch_ms or 0, touch.channel, touch.campaign or "")


def acquisition_channel(state: AccountState) -> str:
    """The account's channel: that of its contact with the earliest first touch; `unknown` without one."""
    if not state.contacts:
        return UNKNOWN_CHANNEL
    _, contact = min(state.contacts.items(), key=lambda item: (_touch_order(item[1]), item[0]))
    return contact.channel


def movement_kind(old: Decimal, new: Decimal, has_paid: bool) -> MovementKind:
    """The one movement a change of account MRR from `old` to `new` (they differ) records.

    New business (old = 0, the account has never paid), reactivation (old = 0, it
    has paid before), expansion (new > old > 0), contraction (0 < new < old),
    churn (new = 0 < old).
    """
    if old == 0:
        return MovementKind.REACTIVATION if has_paid else MovementKind.NEW
    if new == 0:
        return MovementKind.CHURN
    return MovementKind.EXPANSION if new > old else MovementKind.CONTRACTION


def account_facts(state: AccountState) -> tuple[Facts, MoneyFacts]:
    """Everything the account contributes to the totals, derived from the set of its events and links.

    Account MRR at time t = Σ its subscriptions' MRR from their latest events at or
    before t; events at the same instant are one change, so cancelling one
    subscription and starting another at once is a single movement (or none).
    Churn is recognised at cancellation.
    """
    facts = Delta()
    channel = acquisition_channel(state)
    ordered = sorted(state.subscription_changes.items(), key=lambda item: (item[1].ts_ms, item[0]))
    latest: dict[str, SubscriptionChange] = {}
    account_mrr = Decimal(0)
    has_paid = False
    timeline: list[tuple[int, Decimal]] = []  # (ts_ms, account MRR from then on), one per change
    last_churn_in_month: dict[int, int] = {}
    for ts, same_instant in groupby(ordered, key=lambda item: item[1].ts_ms):
        for _, change in same_instant:
            previous = latest.get(change.subscription_id)
            if previous is not None:
                facts.add_money(MRR_BY_PLAN, (previous.plan or NO_PLAN,), ts, -previous.mrr)
            facts.add_money(MRR_BY_PLAN, (change.plan or NO_PLAN,), ts, change.mrr)
            latest[change.subscription_id] = change
        new = sum((change.mrr for change in latest.values()), Decimal(0))
        old = account_mrr
        if new == old:
            continue
        kind = movement_kind(old, new, has_paid)
        facts.add_money(MRR, (), ts, new - old)
        facts.add_money(MRR_MOVEMENT, (kind.value, channel), ts, abs(new - old))
        facts.count(MRR_MOVEMENT_ACCOUNTS, (kind.value, channel), ts)
        if old == 0:
            facts.count(PAYING_ACCOUNTS, (channel,), ts)
        if new == 0:
            facts.count(PAYING_ACCOUNTS, (channel,), ts, -1)
            last_churn_in_month[month_start(ts)] = ts
        if kind is MovementKind.NEW:
            facts.count(NEW_CUSTOMERS, (channel,), ts)
        has_paid = True
        account_mrr = new
        timeline.append((ts, new))
    for ts in churned_customer_months(timeline, last_churn_in_month):
        facts.count(CHURNED_ACCOUNTS, (), ts)
    return _without_zeros(facts.counts), _without_zeros(facts.money)


def churned_customer_months(timeline: list[tuple[int, Decimal]], last_churn_in_month: dict[int, int]) -> list[int]:
    """Times at which the account counts as a churned customer: one per qualifying calendar month.

    A month M counts when the account was paying at the start of M and is not at
    the end of M (or at its last known event, for the current month); the count
    sits at its last churn in M. This leaves out accounts that joined and churned,
    or churned and reactivated, within the same month (ChartMogul's default).
    """
    times = [ts for ts, _ in timeline]

    def mrr_before(instant_ms: int) -> Decimal:
        index = bisect_left(times, instant_ms)
        return timeline[index - 1][1] if index else Decimal(0)

    return [
        churn_ms
        for start, churn_ms in sorted(last_churn_in_month.items())
        if mrr_before(start) > 0 and mrr_before(next_month_start(start)) == 0
    ]


def _without_zeros(facts: dict[FactKey, V]) -> dict[FactKey, V]:
    return {key: value for key, value in facts.items() if value != 0}


def apply_subscription(state: AccountState, event: Subscription, policy: Policy) -> Step:
    """Fold a subscription's new state into its account; the facts move from the old timeline to the new."""
    if event.event_id in state.subscription_changes:
        return Step(duplicate=True)
    mrr = subscription_mrr(event, policy)  # before any change: an unknown currency leaves nothing behind
    old_counts, old_money = account_facts(state)
    state.subscription_changes[event.event_id] = SubscriptionChange(
        event.occurred_ms, event.subscription_id, event.status.value, event.plan, mrr
    )
    new_counts, new_money = account_facts(state)
    return Step(Delta.between(old_counts, new_counts, old_money, new_money))


def apply_account_link(state: AccountState, link: AccountLink, policy: Policy) -> Step:
    """Keep the contact's earliest first touch; when that changes the account's channel, relabel its facts."""
    touch = ContactTouch(link.first_touch_ms, link.channel, link.campaign)
    known = state.contacts.get(link.contact_id)
    if known is not None and _touch_order(known) <= _touch_order(touch):
        return Step()
    old_counts, old_money = account_facts(state)
    state.contacts[link.contact_id] = touch
    new_counts, new_money = account_facts(state)
    return Step(Delta.between(old_counts, new_counts, old_money, new_money))


# -- read side -------------------------------------------------------------------------


def as_of_end(as_of_ms: int) -> int:
    """End (exclusive) of everything known as of an instant: the end of its minute, like `window_span`."""
    return floor_minute(as_of_ms) + MINUTE_MS


def average_revenue_per_account(mrr: Decimal, paying_customers: int) -> Decimal | None:
    """ARPA = MRR / paying customers (accounts with MRR > 0)."""
    return mrr / paying_customers if paying_customers else None


def mrr_movements(totals: Totals, span: Span) -> MrrMovements:
    """MRR movements of a span; net new MRR = new + expansion + reactivation − contraction − churn."""
    amounts = totals.money_total_by(MRR_MOVEMENT, span, 0)
    accounts = totals.total_by(MRR_MOVEMENT_ACCOUNTS, span, 0)

    def amount(kind: MovementKind) -> Decimal:
        return amounts.get(kind.value, Decimal(0))

    def count(kind: MovementKind) -> int:
        return whole(accounts.get(kind.value, 0))

    kinds = MovementKind
    return MrrMovements(
        new_business_mrr=amount(kinds.NEW),
        expansion_mrr=amount(kinds.EXPANSION),
        reactivation_mrr=amount(kinds.REACTIVATION),
        contraction_mrr=amount(kinds.CONTRACTION),
        churned_mrr=amount(kinds.CHURN),
        net_new_mrr=amount(kinds.NEW)
        + amount(kinds.EXPANSION)
        + amount(kinds.REACTIVATION)
        - amount(kinds.CONTRACTION)
        - amount(kinds.CHURN),
        new_business_accounts=count(kinds.NEW),
        expansion_accounts=count(kinds.EXPANSION),
        reactivation_accounts=count(kinds.REACTIVATION),
        contraction_accounts=count(kinds.CONTRACTION),
        churn_accounts=count(kinds.CHURN),
    )


def revenue_now(totals: Totals, as_of_ms: int) -> RevenueNow:
    """MRR = Σ account MRR; ARR = 12 × MRR; paying customers = accounts with MRR > 0; ARPA; MRR by plan."""
    until = Span(BEGINNING_MS, as_of_end(as_of_ms))
    mrr = totals.money_total(MRR, until)
    paying = whole(totals.total(PAYING_ACCOUNTS, until))
    return RevenueNow(
        mrr=mrr,
        arr=12 * mrr,
        paying_customers=paying,
        average_revenue_per_account=average_revenue_per_account(mrr, paying),
        mrr_by_plan=dict(sorted(totals.money_total_by(MRR_BY_PLAN, until, 0).items())),
    )


def _month_bounds(month: str, as_of_ms: int) -> Span:
    """The calendar month, cut at the as-of instant when it is the current one."""
    span = month_span(month)
    return Span(span.start_ms, max(span.start_ms, min(span.end_ms, as_of_end(as_of_ms))))


def customer_churn_rate(churned_customers: int, paying_at_start: int) -> float | None:
    """Customer churn rate = churned accounts / paying accounts at the start of the month.

    Churned accounts leave out those that joined and churned, or churned and
    reactivated, within the month (see `churned_customer_months`).
    """
    return ratio(churned_customers, paying_at_start)


def gross_mrr_churn_rate(movements: MrrMovements, mrr_at_start: Decimal) -> float | None:
    """Gross MRR churn rate = (churn + contraction) / MRR at the start of the month."""
    return ratio(movements.churned_mrr + movements.contraction_mrr, mrr_at_start)


def net_mrr_churn_rate(movements: MrrMovements, mrr_at_start: Decimal) -> float | None:
    """Net MRR churn rate = (churn + contraction − expansion − reactivation) / MRR at the start of the month.

    Net revenue retention (NRR) = 1 − net MRR churn rate.
    """
    lost = movements.churned_mrr + movements.contraction_mrr
    regained = movements.expansion_mrr + movements.reactivation_mrr
    return ratio(lost - regained, mrr_at_start)


def quick_ratio(movements: MrrMovements) -> float | None:
    """Quick ratio = (new + expansion + reactivation) / (churn + contraction)."""
    gained = movements.new_business_mrr + movements.expansion_mrr + movements.reactivation_mrr
    return ratio(gained, movements.churned_mrr + movements.contraction_mrr)


def lifetime_value(arpa: Decimal | None, churn_rate: Fraction | None) -> Decimal | None:
    """LTV = ARPA / monthly customer churn rate; absent while churn is 0 (or there is no ARPA)."""
    if arpa is None or not churn_rate:
        return None
    return arpa * churn_rate.denominator / churn_rate.numerator


def revenue_growth_rate(mrr_now: Decimal, mrr_before: Decimal) -> float | None:
    """Revenue growth = (MRR at the end of this period − at the end of the previous) / the previous."""
    return ratio(mrr_now - mrr_before, mrr_before)


def _paying_before(totals: Totals, instant_ms: int) -> int:
    return whole(totals.total(PAYING_ACCOUNTS, Span(BEGINNING_MS, instant_ms)))


def _churn_fraction(totals: Totals, span: Span) -> Fraction | None:
    paying_at_start = _paying_before(totals, span.start_ms)
    if not paying_at_start:
        return None
    return Fraction(whole(totals.total(CHURNED_ACCOUNTS, span)), paying_at_start)


def trailing_customer_churn_rate(totals: Totals, month: str, as_of_ms: int) -> Fraction | None:
    """Mean customer churn rate of the month and the five before it, over months that have a rate.

    ChartMogul's LTV variant uses it to smooth a month with unusually low or high churn.
    """
    rates: list[Fraction] = []
    start = month_span(month).start_ms
    for _ in range(TRAILING_CHURN_MONTHS):
        rate = _churn_fraction(totals, _month_bounds(month_label(start), as_of_ms))
        if rate is not None:
            rates.append(rate)
        start = previous_month_start(start)
    return sum(rates, Fraction(0)) / len(rates) if rates else None


def revenue_month(totals: Totals, month: str, as_of_ms: int) -> RevenueMonth:
    """MRR, movements and churn of the calendar month `YYYY-MM` (up to `as_of_ms` for the current month)."""
    span = _month_bounds(month, as_of_ms)
    mrr_at_start = totals.money_total(MRR, Span(BEGINNING_MS, span.start_ms))
    mrr_at_end = totals.money_total(MRR, Span(BEGINNING_MS, span.end_ms))
    paying_at_start = _paying_before(totals, span.start_ms)
    paying_at_end = _paying_before(totals, span.end_ms)
    movements = mrr_movements(totals, span)
    churned = whole(totals.total(CHURNED_ACCOUNTS, span))
    churn = Fraction(churned, paying_at_start) if paying_at_start else None
    trailing = trailing_customer_churn_rate(totals, month, as_of_ms)
    net_churn = net_mrr_churn_rate(movements, mrr_at_start)
    arpa = average_revenue_per_account(mrr_at_end, paying_at_end)
    return RevenueMonth(
        month=month,
        mrr_at_start=mrr_at_start,
        mrr_at_end=mrr_at_end,
        paying_customers_at_start=paying_at_start,
        paying_customers_at_end=paying_at_end,
        movements=movements,
        churned_customers=churned,
        customer_churn_rate=customer_churn_rate(churned, paying_at_start),
        gross_mrr_churn_rate=gross_mrr_churn_rate(movements, mrr_at_start),
        net_mrr_churn_rate=net_churn,
        net_revenue_retention=None if net_churn is None else 1 - net_churn,
        quick_ratio=quick_ratio(movements),
        average_revenue_per_account=arpa,
        lifetime_value=lifetime_value(arpa, churn),
        trailing_customer_churn_rate=None if trailing is None else float(trailing),
        lifetime_value_trailing_churn=lifetime_value(arpa, trailing),
        revenue_growth_rate=revenue_growth_rate(mrr_at_end, mrr_at_start),
    )


def revenue_window(totals: Totals, span: Span) -> RevenueWindow:
    """Movements and new customers (accounts with a new-business movement) of any span, by channel."""
    return RevenueWindow(
        movements=mrr_movements(totals, span),
        new_customers=whole(totals.total(NEW_CUSTOMERS, span)),
        new_customers_by_channel={
            channel: whole(value) for channel, value in sorted(totals.total_by(NEW_CUSTOMERS, span, 0).items())
        },
        new_business_mrr_by_channel=dict(
            sorted(totals.money_total_by(MRR_MOVEMENT, span, 1, {0: MovementKind.NEW.value}).items())
        ),
    )
