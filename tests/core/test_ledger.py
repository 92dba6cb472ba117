"""The whole core as one fold: order, duplicates, replays and partitioning do not change any number."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import EVENT_ADAPTER, Event
from schemas.snapshot import InputCounts
from stream.core.ledger import Ledger, Outcome, RejectedEvent
from stream.core.policy import Policy
from stream.core.snapshot import build_snapshot
from stream.core.totals import buckets_of
from tests.strategies import event_lists

POLICY = Policy(fx_rates={"EUR": Decimal("1.1")}, dedupe_horizon_ms=90 * 86_400_000)
"""The strategies' events span 75 days: duplicates are recognised within a 90-day horizon (the default is 7 days,
beyond which a re-sent event counts again: see `test_an_event_resent_after_the_dedupe_horizon_counts_again`)."""
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
def test_totals_written_as_buckets_and_loaded_back_give_the_same_snapshot(events: list[Event], shards: int) -> None:
    """What a worker does when it recovers a partition: its totals come back from their hour and month buckets.

    (Bounded entity states cannot re-contribute every event they once counted, so the totals are state too.)
    """
    ledger = folded(events, shards)
    recovered = Ledger(POLICY, shards=1)
    loaded = recovered.shards[0].totals
    newest = max(
        (shard.totals.newest_ms for shard in ledger.shards if shard.totals.newest_ms is not None), default=None
    )
    if newest is not None:
        loaded.advance(newest)
    merged = ledger.totals()
    for ref in buckets_of(merged):
        loaded.load_bucket(ref, merged.bucket(ref))
    recovered.watermark_ms, recovered.earliest_ms = ledger.watermark_ms, ledger.earliest_ms
    assert snapshot_of(recovered) == snapshot_of(ledger)


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


def test_an_event_resent_after_the_dedupe_horizon_counts_again() -> None:
    """Documented bound: an entity remembers event ids for 7 days (event time) after its newest event."""
    visits = [
        EVENT_ADAPTER.validate_python(
            {
                "event_id": f"e{n}",
                "type": "site_visit",
                "occurred_at": f"2026-09-{day:02d}T00:00:00Z",
                "session_id": "s",
                "visitor_id": "v",
                "channel": "direct",
                "pageviews": 1,
                "engaged_seconds": 0,
            }
        )
        for n, day in ((0, 1), (1, 7), (2, 20))
    ]
    ledger = Ledger(Policy())
    ledger.fold_all(visits[:2])
    assert ledger.fold(visits[0]) is Outcome.DUPLICATE  # within 7 days of the visitor's newest visit
    ledger.fold(visits[2])
    assert ledger.fold(visits[0]) is Outcome.ACCEPTED  # 19 days before it: not remembered any more
