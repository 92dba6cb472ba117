"""Topic names: the five inputs, the internal routing topic, and the outputs."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import TOPIC_OF_TYPE, EventType


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic leadlag reads or writes, with the configured prefix applied."""

    prefix: str = ""

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    def input_of(self, event_type: EventType) -> str:
        return self.name(TOPIC_OF_TYPE[event_type])

    @property
    def inputs(self) -> list[str]:
        return [self.input_of(t) for t in EventType]

    @property
    def entities(self) -> str:
        """Internal: events and links routed to the partition of their entity, in batches."""
        return self.name("leadlag.entities")

    @property
    def snapshots(self) -> str:
        return self.name("leadlag.snapshots")

    @property
    def alerts(self) -> str:
        return self.name("leadlag.alerts")

    @property
    def deadletter(self) -> str:
        return self.name("leadlag.deadletter")
