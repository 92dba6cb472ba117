"""A worker's data directory kept across a restart of the embedded broker: rebuilt from the new broker, never mixed.

The embedded broker keeps everything in memory, so a restarted one is empty, and each process is a
cluster of its own id. A worker started on a data directory built against the earlier process must
notice (its store records the cluster it was built from), say so in one warning, discard its local
copy and rebuild from the new broker's changelog: no crash, no crash loop, and the numbers of the
new broker's events only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stream.broker import EmbeddedBroker
from stream.simulation import generate_count
from tests.integration.processes import produce_events, running_worker
from tests.integration.test_worker import converges, replayed

pytestmark = pytest.mark.integration

STALE_STORE_WARNING = "the local store does not match the broker's changelog"


def test_a_data_directory_from_before_a_broker_restart_is_rebuilt_from_the_new_broker_with_a_warning(
    tmp_path: Path, topic_prefix: str
) -> None:
    before = list(generate_count(1200, seed=21))
    after = list(generate_count(2500, seed=22))
    later = list(generate_count(600, seed=23))
    kept = tmp_path / "kept-data"
    with EmbeddedBroker() as first, running_worker(first.url, topic_prefix, kept) as worker:
        asyncio.run(produce_events(first.bootstrap, topic_prefix, before, envelope_size=100))
        worker.wait_for(len(before))
        assert worker.stop() == 0
    with EmbeddedBroker() as restarted:
        # another worker of the group writes the new broker's changelog past the kept store's offsets, so
        # only the cluster id can tell the kept copy is not a prefix of it
        with running_worker(restarted.url, topic_prefix, tmp_path / "other-data") as other:
            asyncio.run(produce_events(restarted.bootstrap, topic_prefix, after, envelope_size=100))
            other.wait_for(len(after))
            assert other.stop() == 0
        with running_worker(restarted.url, topic_prefix, kept) as worker:
            converges(worker, replayed(after), seconds=120)
            asyncio.run(produce_events(restarted.bootstrap, topic_prefix, later, envelope_size=100))
            worker.wait_for(len(after) + len(later))
            converges(worker, replayed(after + later), seconds=120)
            counts = worker.status()["input"]
            assert worker.stop() == 0
    assert counts["accepted"] + counts["duplicates"] == len(after) + len(later)
    log = worker.log.read_text()
    warnings = [line for line in log.splitlines() if STALE_STORE_WARNING in line]
    assert len(warnings) == 1, log[-4000:]
    assert "[WARNING]" in warnings[0]
    assert "built from broker cluster 'leadlag-embedded-" in warnings[0]
    assert "discarding the local copy of partitions [0, 1, 2, 3] and rebuilding them from the changelog" in warnings[0]
    assert "Traceback" not in log
