"""Folding events into entity states and totals, the way the worker will, without Kafka.

A `Shard` is one partition's worth of state: the entities whose key hashes to
it and the totals they contribute. A `Ledger` is a set of shards plus the
router that sends each event, and each link a reducer emits, to the shard of
its entity — in `replay` and the tests a loop, in the worker a repartition
topic. Folding split across shards and merging the totals gives exactly what
one shard gives: that is the contract the tests hold the reducers to.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from pydantic import BaseModel

from schemas.events import Event, FormFill, SiteVisit, Spend, StageChange, Subscription
from stream.core import acquisition, funnel, revenue, traffic
from stream.core.links import AccountLink, EntityKind, Item, Step, Touch, VisitorLink, entity_of
from stream.core.policy import Policy, UnknownCurrency
from stream.core.totals import Delta, Retention, Totals
from stream.core.windows import to_datetime


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


class RejectedEvent(ValueError):
    """A valid-looking event that cannot be counted (late, unknown currency): it goes to the dead letter."""


EntityState = traffic.VisitorState | funnel.ContactState | revenue.AccountState | acquisition.SpendState

STATE_CLASS: dict[EntityKind, type[EntityState]] = {
    "visitor": traffic.VisitorState,
    "contact": funnel.ContactState,
    "account": revenue.AccountState,
    "channel": acquisition.SpendState,
}


class EntityStore(Protocol):
    """Where entity states live: a dict in replay, a Faust table in the worker."""

    def get(self, kind: EntityKind, key: str) -> EntityState | None: ...

    def put(self, kind: EntityKind, key: str, state: EntityState) -> None:
        """Called after every fold that changed the state (a dict store may ignore it)."""


class DictStore:
    """Entity states in memory, one dict per kind."""

    __slots__ = ("states",)

    def __init__(self) -> None:
        self.states: dict[EntityKind, dict[str, EntityState]] = {kind: {} for kind in STATE_CLASS}

    def get(self, kind: EntityKind, key: str) -> EntityState | None:
        return self.states[kind].get(key)

    def put(self, kind: EntityKind, key: str, state: EntityState) -> None:
        self.states[kind][key] = state

    def items(self) -> Iterator[tuple[EntityKind, str, EntityState]]:
        for kind, states in self.states.items():
            for key, state in states.items():
                yield kind, key, state


S = TypeVar("S", traffic.VisitorState, funnel.ContactState, revenue.AccountState, acquisition.SpendState)


class Shard:
    """The entity states of one partition and the totals they contribute."""

    __slots__ = ("policy", "store", "totals")

    def __init__(self, policy: Policy, store: EntityStore | None = None, totals: Totals | None = None) -> None:
        self.policy = policy
        self.store: EntityStore = store if store is not None else DictStore()
        self.totals = totals if totals is not None else new_totals(policy)

    def fold(self, item: Item) -> Step:
        """Fold one item addressed to an entity of this shard; apply its delta; return the step."""
        kind, key = entity_of(item)
        state = self.store.get(kind, key)
        if state is None:
            state = STATE_CLASS[kind]()
        if isinstance(item, BaseModel):  # an event: retention counts back from the newest (see Totals.advance)
            self.totals.advance(item.occurred_ms)
        step = self._step(item, state)
        if not step.duplicate:
            self.totals.apply(step.delta)
            self.store.put(kind, key, state)
        return step

    def _step(self, item: Item, state: EntityState) -> Step:
        policy = self.policy
        if isinstance(item, SiteVisit):
            return traffic.apply_site_visit(_as(state, traffic.VisitorState), item, policy)
        if isinstance(item, VisitorLink):
            return traffic.apply_visitor_link(_as(state, traffic.VisitorState), item, policy)
        if isinstance(item, StageChange):
            return funnel.apply_stage_change(_as(state, funnel.ContactState), item, policy)
        if isinstance(item, FormFill):
            return funnel.apply_form_fill(_as(state, funnel.ContactState), item, policy)
        if isinstance(item, Touch):
            return funnel.apply_touch(_as(state, funnel.ContactState), item, policy)
        if isinstance(item, Subscription):
            return revenue.apply_subscription(_as(state, revenue.AccountState), item, policy)
        if isinstance(item, AccountLink):
            return revenue.apply_account_link(_as(state, revenue.AccountState), item, policy)
        if isinstance(item, Spend):
            return acquisition.apply_spend(_as(state, acquisition.SpendState), item, policy)
        raise TypeError(f"not an event or link: {item!r}")


def _as(state: EntityState, cls: type[S]) -> S:
    if not isinstance(state, cls):
        raise TypeError(f"expected {cls.__name__}, found {type(state).__name__}")
    return state


def entity_delta(kind: EntityKind, key: str, state: EntityState, policy: Policy) -> Delta:
    """Everything one entity contributes to the totals, computed from its state alone."""
    if isinstance(state, traffic.VisitorState):
        return traffic.visitor_delta(key, state)
    if isinstance(state, acquisition.SpendState):
        return acquisition.spend_delta(key, state)
    if isinstance(state, funnel.ContactState):
        counts, money = funnel.contact_facts(state, policy)
    else:
        counts, money = revenue.account_facts(state)
    return Delta.between({}, counts, {}, money)


def rebuild_totals(states: Iterable[tuple[EntityKind, str, EntityState]], policy: Policy) -> Totals:
    """The totals of a set of entity states: what a worker computes after recovering its tables.

    Equal to the totals folded event by event, because every entity's
    contribution is a function of its state alone (a property the tests hold).
    """
    totals = new_totals(policy)
    for kind, key, state in states:
        totals.apply(entity_delta(kind, key, state, policy))
    return totals


CAPPED_LABELS: dict[str, int] = {
    **dict.fromkeys(traffic.SESSION_FAMILIES, 1),
    **dict.fromkeys(funnel.CAMPAIGN_FAMILIES, 2),
    acquisition.SPEND: 2,
    revenue.MRR_BY_PLAN: 0,
}
"""Families with a free-form name among their labels (campaign, plan), and its position: capped when written."""


def new_totals(policy: Policy) -> Totals:
    """Empty totals for one partition: retention from the grace period, campaign and plan names capped."""
    return Totals(Retention.for_grace(policy.grace_ms), CAPPED_LABELS, policy.max_label_values)


def shard_index(kind: EntityKind, key: str, shards: int) -> int:
    """Stable placement of an entity; any stable hash works as long as every item agrees."""
    return zlib.crc32(f"{kind}:{key}".encode()) % shards


@dataclass(slots=True)
class FoldCounts:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


def late_reason(event: Event, newest_ms: int | None, policy: Policy) -> str | None:
    """Why `event` is too late to count (older than the newest event seen by more than the grace period), or None."""
    grace = policy.grace_ms
    if grace is None or newest_ms is None or event.occurred_ms >= newest_ms - grace:
        return None
    return (
        f"late: occurred_at {event.occurred_at.isoformat()} is more than the grace period "
        f"({grace // 3_600_000} h) before the newest event seen ({to_datetime(newest_ms).isoformat()})"
    )


class Ledger:
    """Folds events through the reducers across `shards` partitions, routing links between them."""

    __slots__ = ("counts", "earliest_ms", "policy", "shards", "watermark_ms")

    def __init__(
        self, policy: Policy | None = None, shards: int = 1, store: Callable[[], EntityStore] | None = None
    ) -> None:
        """`store` makes each shard's entity store (default: a dict of decoded states)."""
        self.policy = policy or Policy()
        self.shards = [Shard(self.policy, None if store is None else store()) for _ in range(shards)]
        self.watermark_ms: int | None = None
        """The newest event time folded so far."""
        self.earliest_ms: int | None = None
        self.counts = FoldCounts()

    def check_lateness(self, event: Event) -> None:
        """Raise `RejectedEvent` when the event is older than the grace period allows."""
        reason = late_reason(event, self.watermark_ms, self.policy)
        if reason is not None:
            raise RejectedEvent(reason)

    def fold(self, event: Event) -> Outcome:
        """Fold one event and every link it causes; raises `RejectedEvent` for late or unconvertible input."""
        try:
            grace, watermark = self.policy.grace_ms, self.watermark_ms
            if grace is not None and watermark is not None and event.occurred_ms < watermark - grace:
                self.check_lateness(event)  # late: raises, with the reason
            # reducers convert money before they change any state, so a rejection leaves none behind
            first = self._shard_of(event).fold(event)
        except UnknownCurrency as exc:
            self.counts.rejected += 1
            raise RejectedEvent(str(exc)) from exc
        except RejectedEvent:
            self.counts.rejected += 1
            raise
        outcome = Outcome.DUPLICATE if first.duplicate else Outcome.ACCEPTED
        # a duplicate's links are folded too: they are idempotent, and they repair links a crash lost
        pending: deque[Item] | None = deque(first.emitted) if first.emitted else None
        while pending:
            item = pending.popleft()
            pending.extend(self._shard_of(item).fold(item).emitted)
        if outcome is Outcome.DUPLICATE:
            self.counts.duplicates += 1
        else:
            self.counts.accepted += 1
            ts = event.occurred_ms
            if self.watermark_ms is None or ts > self.watermark_ms:
                self.watermark_ms = ts
            if self.earliest_ms is None or ts < self.earliest_ms:
                self.earliest_ms = ts
        return outcome

    def _shard_of(self, item: Item) -> Shard:
        if len(self.shards) == 1:  # every entity is in the only shard: no need to name it
            return self.shards[0]
        kind, key = entity_of(item)
        return self.shards[shard_index(kind, key, len(self.shards))]

    def fold_all(self, events: Iterable[Event]) -> list[Outcome | RejectedEvent]:
        outcomes: list[Outcome | RejectedEvent] = []
        for event in events:
            try:
                outcomes.append(self.fold(event))
            except RejectedEvent as exc:
                outcomes.append(exc)
        return outcomes

    def totals(self) -> Totals:
        """The totals of all shards (the shard's own object when there is only one)."""
        if len(self.shards) == 1:
            return self.shards[0].totals
        merged = new_totals(self.policy)
        for shard in self.shards:
            merged.merge(shard.totals)
        return merged
