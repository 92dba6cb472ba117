"""A partition assignor that gives one member partition p of every topic: intake and fold stay together.

The worker consumes the input topics and `leadlag.entities`, all with the same
partition count (checked at start-up), and folds an event in the step that read
it whenever its entity's partition is one it owns. That is only safe if the
owner of an entities partition is decided in the same assignment as the owners
of the input partitions, and it is simplest to read when partition p of every
topic goes to the same member: member `sorted(ids)[p % members]`. Every member
of the group must use it (workers of one release).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata


class CopartitionedAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Partition p of every subscribed topic to the same member, round robin over the sorted member ids."""

    name = "leadlag-copartitioned"
    version = 0

    @classmethod
    def assign(
        cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        owners = sorted(members)
        topics: set[str] = set()
        for metadata in members.values():
            topics.update(metadata.subscription)
        assignment: dict[str, dict[str, list[int]]] = {member: defaultdict(list) for member in owners}
        for topic in sorted(topics):
            subscribers = [member for member in owners if topic in members[member].subscription]
            for partition in sorted(cluster.partitions_for_topic(topic) or ()):
                owner = owners[partition % len(owners)]
                if owner not in subscribers:  # a member of another release: fall back to the subscribers
                    owner = subscribers[partition % len(subscribers)]
                assignment[owner][topic].append(partition)
        return {
            member: ConsumerProtocolMemberAssignment(cls.version, sorted(topics_of.items()), b"")
            for member, topics_of in assignment.items()
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass
