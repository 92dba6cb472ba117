"""Specifies how a local store knows the broker it was built from, and what catching up does with one of another."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from stream.state.changelog import catch_up
from stream.state.memory import MemoryPartition
from stream.state.rocksdb import RocksPartition

NO_READER: Any = None
"""`catch_up` reads nothing when no store is behind its end offset."""


def test_a_rocksdb_store_keeps_its_origin_and_offset_across_a_reopen_and_never_lists_them(tmp_path: Path) -> None:
    store = RocksPartition(0, tmp_path / "partition-0")
    store.write({b"visitor:v-1": b"state"}, 7)
    store.set_origin("cluster-a")
    store.close()

    reopened = RocksPartition(0, tmp_path / "partition-0")

    assert (reopened.origin, reopened.offset) == ("cluster-a", 7)
    assert list(reopened.items()) == [(b"visitor:v-1", b"state")]
    reopened.clear()
    assert (reopened.origin, reopened.offset, list(reopened.items())) == (None, 0, [])
    reopened.close()


@pytest.mark.parametrize("backend", ["memory", "rocksdb"])
async def test_a_store_built_from_another_cluster_is_cleared_and_adopts_this_one_with_one_warning(
    tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    stale = MemoryPartition(2) if backend == "memory" else RocksPartition(2, tmp_path / "partition-2")
    stale.write({b"contact:c-1": b"old"}, 40)
    stale.set_origin("leadlag-embedded-before")
    fresh = MemoryPartition(3)  # nothing yet: it simply adopts the cluster

    with caplog.at_level(logging.WARNING, logger="leadlag.changelog"):
        applied = await catch_up(NO_READER, "app-entities-changelog", {2: stale, 3: fresh}, {2: 0, 3: 0}, "now")

    assert applied == {2: 0, 3: 0}
    assert (stale.offset, list(stale.items()), stale.origin) == (0, [], "now")
    assert fresh.origin == "now"
    [warning] = [record.getMessage() for record in caplog.records]
    assert "partition 2: built from broker cluster 'leadlag-embedded-before', this one is 'now'" in warning
    assert "discarding the local copy of partitions [2] and rebuilding them from the changelog" in warning


async def test_a_store_past_the_changelog_end_is_cleared_even_without_a_cluster_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryPartition(0)
    store.write({b"visitor:v-1": b"state"}, 12)

    with caplog.at_level(logging.WARNING, logger="leadlag.changelog"):
        await catch_up(NO_READER, "app-entities-changelog", {0: store}, {0: 0}, None)

    assert (store.offset, list(store.items()), store.origin) == (0, [], None)
    assert "partition 0: at offset 12 but the changelog ends at 0" in caplog.text


async def test_a_store_of_this_cluster_at_the_changelog_end_is_kept() -> None:
    store = MemoryPartition(1)
    store.write({b"visitor:v-1": b"state"}, 5)
    store.set_origin("now")

    await catch_up(NO_READER, "app-entities-changelog", {1: store}, {1: 5}, "now")

    assert (store.offset, list(store.items())) == (5, [(b"visitor:v-1", b"state")])
