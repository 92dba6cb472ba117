"""The changelog: written in producer batches, read back to its true end into a local store.

`Changelog.append` writes each partition's records with `create_batch` /
`send_batch` (a plain aiokafka producer writes ~250 k records/s that way on the
project's machine, against ~3-4 k keys/s through Faust's per-key table path) and
returns, per partition, the offset after the last record once *every* record is
acknowledged: the offset a local store may then record as reached.

`catch_up` brings local stores up to given end offsets by reading the records
from each store's offset, in order, and applying them in atomic chunks (a crash
while catching up leaves a shorter, still consistent prefix). The end offsets
must be the true ones: on the embedded broker use `stream.app.tansu.end_offsets`,
which corrects the broker's listing after multi-record batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import TopicPartition

from stream.state.base import PartitionStore

log = logging.getLogger("leadlag.changelog")

APPLY_CHUNK_RECORDS = 20_000
"""Records applied to a local store per atomic write while catching up (bounds the memory it takes)."""
STALL_SECONDS = 120.0
"""Catching up that makes no progress for this long fails (the worker exits and is restarted)."""
FETCH_TIMEOUT_MS = 500


class ChangelogError(RuntimeError):
    """The changelog cannot be written or read as the worker needs; the message says what to do."""


class Changelog:
    """One compacted topic, partitioned like the entities, holding the latest state of every entity."""

    __slots__ = ("producer", "topic")

    def __init__(self, topic: str, producer: AIOKafkaProducer) -> None:
        self.topic = topic
        self.producer = producer

    async def append(self, records: Mapping[int, Mapping[bytes, bytes | None]]) -> dict[int, int]:
        """Write every partition's records in batches; per partition, the offset after its last one, once acked.

        Raises what the producer raises (the worker treats it as fatal: the records' fate is unknown).
        """
        producer = self.producer
        sent: list[tuple[int, int, Any]] = []
        for partition, entries in records.items():
            batch = producer.create_batch()
            count = 0
            for key, value in entries.items():
                if batch.append(key=key, value=value, timestamp=None) is None:
                    if count == 0:
                        raise ChangelogError(f"the record {key!r} ({len(value or b''):,} bytes) does not fit a batch")
                    sent.append((partition, count, await producer.send_batch(batch, self.topic, partition=partition)))
                    batch = producer.create_batch()
                    count = 0
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ChangelogError(f"the record {key!r} ({len(value or b''):,} bytes) does not fit a batch")
                count += 1
            if count:
                sent.append((partition, count, await producer.send_batch(batch, self.topic, partition=partition)))
        ends: dict[int, int] = {}
        for partition, count, delivered in sent:
            metadata = await delivered
            ends[partition] = max(ends.get(partition, 0), int(metadata.offset) + count)
        return ends


async def cluster_id(client: AIOKafkaConsumer) -> str | None:
    """The broker cluster's id (Metadata v2+), or None when the broker gives none; `client` is started."""
    kafka = client._client  # aiokafka keeps the cluster id of its metadata to itself
    response = await kafka.send(kafka.get_random_node(), MetadataRequest(topics=[]))
    found = getattr(response, "cluster_id", None)
    return str(found) if found else None


async def catch_up(
    reader: AIOKafkaConsumer,
    topic: str,
    stores: Mapping[int, PartitionStore],
    ends: Mapping[int, int],
    origin: str | None = None,
) -> dict[int, int]:
    """Apply the changelog records from each store's offset up to its end offset; records applied per partition.

    `reader` is a started consumer without a group; its assignment is replaced. `origin` is the broker's
    cluster id. A store built from another cluster's changelog, or whose offset is past its end (the
    changelog was recreated), is *stale*: it is cleared and rebuilt from offset 0, with one warning that
    names the partitions and why. A restarted embedded broker is an empty one with a new cluster id
    (`stream.broker`), so a data directory kept across it is rebuilt, never mixed with the new changelog.
    """
    stale: dict[int, str] = {}
    behind: dict[TopicPartition, PartitionStore] = {}
    for partition, store in stores.items():
        end = ends.get(partition, 0)
        if not store.complete and store.offset < end:
            store.clear()  # it kept only part of what it read: read it all again
        if origin is not None and store.origin not in (None, origin) and store.offset > 0:
            stale[partition] = f"built from broker cluster {store.origin!r}, this one is {origin!r}"
        elif store.offset > end:
            stale[partition] = f"at offset {store.offset} but the changelog ends at {end}"
        if partition in stale:
            store.clear()
        if origin is not None and store.origin != origin:
            store.set_origin(origin)
        if store.offset < end:
            behind[TopicPartition(topic, partition)] = store
    if stale:
        log.warning(
            "the local store does not match the broker's changelog %s (%s): the broker was replaced or "
            "restarted empty (the embedded broker keeps nothing); discarding the local copy of partitions %s "
            "and rebuilding them from the changelog",
            topic,
            "; ".join(f"partition {partition}: {why}" for partition, why in sorted(stale.items())),
            sorted(stale),
        )
    applied = dict.fromkeys(stores, 0)
    if not behind:
        return applied
    reader.assign(list(behind))
    for tp, store in behind.items():
        reader.seek(tp, store.offset)
    pending: dict[TopicPartition, dict[bytes, bytes | None]] = {tp: {} for tp in behind}
    reached = {tp: store.offset for tp, store in behind.items()}
    last_progress = time.monotonic()
    try:
        while any(reached[tp] < ends[tp.partition] for tp in behind):
            fetched = await reader.getmany(*behind, timeout_ms=FETCH_TIMEOUT_MS)
            if not fetched:
                if time.monotonic() - last_progress > STALL_SECONDS:
                    raise ChangelogError(
                        f"reading {topic} stalled at offsets {_offsets(reached)} short of {dict(ends)}"
                    )
                continue
            last_progress = time.monotonic()
            for tp, records in fetched.items():
                end = ends[tp.partition]
                if reached[tp] >= end:
                    continue
                chunk = pending[tp]
                for record in records:
                    if record.offset >= end:
                        break
                    if record.key is not None:
                        chunk[bytes(record.key)] = None if record.value is None else bytes(record.value)
                    applied[tp.partition] += 1
                # the position, not the last record: a compacted log has gaps, even at its end
                reached[tp] = min(end, max(reached[tp], await reader.position(tp)))
                if len(chunk) >= APPLY_CHUNK_RECORDS or reached[tp] >= end:
                    behind[tp].write(chunk, reached[tp])
                    pending[tp] = {}
    finally:
        reader.assign([])
    return applied


def _offsets(reached: Mapping[TopicPartition, int]) -> dict[int, int]:
    return {tp.partition: offset for tp, offset in reached.items()}
