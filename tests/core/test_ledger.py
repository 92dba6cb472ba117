"""The whole core as one fold: order, duplicates, replays and partitioning do not change any number."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import Event
from schemas.snapshot import InputCounts
from stream.core.ledger import DictStore, Ledger, Outcome, RejectedEvent, rebuild_totals
from stream.core.policy import Policy
from stream.core.snapshot import build_snapshot
from tests.strategies import event_lists

POLICY = Policy(fx_rates={"EUR": Decimal("1.1")})
NO_INPUT = InputCounts(events=0, accepted=0, duplicates=0, invalid=0, rejected=0)


def normalised(value: Any) -> Any:
    """Floats rounded to 9 significant digits: sums of credits may differ in the last bit by order."""
    if isinstance(value, float):
        return float(f"{value:.9g}") if value == value else value
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def snapshot_of(ledger: Ledger, as_of_ms: int | None = None) -> dict[str, Any]:
    snapshot = build_snapshot(
        ledger.totals(), as_of_ms or ledger.watermark_ms, ledger.earliest_ms, ledger.policy, NO_INPUT
    )
    return normalised(snapshot.model_dump(mode="json"))  # type: ignore[no-any-return]


def folded(events: list[Event], shards: int = 1) -> Ledger:
    ledger = Ledger(POLICY, shards=shards)
    ledger.fold_all(events)
    return ledger


PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(events=event_lists(), seed=st.integers(0, 2**32))
def test_any_arrival_order_gives_the_same_snapshot(events: list[Event], seed: int) -> None:
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    a, b = folded(events), folded(shuffled)
    assert a.watermark_ms == b.watermark_ms
    assert snapshot_of(a) == snapshot_of(b)


@PROPERTY
@given(events=event_lists())
def test_folding_every_event_twice_changes_nothing(events: list[Event]) -> None:
    once = folded(events)
    twice = folded(events + events)
    assert snapshot_of(once) == snapshot_of(twice)
    assert twice.counts.duplicates == len(events)


@PROPERTY
@given(events=event_lists(), crash_at=st.integers(0, 40), replayed=st.integers(0, 40))
def test_a_tail_replayed_after_a_crash_changes_nothing(events: list[Event], crash_at: int, replayed: int) -> None:
    """At-least-once delivery: after a crash the worker re-reads from its last commit, folding a tail twice."""
    crash_at = min(crash_at, len(events))
    resume_from = max(0, crash_at - replayed)
    ledger = Ledger(POLICY)
    ledger.fold_all(events[:crash_at])
    ledger.fold_all(events[resume_from:])
    assert snapshot_of(ledger) == snapshot_of(folded(events))


@PROPERTY
@given(events=event_lists(), shards=st.integers(2, 5))
def test_folding_split_over_partitions_and_merging_equals_folding_the_whole(events: list[Event], shards: int) -> None:
    assert snapshot_of(folded(events, shards)) == snapshot_of(folded(events))


@PROPERTY
@given(events=event_lists(), shards=st.integers(1, 3))
def test_totals_rebuilt_from_the_entity_states_equal_the_totals_folded_event_by_event(
    events: list[Event], shards: int
) -> None:
    """What a worker does after recovering its tables: the states alone determine every number."""
    ledger = folded(events, shards)
    rebuilt = Ledger(POLICY, shards=1)
    stores = [shard.store for shard in ledger.shards]
    rebuilt.shards[0].totals = rebuild_totals(
        (item for store in stores if isinstance(store, DictStore) for item in store.items()), POLICY
    )
    rebuilt.watermark_ms, rebuilt.earliest_ms = ledger.watermark_ms, ledger.earliest_ms
    assert snapshot_of(rebuilt) == snapshot_of(ledger)


def test_an_event_in_a_currency_without_a_rate_is_rejected_and_leaves_nothing_behind() -> None:
    from tests.strategies import START

    ledger = Ledger(Policy())
    event = _subscription(START, "GBP")
    with pytest.raises(RejectedEvent, match="unknown currency 'GBP'"):
        ledger.fold(event)
    assert ledger.counts.rejected == 1
    assert ledger.shards[0].store.get("account", "a1") is None
    assert not ledger.shards[0].totals.money
    assert ledger.fold(_subscription(START, "USD")) is Outcome.ACCEPTED


def test_an_event_later_than_the_grace_period_is_rejected_as_late() -> None:
    from datetime import timedelta

    from tests.strategies import START

    ledger = Ledger(Policy(grace_ms=3_600_000))
    ledger.fold(_subscription(START + timedelta(hours=5), "USD", "x1"))
    ledger.fold(_subscription(START + timedelta(hours=4, minutes=1), "USD", "x2"))  # within 1 h: fine
    with pytest.raises(RejectedEvent, match="late"):
        ledger.fold(_subscription(START + timedelta(hours=3, minutes=59), "USD", "x3"))


def _subscription(at: Any, currency: str, event_id: str = "sub-1") -> Event:
    from schemas.events import Subscription

    return Subscription.model_validate(
        {
            "event_id": event_id,
            "occurred_at": at,
            "account_id": "a1",
            "subscription_id": "s1",
            "status": "active",
            "amount": "100",
            "currency": currency,
            "interval": "month",
        }
    )
