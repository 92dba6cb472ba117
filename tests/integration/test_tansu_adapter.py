"""The embedded broker lists end offsets wrong after multi-record batches; the adapter gives Faust true ones.

The quirk itself is asserted too, so that this file documents it and
notices the day a new broker version stops needing the adapter.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.app import tansu
from stream.app.admin import TopicSpec, ensure_topics
from stream.broker import EmbeddedBroker
from tests.integration.processes import stop_group

pytestmark = pytest.mark.integration

FAUST_DEADLINE_SECONDS = 90.0
"""Generous: a worker joins the embedded broker in about 9 s, CI has 2 cores."""


async def produce_batches(bootstrap: str, topic: str, batches: int, records_per_batch: int) -> None:
    """Exactly `batches` record batches of `records_per_batch` records each, to partition 0."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for number in range(batches):
            batch = producer.create_batch()
            for index in range(records_per_batch):
                assert batch.append(key=b"k", value=f"{number}-{index}".encode(), timestamp=None) is not None
            delivered = await producer.send_batch(batch, topic, partition=0)
            await delivered
    finally:
        await producer.stop()


async def listed_and_true_end(bootstrap: str, topic: str) -> tuple[int, int]:
    """(ListOffsets latest, `true_end_offsets`) of partition 0 of `topic`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        listed = (await consumer.end_offsets([tp]))[tp]
        true = (await tansu.true_end_offsets(consumer, [tp]))[tp]
        return int(listed), true
    finally:
        await consumer.stop()


async def test_after_three_batches_of_7_the_broker_lists_15_and_true_end_offsets_says_21(
    embedded_broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}batched"
    await ensure_topics(embedded_broker.bootstrap, {topic: TopicSpec(1)})
    await produce_batches(embedded_broker.bootstrap, topic, batches=3, records_per_batch=7)

    listed, true = await listed_and_true_end(embedded_broker.bootstrap, topic)

    assert listed == 14 + 1  # the last batch's base offset (2 × 7) + 1: the quirk
    assert true == 3 * 7


async def test_with_one_record_per_batch_listed_and_true_end_offsets_agree(
    embedded_broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}single"
    await ensure_topics(embedded_broker.bootstrap, {topic: TopicSpec(1)})
    await produce_batches(embedded_broker.bootstrap, topic, batches=5, records_per_batch=1)

    assert await listed_and_true_end(embedded_broker.bootstrap, topic) == (5, 5)


async def test_true_end_offsets_of_empty_partitions_are_0_and_of_several_partitions_each_their_own(
    embedded_broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}three"
    await ensure_topics(embedded_broker.bootstrap, {topic: TopicSpec(3)})
    producer = AIOKafkaProducer(bootstrap_servers=embedded_broker.bootstrap)
    await producer.start()
    try:
        for partition, (batches, size) in {1: (2, 10), 2: (1, 4)}.items():
            for _ in range(batches):
                batch = producer.create_batch()
                for _ in range(size):
                    batch.append(key=None, value=b"x", timestamp=None)
                await (await producer.send_batch(batch, topic, partition=partition))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=embedded_broker.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        ends = await tansu.true_end_offsets(consumer, tps)
    finally:
        await consumer.stop()

    assert ends == {tps[0]: 0, tps[1]: 2 * 10, tps[2]: 4}


# -- generation 0: the next member is not held for the session timeout -------------------------------


async def assigned_within(consumer: AIOKafkaConsumer, started: float) -> float:
    """Seconds from `started` until `consumer` (started, subscribed) has an assignment."""
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    return time.monotonic() - started


async def test_a_member_stopped_in_generation_0_leaves_so_the_next_is_assigned_before_the_session_timeout(
    embedded_broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """Without `leave_group_in_generation_0` the joiner waits about 18 s here (the session timeout, 10 s, and
    a rebalance); with it about 5 s, as any join (docs/architecture.md, "Stopping")."""
    from stream.app.engine import EMBEDDED_GROUP_TIMEOUTS_MS

    topic = f"{topic_prefix}gen0"
    await ensure_topics(embedded_broker.bootstrap, {topic: TopicSpec(2)})
    group: dict[str, object] = {"group_id": f"{topic_prefix}gen0", **EMBEDDED_GROUP_TIMEOUTS_MS}
    first = AIOKafkaConsumer(topic, bootstrap_servers=embedded_broker.bootstrap, enable_auto_commit=False, **group)
    await first.start()
    tansu.leave_group_in_generation_0(first)
    try:
        await asyncio.wait_for(assigned_within(first, time.monotonic()), FAUST_DEADLINE_SECONDS)
        assert first._coordinator.generation == 0  # the quirk: the broker's first generation is numbered 0
    finally:
        await first.stop()
    joiner = AIOKafkaConsumer(topic, bootstrap_servers=embedded_broker.bootstrap, enable_auto_commit=False, **group)
    started = time.monotonic()
    await joiner.start()
    try:
        joined_s = await asyncio.wait_for(assigned_within(joiner, started), FAUST_DEADLINE_SECONDS)
    finally:
        await joiner.stop()
    session_timeout_s = EMBEDDED_GROUP_TIMEOUTS_MS["session_timeout_ms"] / 1000
    assert joined_s < session_timeout_s, f"the joiner waited {joined_s:.1f} s"


def test_install_swaps_in_the_true_end_offsets_transport_once() -> None:
    app = faust.App("adapter-install", broker="kafka://127.0.0.1:9", autodiscover=False)

    tansu.install(app)
    transport = app.transport
    tansu.install(app)

    assert isinstance(transport, tansu.EmbeddedBrokerTransport)
    assert app.transport is transport
    assert tansu.installed(app)


def test_install_after_the_consumer_exists_is_refused() -> None:
    app = faust.App("adapter-late", broker="kafka://127.0.0.1:9", autodiscover=False)
    assert app.consumer is not None

    with pytest.raises(RuntimeError, match="before the app's consumer is created"):
        tansu.install(app)


# -- the proof: table recovery into an empty store --------------------------------------------------

COUNTER_APP = '''
"""A Faust worker counting messages of one key in a table (memory store, changelog topic)."""
import sys
from pathlib import Path

import faust

mode, broker, app_id, source, result = sys.argv[1:6]
changelog = f"{app_id}-counts-changelog"
app = faust.App(
    # The recovering worker is a fresh member of a fresh group: a worker stopped in the embedded
    # broker's first group generation (numbered 0) never sends LeaveGroup, so a successor in the
    # same group waits out the session timeout before it is assigned anything.
    app_id if mode == "write" else f"{app_id}-fresh",
    broker=broker,
    store="memory://",
    datadir=str(Path(result).parent / f"{mode}-data"),  # next to the test's files, never in the working directory
    topic_partitions=1,
    table_standby_replicas=0,
    consumer_auto_offset_reset="earliest",
    broker_rebalance_timeout=4,
    broker_session_timeout=10,
    broker_heartbeat_interval=3,
    producer_linger=0.5,  # changelog updates travel in multi-record batches
    web_enabled=False,
    autodiscover=False,
)
if mode == "recover":
    from stream.app import tansu

    tansu.install(app)
counts = app.Table(
    "counts",
    default=int,
    partitions=1,
    key_type=str,
    value_type=int,
    changelog_topic=app.topic(
        changelog, partitions=1, compacting=True, key_type=str, value_type=int, key_serializer="json"
    ),
)
source_topic = app.topic(source, partitions=1, key_type=bytes, value_type=bytes, value_serializer="raw")


@app.agent(source_topic)
async def count(stream):
    async for _ in stream:
        counts["k"] += 1


async def report_recovered() -> None:
    path = Path(result)
    if not path.exists():
        path.write_text(str(counts["k"]))


if mode != "write":
    counts.on_recover(report_recovered)

if __name__ == "__main__":
    faust.Worker(app, loglevel="INFO", quiet=True, redirect_stdouts=False).execute_from_commandline()
'''


@contextmanager
def counter_worker(script: Path, mode: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """The counter app as a child process; always stopped (SIGTERM, then SIGKILL) and its output kept."""
    log = script.with_name(f"{mode}.log")
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(script), mode, *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            stop_group(process, grace_s=30)


def wait_for(condition: object, what: str, log: Path) -> None:
    assert callable(condition)
    deadline = time.monotonic() + FAUST_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}\n--- worker log ---\n{log.read_text(errors='replace')[-5000:]}")


def test_a_table_updated_1000_times_recovers_1000_into_an_empty_store_with_the_adapter(
    embedded_broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    bootstrap = embedded_broker.bootstrap
    app_id = f"{topic_prefix}counter"
    source = f"{topic_prefix}counted"
    changelog = f"{app_id}-counts-changelog"
    script = tmp_path / "counter_app.py"
    script.write_text(COUNTER_APP)
    result = tmp_path / "recovered.txt"
    asyncio.run(ensure_topics(bootstrap, {source: TopicSpec(1), changelog: TopicSpec(1, compacted=True)}))
    asyncio.run(produce_batches(bootstrap, source, batches=10, records_per_batch=100))

    with counter_worker(script, "write", embedded_broker.url, app_id, source, str(result)) as writer:
        wait_for(
            lambda: writer.poll() is None and asyncio.run(listed_and_true_end(bootstrap, changelog))[1] >= 1000,
            "1,000 updates in the changelog",
            tmp_path / "write.log",
        )
        writer.send_signal(signal.SIGTERM)
        writer.wait(30)

    listed, true = asyncio.run(listed_and_true_end(bootstrap, changelog))
    assert true == 1000  # one changelog record per update
    assert listed < 1000  # the last batch held several updates: without the adapter recovery stops short

    with counter_worker(script, "recover", embedded_broker.url, app_id, source, str(result)) as recovering:
        wait_for(lambda: recovering.poll() is None and result.exists(), "the recovered count", tmp_path / "recover.log")

    assert result.read_text() == "1000"
