"""Fold: items into the entity states of the partitions this worker owns, links out, changes collected.

Each owned partition is a `PartitionState`: its local store (bytes, see
`stream.state`), the states decoded from it (a least-recently-used cache of at
most `DECODED_CACHE_ENTITIES`), the entities changed since the last flush, the
partition's own totals (a partition's totals are state: bounded entity states
cannot re-contribute every event, see `stream.state.buckets`), its event-time
marks and its input counts. The reducers see it as their `EntityStore`;
`Fold.fold` runs one item through the partition's `Shard`, counts it, notes
the buckets its delta touched, and puts every link the reducer emitted into the
`Outbox` — always as a message to `leadlag.entities`, even for an entity of an
owned partition, because the engine sends those messages *before* it writes
the emitting states to the changelog: a state in the changelog then implies
its links were delivered, whatever point a crash hits (a link folded in the
same step could be lost with a partly written flush). A duplicate event's links
are routed too (the reducers re-emit them; they are idempotent at their target).

`PartitionState.changes` encodes each changed entity once per flush, with the
touched buckets of the totals and the partition's marks and counts;
`persisted` records them in the local store once the changelog has
acknowledged them. The snapshot reads the owned partitions' totals as one
(`Fold.totals`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import orjson
from pydantic import BaseModel

from stream.app.intake import Origin, dead_letter, item_json
from stream.app.placement import entity_partition
from stream.codec import decode_state, encode_state
from stream.core.ledger import EntityState, Shard, rebuild_totals
from stream.core.links import EntityKind, Item, entity_of
from stream.core.policy import Policy
from stream.core.totals import Readable, Totals, TotalsSum, buckets_of
from stream.state.base import BUCKET_PREFIX, PartitionStore, counts_key, entity_key, marks_key
from stream.state.buckets import BucketTracker, bucket_key, encode_bucket, load_totals

log = logging.getLogger("leadlag.fold")

DECODED_CACHE_ENTITIES = 2_000
"""Decoded states kept per partition between flushes (least recently used go first; the bytes stay in the store;
docs/architecture.md, "The hot path", says what the bound costs and saves)."""

EntityRef = tuple[EntityKind, str]


@dataclass(slots=True)
class Tally:
    """A partition's input counts (persisted with its state): read, accepted, duplicate, invalid, rejected.

    The counts travel in one changelog record with `through`, which maps each origin ("topic/partition")
    whose records this partition has absorbed to the offset after the last one (docs/architecture.md,
    "State, changelog and recovery"). A record read again after a crash is folded again, as folds are
    idempotent, but counted once: below its own partition's mark it was counted already, and a target
    partition past it does not count it as a duplicate. Bound: one entry per origin topic and partition
    that folds into this one.
    """

    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    invalid: int = 0
    rejected: int = 0
    through: dict[str, int] = field(default_factory=dict)
    letters: dict[str, int] = field(default_factory=dict)
    """Dead letters sent for this partition's input, by reason kind: counted once, like the rest, so the
    company's dead letters are known to every worker (the DeadLettersArriving alert). Bound: the reason
    kinds (a fixed set)."""

    def encode(self) -> bytes:
        return orjson.dumps(
            [self.events, self.accepted, self.duplicates, self.invalid, self.rejected, self.through, self.letters]
        )

    @classmethod
    def decode(cls, raw: bytes) -> Tally:
        events, accepted, duplicates, invalid, rejected, *rest = orjson.loads(raw)
        through = {str(origin): int(offset) for origin, offset in rest[0].items()} if rest else {}
        # an earlier release wrote a list here (its direct folds): no letters then
        known = rest[1] if len(rest) > 1 and isinstance(rest[1], dict) else {}
        letters = {str(kind): int(count) for kind, count in known.items()}
        return cls(events, accepted, duplicates, invalid, rejected, through, letters)

    def add(self, other: Tally) -> None:
        self.events += other.events
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.invalid += other.invalid
        self.rejected += other.rejected
        for kind, count in other.letters.items():
            self.letters[kind] = self.letters.get(kind, 0) + count

    def letter(self, kind: str) -> None:
        self.letters[kind] = self.letters.get(kind, 0) + 1


@dataclass(slots=True)
class Outbox:
    """What one step sends before its changelog: items per entities partition, dead letters per partition."""

    routed: dict[int, list[Item]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: list[tuple[int, bytes]] = field(default_factory=list)

    def route(self, partition: int, item: Item) -> None:
        self.routed[partition].append(item)


class PartitionState:
    """One owned partition: its entities (an `EntityStore` for the reducers), totals, marks and counts."""

    __slots__ = (
        "buckets",
        "decoded",
        "dirty",
        "earliest_ms",
        "meta_changed",
        "newest_ms",
        "partition",
        "policy",
        "published",
        "reads",
        "store",
        "tally",
        "totals",
    )

    def __init__(self, store: PartitionStore, policy: Policy) -> None:
        self.partition = store.partition
        self.store = store
        self.policy = policy
        self.decoded: dict[EntityRef, EntityState] = {}
        self.dirty: set[EntityRef] = set()
        self.earliest_ms: int | None = None
        self.newest_ms: int | None = None
        self.tally = Tally()
        self.totals: Totals = rebuild_totals((), policy)
        self.buckets = BucketTracker()
        self.meta_changed = False
        self.reads = 0
        """States read by the reducers since the metrics last took the count."""
        self.published = 0
        """The offset after this partition's last record on the totals topic (`company_records`)."""
        self.load()

    def load(self) -> None:
        """Marks, counts and totals as the store has them; decoded states are read afresh from it."""
        self.decoded.clear()
        self.dirty.clear()
        self.buckets = BucketTracker()
        self.meta_changed = False
        self.earliest_ms = self.newest_ms = None
        totals_newest: int | None = None
        marks = self.store.get(marks_key(self.partition))
        if marks is not None:
            self.earliest_ms, self.newest_ms, totals_newest = orjson.loads(marks)
        counts = self.store.get(counts_key(self.partition))
        self.tally = Tally() if counts is None else Tally.decode(counts)
        self.totals = rebuild_totals((), self.policy)
        load_totals(self.totals, totals_newest, self.store.items(BUCKET_PREFIX), self.buckets)
        self.store.totals_loaded()

    # -- the reducers' EntityStore -------------------------------------------------
    def get(self, kind: EntityKind, key: str) -> EntityState | None:
        self.reads += 1
        ref = (kind, key)
        decoded = self.decoded
        state = decoded.pop(ref, None)
        if state is None:
            raw = self.store.get(entity_key(kind, key))
            if raw is None:
                return None
            state = decode_state(kind, raw)
        decoded[ref] = state  # most recently used last
        return state

    def put(self, kind: EntityKind, key: str, state: EntityState) -> None:
        ref = (kind, key)
        self.decoded[ref] = state
        self.dirty.add(ref)

    # -- marks -----------------------------------------------------------------------
    def mark(self, ts_ms: int) -> None:
        if self.newest_ms is None or ts_ms > self.newest_ms:
            self.newest_ms = ts_ms
        if self.earliest_ms is None or ts_ms < self.earliest_ms:
            self.earliest_ms = ts_ms
        self.meta_changed = True

    # -- flush -----------------------------------------------------------------------
    def changed(self) -> bool:
        return bool(self.dirty) or self.meta_changed or bool(self.buckets)

    def changes(self) -> dict[bytes, bytes | None]:
        """This flush's part of the changelog: each changed entity encoded once, the touched buckets of the
        totals, and the partition's marks and counts."""
        decoded = self.decoded
        records: dict[bytes, bytes | None] = {
            entity_key(kind, key): encode_state(decoded[(kind, key)]) for kind, key in self.dirty
        }
        records.update(self.buckets.records(self.totals))
        self.buckets.clear()
        records.update(self._meta())
        return records

    def _meta(self) -> dict[bytes, bytes | None]:
        marks = [self.earliest_ms, self.newest_ms, self.totals.newest_ms]
        return {marks_key(self.partition): orjson.dumps(marks), counts_key(self.partition): self.tally.encode()}

    def company_records(self) -> dict[bytes, bytes | None]:
        """Every record the other workers read of this partition: each bucket of its totals, its marks and
        counts (what a new owner publishes in full on the totals topic, `stream.app.company`)."""
        totals = self.totals
        records: dict[bytes, bytes | None] = {
            bucket_key(ref): encode_bucket(ref, totals.bucket(ref)) for ref in buckets_of(totals)
        }
        records.update(self._meta())
        return records

    def persisted(self, records: dict[bytes, bytes | None], offset: int) -> None:
        """The changelog acknowledged `records` up to `offset`: write them locally, forget what changed."""
        self.store.write(records, offset)
        self.dirty.clear()
        self.meta_changed = False
        decoded = self.decoded
        excess = len(decoded) - DECODED_CACHE_ENTITIES
        if excess > 0:
            for ref in list(decoded)[:excess]:
                del decoded[ref]


def summed(parts: list[Totals]) -> Readable:
    """Partitions' totals read as one (their entities are disjoint); the one object itself when there is one."""
    return parts[0] if len(parts) == 1 else TotalsSum(parts)


class Fold:
    """The owned partitions' states and totals."""

    __slots__ = ("partitions", "parts", "policy", "shards")

    def __init__(self, policy: Policy, partitions: int) -> None:
        self.policy = policy
        self.partitions = partitions
        self.parts: dict[int, PartitionState] = {}
        self.shards: dict[int, Shard] = {}

    def own(self, part: PartitionState) -> None:
        self.parts[part.partition] = part
        self.shards[part.partition] = Shard(self.policy, part, part.totals)

    def disown(self, partition: int) -> PartitionState | None:
        self.shards.pop(partition, None)
        return self.parts.pop(partition, None)

    def reload(self, partition: int) -> None:
        """The partition's store changed under it (caught up from the changelog): read it afresh."""
        part = self.parts[partition]
        part.load()
        self.shards[partition] = Shard(self.policy, part, part.totals)

    def totals(self) -> Readable:
        """The owned partitions' totals read as one."""
        return summed([part.totals for part in self.parts.values()])

    def newest_ms(self) -> int | None:
        return max((p.newest_ms for p in self.parts.values() if p.newest_ms is not None), default=None)

    def earliest_ms(self) -> int | None:
        return min((p.earliest_ms for p in self.parts.values() if p.earliest_ms is not None), default=None)

    def tally(self) -> Tally:
        total = Tally()
        for part in self.parts.values():
            total.add(part.tally)
        return total

    def fold(self, partition: int, item: Item, outbox: Outbox, origin: Origin, replayed: bool = False) -> None:
        """Fold one item into its entity of `partition` (owned); count it; route what it emitted.

        `replayed`: the partition already holds this item (it is read again after a crash), so finding it a
        duplicate is not counted as one."""
        part = self.parts[partition]
        try:
            step = self.shards[partition].fold(item)
        except Exception as exc:  # a reducer bug must not stop the stream: dead-letter the item
            log.exception("internal error folding %s", type(item).__name__)
            part.tally.rejected += 1
            part.meta_changed = True
            reason = f"internal error: {type(exc).__name__}: {exc}"
            outbox.dead_letters.append(
                (
                    origin.partition,
                    dead_letter(item_json(item), reason, origin, None, self.policy.limits.deadletter_max_bytes),
                )
            )
            return
        if not step.duplicate:
            part.buckets.touch(step.delta)
        if isinstance(item, BaseModel):  # an event, not a link
            if step.duplicate:
                if not replayed:
                    part.tally.duplicates += 1
            else:
                part.tally.accepted += 1
            # a duplicate marks too: its time was folded before, perhaps by a run that crashed before its marks
            part.mark(item.occurred_ms)
        partitions = self.partitions
        for link in step.emitted:
            kind, key = entity_of(link)
            outbox.route(entity_partition(kind, key, partitions), link)
