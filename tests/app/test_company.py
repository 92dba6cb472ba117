"""Specifies stream/app/company.py: a worker owning some partitions answers for the whole company.

The partitions owned elsewhere are read from their changelog, record by record as the follower reads
them (in any chunks, entity records included and skipped); the company's figures then equal
`leadlag replay` of every event, whichever partitions a worker owns.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas.events import EVENT_ADAPTER
from stream.app.company import Company, earliest, latest
from stream.app.engine import company_part
from stream.app.fold import Fold, Outbox, PartitionState
from stream.app.placement import entity_partition
from stream.core.links import Item, entity_of
from stream.core.snapshot import build_snapshot
from stream.simulation import generate_count
from stream.state.memory import MemoryPartition
from tests.integration.test_worker import normalised
from tests.state.test_recovery import NO_COUNTS, ORIGIN, PARTITIONS, POLICY, Changelog, fold_like_the_engine, replayed

EVENTS = list(generate_count(3000, seed=11))


def logged(events: list[dict[str, Any]], flush_every: int) -> Changelog:
    return fold_like_the_engine(events, flush_every)[1]


def company_snapshot(owned: Fold, company: Company) -> dict[str, Any]:
    totals = company.totals(part.totals for part in owned.parts.values())
    newest = latest(owned.newest_ms(), company.newest_ms())
    first = earliest(owned.earliest_ms(), company.earliest_ms())  # None before any event, as in the engine
    snapshot = build_snapshot(totals, newest, first, POLICY, NO_COUNTS)
    return normalised(snapshot.model_dump(mode="json", exclude_none=True))  # type: ignore[no-any-return]


def owning(changelog: Changelog, partitions: set[int]) -> Fold:
    """A worker that owns `partitions`, its stores read from the changelog."""
    fold = Fold(POLICY, PARTITIONS)
    for partition in sorted(partitions):
        store = MemoryPartition(partition)
        store.write(dict(changelog.values[partition]), changelog.ends[partition])
        part = PartitionState(store, POLICY)
        part.published = changelog.ends[partition]  # the log stands for its totals topic too
        fold.own(part)
    return fold


def follow(company: Company, log: dict[int, list[tuple[bytes, bytes | None]]], chunk: int) -> None:
    """Apply each replica's changelog as the follower does: in fetches of `chunk` records, in offset order."""
    for partition, replica in company.replicas.items():
        records = log[partition]
        for start in range(0, len(records), chunk):
            for offset, (key, value) in enumerate(records[start : start + chunk], start=start):
                replica.apply(offset, key, value)


def test_a_worker_owning_two_partitions_of_four_answers_for_the_company_like_replay() -> None:
    changelog = logged(EVENTS, flush_every=211)
    mine = owning(changelog, {0, 3})
    company = Company(POLICY, PARTITIONS)
    company.follow(mine.parts)

    follow(company, changelog.log, chunk=500)

    assert sorted(company.replicas) == [1, 2]
    assert company_snapshot(mine, company) == replayed(EVENTS)


@settings(max_examples=15, deadline=None)
@given(
    owned=st.sets(st.integers(0, PARTITIONS - 1), max_size=PARTITIONS),
    flush_every=st.integers(50, 2000),
    chunk=st.integers(1, 5000),
)
def test_any_ownership_any_flushes_any_fetches_give_the_same_company(
    owned: set[int], flush_every: int, chunk: int
) -> None:
    changelog = logged(EVENTS[:800], flush_every)
    mine = owning(changelog, owned)
    company = Company(POLICY, PARTITIONS)
    company.follow(mine.parts)

    follow(company, changelog.log, chunk)

    assert company_snapshot(mine, company) == replayed(EVENTS[:800])
    input_total = mine.tally()
    input_total.add(company.tally())
    assert input_total.accepted == 800


def test_records_read_again_after_the_follower_is_reassigned_change_nothing() -> None:
    changelog = logged(EVENTS[:600], flush_every=100)
    mine = owning(changelog, {1})
    company = Company(POLICY, PARTITIONS)
    company.follow(mine.parts)
    follow(company, changelog.log, chunk=300)
    before = company_snapshot(mine, company)

    follow(company, changelog.log, chunk=70)  # everything again, from offset 0: below each replica's offset

    assert company_snapshot(mine, company) == before


def test_a_partition_given_up_is_handed_over_and_one_taken_is_dropped() -> None:
    changelog = logged(EVENTS[:600], flush_every=100)
    mine = owning(changelog, {0, 1, 2, 3})
    company = Company(POLICY, PARTITIONS)
    company.follow(mine.parts)
    assert company.replicas == {}

    part = mine.disown(2)
    assert part is not None
    company.hand_over(part)
    company.follow(mine.parts)

    replica = company.replicas[2]
    assert (replica.offset, replica.caught_up) == (changelog.ends[2], True)
    assert company_snapshot(mine, company) == replayed(EVENTS[:600])
    mine.own(PartitionState(part.store, POLICY))
    company.follow(mine.parts)
    assert company.replicas == {}


def test_a_new_replica_is_behind_until_it_has_read_up_to_where_the_changelog_stood() -> None:
    company = Company(POLICY, PARTITIONS)
    company.follow({0})
    for partition, replica in company.replicas.items():
        replica.target = 3 if partition == 2 else 0

    assert company.behind() == [2]
    company.replicas[2].apply(2, b"visitor:v-1", b"{}")
    assert company.behind() == []


def test_input_counts_of_the_company_add_the_replicas() -> None:
    company = Company(POLICY, PARTITIONS)
    company.follow({0, 1})
    company.replicas[2].apply(0, b"_counts:2", b'[5,4,1,0,0,{},{"future":2}]')
    company.replicas[3].apply(0, b"_counts:3", b'[7,6,0,1,0,{},{"invalid":1}]')

    total = company.tally()
    assert (total.events, total.accepted, total.duplicates, total.invalid) == (12, 10, 1, 1)
    assert total.letters == {"future": 2, "invalid": 1}


def test_a_new_owner_publishes_its_partition_in_full_and_a_replica_of_that_alone_equals_it() -> None:
    changelog = logged(EVENTS[:600], flush_every=100)
    owners = owning(changelog, {1, 2, 3})
    company = Company(POLICY, PARTITIONS)
    company.follow({0})

    for partition, replica in company.replicas.items():
        published = owners.parts[partition].company_records()
        assert all(key.startswith(b"_") for key in published)
        for offset, (key, value) in enumerate(published.items()):
            replica.apply(offset, key, value)

    assert company_snapshot(owning(changelog, {0}), company) == replayed(EVENTS[:600])


def test_only_totals_marks_and_counts_records_go_to_the_totals_topic() -> None:
    written: dict[int, dict[bytes, bytes | None]] = {
        2: {b"visitor:v-1": b"{}", b"_marks:2": b"[1,2,2]", b"_bucket:x": None, b"contact:c-1": None},
        3: {b"account:a-1": b"{}"},
    }

    assert company_part(written) == {2: {b"_marks:2": b"[1,2,2]", b"_bucket:x": None}, 3: {}}


def folded_by_two(
    events: list[dict[str, Any]], mine: set[int], flush_every: int, read_every: int, chunk: int
) -> tuple[Fold, Company]:
    """Two workers fold the events together (each its partitions, links delivered to their owner); the first
    follows the other's records in fetches of `chunk` and reads its company's figures every `read_every`
    events, as its snapshot timer would."""
    folds = {owner: Fold(POLICY, PARTITIONS) for owner in ("mine", "theirs")}
    for partition in range(PARTITIONS):
        folds["mine" if partition in mine else "theirs"].own(PartitionState(MemoryPartition(partition), POLICY))
    changelog = Changelog()
    company = Company(POLICY, PARTITIONS)
    company.follow(folds["mine"].parts)
    read: dict[int, int] = dict.fromkeys(range(PARTITIONS), 0)

    def follow_some() -> None:
        for partition, replica in company.replicas.items():
            records = changelog.log[partition][read[partition] : read[partition] + chunk]
            for offset, (key, value) in enumerate(records, start=read[partition]):
                replica.apply(offset, key, value)
            read[partition] += len(records)

    for number, raw in enumerate(events, start=1):
        pending: deque[Item] = deque([EVENT_ADAPTER.validate_python(raw)])
        while pending:
            item = pending.popleft()
            kind, key = entity_of(item)
            target = entity_partition(kind, key, PARTITIONS)
            outbox = Outbox()
            folds["mine" if target in mine else "theirs"].fold(target, item, outbox, ORIGIN)
            pending.extend(link for links in outbox.routed.values() for link in links)
        if number % flush_every == 0:
            changelog.flush(folds["mine"])
            changelog.flush(folds["theirs"])
        if number % read_every == 0:
            follow_some()
            company_snapshot(folds["mine"], company)
    changelog.flush(folds["mine"])
    changelog.flush(folds["theirs"])
    while any(read[p] < len(changelog.log[p]) for p in company.replicas):
        follow_some()
    return folds["mine"], company


@settings(max_examples=12, deadline=None)
@given(
    mine=st.sets(st.integers(0, PARTITIONS - 1), min_size=1, max_size=PARTITIONS - 1),
    flush_every=st.integers(20, 400),
    read_every=st.integers(10, 300),
    chunk=st.integers(1, 400),
)
@example(mine={1}, flush_every=20, read_every=10, chunk=1)  # read before any event of the company arrived
def test_reading_the_company_while_two_workers_fold_and_follow_changes_nothing_of_the_end_figures(
    mine: set[int], flush_every: int, read_every: int, chunk: int
) -> None:
    events = EVENTS[:700]

    owned, company = folded_by_two(events, mine, flush_every, read_every, chunk)

    assert company_snapshot(owned, company) == replayed(events)
