"""The read model: additive time series that every metric is summed from.

Reducers describe what an entity (a visitor, a contact, an account) contributes
as *facts* — `(family, labels, ts_ms) -> value` — and `Totals` keeps their sums
in minute, hour and month buckets. Because facts only ever add up:

- a late event that changes what an entity contributes is applied as the
  difference between its old and new facts (`Delta.between`), so
  event-time order does not matter;
- totals of disjoint sets of entities merge by addition (`Totals.merge`), so
  partitions and workers can each keep their own;
- a window sum reads at most a few hundred buckets, whatever its length.

Counts and seconds are floats (ints stay ints when only ints are added);
money is `Decimal` and kept in its own series so it is never mixed with floats.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Generic, TypeVar

from stream.core.windows import (
    HOUR_MS,
    MINUTE_MS,
    Span,
    ceil_hour,
    floor_hour,
    floor_minute,
    month_start,
    next_month_start,
)

Labels = tuple[str, ...]
FactKey = tuple[str, Labels, int]
"""(family, labels, event time in ms)."""
Facts = dict[FactKey, float]
MoneyFacts = dict[FactKey, Decimal]

BEGINNING_MS = -(2**62)
"""Start of an open span: `Span(BEGINNING_MS, t)` is "everything before t"."""

V = TypeVar("V", float, Decimal)


def _sum_range(buckets: Mapping[int, V], step_ms: int, start_ms: int, end_ms: int, zero: V) -> V:
    """Sum of buckets whose start lies in [start_ms, end_ms); looks up or scans, whichever is fewer."""
    total = zero
    if end_ms <= start_ms:
        return total
    steps = (end_ms - start_ms) // step_ms
    if steps <= len(buckets):
        for key in range(start_ms, end_ms, step_ms):
            value = buckets.get(key)
            if value is not None:
                total += value
    else:
        for key, value in buckets.items():
            if start_ms <= key < end_ms:
                total += value
    return total


class BucketSeries(Generic[V]):
    """One additive series, bucketed by minute, hour and calendar month."""

    __slots__ = ("first_ms", "hours", "minutes", "months", "zero")

    def __init__(self, zero: V) -> None:
        self.zero: V = zero
        self.first_ms: int | None = None
        """The earliest minute ever added to; only moves earlier (buckets that net to 0 are dropped)."""
        self.minutes: dict[int, V] = {}
        self.hours: dict[int, V] = {}
        self.months: dict[int, V] = {}

    def add(self, ts_ms: int, value: V) -> None:
        if self.first_ms is None or ts_ms < self.first_ms:
            self.first_ms = floor_minute(ts_ms)
        for buckets, key in (
            (self.minutes, floor_minute(ts_ms)),
            (self.hours, floor_hour(ts_ms)),
            (self.months, month_start(ts_ms)),
        ):
            new = buckets.get(key, self.zero) + value
            if new == 0:
                buckets.pop(key, None)
            else:
                buckets[key] = new

    def total(self, span: Span) -> V:
        """Sum over [span.start_ms, span.end_ms), exact to the minute."""
        start, end = floor_minute(max(span.start_ms, BEGINNING_MS)), floor_minute(span.end_ms)
        if not self.minutes or self.first_ms is None:
            return self.zero
        start = max(start, self.first_ms)
        full_hours_from, full_hours_to = ceil_hour(start), floor_hour(end)
        if full_hours_from >= full_hours_to:
            return _sum_range(self.minutes, MINUTE_MS, start, end, self.zero)
        total = _sum_range(self.minutes, MINUTE_MS, start, full_hours_from, self.zero)
        total += _sum_range(self.minutes, MINUTE_MS, full_hours_to, end, self.zero)
        full_months_from = (
            full_hours_from if full_hours_from == month_start(full_hours_from) else next_month_start(full_hours_from)
        )
        full_months_to = month_start(full_hours_to)
        if full_months_from < full_months_to:
            total += _sum_range_months(self.months, full_months_from, full_months_to, self.zero)
            total += _sum_range(self.hours, HOUR_MS, full_hours_from, full_months_from, self.zero)
            total += _sum_range(self.hours, HOUR_MS, full_months_to, full_hours_to, self.zero)
        else:
            total += _sum_range(self.hours, HOUR_MS, full_hours_from, full_hours_to, self.zero)
        return total

    def merge(self, other: BucketSeries[V]) -> None:
        for key, value in other.minutes.items():
            self.add(key, value)

    def is_empty(self) -> bool:
        return not self.minutes


def _sum_range_months(buckets: Mapping[int, V], start_ms: int, end_ms: int, zero: V) -> V:
    total = zero
    for key, value in buckets.items():
        if start_ms <= key < end_ms:
            total += value
    return total


class DistinctSeries:
    """Distinct members (e.g. visitor ids) by minute, hour and month; exact.

    A window's count is the size of the union of the buckets it covers.
    """

    __slots__ = ("hours", "minutes", "months")

    def __init__(self) -> None:
        self.minutes: dict[int, set[str]] = {}
        self.hours: dict[int, set[str]] = {}
        self.months: dict[int, set[str]] = {}

    def add(self, ts_ms: int, member: str) -> None:
        self.minutes.setdefault(floor_minute(ts_ms), set()).add(member)
        self.hours.setdefault(floor_hour(ts_ms), set()).add(member)
        self.months.setdefault(month_start(ts_ms), set()).add(member)

    def members(self, span: Span) -> set[str]:
        start, end = floor_minute(max(span.start_ms, BEGINNING_MS)), floor_minute(span.end_ms)
        found: set[str] = set()
        if not self.minutes:
            return found
        start = max(start, min(self.months))
        full_from, full_to = ceil_hour(start), floor_hour(end)
        edges = [(start, end)] if full_from >= full_to else [(start, full_from), (full_to, end)]
        for lo, hi in edges:
            for key, members in self.minutes.items():
                if lo <= key < hi:
                    found |= members
        if full_from < full_to:
            for key, members in self.hours.items():
                if full_from <= key < full_to:
                    found |= members
        return found

    def merge(self, other: DistinctSeries) -> None:
        for key, members in other.minutes.items():
            for member in members:
                self.add(key, member)


def _matches(labels: Labels, match: Mapping[int, str]) -> bool:
    return all(labels[i] == value for i, value in match.items())


@dataclass(slots=True)
class Delta:
    """What one fold step adds to the totals: fact increments and distinct members."""

    counts: Facts = field(default_factory=dict)
    money: MoneyFacts = field(default_factory=dict)
    members: list[tuple[str, Labels, int, str]] = field(default_factory=list)
    """(family, labels, ts_ms, member) for distinct-count families."""

    def count(self, family: str, labels: Labels, ts_ms: int, value: float = 1) -> None:
        key = (family, labels, ts_ms)
        self.counts[key] = self.counts.get(key, 0) + value

    def add_money(self, family: str, labels: Labels, ts_ms: int, value: Decimal) -> None:
        key = (family, labels, ts_ms)
        self.money[key] = self.money.get(key, Decimal(0)) + value

    @classmethod
    def between(cls, old: Facts, new: Facts, old_money: MoneyFacts, new_money: MoneyFacts) -> Delta:
        """The change from an entity's old contribution to its new one."""
        return cls(diff_facts(old, new, 0), diff_facts(old_money, new_money, Decimal(0)))


class Totals:
    """All series of one partition (or, after `merge`, of many)."""

    __slots__ = ("counts", "distinct", "money")

    def __init__(self) -> None:
        self.counts: dict[str, dict[Labels, BucketSeries[float]]] = {}
        self.money: dict[str, dict[Labels, BucketSeries[Decimal]]] = {}
        self.distinct: dict[str, dict[Labels, DistinctSeries]] = {}

    # -- writing -----------------------------------------------------------------
    def add(self, family: str, labels: Labels, ts_ms: int, value: float) -> None:
        by_labels = self.counts.setdefault(family, {})
        series = by_labels.get(labels)
        if series is None:
            series = by_labels[labels] = BucketSeries(0)
        series.add(ts_ms, value)

    def add_money(self, family: str, labels: Labels, ts_ms: int, value: Decimal) -> None:
        by_labels = self.money.setdefault(family, {})
        series = by_labels.get(labels)
        if series is None:
            series = by_labels[labels] = BucketSeries(Decimal(0))
        series.add(ts_ms, value)

    def add_member(self, family: str, labels: Labels, ts_ms: int, member: str) -> None:
        by_labels = self.distinct.setdefault(family, {})
        series = by_labels.get(labels)
        if series is None:
            series = by_labels[labels] = DistinctSeries()
        series.add(ts_ms, member)

    def apply(self, delta: Delta) -> None:
        for (family, labels, ts), value in delta.counts.items():
            if value != 0:
                self.add(family, labels, ts, value)
        for (family, labels, ts), money in delta.money.items():
            if money != 0:
                self.add_money(family, labels, ts, money)
        for family, labels, ts, member in delta.members:
            self.add_member(family, labels, ts, member)

    def merge(self, other: Totals) -> None:
        """Add another partition's totals (its entities are disjoint from ours)."""
        for family, by_labels in other.counts.items():
            for labels, series in by_labels.items():
                mine = self.counts.setdefault(family, {}).setdefault(labels, BucketSeries(0))
                mine.merge(series)
        for family, money_by_labels in other.money.items():
            for labels, money_series in money_by_labels.items():
                mine_money = self.money.setdefault(family, {}).setdefault(labels, BucketSeries(Decimal(0)))
                mine_money.merge(money_series)
        for family, distinct_by_labels in other.distinct.items():
            for labels, distinct_series in distinct_by_labels.items():
                mine_distinct = self.distinct.setdefault(family, {}).setdefault(labels, DistinctSeries())
                mine_distinct.merge(distinct_series)

    # -- reading -----------------------------------------------------------------
    def labels_of(self, family: str) -> Iterator[Labels]:
        yield from self.counts.get(family, {})
        yield from self.money.get(family, {})
        yield from self.distinct.get(family, {})

    def total(self, family: str, span: Span, match: Mapping[int, str] | None = None) -> float:
        """Sum of a count family over a span, over every label set that matches."""
        total: float = 0
        for labels, series in self.counts.get(family, {}).items():
            if match is None or _matches(labels, match):
                total += series.total(span)
        return total

    def total_by(self, family: str, span: Span, index: int, match: Mapping[int, str] | None = None) -> dict[str, float]:
        """Sums of a count family grouped by the label at `index` (zero groups left out)."""
        grouped: dict[str, float] = {}
        for labels, series in self.counts.get(family, {}).items():
            if match is None or _matches(labels, match):
                value = series.total(span)
                if value:
                    grouped[labels[index]] = grouped.get(labels[index], 0) + value
        return grouped

    def money_total(self, family: str, span: Span, match: Mapping[int, str] | None = None) -> Decimal:
        total = Decimal(0)
        for labels, series in self.money.get(family, {}).items():
            if match is None or _matches(labels, match):
                total += series.total(span)
        return total

    def money_total_by(
        self, family: str, span: Span, index: int, match: Mapping[int, str] | None = None
    ) -> dict[str, Decimal]:
        grouped: dict[str, Decimal] = {}
        for labels, series in self.money.get(family, {}).items():
            if match is None or _matches(labels, match):
                value = series.total(span)
                if value:
                    grouped[labels[index]] = grouped.get(labels[index], Decimal(0)) + value
        return grouped

    def distinct_count(self, family: str, span: Span, match: Mapping[int, str] | None = None) -> int:
        """Distinct members over a span across every matching label set."""
        found: set[str] = set()
        for labels, series in self.distinct.get(family, {}).items():
            if match is None or _matches(labels, match):
                found |= series.members(span)
        return len(found)

    def distinct_count_by(self, family: str, span: Span, index: int) -> dict[str, int]:
        grouped: dict[str, set[str]] = {}
        for labels, series in self.distinct.get(family, {}).items():
            grouped.setdefault(labels[index], set()).update(series.members(span))
        return {key: len(members) for key, members in grouped.items() if members}

    def families(self) -> Iterable[str]:
        return {*self.counts, *self.money, *self.distinct}


def diff_facts(old: Mapping[FactKey, V], new: Mapping[FactKey, V], zero: V) -> dict[FactKey, V]:
    delta: dict[FactKey, V] = {}
    for key, value in new.items():
        change = value - old.get(key, zero)
        if change != 0:
            delta[key] = change
    for key, value in old.items():
        if key not in new and value != 0:
            delta[key] = -value
    return delta
