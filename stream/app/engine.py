"""The engine: consume a batch, judge and fold it, send what it emitted, write the changelog, commit.

One consumer in the worker's group reads the five input topics and
`leadlag.entities` (all with the same partition count) under an assignor that
gives one member partition p of every topic (`stream.app.assignor`). Each
**step** takes what one `getmany` returned — many messages of many partitions,
single events and envelopes alike, cut into steps of about `STEP_EVENTS` —
and, under the step lock:

1. judges each input message (`stream.app.intake`) and folds each valid event
   at once when this worker owns its entity's partition (`stream.app.fold`);
   events of partitions owned elsewhere are routed to `leadlag.entities`, and so
   are the links the reducers emit (always: see `stream.app.fold`);
2. sends the routed items and the dead letters, and waits for the broker to
   acknowledge every one;
3. writes each changed entity once, with the buckets of each partition's
   totals the step touched and its marks and input counts, to the changelog in
   producer batches, and the same records less the entities to the totals
   topic (what the other workers follow, `stream.app.company`), and waits for
   the acks of both;
4. writes the same records to the local store with the changelog offset they
   reach (`stream.state`);
5. commits the input offsets of the step.

So at any instant the committed input offsets are behind the changelog and
the routed messages, and the local store is behind the changelog. A crash
(SIGKILL at any point) replays the uncommitted messages: an event whose state
reached the changelog is a duplicate there (its links were delivered in 2, and
are re-emitted anyway), one whose state did not is folded afresh, and a local
store behind the changelog catches up from it at start-up. Links and
duplicate events are idempotent at their targets, so the replayed tail changes
nothing that was already counted: at-least-once delivery, exactly-once
figures. The input counts travel with the state, with how far into each
input partition they count (`stream.app.fold.Tally`), so a restart keeps
them, and a message read again below that mark is not counted twice: the
counts equal `leadlag replay`'s. (Without broker transactions a
worker that lost its group membership while stuck mid-step can still write
after its successor started: a zombie Kafka cannot fence without them, and the
embedded broker has none.)

Messages of different partitions are folded merged by record timestamp
(`runs_in_time_order`), each partition in offset order.

Rebalances: the revoke callback waits for the step in progress; the
assignment callback only records the new partitions; the next step first
brings every owned partition's store up to the changelog's true end offset
(`stream.state.changelog.catch_up`) and reads afresh the partitions that
changed (their totals and counts are in the changelog too). A partition kept
across a rebalance keeps its state, and a changelog written meanwhile by
another worker is caught up from.

Why not Faust's agents and tables: measured on the project's machine, Faust
iterates 4-12 k single-event messages/s and its table writes 3-4 k keys/s,
while one aiokafka consumer decodes 300 k+ messages/s and the producer writes
~250 k records/s in batches. Faust still hosts the worker: its
lifecycle and signals, web server, timers and runtime sensors.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition
from mode import Service

from schemas.deadletter import deadletter_key_of
from stream.app import tansu
from stream.app.admin import ENTITIES_TABLE, bootstrap_servers, changelog_topic, client_options, totals_topic
from stream.app.assignor import CopartitionedAssignor
from stream.app.company import Company, Replica, earliest, latest
from stream.app.fold import Fold, Outbox, PartitionState, Tally
from stream.app.intake import Intake, Origin, dead_letter
from stream.app.outputs import UNRETRIABLE, send_with_retry, shrunk_dead_letter, split_to_fit
from stream.app.placement import entity_partition
from stream.app.sensors import FaustSensors
from stream.app.topics import Topics
from stream.codec import CodecError, InvalidItem, decode_items, encode_items
from stream.core.links import entity_of
from stream.core.policy import Policy
from stream.core.totals import Readable
from stream.settings import Settings
from stream.state.base import META_PREFIX, StateBackend
from stream.state.changelog import Changelog, catch_up, cluster_id
from stream.state.memory import MemoryBackend

log = logging.getLogger("leadlag.engine")

POLL_MS = 200
"""How long a step waits for input when there is none."""
STEP_EVENTS = 20_000
"""A step is flushed once it has folded about this many items (bounds its memory and its replay after a crash)."""
STEP_SECONDS = 1.0
"""A step goes on taking what the consumer has buffered for this long, unless `STEP_EVENTS` flushed it."""
STEP_MESSAGES = 100
"""Messages judged between two looks at the step's size."""
ROUTED_ITEMS_PER_MESSAGE = 500
ROUTED_BYTES = 900_000
"""Routed messages are also cut below this size (Kafka's default message limit is 1 MiB)."""
"""Items per `leadlag.entities` message (keeps a message far below the broker's size limit)."""
MAX_PARTITION_FETCH_BYTES = 256 * 1024
FETCH_MAX_BYTES = 4 * 1024 * 1024
"""What one step reads at most: ~40 k events of ~200 bytes, so a step's memory and latency stay bounded."""
MAX_REQUEST_BYTES = 4 * 1024 * 1024
PRODUCER_BATCH_BYTES = 512 * 1024
EMBEDDED_GROUP_TIMEOUTS_MS = {
    "rebalance_timeout_ms": 4_000,
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 3_000,
}
"""With these the embedded broker's first join takes seconds; with larger ones, half a minute to two."""
FATAL_EXIT = 70
STOP_STEP_SECONDS = 4.0
"""How long stopping waits for the step in progress (it waits for the broker's acknowledgements)."""
STOP_CLIENT_SECONDS = 2.0
"""How long stopping waits for each Kafka client to close (a vanished broker would hold it 40 s or more)."""
VOICE_PARTITION = 0
"""The worker owning this partition publishes the company's snapshot and alerts (one voice)."""
LAG_TIMEOUT_SECONDS = 10.0
"""A lag measurement the broker has not answered by then counts as failed (readiness: `broker`)."""


class RuntimeCounts:
    """What this process has seen since it started (the persisted input counts live in `Fold`)."""

    __slots__ = ("deadletters", "events_in", "messages_in", "rebalances", "steps")

    def __init__(self) -> None:
        self.deadletters: dict[str, int] = defaultdict(int)
        self.messages_in: dict[str, int] = defaultdict(int)
        self.events_in: dict[str, int] = defaultdict(int)
        self.steps = 0
        self.rebalances = 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.engine.on_revoked()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.engine.on_assigned(set(assigned))


class Engine(Service):
    """The worker's stream processing (see the module docstring); a `mode` service the Faust app runs."""

    def __init__(self, settings: Settings, policy: Policy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.policy = policy
        self.topics = Topics(settings.topic_prefix)
        self.partitions = settings.partitions
        self.embedded = settings.broker_kind == "embedded"
        self.changelog_topic = changelog_topic(settings.app_id, ENTITIES_TABLE)
        self.totals_topic = totals_topic(settings.app_id, ENTITIES_TABLE)
        """The changelog's totals, marks and counts records again, without the entity records: what the
        follower reads of the partitions owned elsewhere (most changelog records are entities)."""
        self.intake = Intake(policy, settings.partitions)
        self.fold = Fold(policy, settings.partitions)
        self.counts = RuntimeCounts()
        self.company = Company(policy, settings.partitions)
        """The partitions owned elsewhere, read from their changelog (the whole company's figures)."""
        self.unowned = Tally()
        """Input counted on a partition this worker does not own the entities of (only with a foreign assignor)."""
        self.backend: StateBackend
        if settings.store == "rocksdb":
            from stream.state.rocksdb import RocksBackend  # only here: RocksDB's library costs 8 MiB of RSS

            self.backend = RocksBackend(settings.data_dir / f"{settings.app_id}-entities")
        else:
            self.backend = MemoryBackend()
        self.lock = asyncio.Lock()
        """The step lock: held by a step (recovery included), a snapshot build and a publication."""
        self.replicas_lock = asyncio.Lock()
        """Held by the follower while it applies a fetch to the replicas (never across an await), and by a snapshot
        build (which reads them in a thread). Not the step lock: the follower's work overlaps a step's waits for
        the broker."""
        self.recovering = True
        self.version = 0
        """Moves whenever the totals may have changed: the read model rebuilds only then."""
        self.committed: dict[TopicPartition, int] = {}
        self.lag: dict[tuple[str, int], int] = {}
        self.company_lag: dict[tuple[str, int], int] = {}
        """The consumer group's lag on every input partition, whoever owns it (the voice's lag alert)."""
        # readiness (stream.app.health): what the group, the broker and the lag timer last said
        self.assignment_received = False
        self.rebalancing = False
        self.broker_seen_at: float | None = None
        """When a request to the broker last succeeded (monotonic seconds)."""
        self.lag_measured = False
        """Whether the lag of the current assignment has been measured."""
        self._assigned: set[TopicPartition] | None = None
        self._stopping = False
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._follower: AIOKafkaConsumer | None = None
        self._changelog: Changelog | None = None
        self._published: Changelog | None = None
        self._send_error: BaseException | None = None
        self._touched: dict[str, set[int]] = {}
        """Per origin ("topic/partition"), the owned partitions this flush folded its records into."""
        self.sensors: FaustSensors | None = None
        """Faust's runtime metrics, fed a step at a time (set by the worker once its web pages exist)."""

    # -- lifecycle ----------------------------------------------------------------------
    async def on_start(self) -> None:
        settings = self.settings
        servers = bootstrap_servers(settings.broker)
        options = client_options(settings)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=servers,
            client_id=f"{settings.app_id}-worker",
            acks="all",
            linger_ms=0,
            max_batch_size=PRODUCER_BATCH_BYTES,
            max_request_size=MAX_REQUEST_BYTES,
            **options,
        )
        # group-less consumers of the changelog: one catches up owned partitions, one follows the others
        self._reader, self._follower = (
            AIOKafkaConsumer(
                bootstrap_servers=servers,
                client_id=f"{settings.app_id}-changelog-{role}",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES * 4,
                fetch_max_bytes=FETCH_MAX_BYTES * 4,
                **options,
            )
            for role in ("reader", "follower")
        )
        group: dict[str, Any] = dict(EMBEDDED_GROUP_TIMEOUTS_MS) if self.embedded else {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            client_id=f"{settings.app_id}-worker",
            group_id=settings.app_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(CopartitionedAssignor,),
            max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_MAX_BYTES,
            max_poll_interval_ms=600_000,
            **group,
            **options,
        )
        await self._producer.start()
        await self._reader.start()
        await self._follower.start()
        await self._consumer.start()
        if self.embedded:
            tansu.leave_group_in_generation_0(self._consumer)
        self._changelog = Changelog(self.changelog_topic, self._producer)
        self._published = Changelog(self.totals_topic, self._producer)
        self._consumer.subscribe([*self.topics.inputs, self.topics.entities], listener=_Rebalance(self))

    async def on_stop(self) -> None:
        """Let the step in progress finish (it commits), then leave the group and close everything.

        Bounded, also when the broker is gone (docs/architecture.md, "Stopping"): a step still waiting for the
        broker after `STOP_STEP_SECONDS` is abandoned (its input is read again by the next owner, as after a
        crash: its local store is only written after the changelog acknowledged), and each client gets
        `STOP_CLIENT_SECONDS` to close (leave the group, flush).
        """
        self._stopping = True
        locked = await _acquire_within(self.lock, STOP_STEP_SECONDS)
        if not locked:
            log.warning(
                "the step in progress is still waiting for the broker after %.0f s: abandoning it "
                "(its input will be read again)",
                STOP_STEP_SECONDS,
            )
        try:
            clients = (
                ("consumer", self._consumer),
                ("changelog reader", self._reader),
                ("changelog follower", self._follower),
                ("producer", self._producer),
            )
            for name, client in clients:
                if client is not None:
                    try:
                        await asyncio.wait_for(client.stop(), STOP_CLIENT_SECONDS)
                    except asyncio.CancelledError as exc:  # aiokafka re-raises its own cancelled tasks' end
                        task = asyncio.current_task()
                        if task is not None and task.cancelling():
                            raise
                        log.warning("the %s did not close cleanly (%r): the broker may be gone", name, exc)
                    except Exception as exc:  # TimeoutError, KafkaError, or worse: closing must go on
                        log.warning("the %s did not close cleanly (%r): the broker may be gone", name, exc)
            # an abandoned step fails once the producer is closed: its stores can then be closed
            locked = locked or await _acquire_within(self.lock, STOP_CLIENT_SECONDS)
            if locked:
                for partition in list(self.fold.parts):
                    part = self.fold.disown(partition)
                    if part is not None:
                        part.store.close()
        finally:
            if locked:
                self.lock.release()

    @Service.task
    async def _consume(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the worker must not hang on a dead loop: exit for the supervisor
            if self._stopping:  # a step abandoned by `on_stop`: its clients were closed under it
                log.warning("the step in progress ended with %r while stopping", exc)
                return
            fatal("engine", exc)

    @Service.task
    async def _follow(self) -> None:
        try:
            await self._follow_changelog()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self._stopping:
                return
            fatal("changelog follower", exc)

    async def _follow_changelog(self) -> None:
        """Keep a replica of every partition owned elsewhere, read from its totals topic (`stream.app.company`).

        Pauses while the worker recovers; after each assignment it follows exactly the partitions not owned,
        each from where its replica stands (a partition given up is handed over, not read again).
        """
        follower = self.follower
        following: dict[int, Replica] = {}
        while not self._stopping:
            if self.recovering or self._assigned is not None:
                await asyncio.sleep(POLL_MS / 1000)
                continue
            replicas = self.company.replicas
            if following.keys() != replicas.keys() or any(following[p] is not r for p, r in replicas.items()):
                following = dict(replicas)
                await self._refollow(following)
            if not following:
                await asyncio.sleep(POLL_MS / 1000)
                continue
            try:
                fetched = await follower.getmany(timeout_ms=POLL_MS)
            except ConsumerStoppedError:
                return
            # up to where this fetch got, past any gap a compacted changelog has; asked before the lock, because
            # nothing may wait while holding it: a snapshot build waits for it holding the step lock
            reached = {tp: await follower.position(tp) for tp in fetched}
            changed = False
            async with self.replicas_lock:  # not while a snapshot reads them (`LeadlagWorker._refresh`)
                for tp, records in fetched.items():
                    replica = following.get(tp.partition)
                    if replica is None or self.company.replicas.get(tp.partition) is not replica:
                        continue  # handed over or taken meanwhile: the next round follows it afresh
                    for record in records:
                        changed |= replica.apply(record.offset, record.key, record.value)
                    replica.offset = max(replica.offset, reached[tp])
            if changed:
                self.version += 1

    async def _refollow(self, replicas: Mapping[int, Replica]) -> None:
        """Point the follower at exactly these replicas' totals topic partitions, each from its offset."""
        follower = self.follower
        wanted = [TopicPartition(self.totals_topic, partition) for partition in sorted(replicas)]
        follower.assign(wanted)
        for tp in wanted:
            follower.seek(tp, replicas[tp.partition].offset)
        unknown = [tp for tp in wanted if replicas[tp.partition].target is None]
        if unknown:
            ends = await tansu.end_offsets(follower, unknown, embedded=self.embedded)
            for tp, end in ends.items():
                replicas[tp.partition].target = end
        log.info(
            "following the totals of partitions %s (owned elsewhere) for the whole company's figures",
            sorted(replicas),
        )

    @property
    def follower(self) -> AIOKafkaConsumer:
        assert self._follower is not None, "the engine has not started"
        return self._follower

    async def _run(self) -> None:
        consumer = self.consumer
        while not self._stopping:
            try:
                fetched = await consumer.getmany(timeout_ms=POLL_MS)
            except ConsumerStoppedError:
                return
            async with self.lock:
                if self._stopping:
                    return
                if self._assigned is not None:
                    await self._recover()
                if fetched:
                    owned = consumer.assignment()
                    mine = {tp: records for tp, records in fetched.items() if tp in owned and records}
                    if mine:
                        await self._step(mine)

    @property
    def consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "the engine has not started"
        return self._consumer

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "the engine has not started"
        return self._producer

    # -- rebalance ------------------------------------------------------------------------
    async def on_revoked(self) -> None:
        """Wait for the step in progress (it commits what it read); states stay until the next assignment."""
        self.rebalancing = True
        async with self.lock:
            self.recovering = True

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assigned = assigned
        self.recovering = True
        self.assignment_received = True
        self.rebalancing = False
        self.lag_measured = False

    async def _recover(self) -> None:
        """Own exactly the newly assigned partitions, each caught up with its changelog."""
        assigned, self._assigned = self._assigned or set(), None
        started = time.perf_counter()
        wanted = {tp.partition for tp in assigned if tp.topic == self.topics.entities}
        fold = self.fold
        for partition in sorted(set(fold.parts) - wanted):
            part = fold.disown(partition)
            if part is not None:
                self.company.hand_over(part)
                part.store.close()
        taken = sorted(wanted - set(fold.parts))
        for partition in taken:
            fold.own(PartitionState(self.backend.open(partition), self.policy))
        stores = {partition: part.store for partition, part in fold.parts.items()}
        before = {partition: store.offset for partition, store in stores.items()}
        changelog = [TopicPartition(self.changelog_topic, partition) for partition in stores]
        ends = await tansu.end_offsets(self.reader, changelog, embedded=self.embedded)
        origin = await cluster_id(self.reader)  # a store built on another (restarted) broker is rebuilt
        ends_by_partition = {tp.partition: end for tp, end in ends.items()}
        applied = await catch_up(self.reader, self.changelog_topic, stores, ends_by_partition, origin)
        reloaded = [p for p, store in stores.items() if applied.get(p) or store.offset != before[p]]
        for partition in reloaded:
            fold.reload(partition)
        await self._publish_taken(taken)
        self.company.follow(fold.parts)
        self.committed = {tp: offset for tp, offset in self.committed.items() if tp in assigned}
        self.counts.rebalances += 1
        self.version += 1
        self.broker_seen_at = time.monotonic()
        self.recovering = False
        log.info(
            "partitions %s: %d changelog records caught up in %.2f s (partitions read afresh: %s)",
            sorted(wanted),
            sum(applied.values()),
            time.perf_counter() - started,
            reloaded or "none",
        )

    async def _publish_taken(self, taken: list[int]) -> None:
        """Publish the whole totals, marks and counts of each partition taken on the totals topic.

        Why in full: whatever the last owner managed to publish before it stopped (a crash between the two
        appends of a flush, a release that had no totals topic), the topic then holds exactly what this
        owner holds, and the other workers' replicas read it (`stream.app.company`). Bound: the
        partition's buckets, once per ownership.
        """
        parts = self.fold.parts
        records = {partition: parts[partition].company_records() for partition in taken}
        if records:
            published = await self.published.append(records)
            for partition in taken:
                parts[partition].published = published.get(partition, parts[partition].published)

    @property
    def changelog(self) -> Changelog:
        assert self._changelog is not None, "the engine has not started"
        return self._changelog

    @property
    def published(self) -> Changelog:
        assert self._published is not None, "the engine has not started"
        return self._published

    @property
    def reader(self) -> AIOKafkaConsumer:
        assert self._reader is not None, "the engine has not started"
        return self._reader

    # -- one step -------------------------------------------------------------------------
    async def _step(self, fetched: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Judge and fold what one `getmany` returned, in time order, and what the consumer has buffered
        since (for up to `STEP_SECONDS`), flushing every `STEP_EVENTS` items or so.

        Why take more than one poll: a flush rewrites every hour bucket the step touched, and every other
        worker reads those records back (`stream.app.company`); a backlog read in small polls would
        rewrite the same buckets over and over.
        """
        outbox = Outbox()
        done: dict[TopicPartition, int] = {}
        items = 0
        started = step_started = time.perf_counter()
        entities_topic = self.topics.entities
        sensors = self.sensors
        batch: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = fetched
        while batch:
            for tp, run in runs_in_time_order(batch, STEP_MESSAGES):
                handle = self._fold_routed if tp.topic == entities_topic else self._judge_input
                items += handle(tp, run, outbox)
                done[tp] = run[-1].offset + 1
                if sensors is not None:
                    sensors.received(tp.topic, tp.partition, len(run), run[-1].offset)
                if items >= STEP_EVENTS:
                    await self._flush(outbox, done, items, started)
                    outbox, done, items, started = Outbox(), {}, 0, time.perf_counter()
            if self._stopping or not done or time.perf_counter() - step_started > STEP_SECONDS:
                break
            consumer = self.consumer
            more = await consumer.getmany(timeout_ms=0)  # only what is buffered: never waits for the broker
            owned = consumer.assignment()
            batch = {tp: records for tp, records in more.items() if tp in owned and records}
        if done:
            await self._flush(outbox, done, items, started)

    async def _flush(self, outbox: Outbox, offsets: dict[TopicPartition, int], items: int, started: float) -> None:
        """Make a step durable in the one safe order: outbox, changelog, local store, input offsets."""
        await self._send(outbox)
        parts = self.fold.parts
        self._mark_through(offsets)
        changes = {p: part.changes() for p, part in parts.items() if part.changed()}
        if changes:
            ends, published = await asyncio.gather(
                self.changelog.append(changes), self.published.append(company_part(changes))
            )
            for partition, written in changes.items():
                part = parts[partition]
                part.persisted(written, ends[partition])
                part.published = published.get(partition, part.published)
        self.counts.steps += 1
        self.version += 1
        await self._commit(offsets)
        if self.sensors is not None:
            records = [value for written in changes.values() for value in written.values()]
            deleted = sum(1 for value in records if value is None)
            retrieved = sum(part.reads for part in parts.values())
            for part in parts.values():
                part.reads = 0
            self.sensors.table(retrieved, len(records) - deleted, deleted)
            self.sensors.sent({self.changelog_topic: len(records)})
            self.sensors.folded("leadlag", items, time.perf_counter() - started)

    def _mark_through(self, offsets: dict[TopicPartition, int]) -> None:
        """Record in each owned partition's counts how far into each origin it has absorbed (see `Tally`)."""
        parts = self.fold.parts
        touched = self._touched
        for tp, offset in offsets.items():
            origin = origin_key(tp)
            marked = touched.pop(origin, set())
            if tp.partition in parts:
                marked.add(tp.partition)
            for partition in marked:
                part = parts.get(partition)
                if part is not None:
                    part.tally.through[origin] = offset
                    part.meta_changed = True
        touched.clear()

    def _marks(self, tp: TopicPartition) -> tuple[str, int, set[int]]:
        """For records of `tp`: its origin key, the offset its own partition counted through (records below it
        are read again after a crash), and this flush's set of partitions its records are folded into."""
        origin = origin_key(tp)
        part = self.fold.parts.get(tp.partition)
        counted = 0 if part is None else part.tally.through.get(origin, 0)
        return origin, counted, self._touched.setdefault(origin, set())

    def _absorbed(self, origin: str, offset: int, target: int) -> bool:
        """Whether `target` (owned) already holds what the record at `offset` of `origin` folded into it."""
        return offset < self.fold.parts[target].tally.through.get(origin, 0)

    def _judge_input(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]], outbox: Outbox) -> int:
        """Judge input messages, fold the events of owned partitions, route the others; the events read.

        A record read again after a crash is folded again (folds are idempotent, and a duplicate re-sends its
        links) but counted once: below its own partition's mark it was counted and its dead letters sent, and
        a target that absorbed it does not count it as a duplicate (`Tally`).
        """
        fold, intake = self.fold, self.intake
        parts = fold.parts
        part = parts.get(tp.partition)
        tally = part.tally if part is not None else self.unowned
        topic, partition = tp.topic, tp.partition
        counts = self.counts
        late_checked = self.policy.grace_ms is not None
        others = self.company.newest_ms()  # lateness is judged against the company's clock
        newest = latest(fold.newest_ms(), others) if late_checked else None
        origin_id, counted, touched = self._marks(tp)
        now_ms = int(time.time() * 1000)  # the wall clock bounds event time (README, "Input events")
        read = 0
        for record in records:
            origin = Origin(topic, partition, record.offset)
            judged = intake.judge(record.value or b"", origin, newest, now_ms)
            counts.events_in[topic] += judged.read
            if record.offset >= counted:
                read += judged.read
                if judged.invalid or judged.rejected:
                    tally.invalid += judged.invalid
                    tally.rejected += judged.rejected
                    for kind, letter in judged.dead_letters:
                        counts.deadletters[kind] += 1
                        tally.letter(kind)
                        outbox.dead_letters.append((partition, letter))
            for target, event in judged.events:
                if target in parts:
                    replayed = self._absorbed(origin_id, record.offset, target)
                    fold.fold(target, event, outbox, origin, replayed=replayed)
                    touched.add(target)
                else:
                    outbox.route(target, event)
            if late_checked:
                newest = latest(fold.newest_ms(), others)
        tally.events += read
        if part is not None:
            part.meta_changed = True
        counts.messages_in[topic] += len(records)
        return read

    def _fold_routed(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]], outbox: Outbox) -> int:
        """Fold routed items (events and links) into owned partitions, forward the others; the items read."""
        fold, partitions = self.fold, self.partitions
        parts = fold.parts
        origin_id, counted, touched = self._marks(tp)
        read = 0
        for record in records:
            origin = Origin(tp.topic, tp.partition, record.offset)
            again = record.offset < counted
            raw = record.value or b""
            try:
                items = decode_items(raw, validate=True)
            except CodecError as exc:  # another release, damaged, or not leadlag's: never folded, explained
                if again:
                    continue
                invalid = isinstance(exc, InvalidItem)
                reason = f"internal error: {'invalid' if invalid else 'undecodable'} routed batch: {exc}"
                kind = "internal_invalid" if invalid else "internal_error"
                self.counts.deadletters[kind] += 1
                tally = parts[tp.partition].tally if tp.partition in parts else self.unowned
                tally.rejected += 1
                tally.letter(kind)
                outbox.dead_letters.append(
                    (tp.partition, dead_letter(raw, reason, origin, None, self.policy.limits.deadletter_max_bytes))
                )
                continue
            read += len(items)
            for item in items:
                kind, key = entity_of(item)
                target = entity_partition(kind, key, partitions)
                if target in parts:
                    fold.fold(target, item, outbox, origin, replayed=self._absorbed(origin_id, record.offset, target))
                    touched.add(target)
                else:
                    outbox.route(target, item)
        return read

    async def _send(self, outbox: Outbox) -> None:
        """Send the step's routed items and dead letters; return once the broker acknowledged them all.

        Each message is tried `LEADLAG_SEND_ATTEMPTS` times with doubling waits; then the worker stops with
        a clear message (`stream.app.outputs`): the step's input is not committed, so nothing is lost. A
        dead letter the broker refuses as too large is sent again without its original bytes.
        """
        entities, deadletter = self.topics.entities, self.topics.deadletter
        pending: list[tuple[str, int, bytes]] = [
            (entities, target, value)
            for target, items in outbox.routed.items()
            for start in range(0, len(items), ROUTED_ITEMS_PER_MESSAGE)
            for value in split_to_fit(items[start : start + ROUTED_ITEMS_PER_MESSAGE], encode_items, ROUTED_BYTES)
        ]
        pending.extend((deadletter, partition, letter) for partition, letter in outbox.dead_letters)
        if not pending:
            return
        sent = len(pending)
        letters = len(outbox.dead_letters)

        async def attempt() -> None:
            nonlocal pending
            pending = await self._send_once(pending)
            if pending:
                raise self._send_error or RuntimeError("not acknowledged")

        await send_with_retry(attempt, f"{sent} routed messages and dead letters", self.settings.send_attempts)
        if self.sensors is not None:
            self.sensors.sent({entities: sent - letters, deadletter: letters})

    async def _send_once(self, messages: list[tuple[str, int, bytes]]) -> list[tuple[str, int, bytes]]:
        """Send every message once; the ones not acknowledged (`_send_error` holds the last error)."""
        producer = self.producer
        deadletter = self.topics.deadletter
        futures: list[asyncio.Future[Any] | BaseException] = []
        for topic, partition, value in messages:
            key = deadletter_key_of(value) if topic == deadletter else None  # the same input, the same key
            try:
                futures.append(await producer.send(topic, value, key=key, partition=partition))
            except UNRETRIABLE as exc:
                if topic != deadletter:
                    raise
                shrunk = shrunk_dead_letter(value, type(exc).__name__)
                futures.append(await producer.send(topic, shrunk, key=key, partition=partition))
            except Exception as exc:  # kept for the retry; never logged with the message
                futures.append(exc)
        waiting = [f for f in futures if not isinstance(f, BaseException)]
        outcomes = iter(await asyncio.gather(*waiting, return_exceptions=True))
        failed: list[tuple[str, int, bytes]] = []
        for message, future in zip(messages, futures, strict=True):
            outcome = future if isinstance(future, BaseException) else next(outcomes)
            if not isinstance(outcome, BaseException):
                continue
            topic, partition, value = message
            if isinstance(outcome, UNRETRIABLE) and topic == deadletter:
                message = (topic, partition, shrunk_dead_letter(value, type(outcome).__name__))
            elif isinstance(outcome, UNRETRIABLE):
                raise outcome
            self._send_error = outcome
            failed.append(message)
        return failed

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        started = time.perf_counter()
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # everything the step produced is durable: its input is folded again (as duplicates) by the next owner
            log.warning("input offsets not committed (%s): the step's input will be read again", exc)
            return
        self.committed.update(offsets)
        if self.sensors is not None:
            self.sensors.committed(time.perf_counter() - started)

    # -- what the read side asks ------------------------------------------------------------
    def input_tally(self) -> Tally:
        """The company's input counts: the owned partitions', the replicas', and any counted unowned."""
        total = self.fold.tally()
        total.add(self.unowned)
        total.add(self.company.tally())
        return total

    def newest_ms(self) -> int | None:
        """The company's clock: the newest event time of any partition (docs/architecture.md, "One clock")."""
        return latest(self.fold.newest_ms(), self.company.newest_ms())

    def earliest_ms(self) -> int | None:
        return earliest(self.fold.earliest_ms(), self.company.earliest_ms())

    def totals(self) -> Readable:
        """The company's totals: the owned partitions' and every replica's, read as one."""
        return self.company.totals(part.totals for part in self.fold.parts.values())

    def speaks(self) -> bool:
        """Whether this worker is the company's voice: it owns partition 0 (moving with it on rebalance)."""
        return not self.recovering and self._assigned is None and VOICE_PARTITION in self.fold.parts

    def company_behind(self) -> list[int]:
        """Partitions owned elsewhere whose changelog the follower has not read up to where it stood."""
        return self.company.behind()

    async def read_alerts(self) -> dict[bytes, bytes | None]:
        """The last record of each alert on the alert topic (the voice learns what was announced before it).

        Call it holding the step lock: it borrows the changelog reader, which catching up also uses."""
        return await last_by_key(self.reader, [TopicPartition(self.topics.alerts, 0)], self.embedded)

    def owned_partitions(self) -> list[int]:
        return sorted(self.fold.parts)

    async def measure_lag(self) -> None:
        """Refresh the consumer lag (it asks the broker: a timer calls it, never a scrape)."""
        if self.recovering or self._consumer is None or self._reader is None:
            return
        try:
            self.lag = await asyncio.wait_for(
                tansu.consumer_lag(
                    self._reader, self._consumer.assignment(), dict(self.committed), embedded=self.embedded
                ),
                LAG_TIMEOUT_SECONDS,
            )
        except Exception as exc:  # the broker did not answer: readiness says so once this lasts
            log.debug("consumer lag not measured this time: %s: %s", type(exc).__name__, exc)
            return
        self.broker_seen_at = time.monotonic()
        self.lag_measured = not self.recovering
        if self.speaks():
            await self._measure_company_lag()

    async def _measure_company_lag(self) -> None:
        """The group's lag on every input partition, from its committed offsets (the voice's lag alert)."""
        consumer = self.consumer
        wanted = [
            TopicPartition(topic, partition) for topic in self.topics.inputs for partition in range(self.partitions)
        ]
        try:
            committed = await asyncio.wait_for(
                asyncio.gather(*(consumer.committed(tp) for tp in wanted)), LAG_TIMEOUT_SECONDS
            )
            known = {tp: offset for tp, offset in zip(wanted, committed, strict=True) if offset is not None}
            self.company_lag = await asyncio.wait_for(
                tansu.consumer_lag(self.reader, wanted, known, embedded=self.embedded), LAG_TIMEOUT_SECONDS
            )
        except Exception as exc:  # kept from the last measurement; readiness watches the broker
            log.debug("company lag not measured this time: %s: %s", type(exc).__name__, exc)


async def last_by_key(
    reader: AIOKafkaConsumer, partitions: list[TopicPartition], embedded: bool
) -> dict[bytes, bytes | None]:
    """The last value of each key in `partitions` up to their true end (bound: one entry per key).

    `reader` is a started consumer without a group, not in use meanwhile (the caller holds the step lock,
    as catching up does); its assignment is replaced and cleared.
    """
    ends = await tansu.end_offsets(reader, partitions, embedded=embedded)
    wanted = [tp for tp in partitions if ends.get(tp, 0) > 0]
    latest_values: dict[bytes, bytes | None] = {}
    if not wanted:
        return latest_values
    try:
        reader.assign(wanted)
        for tp in wanted:
            reader.seek(tp, 0)
        deadline = time.monotonic() + LAG_TIMEOUT_SECONDS
        while [tp for tp in wanted if await reader.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {sorted(map(str, wanted))} did not reach its end in time")
            fetched = await reader.getmany(*wanted, timeout_ms=POLL_MS)
            for tp in wanted:
                for record in fetched.get(tp, []):
                    if record.offset < ends[tp] and record.key is not None:
                        latest_values.pop(record.key, None)  # re-inserted last: the order of announcements
                        latest_values[record.key] = record.value
    finally:
        reader.assign([])
    return latest_values


def runs_in_time_order(
    fetched: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]], longest: int
) -> Iterator[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]:
    """The records of all partitions merged by record timestamp, as runs of at most `longest` records of one
    partition; each partition's records stay in offset order (so a step's offsets are always a prefix).

    Why: events an entity received in one order, spread by producers over several partitions, are then
    folded in about that order, as Kafka Streams picks the partition with the oldest head record. Order
    does not change the figures, but a duplicate older than the dedupe horizon does (it counts again),
    and folding a re-sent event before its entity's later events keeps it inside the horizon.
    """
    partitions = list(fetched)
    tagged = [[(index, record) for record in fetched[tp]] for index, tp in enumerate(partitions)]
    merged = heapq.merge(*tagged, key=lambda pair: pair[1].timestamp)
    for index, group in itertools.groupby(merged, key=itemgetter(0)):
        run = [record for _, record in group]
        for start in range(0, len(run), longest):
            yield partitions[index], run[start : start + longest]


def company_part(changes: Mapping[int, Mapping[bytes, bytes | None]]) -> dict[int, dict[bytes, bytes | None]]:
    """Of each partition's changelog records, those the other workers read: totals, marks, counts."""
    return {
        partition: {key: value for key, value in written.items() if key.startswith(META_PREFIX)}
        for partition, written in changes.items()
    }


def origin_key(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


async def _acquire_within(lock: asyncio.Lock, seconds: float) -> bool:
    """Acquire `lock` unless it takes longer than `seconds`; whether it was acquired."""
    try:
        await asyncio.wait_for(lock.acquire(), seconds)
    except TimeoutError:
        return False
    return True


def fatal(what: str, exc: BaseException) -> None:
    """A crashed loop would leave the worker hanging: log it plainly and exit non-zero for the supervisor."""
    log.critical(
        "%s crashed: %s: %s; stopping the worker (exit %d)", what, type(exc).__name__, exc, FATAL_EXIT, exc_info=exc
    )
    logging.shutdown()
    os._exit(FATAL_EXIT)
