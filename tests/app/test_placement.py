"""Specifies stream/app/placement.py, assignor.py and the engine's merge of partitions by time."""

from __future__ import annotations

import random

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.structs import ConsumerRecord, TopicPartition

from stream.app.assignor import CopartitionedAssignor
from stream.app.engine import runs_in_time_order
from stream.app.placement import entity_partition, key_partition, murmur2


def test_murmur2_is_kafkas_for_any_bytes() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
        assert murmur2(data) == aiokafka_murmur2(data)


def test_an_entity_lives_where_kafkas_default_partitioner_puts_a_message_keyed_by_its_id() -> None:
    partitioner = DefaultPartitioner()
    for key in ["v-1", "visitor-000123", "acct-9", "paid", "c-ü"]:
        expected = partitioner(key.encode(), [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5])
        assert key_partition(key, 6) == expected
        assert entity_partition("visitor", key, 6) == entity_partition("contact", key, 6) == expected


class Cluster(ClusterMetadata):  # type: ignore[misc]
    def __init__(self, partitions: dict[str, int]) -> None:
        super().__init__()
        self.counts = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.counts[topic])) if topic in self.counts else None


def test_the_assignor_gives_one_member_partition_p_of_every_topic() -> None:
    topics = ["site.visits", "form.fills", "leadlag.entities"]
    members = {member: ConsumerProtocolMemberMetadata(0, topics, b"") for member in ("m-b", "m-a", "m-c")}

    assignment = CopartitionedAssignor.assign(Cluster(dict.fromkeys(topics, 4)), members)

    owners: dict[int, set[str]] = {}
    for member, assigned in assignment.items():
        for topic, partitions in assigned.assignment:
            assert topic in topics
            for partition in partitions:
                owners.setdefault(partition, set()).add(member)
    assert owners == {0: {"m-a"}, 1: {"m-b"}, 2: {"m-c"}, 3: {"m-a"}}


def record(topic: str, partition: int, offset: int, timestamp: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, partition, offset, timestamp, 0, None, b"", None, 0, 0, [])


def test_a_step_reads_partitions_merged_by_time_each_in_offset_order() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    fetched = {
        a: [record("t", 0, 10, 5), record("t", 0, 11, 1), record("t", 0, 12, 9)],
        b: [record("t", 1, 3, 2), record("t", 1, 4, 6)],
    }

    runs = [(tp.partition, [r.offset for r in run]) for tp, run in runs_in_time_order(fetched, longest=2)]

    assert runs == [(1, [3]), (0, [10, 11]), (1, [4]), (0, [12])]
