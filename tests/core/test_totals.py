"""Totals: window sums exact to the minute, mergeable, and correct under retraction."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stream.core.totals import (
    BEGINNING_MS,
    COUNT,
    MONEY,
    BucketRef,
    BucketSeries,
    BucketValue,
    Delta,
    Readable,
    Retention,
    Totals,
    TotalsSum,
    buckets_of,
    touched_buckets,
)
from stream.core.windows import DAY_MS, HOUR_MS, MINUTE_MS, Span, month_label, month_span, to_ms

T0 = to_ms(datetime(2026, 1, 30, 22, 0, tzinfo=UTC))
"""Two days before a month boundary, so spans cross minutes, hours and months."""

timestamps = st.integers(min_value=T0 - 40 * DAY_MS, max_value=T0 + 40 * DAY_MS)


@settings(max_examples=200, deadline=None)
@given(
    points=st.lists(st.tuples(timestamps, st.integers(-5, 5)), max_size=60),
    start=timestamps,
    length=st.integers(min_value=0, max_value=70 * DAY_MS),
)
def test_a_window_sum_equals_the_sum_of_the_points_whose_minute_lies_in_it(
    points: list[tuple[int, int]], start: int, length: int
) -> None:
    series: BucketSeries[float] = BucketSeries(0)
    for ts, value in points:
        series.add(ts, value)
    span = Span(start - start % MINUTE_MS, start - start % MINUTE_MS + length - length % MINUTE_MS)
    expected = sum(v for ts, v in points if span.start_ms <= ts - ts % MINUTE_MS < span.end_ms)
    assert series.total(span) == expected


one_hour = st.integers(min_value=T0, max_value=T0 + HOUR_MS - 1)
"""Moments of one hour: its minutes fill, cancel out to zero and pass from sparse to an array of 60."""


@settings(max_examples=200, deadline=None)
@given(
    points=st.lists(st.tuples(one_hour, st.integers(-3, 3), st.sampled_from([1, 1, 1, 0.5])), max_size=40),
    cut=st.tuples(one_hour, one_hour),
)
@example(points=[(T0, -1, 1), (T0 + MINUTE_MS, 1, 1)], cut=(T0, T0))  # its month nets to zero: the bucket still goes
def test_minutes_of_one_hour_sum_exactly_however_they_fill_and_cancel_and_survive_the_changelog(
    points: list[tuple[int, int, float]], cut: tuple[int, int]
) -> None:
    """Series added to point by point, through a fold's delta, and loaded back from the hour's bucket agree."""
    added: BucketSeries[float] = BucketSeries(0)
    applied = Totals(Retention())
    for ts, count, scale in points:
        added.add(ts, count * scale)
        delta = Delta()
        delta.count("sessions", (), ts, count * scale)
        applied.advance(ts)
        applied.apply(delta)
    loaded = Totals(Retention())
    loaded.advance(applied.newest_ms or T0)
    for ref in buckets_of(applied):  # the hour's bucket and its month's
        loaded.load_bucket(ref, applied.bucket(ref))
    start, end = sorted(moment - moment % MINUTE_MS for moment in cut)
    for span in (Span(start, end), Span(start, end + MINUTE_MS), Span(T0, T0 + HOUR_MS)):
        expected = sum(count * scale for ts, count, scale in points if span.start_ms <= ts < span.end_ms)
        assert added.total(span) == pytest.approx(expected)
        assert applied.total("sessions", span) == pytest.approx(expected)
        assert loaded.total("sessions", span) == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(points=st.lists(st.tuples(timestamps, st.integers(-5, 5)), max_size=60), now=timestamps)
def test_with_retention_every_window_of_the_last_30_days_and_every_running_balance_stays_exact(
    points: list[tuple[int, int]], now: int
) -> None:
    """Minute buckets live 31 days, hours 92: what the snapshot reads never needs what was dropped."""
    now = max([now, *(ts for ts, _ in points)])
    totals = Totals(Retention())
    for ts, value in points:
        totals.add("sessions", (), ts, value)
    totals.advance(now)
    end = now - now % MINUTE_MS + MINUTE_MS
    for length in (HOUR_MS, DAY_MS, 7 * DAY_MS, 30 * DAY_MS):
        span = Span(end - length, end)
        expected = sum(v for ts, v in points if span.start_ms <= ts - ts % MINUTE_MS < span.end_ms)
        assert totals.total("sessions", span) == expected
    assert totals.total("sessions", Span(BEGINNING_MS, end)) == sum(v for ts, v in points if ts < end)


def test_buckets_past_their_retention_are_dropped_and_months_are_kept() -> None:
    totals = Totals(Retention(minutes_ms=2 * DAY_MS, hours_ms=5 * DAY_MS))
    for day in range(60):
        totals.advance(T0 + day * DAY_MS)
        totals.add("sessions", ("paid",), T0 + day * DAY_MS, 1)
    series = totals.counts["sessions"][("paid",)]
    assert len(series.minutes) <= 3
    assert len(series.hours) <= 6
    assert sum(series.months.values()) == 60
    assert totals.total("sessions", Span(BEGINNING_MS, T0 + 61 * DAY_MS)) == 60


def test_a_fact_ahead_of_the_newest_event_does_not_age_the_present() -> None:
    """A contact's staleness is written 30-90 days ahead of its event: retention follows events, not facts."""
    totals = Totals(Retention(minutes_ms=2 * DAY_MS, hours_ms=5 * DAY_MS))
    totals.advance(T0)
    totals.add("sessions", (), T0, 1)
    totals.add("became_stale", (), T0 + 90 * DAY_MS, 1)
    assert totals.total("sessions", Span(T0, T0 + MINUTE_MS)) == 1
    assert totals.total("became_stale", Span(T0 + 90 * DAY_MS, T0 + 90 * DAY_MS + MINUTE_MS)) == 1


def test_a_fact_older_than_the_minute_retention_still_counts_in_its_hour_and_month() -> None:
    totals = Totals(Retention(minutes_ms=2 * DAY_MS, hours_ms=10 * DAY_MS))
    totals.advance(T0 + 20 * DAY_MS)
    totals.add("sessions", (), T0 + 20 * DAY_MS, 1)
    totals.add("sessions", (), T0 + 15 * DAY_MS + 30 * MINUTE_MS, 1)  # late: no minute bucket any more
    series = totals.counts["sessions"][()]
    assert all(hour >= T0 + 17 * DAY_MS for hour in series.minutes)
    assert totals.total("sessions", Span(T0 + 15 * DAY_MS, T0 + 16 * DAY_MS)) == 1
    assert totals.total("sessions", Span(BEGINNING_MS, T0 + 21 * DAY_MS)) == 2


def test_a_span_from_the_beginning_reads_a_running_balance() -> None:
    totals = Totals()
    totals.add_money("mrr", (), T0, Decimal("100"))
    totals.add_money("mrr", (), T0 + DAY_MS, Decimal("-40"))
    assert totals.money_total("mrr", Span(BEGINNING_MS, T0 + MINUTE_MS)) == Decimal("100")
    assert totals.money_total("mrr", Span(BEGINNING_MS, T0 + 2 * DAY_MS)) == Decimal("60")


def test_replacing_an_entitys_facts_moves_its_count_to_the_new_moment() -> None:
    totals = Totals()
    old = {("stage_entries", ("lead", "paid"), T0 + DAY_MS): 1}
    totals.apply(Delta.between({}, old, {}, {}))
    new = {("stage_entries", ("lead", "organic"), T0): 1}
    totals.apply(Delta.between(old, new, {}, {}))
    everything = Span(BEGINNING_MS, T0 + 10 * DAY_MS)
    assert totals.total_by("stage_entries", everything, 1) == {"organic": 1}
    assert totals.total("stage_entries", Span(T0 + DAY_MS, T0 + 2 * DAY_MS)) == 0


def test_merged_totals_equal_totals_of_all_the_facts() -> None:
    left, right, both = Totals(), Totals(), Totals()
    for target, ts, channel in ((left, T0, "paid"), (right, T0 + HOUR_MS, "paid"), (right, T0, "email")):
        target.add("sessions", (channel,), ts, 1)
        target.add_money("spend", (channel,), ts, Decimal("2.5"))
        both.add("sessions", (channel,), ts, 1)
        both.add_money("spend", (channel,), ts, Decimal("2.5"))
    left.merge(right)
    span = Span(T0 - DAY_MS, T0 + DAY_MS)
    assert left.total_by("sessions", span, 0) == both.total_by("sessions", span, 0) == {"paid": 2, "email": 1}
    assert left.money_total("spend", span) == Decimal("7.5")


channels = st.sampled_from(["paid", "email", "organic"])
facts = st.lists(
    st.tuples(st.integers(0, 2), timestamps, channels, st.sampled_from(["lead", "mql"]), st.integers(-3, 3)),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(facts=facts, start=timestamps, length=st.integers(0, 70 * DAY_MS))
def test_partitions_read_as_one_answer_what_their_merged_totals_answer(
    facts: list[tuple[int, int, str, str, int]], start: int, length: int
) -> None:
    """A worker's snapshot reads every partition's totals through `TotalsSum`, never a merged copy."""
    parts = [Totals(), Totals(), Totals()]
    for part, ts, channel, stage, value in facts:
        parts[part].add("stage_entries", (stage, channel), ts, value)
        parts[part].add_money("spend", (channel,), ts, Decimal(value) / 4)
    merged = Totals()
    for part in parts:
        merged.merge(part)
    summed = TotalsSum(parts)
    span = Span(start, start + length)

    with summed.reading(), merged.reading():
        for reader in (summed, summed):  # the second time from the scope's cache
            assert reader.total("stage_entries", span) == merged.total("stage_entries", span)
            assert reader.total_by("stage_entries", span, 1) == merged.total_by("stage_entries", span, 1)
            assert reader.total_by("stage_entries", span, 1, {0: "lead"}) == merged.total_by(
                "stage_entries", span, 1, {0: "lead"}
            )
            assert reader.money_total("spend", span) == merged.money_total("spend", span)
            assert reader.money_total_by("spend", span, 0) == merged.money_total_by("spend", span, 0)
    assert sorted(summed.labels_of("stage_entries")) == sorted(merged.labels_of("stage_entries"))


def test_counts_of_whole_events_stay_integers() -> None:
    totals = Totals()
    totals.add("sessions", ("paid",), T0, 1)
    totals.add("sessions", ("paid",), T0 + 1, 1)
    value = totals.total("sessions", Span(T0, T0 + MINUTE_MS))
    assert value == 2
    assert isinstance(value, int)


def test_a_running_balance_is_readable_inside_a_month_whose_changes_cancel_out() -> None:
    series: BucketSeries[Decimal] = BucketSeries(Decimal(0))
    series.add(T0 + 3 * DAY_MS, Decimal(50))  # in February
    series.add(T0 + 10 * DAY_MS, Decimal(-50))  # the same month: its bucket nets to 0
    assert series.total(Span(BEGINNING_MS, T0 + 5 * DAY_MS)) == Decimal(50)
    assert series.total(Span(BEGINNING_MS, T0 + 20 * DAY_MS)) == Decimal(0)


@settings(max_examples=100, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(timestamps, st.integers(-5, 5), st.sampled_from([0.5, 1.0])), max_size=8), max_size=8
    )
)
def test_totals_loaded_from_the_last_value_of_every_touched_bucket_equal_the_totals_written(
    batches: list[list[tuple[int, int, float]]],
) -> None:
    """What a worker's changelog holds after each flush (compacted: the last record per bucket) rebuilds it."""
    written = Totals(Retention())
    changelog: dict[BucketRef, BucketValue] = {}
    for batch in batches:
        delta = Delta()
        for ts, count, seconds in batch:
            written.advance(ts)
            delta.count("sessions", ("paid",), ts, count)
            delta.count("engaged_seconds", ("paid",), ts, seconds)
            delta.add_money("spend", ("paid",), ts, Decimal(count) / 4)
        written.apply(delta)
        for ref in touched_buckets(delta):
            changelog[ref] = written.bucket(ref)
    loaded = Totals(Retention())
    if written.newest_ms is not None:
        loaded.advance(written.newest_ms)
    for ref, value in changelog.items():
        loaded.load_bucket(ref, value)
    end = (written.newest_ms or T0) + MINUTE_MS
    for span in (Span(BEGINNING_MS, end), Span(end - DAY_MS, end), Span(end - 30 * DAY_MS, end)):
        assert loaded.total("sessions", span) == written.total("sessions", span)
        assert loaded.total("engaged_seconds", span) == pytest.approx(written.total("engaged_seconds", span))
        assert loaded.money_total("spend", span) == written.money_total("spend", span)


@settings(max_examples=50, deadline=None)
@given(
    points=st.lists(
        st.tuples(timestamps, st.sampled_from("ab"), st.sampled_from("xyz"), st.integers(-3, 3)), max_size=40
    ),
    start=timestamps,
)
@example(points=[(T0, "b", "x", 2), (T0 + MINUTE_MS, "b", "x", -2), (T0, "a", "x", 1), (T0, "b", "y", 1)], start=T0)
def test_sums_read_within_a_reading_scope_equal_sums_read_without_one(
    points: list[tuple[int, str, str, int]], start: int
) -> None:
    """Within `reading()` a family's sums are grouped once by the labels a read names; every answer, float bits
    and zero groups included, is the one read without the scope, for one partition and for several."""
    totals, halves = Totals(), (Totals(), Totals())
    for n, (ts, first, second, value) in enumerate(points):
        for target in (totals, halves[n % 2]):
            target.add("sessions", (first, second), ts, value)
            target.add("seconds", (first, second), ts, value / 3)
            target.add_money("spend", (first, second), ts, Decimal(value) / 2)
    spans = [Span(start - start % MINUTE_MS, start - start % MINUTE_MS + 3 * DAY_MS), month_span(month_label(start))]
    queries = [None, {}, {0: "a"}, {1: "y"}, {0: "b", 1: "x"}, {1: "x", 0: "b"}, {0: "c"}]

    def answers(reader: Readable) -> list[tuple[object, ...]]:
        return [
            (
                reader.total("sessions", span, q),
                reader.total_by("sessions", span, 1, q),
                reader.total_by("sessions", span, 0, q),
                reader.total("seconds", span, q),
                reader.total_by("seconds", span, 1, q),
                reader.money_total("spend", span, q),
                reader.money_total_by("spend", span, 0, q),
            )
            for q in queries
            for span in spans
        ]

    for reader in (totals, TotalsSum(halves)):
        plain = answers(reader)
        with reader.reading():
            cached, again = answers(reader), answers(reader)
        assert cached == again == plain
        assert [[type(v) for v in row] for row in cached] == [[type(v) for v in row] for row in plain]
        assert [repr(row) for row in cached] == [repr(row) for row in plain]


@settings(max_examples=150, deadline=None)
@given(
    points=st.lists(
        st.tuples(timestamps, st.sampled_from("ab"), st.integers(-3, 3), st.booleans()), min_size=1, max_size=40
    ),
    now=timestamps,
    probe=timestamps,
)
def test_a_span_of_one_whole_hour_day_or_month_reads_what_the_series_sum_over_it_reads(
    points: list[tuple[int, str, int, bool]], now: int, probe: int
) -> None:
    """Reads of one whole bucket (the page's hours and days, the snapshot's months) skip the span's plan:
    they answer exactly what `BucketSeries.total` answers, kept hours or not, exact or float series."""
    totals = Totals(Retention(minutes_ms=2 * DAY_MS, hours_ms=5 * DAY_MS))
    totals.advance(now)
    for ts, label, value, fraction in points:
        totals.add("sessions", (label,), ts, value)
        totals.add("seconds", (label,), ts, value / 4 if fraction else value)
        totals.add_money("spend", (label,), ts, Decimal(value) / 8)
    hour, day = probe - probe % HOUR_MS, probe - probe % DAY_MS
    month = month_span(month_label(probe))
    spans = [
        Span(hour, hour + HOUR_MS),
        Span(day, day + DAY_MS),
        month,
        Span(hour, hour + 2 * HOUR_MS),
        Span(month.start_ms, month.end_ms - MINUTE_MS),
        *(Span(ts - ts % HOUR_MS, ts - ts % HOUR_MS + HOUR_MS) for ts, *_ in points[:3]),
        *(Span(ts - ts % DAY_MS, ts - ts % DAY_MS + DAY_MS) for ts, *_ in points[:3]),
    ]
    for span in spans:
        for family, by_labels in (*totals.counts.items(), *totals.money.items()):
            expected = {labels: series.total(span) for labels, series in by_labels.items()}
            read = dict(totals._rows(COUNT if family in totals.counts else MONEY, family, span, None))
            assert repr(read) == repr(expected), (family, span)
            with totals.reading():
                cached = dict(totals._rows(COUNT if family in totals.counts else MONEY, family, span, None))
            assert repr(cached) == repr(expected), (family, span)
            for labels in by_labels:
                only = dict(totals._rows(COUNT if family in totals.counts else MONEY, family, span, {0: labels[0]}))
                assert only == {labels: expected[labels]}


def test_campaign_names_beyond_the_cap_are_written_as_other_and_their_retractions_follow() -> None:
    totals = Totals(capped={"sessions": 1}, label_cap=2)
    for campaign in ("spring", "launch", "summer", "winter", "spring"):
        totals.add("sessions", ("paid", campaign), T0, 1)
    totals.add("sessions", ("paid", "summer"), T0, -1)  # a moved fact: removed where it was written
    span = Span(T0, T0 + MINUTE_MS)
    assert totals.total_by("sessions", span, 1) == {"spring": 2, "launch": 1, "other": 1}
    assert len(list(totals.labels_of("sessions"))) == 3


def sums_of_hours_by_day(series: BucketSeries[float]) -> dict[int, float]:
    """What each day bucket must hold: the sum of the day's hour buckets that are kept (zeros left out)."""
    sums: dict[int, float] = {}
    for hour, value in series.hours.items():
        sums[hour - hour % DAY_MS] = sums.get(hour - hour % DAY_MS, 0) + value
    return {day: value for day, value in sums.items() if value != 0}


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(st.lists(st.tuples(timestamps, st.integers(-3, 3), st.booleans()), max_size=8), max_size=10),
    grace_hours=st.integers(0, 30),
)
@example(batches=[[(T0, 1, False)], [(T0 + 6 * DAY_MS, 1, False)]], grace_hours=5)  # a day cut in two by retention
@example(  # a day that sums to zero, cut in two: the part kept does not
    batches=[
        [
            (T0 - T0 % DAY_MS, 1, False),
            (T0 - T0 % DAY_MS + 20 * HOUR_MS, -1, False),
            (T0 - T0 % DAY_MS + 6 * DAY_MS, 0, True),
        ]
    ],
    grace_hours=4,
)
def test_a_day_reads_what_its_hours_read_through_late_facts_retention_merges_and_recovery(
    batches: list[list[tuple[int, int, bool]]], grace_hours: int
) -> None:
    """Day buckets are what the snapshot's long windows and daily series read: exact, whatever happened."""
    retention = Retention(minutes_ms=2 * DAY_MS + grace_hours * HOUR_MS, hours_ms=5 * DAY_MS + grace_hours * HOUR_MS)
    written, other, merged = Totals(retention), Totals(retention), Totals(retention)
    changelog: dict[BucketRef, BucketValue] = {}
    points: list[tuple[int, int]] = []
    for batch in batches:
        delta, elsewhere = Delta(), Delta()
        for ts, count, in_other_partition in batch:
            (other if in_other_partition else written).advance(ts)
            (elsewhere if in_other_partition else delta).count("sessions", ("paid",), ts, count)
            points.append((ts, count))
        written.apply(delta)
        other.apply(elsewhere)
        for ref in touched_buckets(delta):
            changelog[ref] = written.bucket(ref)
    loaded = Totals(retention)
    if written.newest_ms is not None:
        loaded.advance(written.newest_ms)
    for ref, value in changelog.items():
        loaded.load_bucket(ref, value)
    merged.merge(written)
    merged.merge(other)
    for totals in (written, other, loaded, merged):
        for series in totals.counts.get("sessions", {}).values():
            assert series.days == sums_of_hours_by_day(series)
    newest = merged.newest_ms
    if newest is None:
        return
    # every whole day the hours still cover reads exactly the facts of that day
    first_whole_day = -(-merged.hour_cutoff // DAY_MS) * DAY_MS
    for day in range(first_whole_day, newest, DAY_MS):
        expected = sum(count for ts, count in points if day <= ts < day + DAY_MS)
        assert merged.total("sessions", Span(day, day + DAY_MS)) == expected
        assert merged.total("sessions", Span(day, newest + MINUTE_MS)) == sum(
            count for ts, count in points if day <= ts <= newest
        )
