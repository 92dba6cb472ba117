"""A partition's totals in its changelog: one record per hour or month bucket of a series.

Bounded entity states no longer hold every event they counted, so a
partition's totals cannot be rebuilt from its states: they are state too
(docs/architecture.md, "State, changelog and recovery"). After each step the
worker writes the buckets the step touched (`BucketTracker`), as their whole
current value (`Totals.bucket`), next to the entity records; compaction keeps
the last value per bucket, and recovery loads them back (`Totals.load_bucket`)
after moving the empty totals to the partition's newest fact time, so buckets
past their retention are skipped exactly as the live totals dropped them. An
hour bucket past the hour retention is deleted from the changelog (a
tombstone) so the changelog stays bounded by retention, like the totals.

Record layout: key `_bucket:` + JSON `[kind, family, [labels], grain, start]`;
value JSON `[total, extra]`, money as strings (`Decimal` read back exactly). An hour's
`extra` is its minutes: a list of 60 for a busy hour of counts, an object of
the minutes that hold a value for a sparse one or for money (most hours of a
backfill hold an event or two: one entry instead of sixty).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from decimal import Decimal

import orjson

from stream.core.totals import COUNT, HOUR, MONEY, MONTH, BucketRef, BucketValue, Delta, Totals
from stream.core.windows import HOUR_MS, month_start
from stream.state.base import BUCKET_PREFIX, compact

HourKey = tuple[str, tuple[str, ...], int]
"""(family, labels, hour start) of a fact."""
SeriesKey = tuple[str, str, tuple[str, ...]]
"""(COUNT or MONEY, family, labels)."""


def bucket_key(ref: BucketRef) -> bytes:
    kind, family, labels, grain, start = ref
    return BUCKET_PREFIX + orjson.dumps([kind, family, labels, grain, start])  # a new, right-sized object


def parse_bucket_key(raw: bytes) -> BucketRef:
    kind, family, labels, grain, start = orjson.loads(raw[len(BUCKET_PREFIX) :])
    return (kind, family, tuple(labels), grain, start)


def encode_bucket(ref: BucketRef, value: BucketValue) -> bytes:
    total, extra = value
    if ref[0] == MONEY:
        total = None if total is None else str(total)
        if ref[3] == HOUR and extra is not None:
            extra = {str(offset): str(amount) for offset, amount in extra.items()}
    elif isinstance(extra, dict):
        extra = {str(offset): amount for offset, amount in extra.items()}
    return compact(orjson.dumps([total, extra]))


def decode_bucket(ref: BucketRef, raw: bytes) -> BucketValue:
    total, extra = orjson.loads(raw)
    if ref[0] == MONEY:
        total = None if total is None else Decimal(total)
        if ref[3] == HOUR and extra is not None:
            extra = {offset: Decimal(amount) for offset, amount in extra.items()}
    return total, extra


def load_totals(
    totals: Totals, newest_ms: int | None, records: Iterable[tuple[bytes, bytes]], tracker: BucketTracker
) -> None:
    """Load bucket records into empty `totals` whose newest fact time is `newest_ms`; `tracker` learns the hours.

    Buckets are loaded oldest first, the order a fold creates them in (the totals prune from the front).
    """
    if newest_ms is not None:
        totals.advance(newest_ms)
    refs = sorted(((parse_bucket_key(key), value) for key, value in records), key=lambda pair: pair[0][4])
    for ref, raw_value in refs:
        totals.load_bucket(ref, decode_bucket(ref, raw_value))
        kind, family, labels, grain, start = ref
        if grain == HOUR:
            tracker.written((kind, family, labels), start)


class BucketTracker:
    """The buckets of one partition's totals that changed since the last flush, and the hours it has written."""

    __slots__ = ("counts", "hour_cutoff", "money", "written_hours")

    def __init__(self) -> None:
        self.counts: set[HourKey] = set()
        self.money: set[HourKey] = set()
        self.written_hours: dict[SeriesKey, array[int]] = {}
        """Hour buckets present in the changelog, to delete once past the hour retention: per series, the
        hour starts in order (8 bytes each: as many as the totals keep hours)."""
        self.hour_cutoff: int | None = None

    def touch(self, delta: Delta) -> None:
        """Note the hours (and so the months) a folded delta's facts fall in."""
        if delta.counts:
            self.counts.update([(family, labels, ts - ts % HOUR_MS) for family, labels, ts in delta.counts])
        if delta.money:
            self.money.update([(family, labels, ts - ts % HOUR_MS) for family, labels, ts in delta.money])

    def __bool__(self) -> bool:
        return bool(self.counts or self.money)

    def records(self, totals: Totals) -> Iterator[tuple[bytes, bytes | None]]:
        """Each touched bucket's key and current value, and a tombstone for each hour past its retention."""
        months: set[BucketRef] = set()
        full, written_labels = totals.full_families(), totals.written_labels
        for kind, touched in ((COUNT, self.counts), (MONEY, self.money)):
            if full:  # a name past its family's label cap was added as `other`: that is the bucket that changed
                touched = {
                    (f, written_labels(f, labels), h) if f in full else (f, labels, h) for f, labels, h in touched
                }
            for family, labels, hour in touched:
                ref: BucketRef = (kind, family, labels, HOUR, hour)
                self.written((kind, family, labels), hour)
                yield bucket_key(ref), encode_bucket(ref, totals.bucket(ref))
                months.add((kind, family, labels, MONTH, month_start(hour)))
        for ref in months:
            yield bucket_key(ref), encode_bucket(ref, totals.bucket(ref))
        cutoff = totals.hour_cutoff
        if cutoff != self.hour_cutoff:
            self.hour_cutoff = cutoff
            for (kind, family, labels), hours in self.written_hours.items():
                expired = bisect_left(hours, cutoff)
                for hour in hours[:expired]:
                    yield bucket_key((kind, family, labels, HOUR, hour)), None
                del hours[:expired]

    def written(self, series: SeriesKey, hour: int) -> None:
        """Note that the changelog holds this hour bucket of `series`."""
        hours = self.written_hours.get(series)
        if hours is None:
            self.written_hours[series] = array("q", (hour,))
        elif not hours or hour > hours[-1]:
            hours.append(hour)
        elif hour != hours[-1]:
            at = bisect_left(hours, hour)
            if at == len(hours) or hours[at] != hour:
                hours.insert(at, hour)

    def clear(self) -> None:
        self.counts.clear()
        self.money.clear()
