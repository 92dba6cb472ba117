"""Revenue (lagging, ChartMogul-style): MRR, its movements, churn and lifetime value, per account.

The account is the entity, and its state has a fixed upper bound however many
subscription events it sees (`AccountState` lists each bound). The one idea:
an account keeps its recent events as a *tail*, in event-time order, and
everything older as a *frozen* summary of what it contributed (movements,
plan changes and churned-customer months per instant, channel-free), plus
the account as it stood where the tail begins. A fold that arrives in order
appends to the tail and writes its movement at once (no walk over anything);
an out-of-order event within the tail re-walks the tail only; the oldest
tail events freeze as newer ones arrive. So an event late by less than the
dedupe horizon (or among the account's last 32 events) lands exactly where
it belongs, and the state alone still re-contributes everything the account
ever counted (`account_facts`), which is what rebuilding totals needs.

Current-state quantities (MRR, paying accounts) are written as signed changes
at the moment they happen, so a sum from the beginning up to an instant reads
their value at that instant.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from fractions import Fraction
from itertools import groupby
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

from schemas.channels import UNKNOWN_CHANNEL
from schemas.events import BillingInterval, Subscription, SubscriptionStatus
from schemas.snapshot.revenue import MrrMovements, RevenueMonth, RevenueNow, RevenueWindow
from stream.core.links import AccountLink, Step
from stream.core.policy import Policy
from stream.core.rates import ratio, whole
from stream.core.totals import BEGINNING_MS, Delta, FactKey, Facts, MoneyFacts, Readable, diff_facts
from stream.core.windows import (
    MINUTE_MS,
    Span,
    floor_minute,
    month_label,
    month_span,
    month_start,
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
"""Count, labels (); the customer-churn numerator (see `churned_customer_instant`)."""
NEW_CUSTOMERS = "new_customers"
"""Count, labels (channel,); one at each new-business movement."""

NO_PLAN = "none"
TRAILING_CHURN_MONTHS = 6
MRR_PLACES = Decimal("0.000001")
"""MRR is kept to 6 decimal places (the input's precision), so sums of +x and -x cancel exactly."""
ZERO = Decimal(0)


class MovementKind(StrEnum):
    NEW = "new"
    EXPANSION = "expansion"
    REACTIVATION = "reactivation"
    CONTRACTION = "contraction"
    CHURN = "churn"


NEW, EXPANSION, REACTIVATION, CONTRACTION, CHURN = (kind.value for kind in MovementKind)
"""The kinds as plain strings, for the hot path (`movement_kind` defines them)."""
GAINS = frozenset({NEW, EXPANSION, REACTIVATION})
"""Movements that raise MRR (the others lower it)."""
STARTS_PAYING = frozenset({NEW, REACTIVATION})

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


@dataclass(frozen=True, slots=True)
class AccountBounds:
    """The fixed upper bounds of one account's state; `AccountState` says what each one bounds."""

    tail_min_events: int = 32
    """The tail always keeps at least the account's newest 32 events, however old."""
    tail_max_events: int = 128
    """... and at most 128, even when more fall within the dedupe horizon."""
    exact_moments: int = 32
    """Frozen instants kept at their own time (the newest ones) ..."""
    month_moments: int = 60
    """... and older ones summed per calendar month, for at most 60 months."""
    ended_subscriptions: int = 32
    """Subscriptions with no MRR (cancelled, trialing) remembered once their last change is frozen."""
    contacts: int = 16
    """Contacts' first touches kept: the earliest ones (only the earliest decides the channel)."""


ACCOUNT_BOUNDS = AccountBounds()
"""The bounds every account uses (a module setting, read at each fold, so tests can shrink them)."""


class SubscriptionChange(NamedTuple):
    """One subscription event as the account keeps it (money already in the reporting currency)."""

    ts_ms: int
    """When the change counts: its event time, or the tail's start for an event older than the tail."""
    occurred_ms: int
    """Its event time (orders changes of one subscription)."""
    event_id: str
    subscription_id: str
    status: str
    plan: str | None
    mrr: Decimal


class ContactTouch(NamedTuple):
    """The earliest first touch the account has been told for one of its contacts."""

    first_touch_ms: int | None
    channel: str
    campaign: str | None


class AccountMoment:
    """What an account contributes at one instant (or, summed, one month), without its channel.

    The channel is applied when facts are written (`add_moment_facts`), so a late
    link relabels frozen history as cheaply as recent history.
    """

    __slots__ = ("churned", "movements", "plans")

    def __init__(self) -> None:
        self.movements: dict[str, tuple[Decimal, int]] = {}
        """movement kind -> (MRR moved, number of movements)."""
        self.churned = 0
        """Churned-customer months counted here (see `churned_customer_instant`)."""
        self.plans: dict[str, Decimal] = {}
        """plan (or "none") -> signed change of its MRR."""

    def __bool__(self) -> bool:
        return bool(self.movements or self.churned or self.plans)

    def absorb(self, other: AccountMoment) -> None:
        movements = self.movements
        for kind, (amount, count) in other.movements.items():
            before = movements.get(kind)
            movements[kind] = (amount, count) if before is None else (before[0] + amount, before[1] + count)
        self.churned += other.churned
        plans = self.plans
        for plan, change in other.plans.items():
            total = plans.get(plan, ZERO) + change
            if total:
                plans[plan] = total
            else:
                plans.pop(plan, None)

    def to_wire(self) -> list[Any]:
        return [self.movements, self.churned, self.plans]

    @classmethod
    def from_wire(cls, wire: Sequence[Any]) -> AccountMoment:
        movements, churned, plans = wire
        moment = cls()
        moment.movements = {kind: (Decimal(amount), count) for kind, (amount, count) in movements.items()}
        moment.churned = churned
        moment.plans = {plan: Decimal(change) for plan, change in plans.items()}
        return moment


class AccountPosition:
    """The account at one point of its timeline: what the movement of the next change needs."""

    __slots__ = ("has_paid", "month_last_churn_ms", "month_ms", "month_start_mrr", "mrr")

    def __init__(self) -> None:
        self.mrr = ZERO
        """Account MRR from this point on."""
        self.has_paid = False
        """Whether it has ever had MRR (a return from 0 is then a reactivation, not new business)."""
        self.month_ms: int | None = None
        """Start of the calendar month of the last change folded."""
        self.month_start_mrr = ZERO
        """Account MRR at the start of that month."""
        self.month_last_churn_ms: int | None = None
        """The last churn in that month, if any."""

    def copy(self) -> AccountPosition:
        return AccountPosition.from_wire(self.to_wire())

    def to_wire(self) -> list[Any]:
        return [self.mrr, self.has_paid, self.month_ms, self.month_start_mrr, self.month_last_churn_ms]

    @classmethod
    def from_wire(cls, wire: Sequence[Any]) -> AccountPosition:
        position = cls()
        mrr, position.has_paid, position.month_ms, month_start_mrr, position.month_last_churn_ms = wire
        position.mrr = Decimal(mrr)
        position.month_start_mrr = Decimal(month_start_mrr)
        return position


class AccountState:
    """One account: its recent subscription events, a frozen summary of older ones, its contacts' first touches.

    Every part has a fixed upper bound (`ACCOUNT_BOUNDS`, and `Policy.dedupe_horizon_ms`):

    - `tail`: the account's newest events in event-time order: every event within
      the dedupe horizon (7 days) of the newest, at least the newest 32 however
      old, at most 128. The oldest instants freeze as newer events arrive. An
      account with at most 32 events is therefore exact in any arrival order.
      A duplicate of an event in the tail, or of any subscription's latest
      event, is a duplicate however late it comes (no id list is needed).
    - `subscriptions`: the latest change of each subscription; `base_subscriptions`
      and `base`: the same, and the account's MRR and month, where the tail
      begins. A subscription with MRR is part of what the account is and is
      always kept; of those without MRR (cancelled, trialing) whose last change
      is frozen, only the newest 32 are remembered.
    - `frozen_exact` and `frozen_months`: what the frozen events contributed, per
      instant and without the channel: the newest 32 instants at their own time,
      older ones summed at the start of their calendar month, for at most 60
      months; past that, the second-oldest month is merged into the oldest (the
      account's first month keeps its new business and carries what the merged
      months moved). A move also moves the facts in the totals (the fold's delta
      says so), so totals rebuilt from states equal the folded ones. Every
      calendar month's figures stay exact up to 60 months of frozen history.
    - `contacts`: the 16 contacts with the earliest first touches.

    An event older than the tail (event time before `frozen_until_ms`) cannot be
    placed among frozen events. If its subscription's latest frozen change is
    newer, it changes nothing (the frozen past is not rewritten; the event is
    still accepted). Otherwise it is folded as if it happened where the tail
    begins: its subscription takes that state from there on. Either way nothing
    crashes and the account's MRR from then on is right. (So is a burst of more
    than 128 events at one instant: those past the cap count 1 ms later.) An
    event older than the tail of a subscription the account does not know,
    dated no later than the last change of a subscription it has forgotten,
    might be a stale copy of the forgotten one's and changes nothing: a re-sent
    old event never resurrects a cancelled subscription's MRR.

    A late `AccountLink` with an earlier first touch relabels every fact of the
    account, frozen ones included (they carry no channel): a ChartMogul customer
    whose acquisition channel is corrected moves, with all its history, to the
    new channel, as HubSpot recomputes a company's original source.
    """

    __slots__ = (
        "base",
        "base_subscriptions",
        "contacts",
        "forgotten_until_ms",
        "frozen_exact",
        "frozen_months",
        "frozen_until_ms",
        "head",
        "subscriptions",
        "tail",
    )

    def __init__(self) -> None:
        self.contacts: dict[str, ContactTouch] = {}
        """contact_id -> its earliest first touch so far (the earliest `contacts` bound of them)."""
        self.subscriptions: dict[str, SubscriptionChange] = {}
        """subscription_id -> its latest change (tail included)."""
        self.head = AccountPosition()
        """The account after its newest event."""
        self.tail: list[SubscriptionChange] = []
        """The newest events, ordered by (ts_ms, occurred_ms, event_id)."""
        self.frozen_until_ms: int | None = None
        """Every frozen event happened before this instant, every tail event at or after it."""
        self.base_subscriptions: dict[str, SubscriptionChange] = {}
        """subscription_id -> its latest frozen change."""
        self.base = AccountPosition()
        """The account after its frozen events."""
        self.frozen_exact: dict[int, AccountMoment] = {}
        """instant -> what frozen events contributed there."""
        self.frozen_months: dict[int, AccountMoment] = {}
        """month start -> what older frozen events contributed in that month."""
        self.forgotten_until_ms: int | None = None
        """The latest last change of a forgotten subscription: older events of unknown subscriptions may be its."""

    def to_wire(self) -> list[Any]:
        """The state as JSON-ready arrays (Decimals and NamedTuples left to the codec)."""
        return [
            self.contacts,
            self.subscriptions,
            self.head.to_wire(),
            self.tail,
            self.frozen_until_ms,
            self.base_subscriptions,
            self.base.to_wire(),
            [[ts, *moment.to_wire()] for ts, moment in self.frozen_exact.items()],
            [[ts, *moment.to_wire()] for ts, moment in self.frozen_months.items()],
            self.forgotten_until_ms,
        ]

    @classmethod
    def from_wire(cls, wire: Sequence[Any]) -> AccountState:
        contacts, subscriptions, head, tail, frozen_until_ms, base_subscriptions, base, exact, months, forgotten = wire
        state = cls()
        state.contacts = {contact_id: ContactTouch(*values) for contact_id, values in contacts.items()}
        state.subscriptions = {key: _change(values) for key, values in subscriptions.items()}
        state.head = AccountPosition.from_wire(head)
        state.tail = [_change(values) for values in tail]
        state.frozen_until_ms = frozen_until_ms
        state.base_subscriptions = {key: _change(values) for key, values in base_subscriptions.items()}
        state.base = AccountPosition.from_wire(base)
        state.frozen_exact = {ts: AccountMoment.from_wire(rest) for ts, *rest in exact}
        state.frozen_months = {ts: AccountMoment.from_wire(rest) for ts, *rest in months}
        state.forgotten_until_ms = forgotten
        return state


def _change(values: Sequence[Any]) -> SubscriptionChange:
    ts_ms, occurred_ms, event_id, subscription_id, status, plan, mrr = values
    return SubscriptionChange(ts_ms, occurred_ms, event_id, subscription_id, status, plan, Decimal(mrr))


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


def _contact_order(item: tuple[str, ContactTouch]) -> tuple[tuple[bool, int, str, str], str]:
    return _touch_order(item[1]), item[0]


def acquisition_channel(state: AccountState) -> str:
    """The account's channel: that of its contact with the earliest first touch; `unknown` without one."""
    if not state.contacts:
        return UNKNOWN_CHANNEL
    _, contact = min(state.contacts.items(), key=_contact_order)
    return contact.channel


def movement_kind(old: Decimal, new: Decimal, has_paid: bool) -> MovementKind:
    """The one movement a change of account MRR from `old` to `new` (they differ) records.

    New business (old = 0, the account has never paid), reactivation (old = 0, it
    has paid before), expansion (new > old > 0), contraction (0 < new < old),
    churn (new = 0 < old).
    """
    return MovementKind(_movement(old, new, has_paid))


def _movement(old: Decimal, new: Decimal, has_paid: bool) -> str:
    """`movement_kind` as a plain string, for the hot path."""
    if old == 0:
        return REACTIVATION if has_paid else NEW
    if new == 0:
        return CHURN
    return EXPANSION if new > old else CONTRACTION


def add_moment_facts(delta: Delta, ts_ms: int, moment: AccountMoment, channel: str, sign: int = 1) -> None:
    """Write what a moment contributes at `ts_ms` under `channel` into `delta` (`sign` -1 takes it back).

    Account MRR at time t = Σ its subscriptions' MRR from their latest events at or
    before t; each change of it is one movement, and moves total MRR and, from or
    to 0, the paying accounts.
    """
    for kind, (amount, count) in moment.movements.items():
        signed = amount if sign > 0 else -amount
        delta.add_money(MRR_MOVEMENT, (kind, channel), ts_ms, signed)
        delta.add_money(MRR, (), ts_ms, signed if kind in GAINS else -signed)
        delta.count(MRR_MOVEMENT_ACCOUNTS, (kind, channel), ts_ms, sign * count)
        if kind in STARTS_PAYING:
            delta.count(PAYING_ACCOUNTS, (channel,), ts_ms, sign * count)
            if kind == NEW:
                delta.count(NEW_CUSTOMERS, (channel,), ts_ms, sign * count)
        elif kind == CHURN:
            delta.count(PAYING_ACCOUNTS, (channel,), ts_ms, -sign * count)
    if moment.churned:
        delta.count(CHURNED_ACCOUNTS, (), ts_ms, sign * moment.churned)
    for plan, change in moment.plans.items():
        delta.add_money(MRR_BY_PLAN, (plan,), ts_ms, change if sign > 0 else -change)


def churned_customer_instant(position: AccountPosition) -> int | None:
    """Where the account counts as a churned customer of its current month so far, or None.

    A month M counts when the account was paying at the start of M and is not at
    the end of M (or at its last known event, for the current month); the count
    sits at its last churn in M. This leaves out accounts that joined and churned,
    or churned and reactivated, within the same month (ChartMogul's default).
    """
    if position.month_start_mrr > 0 and position.mrr == 0:
        return position.month_last_churn_ms
    return None


def _fold_instant(
    subscriptions: dict[str, SubscriptionChange],
    position: AccountPosition,
    ts_ms: int,
    changes: Iterable[SubscriptionChange],
) -> tuple[AccountMoment, int | None]:
    """Fold one instant's changes into `subscriptions` and `position`.

    Returns what the instant contributes and, when it opens a new calendar month,
    where the month it closes counts a churned customer (or None). Changes at the
    same instant are one change of account MRR: cancelling one subscription and
    starting another at once is a single movement (or none). Churn is recognised
    at cancellation.
    """
    closed = None
    month = month_start(ts_ms)
    if position.month_ms != month:
        closed = churned_customer_instant(position)
        position.month_ms = month
        position.month_start_mrr = position.mrr
        position.month_last_churn_ms = None
    moment = AccountMoment()
    plans = moment.plans
    old = mrr = position.mrr
    for change in changes:
        previous = subscriptions.get(change.subscription_id)
        if previous is not None and previous.mrr:
            plan = previous.plan or NO_PLAN
            plans[plan] = plans.get(plan, ZERO) - previous.mrr
            mrr -= previous.mrr
        if change.mrr:
            plan = change.plan or NO_PLAN
            plans[plan] = plans.get(plan, ZERO) + change.mrr
            mrr += change.mrr
        subscriptions[change.subscription_id] = change
    if plans and not all(plans.values()):
        moment.plans = {plan: value for plan, value in plans.items() if value}
    if mrr != old:
        moment.movements[_movement(old, mrr, position.has_paid)] = (abs(mrr - old), 1)
        position.has_paid = True
        position.mrr = mrr
        if mrr == 0:
            position.month_last_churn_ms = ts_ms
    return moment, closed


def _instants(changes: Iterable[SubscriptionChange]) -> Iterator[tuple[int, list[SubscriptionChange]]]:
    for ts, same_instant in groupby(changes, key=attrgetter("ts_ms")):
        yield ts, list(same_instant)


def _moment_at(moments: dict[int, AccountMoment], ts_ms: int) -> AccountMoment:
    moment = moments.get(ts_ms)
    if moment is None:
        moment = moments[ts_ms] = AccountMoment()
    return moment


def _walk_tail(state: AccountState) -> tuple[dict[int, AccountMoment], dict[str, SubscriptionChange], AccountPosition]:
    """What the tail contributes (from where it begins), the subscriptions and the account after it."""
    subscriptions = dict(state.base_subscriptions)
    position = state.base.copy()
    moments: dict[int, AccountMoment] = {}
    for ts, changes in _instants(state.tail):
        moment, closed = _fold_instant(subscriptions, position, ts, changes)
        if closed is not None:
            _moment_at(moments, closed).churned += 1
        if moment:
            if ts in moments:
                moments[ts].absorb(moment)
            else:
                moments[ts] = moment
    pending = churned_customer_instant(position)  # the current month, as far as it is known
    if pending is not None:
        _moment_at(moments, pending).churned += 1
    return moments, subscriptions, position


def _facts_of(moments: Iterable[tuple[int, AccountMoment]], channel: str) -> Delta:
    delta = Delta()
    for ts, moment in moments:
        add_moment_facts(delta, ts, moment, channel)
    return delta


def _all_moments(state: AccountState) -> Iterator[tuple[int, AccountMoment]]:
    yield from state.frozen_months.items()
    yield from state.frozen_exact.items()
    yield from _walk_tail(state)[0].items()


def account_facts(state: AccountState) -> tuple[Facts, MoneyFacts]:
    """Everything the account contributes to the totals, from its state alone: frozen and tail, one channel."""
    facts = _facts_of(_all_moments(state), acquisition_channel(state))
    return _without_zeros(facts.counts), _without_zeros(facts.money)


def _without_zeros(facts: dict[FactKey, V]) -> dict[FactKey, V]:
    return {key: value for key, value in facts.items() if value != 0}


def _append(state: AccountState, change: SubscriptionChange) -> Delta:
    """The fast path: a change newer than every event of the account adds its own movement, nothing else."""
    position = state.head
    ts = change.ts_ms
    counted_before = churned_customer_instant(position) if position.month_ms == month_start(ts) else None
    moment, _ = _fold_instant(state.subscriptions, position, ts, (change,))
    counted_after = churned_customer_instant(position)
    state.tail.append(change)
    delta = Delta()
    if moment:
        add_moment_facts(delta, ts, moment, acquisition_channel(state))
    if counted_before != counted_after:
        if counted_before is not None:
            delta.count(CHURNED_ACCOUNTS, (), counted_before, -1)
        if counted_after is not None:
            delta.count(CHURNED_ACCOUNTS, (), counted_after)
    return delta


def _tail_order(change: SubscriptionChange) -> tuple[int, int, str]:
    return change.ts_ms, change.occurred_ms, change.event_id


def _insert(state: AccountState, change: SubscriptionChange) -> Delta:
    """An out-of-order change: re-walk the tail (never more) and apply the difference."""
    before, _, _ = _walk_tail(state)
    insort(state.tail, change, key=_tail_order)
    after, subscriptions, position = _walk_tail(state)
    state.subscriptions, state.head = subscriptions, position
    return _moments_delta(before, after, acquisition_channel(state))


def _moments_delta(before: dict[int, AccountMoment], after: dict[int, AccountMoment], channel: str) -> Delta:
    """The facts that change from one set of moments to another (only the instants that differ are written)."""
    delta = Delta()
    for ts, moment in after.items():
        old = before.get(ts)
        if old is None or not _same(old, moment):
            if old is not None:
                add_moment_facts(delta, ts, old, channel, -1)
            add_moment_facts(delta, ts, moment, channel)
    for ts, old in before.items():
        if ts not in after:
            add_moment_facts(delta, ts, old, channel, -1)
    return Delta(_without_zeros(delta.counts), _without_zeros(delta.money))


def _same(one: AccountMoment, other: AccountMoment) -> bool:
    return one.churned == other.churned and one.movements == other.movements and one.plans == other.plans


def _freeze(state: AccountState, horizon_ms: int, delta: Delta) -> None:
    """Move the oldest instants out of the tail into the frozen summary, within the bounds.

    Freezing changes no fact; the compaction of an over-full summary moves some,
    and writes that move into `delta`.
    """
    bounds = ACCOUNT_BOUNDS
    tail = state.tail
    froze_ended = froze = False
    while tail and (
        len(tail) > bounds.tail_max_events
        or (len(tail) > bounds.tail_min_events and tail[0].ts_ms < tail[-1].ts_ms - horizon_ms)
    ):
        ts = tail[0].ts_ms
        count = 1
        while count < len(tail) and tail[count].ts_ms == ts:
            count += 1
        changes = tail[:count]
        del tail[:count]
        moment, closed = _fold_instant(state.base_subscriptions, state.base, ts, changes)
        if closed is not None:
            _moment_at(state.frozen_exact, closed).churned += 1
        if moment:
            _moment_at(state.frozen_exact, ts).absorb(moment)
        state.frozen_until_ms = ts + 1
        froze = True
        froze_ended = froze_ended or any(not change.mrr for change in changes)
    if froze_ended:
        _forget_ended_subscriptions(state, bounds.ended_subscriptions)
    if froze:
        _compact(state, bounds, delta)


def _forget_ended_subscriptions(state: AccountState, keep: int) -> None:
    """Forget the oldest subscriptions without MRR whose last change is frozen, beyond `keep` of them.

    Forgetting one changes no fact: a later change of it starts from no MRR, as it would.
    """
    head = state.subscriptions
    ended = [change for key, change in state.base_subscriptions.items() if not change.mrr and head.get(key) == change]
    if len(ended) <= keep:
        return
    ended.sort(key=lambda change: (change.occurred_ms, change.event_id))
    for change in ended[: len(ended) - keep]:
        del state.base_subscriptions[change.subscription_id]
        del head[change.subscription_id]
        state.forgotten_until_ms = max(state.forgotten_until_ms or change.occurred_ms, change.occurred_ms)


def _compact(state: AccountState, bounds: AccountBounds, delta: Delta) -> None:
    """Keep the frozen summary within its bounds: old instants to their month's start, old months merged."""
    exact, months = state.frozen_exact, state.frozen_months
    if len(exact) <= bounds.exact_moments and len(months) <= bounds.month_moments:
        return
    channel = acquisition_channel(state)
    while len(exact) > bounds.exact_moments:
        ts = min(exact)
        moment = exact.pop(ts)
        _move(delta, moment, ts, month_start(ts), channel)
        _moment_at(months, month_start(ts)).absorb(moment)
    while len(months) > max(bounds.month_moments, 1):
        oldest, second = sorted(months)[:2]
        moment = months.pop(second)
        _move(delta, moment, second, oldest, channel)
        months[oldest].absorb(moment)


def _move(delta: Delta, moment: AccountMoment, from_ms: int, to_ms: int, channel: str) -> None:
    if from_ms != to_ms:
        add_moment_facts(delta, from_ms, moment, channel, -1)
        add_moment_facts(delta, to_ms, moment, channel)


def apply_subscription(state: AccountState, event: Subscription, policy: Policy) -> Step:
    """Fold a subscription's new state into its account; a duplicate (within the tail, or of a
    subscription's latest event) changes nothing."""
    mrr = subscription_mrr(event, policy)  # before any change: an unknown currency leaves nothing behind
    event_id = event.event_id
    ts = event.occurred_ms
    known = state.subscriptions.get(event.subscription_id)
    if known is not None and known.event_id == event_id:
        return Step(duplicate=True)
    change = SubscriptionChange(ts, ts, event_id, event.subscription_id, event.status.value, event.plan, mrr)
    tail, frozen_until = state.tail, state.frozen_until_ms
    if (frozen_until is None or ts >= frozen_until) and (not tail or ts > tail[-1].ts_ms):
        delta = _append(state, change)
    else:
        if any(kept.event_id == event_id for kept in tail):
            return Step(duplicate=True)
        if frozen_until is not None and ts < frozen_until:
            base = state.base_subscriptions.get(event.subscription_id)
            if base is not None and (base.occurred_ms, base.event_id) >= (ts, event_id):
                return Step(duplicate=base.event_id == event_id)  # superseded: the frozen past stays as it is
            forgotten = state.forgotten_until_ms
            if base is None and forgotten is not None and ts <= forgotten:
                return Step()  # perhaps a stale copy of a forgotten subscription's: never resurrect its MRR
            change = change._replace(ts_ms=frozen_until)
        delta = _insert(state, change)
    _freeze(state, policy.dedupe_horizon_ms, delta)
    return Step(delta)


def apply_account_link(state: AccountState, link: AccountLink, policy: Policy) -> Step:
    """Keep the contact's earliest first touch; when that changes the account's channel, relabel all its facts."""
    del policy
    touch = ContactTouch(link.first_touch_ms, link.channel, link.campaign)
    contacts = state.contacts
    known = contacts.get(link.contact_id)
    if known is not None and _touch_order(known) <= _touch_order(touch):
        return Step()
    old_channel = acquisition_channel(state)
    contacts[link.contact_id] = touch
    if len(contacts) > ACCOUNT_BOUNDS.contacts:
        latest, _ = max(contacts.items(), key=_contact_order)
        del contacts[latest]
    new_channel = acquisition_channel(state)
    if new_channel == old_channel:
        return Step()
    moments = list(_all_moments(state))
    old, new = _facts_of(moments, old_channel), _facts_of(moments, new_channel)
    return Step(Delta(diff_facts(old.counts, new.counts, 0), diff_facts(old.money, new.money, ZERO)))


# -- read side -------------------------------------------------------------------------


def as_of_end(as_of_ms: int) -> int:
    """End (exclusive) of everything known as of an instant: the end of its minute, like `window_span`."""
    return floor_minute(as_of_ms) + MINUTE_MS


def average_revenue_per_account(mrr: Decimal, paying_customers: int) -> Decimal | None:
    """ARPA = MRR / paying customers (accounts with MRR > 0)."""
    return mrr / paying_customers if paying_customers else None


def mrr_movements(totals: Readable, span: Span) -> MrrMovements:
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


def revenue_now(totals: Readable, as_of_ms: int) -> RevenueNow:
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
    reactivated, within the month (see `churned_customer_instant`).
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


def _paying_before(totals: Readable, instant_ms: int) -> int:
    return whole(totals.total(PAYING_ACCOUNTS, Span(BEGINNING_MS, instant_ms)))


def _churn_fraction(totals: Readable, span: Span) -> Fraction | None:
    paying_at_start = _paying_before(totals, span.start_ms)
    if not paying_at_start:
        return None
    return Fraction(whole(totals.total(CHURNED_ACCOUNTS, span)), paying_at_start)


def trailing_customer_churn_rate(totals: Readable, month: str, as_of_ms: int) -> Fraction | None:
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


def revenue_month(totals: Readable, month: str, as_of_ms: int) -> RevenueMonth:
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


def revenue_window(totals: Readable, span: Span) -> RevenueWindow:
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
