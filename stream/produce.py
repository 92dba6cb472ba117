"""Simulated traffic into Kafka: as fast as possible, or live at a chosen speed with a scripted incident.

The one idea: the pure pieces — which topic and key an event gets
(`entity_key`), how events become messages (`Envelopes`: per-topic JSON
arrays of up to `envelope_size`, or one keyed event per message), how wall
time maps to event time in a live run (`LiveClock`, `live_scenario`) — are
separate from the one I/O class (`TrafficProducer`, around aiokafka), so they
are tested without a broker and the same messages come out of `simulate`,
`bench` and the demo.

A live run does not rewrite timestamps: its scenario starts on the real
calendar, everything before "now" is the backfill (sent at once), and the
rest is released when the live clock — `speed` simulated seconds per wall
second from the moment the live part starts — reaches its event time. So the
live part's event time is `now₀ + elapsed × speed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from schemas.events import EventType
from stream.app.admin import TopicSpec, bootstrap_servers, client_options, ensure_topics
from stream.app.placement import key_partition
from stream.app.topics import Topics
from stream.core.windows import DAY_MS, HOUR_MS, to_datetime, to_ms
from stream.settings import Settings
from stream.simulation import JsonEvent, Scenario, generate, generate_count

KEY_FIELD_OF_TYPE: dict[EventType, str] = {
    EventType.SITE_VISIT: "visitor_id",
    EventType.FORM_FILL: "contact_id",
    EventType.STAGE_CHANGE: "contact_id",
    EventType.SUBSCRIPTION: "account_id",
    EventType.SPEND: "channel",
}
"""The entity whose state an event changes (README, "Input events"): the message key of a single event."""

DEFAULT_ENVELOPE_SIZE = 200
MAX_REQUEST_BYTES = 16 * 1024 * 1024
LIVE_TICK_SECONDS = 0.25
"""How often a live run releases the events that came due: the latency it adds, at most."""
PROGRESS_SECONDS = 1.0


class ProduceError(RuntimeError):
    """The broker refused or lost a message; the message says which topic and why."""


def entity_key(event: JsonEvent) -> bytes:
    """The message key of a single event: the id of its entity (visitor, contact, account or channel)."""
    return str(event[KEY_FIELD_OF_TYPE[EventType(str(event["type"]))]]).encode()


def placement_key(event: JsonEvent) -> str:
    """The id the worker places an event's entity by (`stream.core.links.entity_of`): its entity's id, and
    for spend, the channel and UTC day (a spend state holds one channel's day)."""
    if event["type"] == EventType.SPEND.value:
        return f"{event['channel']}/{to_datetime(event_time_ms(event)).date()}"
    return entity_key(event).decode()


def event_time_ms(event: JsonEvent) -> int:
    """The event's `occurred_at` as epoch milliseconds."""
    return to_ms(datetime.fromisoformat(str(event["occurred_at"])))


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message: a single keyed event, or an envelope (JSON array) of `events` events."""

    topic: str
    key: bytes | None
    value: bytes
    events: int
    partition: int | None = None
    """Where an envelope goes when its events share an entity partition (None: the producer's choice)."""


class Envelopes:
    """Turns events into messages: per-topic envelopes of up to `envelope_size`, or keyed single events at 1.

    Envelopes carry no key. Without `partitions` an envelope may mix entities and the worker routes each
    event to its entity's partition itself (one hop through `leadlag.entities` for the events of partitions
    another worker owns). With `partitions` (the topics' partition count) each envelope holds the events of
    one entity partition and is sent to that partition, where they all fold without a hop: what lets
    several workers share envelopes without routing them to each other (docs/architecture.md, "One
    company, many workers").
    """

    __slots__ = ("envelope_size", "open", "partitions", "topics")

    def __init__(
        self, topics: Topics, envelope_size: int = DEFAULT_ENVELOPE_SIZE, partitions: int | None = None
    ) -> None:
        if envelope_size < 1:
            raise ValueError(f"envelope_size must be ≥ 1, got {envelope_size}")
        self.topics = topics
        self.envelope_size = envelope_size
        self.partitions = partitions
        self.open: dict[tuple[str, int | None], list[JsonEvent]] = {}

    def add(self, event: JsonEvent) -> Message | None:
        """The message completed by this event, if any (always one for single events)."""
        topic = self.topics.input_of(EventType(str(event["type"])))
        if self.envelope_size == 1:
            return Message(topic, entity_key(event), orjson.dumps(event), 1)
        partitions = self.partitions
        where = (topic, None if partitions is None else key_partition(placement_key(event), partitions))
        batch = self.open.setdefault(where, [])
        batch.append(event)
        if len(batch) < self.envelope_size:
            return None
        del self.open[where]
        return Message(topic, None, orjson.dumps(batch), len(batch), where[1])

    def drain(self) -> list[Message]:
        """The partly filled envelopes, in the order they were first opened; leaves none open."""
        messages = [
            Message(topic, None, orjson.dumps(batch), len(batch), partition)
            for (topic, partition), batch in self.open.items()
        ]
        self.open.clear()
        return messages


def messages_of(
    events: Iterable[JsonEvent], topics: Topics, envelope_size: int, partitions: int | None = None
) -> Iterator[Message]:
    """Every event as messages (see `Envelopes`), the partial envelopes last."""
    envelopes = Envelopes(topics, envelope_size, partitions)
    for event in events:
        message = envelopes.add(event)
        if message is not None:
            yield message
    yield from envelopes.drain()


# -- live time ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveClock:
    """Maps wall seconds since the live part began to event time: `start_ms + elapsed × speed`."""

    start_ms: int
    speed: float

    def event_ms_at(self, elapsed_seconds: float) -> int:
        return self.start_ms + int(elapsed_seconds * self.speed * 1000)

    def elapsed_at(self, event_ms: int) -> float:
        """Wall seconds after the start at which an event of this time is due (0 for the backfill)."""
        return max(0.0, (event_ms - self.start_ms) / 1000 / self.speed)


@dataclass(frozen=True, slots=True)
class LivePlan:
    """A live run's scenario and where its parts begin, all in event-time epoch ms."""

    scenario: Scenario
    backfill_from_ms: int
    """Simulated activity before this is skipped (the billing state of existing customers is kept)."""
    clock: LiveClock
    incident_ms: tuple[int, int] | None

    def wanted(self, event: JsonEvent) -> bool:
        """False for activity that happened before the backfill window (it is generated, not sent)."""
        ts = event_time_ms(event)
        return ts >= self.backfill_from_ms or ts < to_ms(self.scenario.start)


def live_plan(
    now: datetime,
    *,
    speed: float = 60.0,
    backfill_hours: float = 48.0,
    incident_after_minutes: float | None = None,
    incident_minutes: float = 30.0,
    visits_per_day: int = 5000,
) -> LivePlan:
    """The scenario of a live run starting at `now`.

    It begins at the UTC midnight before the backfill (so the simulated
    company's business hours are the real clock's) and runs open-ended. An
    incident `incident_after_minutes` wall minutes into the live part lasts
    `incident_minutes` wall minutes, i.e. `× speed` in event time.
    """
    if speed <= 0:
        raise ValueError(f"speed must be > 0 simulated seconds per second, got {speed}")
    now_ms = to_ms(now)
    backfill_from = now_ms - int(backfill_hours * HOUR_MS)
    start_ms = backfill_from - backfill_from % DAY_MS
    clock = LiveClock(now_ms, speed)
    scenario = Scenario(start=to_datetime(start_ms), days=366 * 100, visits_per_day=visits_per_day)
    incident: tuple[int, int] | None = None
    if incident_after_minutes is not None:
        begins = clock.event_ms_at(incident_after_minutes * 60)
        ends = clock.event_ms_at((incident_after_minutes + incident_minutes) * 60)
        incident = (begins, ends)
        scenario = replace(scenario, incident_start=to_datetime(begins), incident_hours=(ends - begins) / HOUR_MS)
    return LivePlan(scenario, backfill_from, clock, incident)


class EventQueue:
    """Events in event-time order, handed out up to a moment at a time (one event of look-ahead)."""

    __slots__ = ("events", "head")

    def __init__(self, events: Iterable[JsonEvent]) -> None:
        self.events = iter(events)
        self.head: JsonEvent | None = next(self.events, None)

    @property
    def exhausted(self) -> bool:
        return self.head is None

    def due(self, until_ms: int) -> Iterator[JsonEvent]:
        """The events before `until_ms` not handed out yet."""
        while self.head is not None and event_time_ms(self.head) < until_ms:
            event, self.head = self.head, next(self.events, None)
            yield event


# -- counts -------------------------------------------------------------------------------------


@dataclass(slots=True)
class ProduceStats:
    """What a run sent, per topic, and how fast."""

    events: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    backfill_events: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    event_time_ms: int | None = None
    """A live run's clock at its last tick: its simulated "now" (None before the live part, and in a fast run)."""
    stopped: bool = False
    """True when the run was interrupted (Ctrl-C) before it finished."""

    def count(self, message: Message) -> None:
        self.events[message.topic] += message.events
        self.messages[message.topic] += 1

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def total_messages(self) -> int:
        return sum(self.messages.values())

    @property
    def elapsed_seconds(self) -> float:
        return (self.finished if self.finished is not None else time.monotonic()) - self.started

    @property
    def events_per_second(self) -> float:
        elapsed = self.elapsed_seconds
        return self.total_events / elapsed if elapsed > 0 else 0.0


ProgressCallback = Callable[[ProduceStats], None]


# -- Kafka --------------------------------------------------------------------------------------


def connection_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments: the bootstrap servers of `LEADLAG_BROKER` plus the SASL/SSL settings."""
    servers = bootstrap_servers(settings.broker)
    if not servers:
        raise ValueError("no broker: set LEADLAG_BROKER (e.g. localhost:9092) or pass --broker")
    return {"bootstrap_servers": servers, **client_options(settings)}


async def ensure_input_topics(settings: Settings) -> None:
    """Create the five input topics with the configured partitions unless they exist (`TopicMismatch` if different).

    Why: a broker that auto-creates topics on first produce gives them its
    default partition count, and the worker then refuses them.
    """
    spec = TopicSpec(settings.partitions, replication_factor=settings.replication_factor)
    inputs = Topics(settings.topic_prefix).inputs
    await ensure_topics(settings.broker, dict.fromkeys(inputs, spec), settings=settings)


class TrafficProducer:
    """An aiokafka producer tuned for throughput (linger, large batches), failing loudly on a lost message.

    Sends are not awaited one by one: delivery futures are checked in bulk,
    so a refused message raises `ProduceError` within a few thousand messages.
    """

    CHECK_EVERY = 5000

    def __init__(self, options: dict[str, Any], *, linger_ms: int = 20) -> None:
        from aiokafka import AIOKafkaProducer

        self.producer = AIOKafkaProducer(
            **options,
            linger_ms=linger_ms,
            max_batch_size=1024 * 1024,
            max_request_size=MAX_REQUEST_BYTES,
            acks=1,
        )
        self.pending: deque[tuple[str, asyncio.Future[Any]]] = deque()

    async def __aenter__(self) -> TrafficProducer:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(self, message: Message) -> None:
        future = await self.producer.send(message.topic, message.value, key=message.key, partition=message.partition)
        self.pending.append((message.topic, future))
        if len(self.pending) >= self.CHECK_EVERY:
            self._check(only_done=True)

    async def flush(self) -> None:
        await self.producer.flush()
        await asyncio.gather(*(future for _, future in self.pending), return_exceptions=True)
        self._check(only_done=False)

    def _check(self, only_done: bool) -> None:
        pending = self.pending
        while pending and (not only_done or pending[0][1].done()):
            topic, future = pending.popleft()
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise ProduceError(f"the broker did not take a message for {topic!r}: {future.exception()}")


# -- the two modes ------------------------------------------------------------------------------


async def produce_events(
    producer: TrafficProducer,
    events: Iterable[JsonEvent],
    topics: Topics,
    envelope_size: int,
    stats: ProduceStats,
    *,
    stop: asyncio.Event | None = None,
    on_progress: ProgressCallback | None = None,
    partitions: int | None = None,
) -> ProduceStats:
    """Send events as fast as the broker takes them; stops early (and flushes) when `stop` is set.

    `partitions`: envelopes per entity partition, sent to it (see `Envelopes`)."""
    next_report = time.monotonic() + PROGRESS_SECONDS
    envelopes = Envelopes(topics, envelope_size, partitions)
    for index, event in enumerate(events):
        message = envelopes.add(event)
        if message is not None:
            await producer.send(message)
            stats.count(message)
        if index % 1000 == 0:
            if stop is not None and stop.is_set():
                stats.stopped = True
                break
            if time.monotonic() >= next_report:
                await asyncio.sleep(0)
                if on_progress:
                    on_progress(stats)
                next_report = time.monotonic() + PROGRESS_SECONDS
    for message in envelopes.drain():
        await producer.send(message)
        stats.count(message)
    await producer.flush()
    return stats


async def produce_count(
    settings: Settings,
    events: int,
    *,
    seed: int = 1,
    incident: bool = False,
    envelope_size: int = DEFAULT_ENVELOPE_SIZE,
    stop: asyncio.Event | None = None,
    on_progress: ProgressCallback | None = None,
) -> ProduceStats:
    """Produce the first `events` simulated events (`generate_count`) as fast as possible."""
    topics = Topics(settings.topic_prefix)
    options = connection_options(settings)
    await ensure_input_topics(settings)
    stats = ProduceStats()
    async with TrafficProducer(options) as producer:
        await produce_events(
            producer,
            generate_count(events, seed, incident=incident),
            topics,
            envelope_size,
            stats,
            stop=stop,
            on_progress=on_progress,
            partitions=settings.partitions,
        )
    stats.finished = time.monotonic()
    return stats


async def produce_live(
    settings: Settings,
    plan: LivePlan,
    *,
    seed: int = 1,
    envelope_size: int = DEFAULT_ENVELOPE_SIZE,
    max_events: int | None = None,
    stop: asyncio.Event | None = None,
    on_progress: ProgressCallback | None = None,
) -> ProduceStats:
    """Produce the backfill at once, then the live part paced by `plan.clock`, until `stop` or `max_events`.

    Each tick sends the events that came due since the last, as envelopes (a
    quiet tick sends a few small ones), so the worker sees them within
    `LIVE_TICK_SECONDS` of their simulated moment.
    """
    topics = Topics(settings.topic_prefix)
    options = connection_options(settings)
    await ensure_input_topics(settings)
    stop = stop or asyncio.Event()
    stats = ProduceStats()
    events: Iterable[JsonEvent] = filter(plan.wanted, generate(plan.scenario, seed))
    if max_events is not None:
        events = itertools.islice(events, max_events)
    queue = EventQueue(events)
    clock = plan.clock
    async with TrafficProducer(options, linger_ms=5) as producer:
        backfill = queue.due(clock.start_ms)
        await produce_events(
            producer,
            backfill,
            topics,
            envelope_size,
            stats,
            stop=stop,
            on_progress=on_progress,
            partitions=settings.partitions,
        )
        stats.backfill_events = stats.total_events
        live_started = time.monotonic()
        next_report = live_started
        while not stop.is_set() and not queue.exhausted:
            now_ms = clock.event_ms_at(time.monotonic() - live_started)
            envelopes = Envelopes(topics, envelope_size, settings.partitions)
            for event in queue.due(now_ms + 1):
                message = envelopes.add(event)
                if message is not None:
                    await producer.send(message)
                    stats.count(message)
            for message in envelopes.drain():
                await producer.send(message)
                stats.count(message)
            stats.event_time_ms = now_ms
            if on_progress and time.monotonic() >= next_report:
                on_progress(stats)
                next_report = time.monotonic() + PROGRESS_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LIVE_TICK_SECONDS)
        stats.stopped = stop.is_set()
        await producer.flush()
    stats.finished = time.monotonic()
    return stats


# -- third-party producers ----------------------------------------------------------------------


def produce_with_confluent(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Send (key, value) messages with librdkafka (`confluent-kafka`), a client independent of aiokafka.

    For checking that third-party producers reach the worker: librdkafka
    partitions keys differently (consistent_random), which the worker
    repairs by routing events to their entity's partition.
    """
    from confluent_kafka import Producer

    errors: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            errors.append(str(error))

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": MAX_REQUEST_BYTES})
    sent = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        raise ProduceError(f"librdkafka did not deliver {remaining} message(s) to {topic!r}: {errors[:3]}")
    return sent
