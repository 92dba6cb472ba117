"""Simulated traffic reaches a real broker intact, from leadlag's producer and from a third-party client."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from stream.app.topics import Topics
from stream.broker import EmbeddedBroker
from stream.produce import (
    ProduceStats,
    ensure_input_topics,
    entity_key,
    event_time_ms,
    live_plan,
    produce_count,
    produce_live,
    produce_with_confluent,
)
from stream.settings import Settings, load_settings
from stream.simulation import generate_count

pytestmark = pytest.mark.integration

READ_SECONDS = 60.0


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded broker for this module; each test uses its own topic prefix."""
    with EmbeddedBroker() as embedded:
        yield embedded


def settings_for(broker: EmbeddedBroker) -> Settings:
    return load_settings(broker=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=4)


async def read_all(bootstrap: str, topics: list[str], events: int) -> list[tuple[str, bytes | None, object]]:
    """(topic, key, decoded value) of every message, read from the start until `events` events arrived."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    messages: list[tuple[str, bytes | None, object]] = []
    seen = 0
    deadline = time.monotonic() + READ_SECONDS
    try:
        while seen < events and time.monotonic() < deadline:
            for partition, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    value = orjson.loads(record.value)
                    messages.append((partition.topic, record.key, value))
                    seen += len(value) if isinstance(value, list) else 1
        # anything beyond the expected count would be a duplicate: give it a moment to show up
        for partition, records in (await consumer.getmany(timeout_ms=1000)).items():
            messages.extend((partition.topic, record.key, orjson.loads(record.value)) for record in records)
    finally:
        await consumer.stop()
    return messages


def events_per_topic(messages: list[tuple[str, bytes | None, object]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for topic, _, value in messages:
        counts[topic] += len(value) if isinstance(value, list) else 1
    return counts


def generated_per_topic(topics: Topics, events: int, seed: int) -> Counter[str]:
    return Counter(topics.input_of(event["type"]) for event in generate_count(events, seed))  # type: ignore[arg-type]


async def test_two_thousand_simulated_events_in_envelopes_come_back_per_topic_as_generated(
    broker: EmbeddedBroker,
) -> None:
    settings = settings_for(broker)
    topics = Topics(settings.topic_prefix)
    stats = await produce_count(settings, 2000, seed=7, envelope_size=200)
    expected = generated_per_topic(topics, 2000, seed=7)
    assert stats.events == expected
    assert stats.total_events == 2000
    messages = await read_all(broker.bootstrap, topics.inputs, 2000)
    assert events_per_topic(messages) == expected
    assert all(key is None and isinstance(value, list) and len(value) <= 200 for _, key, value in messages)
    assert len(messages) == stats.total_messages


async def test_single_event_messages_are_keyed_by_their_entity(
    broker: EmbeddedBroker,
) -> None:
    settings = settings_for(broker)
    topics = Topics(settings.topic_prefix)
    await produce_count(settings, 500, seed=8, envelope_size=1)
    messages = await read_all(broker.bootstrap, topics.inputs, 500)
    assert events_per_topic(messages) == generated_per_topic(topics, 500, seed=8)
    assert all(isinstance(value, dict) and key == entity_key(value) for _, key, value in messages)


async def test_a_live_run_sends_the_backfill_then_paces_the_rest_and_stops_cleanly_with_its_counts(
    broker: EmbeddedBroker,
) -> None:
    settings = settings_for(broker)
    topics = Topics(settings.topic_prefix)
    now = datetime.now(UTC)
    # 1 h of backfill, then an hour of simulated time every wall second
    plan = live_plan(now, speed=3600, backfill_hours=1, visits_per_day=2000)
    stop = asyncio.Event()
    progress: list[int] = []

    def watch(stats: ProduceStats) -> None:
        progress.append(stats.total_events)
        if stats.event_time_ms is not None and stats.event_time_ms >= plan.clock.event_ms_at(1.5):
            stop.set()

    stats = await asyncio.wait_for(produce_live(settings, plan, seed=9, stop=stop, on_progress=watch), 60)
    assert stats.stopped
    assert stats.backfill_events > plan.scenario.existing_customers
    assert stats.total_events > stats.backfill_events, "the live part sent something"
    messages = await read_all(broker.bootstrap, topics.inputs, stats.total_events)
    assert events_per_topic(messages) == stats.events
    times = [event_time_ms(event) for _, _, value in messages for event in value]  # type: ignore[attr-defined]
    # the live part went past "now", but never past the live clock of its last tick
    assert stats.event_time_ms is not None
    assert max(times) > plan.clock.start_ms
    assert max(times) <= stats.event_time_ms


async def test_events_produced_with_librdkafka_arrive_intact_with_their_keys(broker: EmbeddedBroker) -> None:
    settings = settings_for(broker)
    topic = Topics(settings.topic_prefix).input_of("site_visit")  # type: ignore[arg-type]
    await ensure_input_topics(settings)
    events = [event for event in generate_count(400, seed=10) if event["type"] == "site_visit"]
    sent = await asyncio.to_thread(
        produce_with_confluent, broker.bootstrap, topic, [(entity_key(e), orjson.dumps(e)) for e in events]
    )
    assert sent == len(events)
    messages = await read_all(broker.bootstrap, [topic], len(events))
    assert sorted((key, orjson.dumps(value)) for _, key, value in messages) == sorted(
        (entity_key(e), orjson.dumps(e)) for e in events
    )
