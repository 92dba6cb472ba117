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

Retention (docs/architecture.md, "Totals and retention"): minute buckets are
kept only as long as the longest rolling window plus the grace period
(`Retention.minutes_ms`), hour buckets for `Retention.hours_ms`, month buckets
for ever (one per month and series). Time here is the newest event time the
totals have seen; a fact older than a granularity's retention is added to the
coarser buckets only. So memory follows series and time, never events, and
every window the snapshot reads (rolling windows end at the newest event,
calendar months are whole or end there) stays exact to the minute.

Counts and seconds are floats (ints stay ints when only ints are added);
money is `Decimal` and kept in its own series so it is never mixed with floats.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
from typing import Any, Generic, Self, TypeVar

from stream.core.windows import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    Span,
    ceil_hour,
    floor_day,
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


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each granularity of bucket is kept, behind the newest event time the totals have seen."""

    minutes_ms: int = 31 * DAY_MS
    """The longest rolling window (30 d) and a day's margin; `for_policy` adds the grace period."""
    hours_ms: int = 92 * DAY_MS
    """Hourly buckets: a quarter of hourly history for charts and the hour-aligned parts of long spans."""

    @classmethod
    def for_grace(cls, grace_ms: int | None) -> Retention:
        """Minute and hour buckets kept long enough that a late event within the grace period lands exactly."""
        extra = grace_ms or 0
        return cls(31 * DAY_MS + extra, 92 * DAY_MS + extra)


def _prune_front(buckets: dict[int, Any], cutoff: int) -> None:
    """Drop buckets older than `cutoff` from a dict whose keys were inserted in time order (oldest first)."""
    stale = []
    for key in buckets:
        if key >= cutoff:
            break
        stale.append(key)
    for key in stale:
        del buckets[key]


def _in_order(buckets: dict[int, Any], cutoff: int) -> dict[int, Any]:
    """The buckets from `cutoff` on, re-inserted in time order (after a late key broke the order)."""
    return {key: buckets[key] for key in sorted(key for key in buckets if key >= cutoff)}


def _sum_keys(buckets: Mapping[int, V], step_ms: int, start_ms: int, end_ms: int, zero: V) -> V:
    """Sum of buckets whose start lies in [start_ms, end_ms); looks up or scans, whichever is fewer."""
    total = zero
    if end_ms <= start_ms:
        return total
    if (end_ms - start_ms) // step_ms <= len(buckets):
        # a lookup per bucket, looped in C; missing ones add zero, which changes no sum
        return sum(map(buckets.get, range(start_ms, end_ms, step_ms), repeat(zero)), zero)
    else:
        for key, value in buckets.items():
            if start_ms <= key < end_ms:
                total += value
    return total


class BucketSeries(Generic[V]):
    """One additive series, bucketed by minute, hour and calendar month, each kept for its retention.

    `minutes` maps an hour's start to that hour's minute buckets, so an hour of
    minutes is dropped at once and a partial hour is summed from one small chunk.
    `days` holds the sum of each day's hour buckets, kept with them (never written
    anywhere: a recovery adds the hours it loads), so a 30-day window reads about
    75 buckets rather than 720, and a day of the daily series one. Only while
    every value is exact (ints, Decimals): a sum of floats depends on the order
    of its terms, and a day must read what its hours read, live or recovered.
    """

    __slots__ = ("days", "dense", "disordered", "first_ms", "hours", "minutes", "months", "zero")

    def __init__(self, zero: V) -> None:
        self.zero: V = zero
        self.dense = not isinstance(zero, Decimal)
        """Counts keep a sparse hour's minutes in a flat tuple (`SparseHour`), a busy hour's in an array of 60
        (int64, or float64 once a fraction arrives); money keeps a dict of the minutes that have a value."""
        self.first_ms: int | None = None
        """The earliest minute ever added to; only moves earlier."""
        self.minutes: dict[int, Any] = {}
        """hour start -> that hour's minute buckets (a `SparseHour` or an array of 60 for counts, a dict for money)."""
        self.hours: dict[int, V] = {}
        self.days: dict[int, V] | None = {}
        """day start -> the sum of that day's hour buckets (those kept), whatever was added or dropped; None
        once a float was added (read from the hours then)."""
        self.months: dict[int, V] = {}
        self.disordered = False
        """A minute or hour key was inserted before a later one: pruning must sort, not just cut the front."""

    def add(self, ts_ms: int, value: V, minute_cutoff: int = BEGINNING_MS, hour_cutoff: int = BEGINNING_MS) -> None:
        """Add `value` at `ts_ms`; granularities whose retention `ts_ms` is older than are left alone."""
        minute = ts_ms - ts_ms % MINUTE_MS
        if self.first_ms is None or minute < self.first_ms:
            self.first_ms = minute
        hour = ts_ms - ts_ms % HOUR_MS
        if hour >= minute_cutoff:
            chunk = self.minutes.get(hour)
            if chunk is None and self.minutes and hour < next(reversed(self.minutes)):
                self.disordered = True
            if self.dense:
                _add_minute(self.minutes, hour, (ts_ms - hour) // MINUTE_MS, value)  # type: ignore[arg-type]
            else:
                if chunk is None:
                    chunk = self.minutes[hour] = {}
                new = chunk.get(minute, self.zero) + value
                if new == 0:
                    chunk.pop(minute, None)
                else:
                    chunk[minute] = new
        if hour >= hour_cutoff:
            if hour not in self.hours and self.hours and hour < next(reversed(self.hours)):
                self.disordered = True
            new = self.hours.get(hour, self.zero) + value
            if new == 0:
                self.hours.pop(hour, None)
            else:
                self.hours[hour] = new
            if self.days is not None:
                if value.__class__ is float:
                    self.days = None
                else:
                    _add_one(self.days, hour - hour % DAY_MS, value, self.zero)
        key = month_start(ts_ms)
        new = self.months.get(key, self.zero) + value
        if new == 0:
            self.months.pop(key, None)
        else:
            self.months[key] = new

    def prune(self, minute_cutoff: int, hour_cutoff: int) -> None:
        """Drop minute and hour buckets past their retention: exactly those, whatever the order they came in."""
        if self.disordered:
            self.minutes = _in_order(self.minutes, minute_cutoff)
            self.hours = _in_order(self.hours, hour_cutoff)
            self.disordered = False
        else:
            _prune_front(self.minutes, minute_cutoff)
            _prune_front(self.hours, hour_cutoff)
        days = self.days
        if days is None:
            return
        first_day = hour_cutoff - hour_cutoff % DAY_MS
        if any(day < first_day for day in days):
            days = self.days = {day: value for day, value in days.items() if day >= first_day}
        if first_day < hour_cutoff:  # a day cut in two: the sum of its hours kept (a day that summed to zero too)
            kept = _sum_keys(self.hours, HOUR_MS, hour_cutoff, first_day + DAY_MS, self.zero)
            if kept == 0:
                days.pop(first_day, None)
            else:
                days[first_day] = kept

    def _minutes_between(self, start_ms: int, end_ms: int) -> V:
        """Sum of minute buckets in [start_ms, end_ms), both within one hour."""
        if end_ms <= start_ms:
            return self.zero
        hour = start_ms - start_ms % HOUR_MS
        chunk = self.minutes.get(hour)
        if not chunk:
            return self.zero
        if self.dense:
            first, last = (start_ms - hour) // MINUTE_MS, (end_ms - hour - 1) // MINUTE_MS
            if chunk.__class__ is tuple:
                return sum(chunk[i + 1] for i in range(0, len(chunk), 2) if first <= chunk[i] <= last)  # type: ignore[no-any-return]
            return sum(chunk[first : last + 1])  # type: ignore[no-any-return]
        found = self.zero
        for key, value in chunk.items():
            if start_ms <= key < end_ms:
                found += value
        return found

    def total(self, span: Span) -> V:
        """Sum over [span.start_ms, span.end_ms), exact to the minute within the minute retention."""
        first = self.first_ms
        if first is None:
            return self.zero
        start, end = floor_minute(max(span.start_ms, BEGINNING_MS)), floor_minute(span.end_ms)
        if start <= first:
            # nothing lies before the first minute: start at its month, which months alone cover
            start = month_start(first)
        if end <= start:
            return self.zero
        total = self.zero
        days = self.days
        for grain, a, b in _plan(start, end, days is not None):
            if grain == _MINUTES:
                total += self._minutes_between(a, b)
            elif grain == _HOURS:
                total += _sum_keys(self.hours, HOUR_MS, a, b, self.zero)
            elif grain == _DAYS:
                total += _sum_keys(days or {}, DAY_MS, a, b, self.zero)  # planned only when there are days
            else:
                for key, value in self.months.items():
                    if a <= key < b:
                        total += value
        return total

    def merge(self, other: BucketSeries[V], minute_cutoff: int = BEGINNING_MS, hour_cutoff: int = BEGINNING_MS) -> None:
        """Add another series bucket by bucket; buckets older than a granularity's cutoff are left out of it."""
        self.disordered = True
        if other.first_ms is not None and (self.first_ms is None or other.first_ms < self.first_ms):
            self.first_ms = other.first_ms
        for hour, chunk in other.minutes.items():
            if hour < minute_cutoff:
                continue
            if self.dense:
                for slot, value in _sparse_items(chunk) if chunk.__class__ is tuple else enumerate(chunk):
                    if value:
                        _add_minute(self.minutes, hour, slot, value)
            else:
                mine = self.minutes.setdefault(hour, {})
                _add_buckets(mine, chunk, self.zero)
                if not mine:
                    del self.minutes[hour]
        hours = {hour: v for hour, v in other.hours.items() if hour >= hour_cutoff}
        _add_buckets(self.hours, hours, self.zero)
        days = self.days = None if other.days is None else self.days
        if days is not None:
            for hour, value in hours.items():
                _add_one(days, hour - hour % DAY_MS, value, self.zero)
        _add_buckets(self.months, other.months, self.zero)


_EMPTY_HOUR = bytes(8 * 60)
"""60 zeroed int64 or float64 slots."""


SPARSE_MINUTES = 8
"""An hour of a count series keeps its minutes in a `SparseHour` until more than this many have a value, then in
an array of 60."""

SparseHour = tuple[Any, ...]
"""The minutes of a sparse hour that hold a value, flat: `(minute of the hour, value, minute, value, ...)`, each
minute once. A tuple of two costs 64 bytes where a dict of one costs about 260: most hours of most series hold
a minute or two, and the minute retention keeps a month of them (docs/architecture.md, "Retention")."""


def _sparse_items(chunk: SparseHour) -> Iterator[tuple[int, Any]]:
    """(minute of the hour, value) of each minute a sparse hour holds."""
    return zip(chunk[0::2], chunk[1::2], strict=True)


def _add_minute(chunks: dict[int, Any], hour: int, slot: int, value: float) -> None:
    """Add to one minute of a count series: a flat tuple for a sparse hour, an array of 60 for a busy one."""
    chunk = chunks.get(hour)
    if chunk is None:
        chunks[hour] = (slot, value)
    elif chunk.__class__ is tuple:
        _add_sparse(chunks, hour, chunk, slot, value)
    elif chunk.typecode == "q" and value.__class__ is int:
        chunk[slot] += value
    else:
        _add_to_slot(chunks, hour, chunk, slot, value)


def _add_sparse(chunks: dict[int, Any], hour: int, chunk: SparseHour, slot: int, value: Any) -> None:
    """Add to one minute of a sparse hour: a minute that comes to zero is left out; past `SPARSE_MINUTES`
    minutes the hour becomes an array of 60. (Slices and `index` run in C: this is on the hot path.)"""
    slots = chunk[0::2]
    if slot in slots:
        i = 2 * slots.index(slot)
        new = chunk[i + 1] + value
        if new == 0:
            chunks[hour] = chunk[:i] + chunk[i + 2 :]
        else:
            chunks[hour] = (*chunk[: i + 1], new, *chunk[i + 2 :])
        return
    if len(slots) < SPARSE_MINUTES:
        chunks[hour] = chunk + (slot, value)  # noqa: RUF005 -- a third of the time of unpacking, per fact
        return
    chunks[hour] = array("q", _EMPTY_HOUR)
    for filled, amount in (*_sparse_items(chunk), (slot, value)):
        _add_to_slot(chunks, hour, chunks[hour], filled, amount)  # may turn the array into floats


def _add_to_slot(minutes: dict[int, Any], hour: int, chunk: array[Any], slot: int, value: float) -> None:
    """Add to one minute of an hour's array; an int array becomes a float one when a fraction arrives."""
    if chunk.typecode == "q":
        if value.__class__ is int or (value.__class__ is float and value.is_integer() and abs(value) < 2**53):
            chunk[slot] += int(value)
            return
        chunk = minutes[hour] = array("d", chunk.tolist())
    chunk[slot] += value


def _add_buckets(mine: dict[int, V], other: Mapping[int, V], zero: V) -> None:
    for key, value in other.items():
        _add_one(mine, key, value, zero)


def _add_one(buckets: dict[int, V], key: int, value: V, zero: V) -> None:
    """Add to one bucket; a bucket that comes to zero is dropped."""
    new = buckets.get(key, zero) + value
    if new == 0:
        buckets.pop(key, None)
    else:
        buckets[key] = new


_MINUTES, _HOURS, _DAYS, _MONTHS = range(4)


@lru_cache(maxsize=4096)
def _plan(start: int, end: int, with_days: bool) -> tuple[tuple[int, int, int], ...]:
    """How a span of whole minutes splits into the coarsest buckets that tile it: (grain, from, to) each.

    Minutes up to the first whole hour and from the last; whole calendar months within; whole days within
    what is left (`with_days`); hours for the rest. A snapshot asks the same few spans of every series, so
    the split is worked out once per span. Without days the terms come in the order they always did, so a
    float series sums exactly as before.
    """
    hours_from, hours_to = ceil_hour(start), floor_hour(end)
    if hours_from >= hours_to:
        if hours_from > end:  # start and end in one hour
            return ((_MINUTES, start, end),)
        return ((_MINUTES, start, hours_from), (_MINUTES, hours_to, end))
    parts = [(_MINUTES, start, hours_from), (_MINUTES, hours_to, end)]
    months_from = hours_from if hours_from == month_start(hours_from) else next_month_start(hours_from)
    months_to = month_start(hours_to)
    if months_from < months_to:
        parts.append((_MONTHS, months_from, months_to))
        whole_hours = [(hours_from, months_from), (months_to, hours_to)]
    else:
        whole_hours = [(hours_from, hours_to)]
    for a, b in whole_hours:
        days_from, days_to = a + (-a % DAY_MS), b - b % DAY_MS
        if with_days and days_from < days_to:
            parts += [(_HOURS, a, days_from), (_DAYS, days_from, days_to), (_HOURS, days_to, b)]
        else:
            parts.append((_HOURS, a, b))
    return tuple((grain, a, b) for grain, a, b in parts if a < b)


def _matches(labels: Labels, match: Mapping[int, str]) -> bool:
    return all(labels[i] == value for i, value in match.items())


R = TypeVar("R", bound=tuple[Labels, Any])


def _matching(rows: Iterable[R], match: Mapping[int, str]) -> list[R]:
    """The rows whose labels match (one label, the common case, compared inline)."""
    if len(match) == 1:
        [(position, value)] = match.items()
        return [row for row in rows if row[0][position] == value]
    return [row for row in rows if _matches(row[0], match)]


@dataclass(slots=True)
class Delta:
    """What one fold step adds to the totals: fact increments."""

    counts: Facts = field(default_factory=dict)
    money: MoneyFacts = field(default_factory=dict)

    def count(self, family: str, labels: Labels, ts_ms: int, value: float = 1) -> None:
        key = (family, labels, ts_ms)
        self.counts[key] = self.counts.get(key, 0) + value

    def add_money(self, family: str, labels: Labels, ts_ms: int, value: Decimal) -> None:
        key = (family, labels, ts_ms)
        self.money[key] = self.money.get(key, Decimal(0)) + value

    def absorb(self, other: Delta) -> None:
        """Add another delta's facts to this one (a batch's deltas become one)."""
        counts, money = self.counts, self.money
        for key, value in other.counts.items():
            counts[key] = counts.get(key, 0) + value
        for key, amount in other.money.items():
            money[key] = money.get(key, Decimal(0)) + amount

    @classmethod
    def between(cls, old: Facts, new: Facts, old_money: MoneyFacts, new_money: MoneyFacts) -> Delta:
        """The change from an entity's old contribution to its new one."""
        return cls(diff_facts(old, new, 0), diff_facts(old_money, new_money, Decimal(0)))


class Readable(ABC):
    """What the read side asks of totals: sums of a family over a span, in all or grouped by a label.

    `Totals` answers for the series it holds; `TotalsSum` for several partitions' totals at once, without
    adding them up into a copy. Both give `_rows`: (labels, sum over the span) per series.
    """

    __slots__ = ("_reads",)

    def __init__(self) -> None:
        self._reads: dict[Any, Any] | None = None
        """Within `reading()`: the sums already read, and their indexes by label."""

    @abstractmethod
    def _rows(
        self, kind: str, family: str, span: Span, match: Mapping[int, str] | None
    ) -> Iterable[tuple[Labels, Any]]:
        """(labels, sum over the span) of every series of a family whose labels match."""

    @abstractmethod
    def labels_of(self, family: str) -> Iterator[Labels]:
        """Every label set of a family (each once)."""

    def _held(self) -> Sequence[Readable]:
        """Other totals this one reads from, held still with it by `reading()`."""
        return ()

    @contextmanager
    def reading(self) -> Iterator[Self]:
        """A scope in which the totals do not change, so each series' sum over a span is computed once.

        The snapshot asks the same spans of the same series many times (per channel, per stage);
        within `reading()` every (series, span) sum is computed once, and each family's sums are grouped once
        by the labels a read names (`_grouped`).
        """
        outer = self._reads
        with ExitStack() as scopes:
            for part in self._held():
                scopes.enter_context(part.reading())
            if outer is None:
                self._reads = {}
            try:
                yield self
            finally:
                if outer is None:
                    self._reads = None

    def total(self, family: str, span: Span, match: Mapping[int, str] | None = None) -> float:
        """Sum of a count family over a span, over every label set that matches."""
        if self._reads is not None:
            return self._grouped(COUNT, family, span, _positions(match), None).get(_group_of(match), 0)  # type: ignore[no-any-return]
        total: float = 0
        for _, value in self._rows(COUNT, family, span, match):
            total += value
        return total

    def total_by(self, family: str, span: Span, index: int, match: Mapping[int, str] | None = None) -> dict[str, float]:
        """Sums of a count family grouped by the label at `index` (zero groups left out)."""
        if self._reads is not None:
            return dict(self._grouped(COUNT, family, span, _positions(match), index).get(_group_of(match), {}))
        grouped: dict[str, float] = {}
        for labels, value in self._rows(COUNT, family, span, match):
            if value:
                grouped[labels[index]] = grouped.get(labels[index], 0) + value
        return grouped

    def money_total(self, family: str, span: Span, match: Mapping[int, str] | None = None) -> Decimal:
        if self._reads is not None:
            return self._grouped(MONEY, family, span, _positions(match), None).get(_group_of(match), Decimal(0))  # type: ignore[no-any-return]
        total = Decimal(0)
        for _, value in self._rows(MONEY, family, span, match):
            total += value
        return total

    def money_total_by(
        self, family: str, span: Span, index: int, match: Mapping[int, str] | None = None
    ) -> dict[str, Decimal]:
        if self._reads is not None:
            return dict(self._grouped(MONEY, family, span, _positions(match), index).get(_group_of(match), {}))
        grouped: dict[str, Decimal] = {}
        for labels, value in self._rows(MONEY, family, span, match):
            if value:
                grouped[labels[index]] = grouped.get(labels[index], Decimal(0)) + value
        return grouped

    def count_groups(
        self, family: str, span: Span, positions: tuple[int, ...], index: int | None = None
    ) -> Mapping[Any, Any]:
        """Sums of a count family over a span per value of its labels at `positions` (sorted; a group is
        spelled as `_group_of` spells a match on them: one label alone, else a tuple); with `index`, each
        group's sums by the label at `index`, zero rows left out. One read for what a caller would otherwise
        ask per stage and channel; within `reading()` it is computed once. Do not change what it returns."""
        return self._grouped(COUNT, family, span, positions, index)

    def _grouped(
        self, kind: str, family: str, span: Span, positions: tuple[int, ...], index: int | None
    ) -> dict[Any, Any]:
        """The family's sums over the span per value of its labels at `positions`, from one pass over its rows
        (kept within `reading()`); with `index`, each of those by the label at `index`, zero rows left out.

        The snapshot asks one family and span per channel and per stage (the funnel: hundreds of reads);
        each answer is then a lookup. Each group adds its rows in the order `_rows` gives them, as the
        unread path does, so a float sum is the same either way.
        """
        key = (kind, family, span.start_ms, span.end_ms, positions, index)
        reads = self._reads
        groups: dict[Any, Any] | None = None if reads is None else reads.get(key)
        if groups is not None:
            return groups
        groups = {}
        if reads is not None:
            reads[key] = groups
        zero = 0 if kind == COUNT else Decimal(0)
        group_of = _labels_group(positions)
        rows = self._rows(kind, family, span, None)
        if index is None:
            for labels, value in rows:
                group = group_of(labels)
                groups[group] = groups.get(group, zero) + value
        else:
            for labels, value in rows:
                if value:
                    inner = groups.get(group := group_of(labels))
                    if inner is None:
                        inner = groups[group] = {}
                    label = labels[index]
                    inner[label] = inner.get(label, zero) + value
        return groups


def _labels_group(positions: tuple[int, ...]) -> Callable[[Labels], Any]:
    """The group of a label set: its labels at `positions`, as `_group_of` spells a match on them."""
    if not positions:
        return lambda labels: ()
    return itemgetter(*positions)


def _positions(match: Mapping[int, str] | None) -> tuple[int, ...]:
    return tuple(sorted(match)) if match else ()


def _group_of(match: Mapping[int, str] | None) -> Any:
    """The group a match names, in `_labels_group`'s spelling: () for none, one label alone, else a tuple."""
    if not match:
        return ()
    if len(match) == 1:
        return next(iter(match.values()))
    return tuple(match[i] for i in sorted(match))


class Totals(Readable):
    """All series of one partition (or, after `merge`, of many), with retention (see the module docstring)."""

    __slots__ = (
        "_admitted",
        "_month",
        "_routes",
        "capped",
        "counts",
        "hour_cutoff",
        "label_cap",
        "minute_cutoff",
        "money",
        "newest_ms",
        "retention",
    )

    def __init__(
        self, retention: Retention | None = None, capped: Mapping[str, int] | None = None, label_cap: int = 500
    ) -> None:
        super().__init__()
        self.retention = retention or Retention()
        self.capped: Mapping[str, int] = capped or {}
        """family -> the label position holding a free-form name (campaign, plan) whose values are capped."""
        self.label_cap = label_cap
        """At most this many distinct names per capped family; later ones are written as `other` (GA4's rule)."""
        self._admitted: dict[str, set[str]] = {}
        self.counts: dict[str, dict[Labels, BucketSeries[float]]] = {}
        self.money: dict[str, dict[Labels, BucketSeries[Decimal]]] = {}
        self.newest_ms: int | None = None
        """The newest event time `advance` was told: retention counts back from it."""
        self.minute_cutoff = BEGINNING_MS
        """Minute buckets of hours before this are dropped (moves a whole day at a time)."""
        self.hour_cutoff = BEGINNING_MS
        self._month = (0, 0)
        """The calendar month facts were last added to: [start, end)."""
        self._routes: dict[str, dict[Labels, BucketSeries[float]]] = {}
        """family -> labels as written -> the count series they land in (see `_route`)."""

    # -- time and retention -------------------------------------------------------
    def advance(self, ts_ms: int) -> None:
        """Note an *event* time; once the newest enters a new day, drop buckets past their retention.

        Event times, not fact times: a reducer may write a fact ahead of its event (a contact becomes stale
        90 days after it entered a stage), and such a fact must not age the buckets of the present.
        """
        if self.newest_ms is not None and ts_ms <= self.newest_ms:
            return
        self.newest_ms = ts_ms
        day = floor_day(ts_ms)
        minute_cutoff = day - self.retention.minutes_ms
        if minute_cutoff <= self.minute_cutoff:
            return
        self.minute_cutoff = minute_cutoff
        self.hour_cutoff = day - self.retention.hours_ms
        for by_labels in self.counts.values():
            for series in by_labels.values():
                series.prune(self.minute_cutoff, self.hour_cutoff)
        for money_by_labels in self.money.values():
            for money_series in money_by_labels.values():
                money_series.prune(self.minute_cutoff, self.hour_cutoff)

    # -- writing -----------------------------------------------------------------
    def _bounded(self, family: str, labels: Labels) -> Labels:
        """`labels` with its capped name replaced by `other` once the family has `label_cap` other names.

        Sticky: a name admitted once is always admitted, so a retraction lands where its addition did.
        The first names seen are kept, like GA4's `(other)` row for high-cardinality dimensions.
        """
        position = self.capped[family]
        name = labels[position]
        admitted = self._admitted.get(family)
        if admitted is None:
            known = [*self.counts.get(family, {}), *self.money.get(family, {})]
            admitted = self._admitted[family] = {known_labels[position] for known_labels in known}
        if name in admitted:
            return labels
        if len(admitted) < self.label_cap or name in (OTHER_LABEL, "none"):
            admitted.add(name)
            return labels
        return (*labels[:position], OTHER_LABEL, *labels[position + 1 :])

    def full_families(self) -> set[str]:
        """The capped families whose label cap is reached: only their facts can have been added as `other`."""
        cap = self.label_cap
        return {family for family, admitted in self._admitted.items() if len(admitted) >= cap}

    def written_labels(self, family: str, labels: Labels) -> Labels:
        """The labels a fact of (family, labels) was added under: its capped name as `other` past the cap.

        Call it after the fact was added: the name's fate is decided then, and never changes (`_bounded`)."""
        return self._bounded(family, labels) if family in self.capped else labels

    def add(self, family: str, labels: Labels, ts_ms: int, value: float) -> None:
        if family in self.capped:
            labels = self._bounded(family, labels)
        by_labels = self.counts.get(family)
        if by_labels is None:
            by_labels = self.counts[family] = {}
        series = by_labels.get(labels)
        if series is None:
            series = by_labels[labels] = BucketSeries(0)
        series.add(ts_ms, value, self.minute_cutoff, self.hour_cutoff)

    def add_money(self, family: str, labels: Labels, ts_ms: int, value: Decimal) -> None:
        if family in self.capped:
            labels = self._bounded(family, labels)
        by_labels = self.money.setdefault(family, {})
        series = by_labels.get(labels)
        if series is None:
            series = by_labels[labels] = BucketSeries(Decimal(0))
        series.add(ts_ms, value, self.minute_cutoff, self.hour_cutoff)

    def _route(self, family: str, labels: Labels) -> BucketSeries[float]:
        """The count series a fact of (family, labels) lands in, created if new, remembered for the next fact.

        Exact to cache: a name's fate under the label cap never changes once decided (`_bounded` is sticky),
        and a series, once created, is never replaced.
        """
        bounded = self._bounded(family, labels) if family in self.capped else labels
        by_labels = self.counts.get(family)
        if by_labels is None:
            by_labels = self.counts[family] = {}
        series = by_labels.get(bounded)
        if series is None:
            series = by_labels[bounded] = BucketSeries(0)
        routes = self._routes.get(family)
        if routes is None:
            routes = self._routes[family] = {}
        routes[labels] = series
        return series

    def apply(self, delta: Delta) -> None:
        """Add a delta's facts (the hot path: counts are added inline, without a call per granularity)."""
        all_routes = self._routes
        minute_cutoff = self.minute_cutoff
        hour_cutoff = self.hour_cutoff
        month_lo, month_hi = self._month
        last_ts = None
        hour = slot = day = 0
        to_minutes = to_hours = False
        for (family, labels, ts), value in delta.counts.items():
            if value == 0:
                continue
            routes = all_routes.get(family)
            series = None if routes is None else routes.get(labels)
            if series is None:
                series = self._route(family, labels)
            if ts != last_ts:  # facts of one step mostly share a time: place it once
                last_ts = ts
                hour = ts - ts % HOUR_MS
                day = hour - hour % DAY_MS
                slot = (ts - hour) // MINUTE_MS
                to_minutes = hour >= minute_cutoff
                to_hours = hour >= hour_cutoff
                if not month_lo <= ts < month_hi:
                    month_lo = month_start(ts)
                    month_hi = next_month_start(month_lo)
                    self._month = (month_lo, month_hi)
            first = series.first_ms
            if first is None or ts < first:  # first is a whole minute: ts < first exactly when its minute is
                series.first_ms = ts - ts % MINUTE_MS
            if to_minutes:
                chunks = series.minutes
                chunk = chunks.get(hour)
                if chunk is None:
                    if chunks and hour < next(reversed(chunks)):
                        series.disordered = True
                    chunks[hour] = (slot, value)
                elif chunk.__class__ is tuple:  # `_add_minute`, inline
                    _add_sparse(chunks, hour, chunk, slot, value)
                elif chunk.typecode == "q" and value.__class__ is int:
                    chunk[slot] += value
                else:
                    _add_to_slot(chunks, hour, chunk, slot, value)
            if to_hours:
                hours = series.hours
                old = hours.get(hour)
                if old is None:
                    if hours and hour < next(reversed(hours)):
                        series.disordered = True
                    hours[hour] = value
                else:
                    new = old + value
                    if new == 0:
                        del hours[hour]
                    else:
                        hours[hour] = new
                days = series.days
                if days is None:
                    pass
                elif value.__class__ is float:
                    series.days = None
                else:
                    new = days.get(day, 0) + value
                    if new == 0:
                        del days[day]
                    else:
                        days[day] = new
            months = series.months
            new = months.get(month_lo, 0) + value
            if new == 0:
                del months[month_lo]
            else:
                months[month_lo] = new
        for (family, labels, ts), money in delta.money.items():
            if money != 0:
                self.add_money(family, labels, ts, money)

    def merge(self, other: Totals) -> None:
        """Add another partition's totals (its entities are disjoint from ours), under the newer clock of the two."""
        if other.newest_ms is not None:
            self.advance(other.newest_ms)
        cutoffs = (self.minute_cutoff, self.hour_cutoff)
        for family, by_labels in other.counts.items():
            for labels, series in by_labels.items():
                mine = self.counts.setdefault(family, {}).setdefault(labels, BucketSeries(0))
                mine.merge(series, *cutoffs)
        for family, money_by_labels in other.money.items():
            for labels, money_series in money_by_labels.items():
                mine_money = self.money.setdefault(family, {}).setdefault(labels, BucketSeries(Decimal(0)))
                mine_money.merge(money_series, *cutoffs)

    # -- reading -----------------------------------------------------------------
    def labels_of(self, family: str) -> Iterator[Labels]:
        yield from self.counts.get(family, {})
        yield from self.money.get(family, {})

    def _rows(
        self, kind: str, family: str, span: Span, match: Mapping[int, str] | None
    ) -> Iterable[tuple[Labels, Any]]:
        """(labels, sum over the span) of every series of a family whose labels match."""
        by_labels: Mapping[Labels, BucketSeries[Any]] = (self.counts if kind == COUNT else self.money).get(family, {})
        reads = self._reads
        if reads is None:
            items = by_labels.items()
            return self._sums(items if not match else _matching(items, match), span)
        key = (kind, family, span.start_ms, span.end_ms)
        rows = reads.get(key)
        if rows is None:
            rows = reads[key] = self._sums(by_labels.items(), span)
        if not match:
            return rows
        return _matching(rows, match)

    def _sums(self, items: Iterable[tuple[Labels, BucketSeries[Any]]], span: Span) -> list[tuple[Labels, Any]]:
        """(labels, sum over the span) of each series: one bucket's value when the span is one whole bucket.

        What `BucketSeries.total` would answer, without working out its plan per series: the page's series
        read 258 hours and days, the snapshot 15 whole months. An hour or a day is one bucket only while
        its hours are kept (from `hour_cutoff` on), and a day only while the series keeps days.
        """
        start, end = span.start_ms, span.end_ms
        if start >= self.hour_cutoff and start >= 0 and start % HOUR_MS == 0:
            if end - start == HOUR_MS:
                return [(labels, series.hours.get(start, series.zero)) for labels, series in items]
            if end - start == DAY_MS and start % DAY_MS == 0:
                return [
                    (labels, series.total(span) if series.days is None else series.days.get(start, series.zero))
                    for labels, series in items
                ]
        if start >= 0 and start == month_start(start) and end == next_month_start(start):
            return [(labels, series.months.get(start, series.zero)) for labels, series in items]
        return [(labels, series.total(span)) for labels, series in items]

    def families(self) -> Iterable[str]:
        return {*self.counts, *self.money}

    # -- persistence: the buckets a delta touched, and loading them back ----------------
    def bucket(self, ref: BucketRef) -> BucketValue:
        """The current content of one hour or month bucket (for the changelog); zeros when it is empty.

        An hour is `(hour total or None when past the hour retention, its minute buckets or None)`, the minutes
        of a count series as a list of 60, or as a dict of the minutes that hold a value when the hour is sparse
        (`load_bucket` takes either);
        a month is `(month total, the series' first minute)`.
        """
        kind, family, labels, grain, start = ref
        by_kind: Mapping[str, Mapping[Labels, BucketSeries[Any]]] = self.counts if kind == COUNT else self.money
        series = by_kind.get(family, {}).get(labels)
        if grain == HOUR:
            if series is None:
                return (None, None)
            hour_total = series.hours.get(start, series.zero) if start >= self.hour_cutoff else None
            chunk = series.minutes.get(start)
            minutes: Any = None
            if chunk is not None:
                if not series.dense:
                    minutes = {key - start: value for key, value in chunk.items()}
                elif chunk.__class__ is tuple:  # a sparse hour stays sparse: {minute of the hour: value}
                    minutes = dict(_sparse_items(chunk))
                else:
                    minutes = chunk.tolist()
            return (hour_total, minutes)
        if series is None:
            return (0 if kind == COUNT else Decimal(0), None)
        return (series.months.get(start, series.zero), series.first_ms)

    def load_bucket(self, ref: BucketRef, value: BucketValue) -> None:
        """Set one bucket as `bucket` described it (recovery; buckets past their retention are skipped)."""
        kind, family, labels, grain, start = ref
        total, extra = value
        if kind == COUNT:
            series: BucketSeries[Any] = self.counts.setdefault(family, {}).setdefault(labels, BucketSeries(0))
        else:
            series = self.money.setdefault(family, {}).setdefault(labels, BucketSeries(Decimal(0)))
        series.disordered = True
        if grain == MONTH:
            if total:
                series.months[start] = total
            else:
                series.months.pop(start, None)
            if extra is not None and (series.first_ms is None or extra < series.first_ms):
                series.first_ms = extra
            return
        if total is not None and start >= self.hour_cutoff:
            change = total - series.hours.get(start, series.zero)
            if total:
                series.hours[start] = total
            else:
                series.hours.pop(start, None)
            if series.days is None:
                pass
            elif total.__class__ is float:
                series.days = None
            elif change:
                _add_one(series.days, start - start % DAY_MS, change, series.zero)
        if extra is not None and start >= self.minute_cutoff:
            if series.dense and extra.__class__ is dict:
                series.minutes[start] = tuple(
                    item for slot, amount in extra.items() if amount for item in (int(slot), amount)
                )
            elif series.dense:
                typecode = "q" if all(v.__class__ is int for v in extra) else "d"
                series.minutes[start] = array(typecode, extra)
            else:
                series.minutes[start] = {start + int(offset): amount for offset, amount in extra.items()}
        else:
            series.minutes.pop(start, None)


class TotalsSum(Readable):
    """Several partitions' totals read as one: each series' sum over a span is the sum of the partitions'.

    What a worker's snapshot reads (`stream.app.company`): adding every partition's buckets into a copy
    would cost a pass over all of them and their memory on each build; reading each partition over the
    snapshot's spans costs only those spans. A series is summed over the partitions before any zero is
    left out, so the answers are those of the partitions' totals merged (`Totals.merge`).
    """

    __slots__ = ("parts",)

    def __init__(self, parts: Iterable[Totals]) -> None:
        super().__init__()
        self.parts = list(parts)

    def _rows(
        self, kind: str, family: str, span: Span, match: Mapping[int, str] | None
    ) -> Iterable[tuple[Labels, Any]]:
        reads = self._reads
        key = (kind, family, span.start_ms, span.end_ms, None if not match else tuple(sorted(match.items())))
        if reads is not None:
            cached: list[tuple[Labels, Any]] | None = reads.get(key)
            if cached is not None:
                return cached
        summed: dict[Labels, Any] = {}
        for part in self.parts:
            for labels, value in part._rows(kind, family, span, match):
                known = summed.get(labels)
                summed[labels] = value if known is None else known + value
        rows = list(summed.items())
        if reads is not None:
            reads[key] = rows
        return rows

    def labels_of(self, family: str) -> Iterator[Labels]:
        seen: set[Labels] = set()
        for part in self.parts:
            for labels in part.labels_of(family):
                if labels not in seen:
                    seen.add(labels)
                    yield labels

    def _held(self) -> Sequence[Readable]:
        return self.parts


OTHER_LABEL = "other"
"""What a capped name beyond `Totals.label_cap` is written as."""
COUNT = "count"
MONEY = "money"
HOUR = "h"
MONTH = "m"
BucketRef = tuple[str, str, Labels, str, int]
"""(COUNT or MONEY, family, labels, HOUR or MONTH, bucket start ms): one persisted bucket of a series."""
BucketValue = tuple[Any, Any]


def touched_buckets(delta: Delta) -> set[BucketRef]:
    """The hour and month buckets a delta's facts fall in: what a worker writes to its changelog after it."""
    refs: set[BucketRef] = set()
    for kind, facts in ((COUNT, delta.counts), (MONEY, delta.money)):
        for family, labels, ts in facts:
            refs.add((kind, family, labels, HOUR, ts - ts % HOUR_MS))
            refs.add((kind, family, labels, MONTH, month_start(ts)))
    return refs


def buckets_of(totals: Totals) -> Iterator[BucketRef]:
    """Every hour and month bucket the totals hold (to write a whole partition's totals)."""
    for kind, by_family in ((COUNT, totals.counts), (MONEY, totals.money)):
        for family, by_labels in by_family.items():
            for labels, series in by_labels.items():
                for start in {*series.hours, *series.minutes}:
                    yield (kind, family, labels, HOUR, start)
                months = set(series.months)
                if series.first_ms is not None:  # its bucket carries the first minute, even at a zero total
                    months.add(month_start(series.first_ms))
                for start in months:
                    yield (kind, family, labels, MONTH, start)


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
