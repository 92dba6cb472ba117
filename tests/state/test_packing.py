"""Packed entity states: every state comes back byte for byte, before and after the dictionary is learnt."""

from __future__ import annotations

import random

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from stream.state import packing
from stream.state.base import entity_key, marks_key
from stream.state.memory import MemoryBackend
from stream.state.packing import StatePacker


def visitor_state(n: int) -> bytes:
    """A state shaped like the codec's visitor layout (the packer only ever sees bytes)."""
    ts = 1_767_540_120_689 + n * 7_919
    return orjson.dumps(
        [2, "visitor", [ts, 0, [f"e-{n}", ts]], {"organic": ts}, [[ts, f"e-{n}", f"s-{n}", "organic", None]], [], []]
    )


def trained_packer() -> StatePacker:
    packer = StatePacker()
    for n in range(packing.FIRST_SAMPLES):
        packer.pack(visitor_state(n))
    assert packer.trained
    return packer


def test_states_are_kept_as_they_came_until_the_dictionary_is_learnt() -> None:
    packer = StatePacker()
    first = visitor_state(0)
    assert packer.pack(first) is first
    assert packer.unpack(first) == first
    assert not packer.trained


def test_a_visitor_state_packs_to_under_half_its_size_and_unpacks_unchanged() -> None:
    packer = trained_packer()
    states = [visitor_state(n) for n in range(10_000, 10_500)]
    packed = [packer.pack(state) for state in states]
    assert [packer.unpack(value) for value in packed] == states
    assert sum(map(len, packed)) * 2 < sum(map(len, states))


def test_packed_bytes_hold_no_spare_room() -> None:
    """zstandard returns bytes sized for the worst case; kept by the million, that room would cost more than
    the packing saves."""
    packer = trained_packer()
    state = visitor_state(99_999)
    packed = packer.pack(state)
    assert packed.__sizeof__() == bytes(len(packed)).__sizeof__()


def test_states_written_before_training_still_read_back_after_it() -> None:
    packer = StatePacker()
    early = [packer.pack(visitor_state(n)) for n in range(packing.FIRST_SAMPLES)]
    assert packer.trained
    assert [packer.unpack(value) for value in early] == [visitor_state(n) for n in range(packing.FIRST_SAMPLES)]


def test_training_is_tried_again_with_twice_the_samples_and_given_up_past_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """zstd refuses to train on too little content; the states then stay as they are, which is only larger."""
    tried: list[int] = []

    def refuse(size: int, samples: list[bytes]) -> None:
        tried.append(len(samples))
        raise zstandard.ZstdError("cannot train dict")

    monkeypatch.setattr(zstandard, "train_dictionary", refuse)
    packer = StatePacker()
    for n in range(2 * packing.MAX_SAMPLES):
        assert packer.pack(visitor_state(n)) == visitor_state(n)
    assert tried == [2_000, 4_000, 8_000, 16_000]
    assert not packer.trained
    assert not packer._samples


SHARED = trained_packer()


@given(st.lists(st.binary(max_size=600).map(lambda raw: b"[" + raw), max_size=40))
def test_any_bytes_a_codec_payload_can_be_round_trip(values: list[bytes]) -> None:
    packer = SHARED
    assert [packer.unpack(packer.pack(value)) for value in values] == values


def test_the_memory_store_packs_entities_and_keeps_meta_records_as_written() -> None:
    store = MemoryBackend().open(0)
    states = {entity_key("visitor", f"v-{n}"): visitor_state(n) for n in range(packing.FIRST_SAMPLES + 100)}
    marks = orjson.dumps([1, 2])
    store.write(states, offset=len(states))  # the first states teach the dictionary
    store.write({**states, marks_key(0): marks}, offset=2 * len(states) + 1)
    assert store.values[marks_key(0)] == marks
    key = random.Random(1).choice(list(states))
    assert store.get(key) == states[key]
    assert dict(store.items(b"visitor:")) == states
    assert sum(len(store.values[key]) for key in states) * 2 < sum(map(len, states.values()))
