"""The company: every partition's totals, clock and input counts, whichever worker owns it.

A worker folds only the partitions it owns, but answers for the whole company
(docs/architecture.md, "One company, many workers"). What the read side needs
of a partition besides entity states is in its changelog: one record per hour
and month bucket of its totals, its marks (earliest and newest event time) and
its input counts. The owner writes those records a second time, on the totals
topic (`<app id>-entities-totals`, compacted, partitioned like the changelog):
most changelog records are entity states, which other workers have no use for.
A new owner publishes its partition's records there in full. A worker keeps a
`Replica` of every partition it does not own, fed by a consumer that follows
those partitions of the totals topic (the engine's follower,
`stream.app.engine`); it would skip entity records too, so it can read a
changelog just as well (the tests do). The
snapshot reads the owned partitions' live totals and the replicas' as one
(`stream.core.totals.TotalsSum`, no merged copy),
under one clock: the newest event time of any partition.

Bound: one replica per partition not owned, each as large as the totals of
its partition (bounded by retention, label caps and months, like the owned
ones); one tally each. A replica is handed over from a partition this worker
gives up (no re-reading) and dropped for one it takes.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from stream.app.fold import PartitionState, Tally, summed
from stream.core.ledger import rebuild_totals
from stream.core.policy import Policy
from stream.core.totals import HOUR, Readable, Totals
from stream.state.base import BUCKET_PREFIX, COUNTS_PREFIX, MARKS_PREFIX
from stream.state.buckets import decode_bucket, parse_bucket_key


class Replica:
    """One partition owned elsewhere, as its totals topic tells it: totals, marks, counts, how far read."""

    __slots__ = ("_totals", "earliest_ms", "newest_ms", "offset", "partition", "pending", "tally", "target")

    def __init__(self, partition: int, totals: Totals, offset: int = 0) -> None:
        self.partition = partition
        self._totals = totals
        self.pending: dict[bytes, bytes | None] = {}
        """Bucket records read but not yet loaded: only the last one of each key is, when the totals are
        read (a bucket rewritten by every flush of a backfill is decoded once per snapshot, not per flush).
        Bound: one entry per bucket of the partition's totals."""
        self.earliest_ms: int | None = None
        self.newest_ms: int | None = None
        self.tally = Tally()
        self.offset = offset
        """The offset of the next record to apply (on the totals topic)."""
        self.target: int | None = None
        """The topic's end when this replica started following it: reached = caught up (readiness)."""

    @classmethod
    def handed_over(cls, part: PartitionState) -> Replica:
        """The replica of a partition this worker gives up: its state as of its last flush, no re-reading."""
        replica = cls(part.partition, part.totals, part.published)
        replica.earliest_ms, replica.newest_ms = part.earliest_ms, part.newest_ms
        replica.tally = part.tally
        replica.target = part.published
        return replica

    @property
    def totals(self) -> Totals:
        """The partition's totals as far as read: the pending bucket records loaded.

        In any order: a loaded bucket marks its series disordered, so pruning sorts what it cuts.
        """
        pending = self.pending
        if pending:
            totals = self._totals
            for key, value in pending.items():
                ref = parse_bucket_key(key)
                if value is not None:
                    totals.load_bucket(ref, decode_bucket(ref, value))
                elif ref[3] == HOUR:  # an hour bucket past its retention, deleted from the changelog
                    totals.load_bucket(ref, (0, None))
            pending.clear()
        return self._totals

    @property
    def caught_up(self) -> bool:
        return self.target is not None and self.offset >= self.target

    def apply(self, offset: int, key: bytes | None, value: bytes | None) -> bool:
        """Apply one totals (or changelog) record, read in offset order; whether it changed what the snapshot reads.

        Records before `offset` were applied already (a re-read after re-assigning the follower) and are
        skipped; entity records are skipped too (their effect on the totals travels as bucket records).
        """
        if offset < self.offset:
            return False
        self.offset = offset + 1
        if key is None or not key.startswith(b"_"):
            return False
        if key.startswith(BUCKET_PREFIX):
            self.pending[key] = value
            return True
        if value is None:
            return False
        if key.startswith(MARKS_PREFIX):
            self.earliest_ms, self.newest_ms, totals_newest = orjson.loads(value)
            if totals_newest is not None:
                self._totals.advance(totals_newest)
            return True
        if key.startswith(COUNTS_PREFIX):
            self.tally = Tally.decode(value)
            return True
        return False


class Company:
    """The replicas of the partitions this worker does not own, and the company-wide reads over all."""

    __slots__ = ("partitions", "policy", "replicas")

    def __init__(self, policy: Policy, partitions: int) -> None:
        self.policy = policy
        self.partitions = partitions
        self.replicas: dict[int, Replica] = {}

    def follow(self, owned: Iterable[int]) -> dict[int, Replica]:
        """The replicas of every partition not in `owned`: missing ones start empty, owned ones are dropped."""
        mine = set(owned)
        for partition in list(self.replicas):
            if partition in mine:
                del self.replicas[partition]
        for partition in range(self.partitions):
            if partition not in mine and partition not in self.replicas:
                self.replicas[partition] = Replica(partition, rebuild_totals((), self.policy))
        return self.replicas

    def hand_over(self, part: PartitionState) -> None:
        """A partition this worker gives up becomes a replica from where its local copy stands."""
        self.replicas[part.partition] = Replica.handed_over(part)

    def behind(self) -> list[int]:
        """Partitions whose replica has not yet read its totals up to where they stood when followed."""
        return sorted(p for p, replica in self.replicas.items() if not replica.caught_up)

    def totals(self, owned: Iterable[Totals]) -> Readable:
        """The company's totals: the owned partitions' and every replica's, read as one (`TotalsSum`)."""
        return summed([*owned, *(replica.totals for replica in self.replicas.values())])

    def newest_ms(self) -> int | None:
        return max((r.newest_ms for r in self.replicas.values() if r.newest_ms is not None), default=None)

    def earliest_ms(self) -> int | None:
        return min((r.earliest_ms for r in self.replicas.values() if r.earliest_ms is not None), default=None)

    def tally(self) -> Tally:
        total = Tally()
        for replica in self.replicas.values():
            total.add(replica.tally)
        return total


def latest(*times: int | None) -> int | None:
    """The latest of event times that may be unknown (None)."""
    known = [t for t in times if t is not None]
    return max(known) if known else None


def earliest(*times: int | None) -> int | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None
