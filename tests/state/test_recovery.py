"""Specifies stream/state and the fold's flush: what a changelog holds rebuilds the partitions exactly.

Floats are compared to a relative 1e-9: partitions add the same numbers in another order.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from decimal import Decimal
from typing import Any

from schemas.events import EVENT_ADAPTER
from schemas.snapshot import InputCounts
from stream.app.fold import Fold, Outbox, PartitionState
from stream.app.intake import Origin
from stream.app.placement import entity_partition
from stream.core.ledger import Ledger
from stream.core.links import Item, entity_of
from stream.core.policy import Policy
from stream.core.snapshot import build_snapshot
from stream.core.totals import COUNT, HOUR, MONEY, MONTH, OTHER_LABEL, BucketRef, Totals
from stream.core.windows import Span
from stream.simulation import generate_count
from stream.state.base import BUCKET_PREFIX, entity_key
from stream.state.buckets import bucket_key, decode_bucket, encode_bucket, parse_bucket_key
from stream.state.memory import MemoryPartition
from tests.integration.test_worker import normalised

POLICY = Policy(fx_rates={"EUR": Decimal("1.08")})
PARTITIONS = 4
ORIGIN = Origin("site.visits", 0, 0)
NO_COUNTS = InputCounts(events=0, accepted=0, duplicates=0, invalid=0, rejected=0)


class Changelog:
    """A compacted changelog in memory: the last value of every key, per partition, and its end offset; and
    `log`, every record in offset order, as a consumer following it reads them (entity records included: a
    replica skips them, so this log stands for the totals topic too)."""

    def __init__(self) -> None:
        self.values: dict[int, dict[bytes, bytes]] = {p: {} for p in range(PARTITIONS)}
        self.ends: dict[int, int] = dict.fromkeys(range(PARTITIONS), 0)
        self.log: dict[int, list[tuple[bytes, bytes | None]]] = {p: [] for p in range(PARTITIONS)}

    def flush(self, fold: Fold) -> None:
        for partition, part in fold.parts.items():
            if not part.changed():
                continue
            records = part.changes()
            self.log[partition].extend(records.items())
            for key, value in records.items():
                if value is None:
                    self.values[partition].pop(key, None)
                else:
                    self.values[partition][key] = value
            self.ends[partition] += len(records)
            part.persisted(records, self.ends[partition])
            part.published = self.ends[partition]  # replicas in these tests read this log as their totals topic

    def recovered(self, policy: Policy = POLICY) -> Fold:
        """A worker with empty stores that reads this changelog."""
        fold = Fold(policy, PARTITIONS)
        for partition in range(PARTITIONS):
            store = MemoryPartition(partition)
            store.write(dict(self.values[partition]), self.ends[partition])
            fold.own(PartitionState(store, policy))
        return fold


def fold_like_the_engine(
    events: list[dict[str, Any]], flush_every: int, changelog: Changelog | None = None, policy: Policy = POLICY
) -> tuple[Fold, Changelog]:
    """Every event into its partition's state; emitted links delivered before the next event; flushes."""
    fold = Fold(policy, PARTITIONS)
    for partition in range(PARTITIONS):
        fold.own(PartitionState(MemoryPartition(partition), policy))
    changelog = changelog or Changelog()
    for number, raw in enumerate(events, start=1):
        pending: deque[Item] = deque([EVENT_ADAPTER.validate_python(raw)])
        while pending:
            item = pending.popleft()
            outbox = Outbox()
            kind, key = entity_of(item)
            fold.fold(entity_partition(kind, key, PARTITIONS), item, outbox, ORIGIN)
            pending.extend(link for links in outbox.routed.values() for link in links)
        if number % flush_every == 0:
            changelog.flush(fold)
    changelog.flush(fold)
    return fold, changelog


def snapshot_of(fold: Fold, policy: Policy = POLICY) -> dict[str, Any]:
    snapshot = build_snapshot(fold.totals(), fold.newest_ms(), fold.earliest_ms(), policy, NO_COUNTS)
    return normalised(snapshot.model_dump(mode="json", exclude_none=True))  # type: ignore[no-any-return]


def replayed(events: list[dict[str, Any]], policy: Policy = POLICY) -> dict[str, Any]:
    ledger = Ledger(policy)
    for raw in events:
        ledger.fold(EVENT_ADAPTER.validate_python(raw))
    snapshot = build_snapshot(ledger.totals(), ledger.watermark_ms, ledger.earliest_ms, policy, NO_COUNTS)
    return normalised(snapshot.model_dump(mode="json", exclude_none=True))  # type: ignore[no-any-return]


def test_partitions_read_back_from_their_changelog_equal_the_live_ones_and_replay() -> None:
    events = list(generate_count(4000, seed=3))
    live, changelog = fold_like_the_engine(events, flush_every=397)

    recovered = changelog.recovered()

    assert snapshot_of(recovered) == snapshot_of(live) == replayed(events)
    assert recovered.tally().accepted == live.tally().accepted == len(events)


def test_names_past_the_label_cap_come_back_from_the_changelog_under_other() -> None:
    events = list(generate_count(4000, seed=3))
    capped = dataclasses.replace(POLICY, max_label_values=10)  # the lowest setting: the simulated campaigns overflow it
    live, changelog = fold_like_the_engine(events, flush_every=150, policy=capped)

    recovered = changelog.recovered(capped)

    assert any(OTHER_LABEL in labels for part in live.parts.values() for labels in part.totals.labels_of("sessions"))
    assert series_of(recovered) == series_of(live)
    assert snapshot_of(recovered, capped) == snapshot_of(live, capped)


def series_of(fold: Fold) -> dict[tuple[int, str, tuple[str, ...]], tuple[Any, Any]]:
    """Each series' month and hour buckets, per partition."""
    return {
        (partition, family, labels): (dict(series.months), dict(series.hours))
        for partition, part in fold.parts.items()
        for by_family in (part.totals.counts, part.totals.money)
        for family, by_labels in by_family.items()
        for labels, series in by_labels.items()
        if series.months or series.hours
    }


def test_a_memory_store_sheds_the_buckets_it_loaded_and_is_read_from_0_again_to_catch_up() -> None:
    store = MemoryPartition(2)
    bucket = BUCKET_PREFIX + b'["count","sessions",["paid"],"h",0]'
    visitor = entity_key("visitor", "v-1")
    store.write({bucket: b"[1,null]", visitor: b"state"}, 2)

    store.totals_loaded()
    store.write({bucket: b"[2,null]", entity_key("visitor", "v-2"): b"state"}, 4)

    assert not store.complete
    assert [key for key, _ in store.items(BUCKET_PREFIX)] == []
    assert store.get(visitor) == b"state"
    assert store.offset == 4
    store.clear()
    assert (store.complete, store.offset, list(store.items())) == (True, 0, [])


def test_bucket_records_give_back_exactly_what_the_totals_gave_them() -> None:
    cases: list[tuple[BucketRef, Any]] = [
        ((COUNT, "sessions", ("paid", "brand"), HOUR, 3_600_000), (7, [0] * 59 + [7])),
        ((COUNT, "engaged_seconds", ("all",), HOUR, 7_200_000), (1.5, {3: 1.5})),
        ((COUNT, "sessions", ("all",), HOUR, 0), (None, None)),
        ((MONEY, "spend", ("paid",), HOUR, 0), (Decimal("12.30"), {5: Decimal("12.30")})),
        ((MONEY, "mrr", ("USD",), MONTH, 0), (Decimal("-4.5"), 60_000)),
        ((COUNT, "leads", ("email",), MONTH, 0), (3, None)),
    ]
    for ref, value in cases:
        assert parse_bucket_key(bucket_key(ref)) == ref
        decoded = decode_bucket(ref, encode_bucket(ref, value))
        total, extra = decoded
        if isinstance(extra, dict):
            decoded = (total, {int(offset): amount for offset, amount in extra.items()})
        assert decoded == value, ref


def test_a_sparse_hour_is_written_as_its_minutes_with_a_value_and_the_list_of_60_still_loads() -> None:
    live = Totals()
    live.add("sessions", ("paid",), 3_600_000 + 5 * 60_000, 2)
    live.add("sessions", ("paid",), 3_600_000 + 7 * 60_000, 1)
    ref: BucketRef = (COUNT, "sessions", ("paid",), HOUR, 3_600_000)
    written = live.bucket(ref)
    assert written == (3, {5: 2, 7: 1})

    for value in (decode_bucket(ref, encode_bucket(ref, written)), (3, [0] * 5 + [2, 0, 1] + [0] * 52)):
        loaded = Totals()
        month: BucketRef = (COUNT, "sessions", ("paid",), MONTH, 0)
        loaded.load_bucket(month, live.bucket(month))
        loaded.load_bucket(ref, value)
        assert loaded.bucket(ref)[0] == 3
        for minute in range(60):
            span = Span(3_600_000 + minute * 60_000, 3_600_000 + (minute + 1) * 60_000)
            assert loaded.total("sessions", span) == live.total("sessions", span), minute
