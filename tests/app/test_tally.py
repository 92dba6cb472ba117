"""A partition's input counts travel in one changelog record with the offsets they count through."""

from __future__ import annotations

import orjson

from stream.app.fold import Tally


def test_counts_and_their_offsets_survive_the_record() -> None:
    tally = Tally(
        events=12,
        accepted=9,
        duplicates=1,
        invalid=1,
        rejected=1,
        through={"site_visits/0": 40, "entities/2": 7},
    )

    assert Tally.decode(tally.encode()) == tally


def test_a_record_written_before_marks_were_kept_reads_as_counts_through_nothing() -> None:
    older = orjson.dumps([12, 9, 1, 1, 1])

    assert Tally.decode(older) == Tally(events=12, accepted=9, duplicates=1, invalid=1, rejected=1)


def test_a_record_that_also_listed_direct_folds_reads_the_same() -> None:
    earlier = orjson.dumps([12, 9, 1, 1, 1, {"site_visits/0": 40}, [0, 1]])

    assert Tally.decode(earlier) == Tally(12, 9, 1, 1, 1, {"site_visits/0": 40})


def test_adding_tallies_adds_counts_only() -> None:
    total = Tally(through={"a": 1})
    total.add(Tally(events=2, accepted=2, through={"b": 5}))

    assert total == Tally(events=2, accepted=2, through={"a": 1})


def test_dead_letters_by_reason_travel_with_the_counts_and_add_up() -> None:
    tally = Tally(events=3, invalid=2)
    tally.letter("invalid_json")
    tally.letter("invalid_json")
    tally.letter("future")

    read = Tally.decode(tally.encode())
    read.add(Tally(letters={"future": 4}))

    assert read.letters == {"invalid_json": 2, "future": 5}
