"""Faust's runtime metrics (`leadlag_faust_*`) fed by the engine, a step at a time.

The engine consumes and produces with aiokafka directly, so Faust's own
sensors see no message; this adapter adds the engine's work to the same
Prometheus series (messages received and sent per topic, events, the entity
table's reads and writes, commit latency), so the pipeline-health dashboard
reads as before. Counts are added once per step (one `inc(n)` per series),
never per message. `events_runtime_ms` observes a step's mean time per item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust

TABLE_LABEL = "table.entities"


class FaustSensors:
    """Writes to the app's `PrometheusMonitor` metrics when there is one; does nothing otherwise."""

    __slots__ = ("_metrics",)

    def __init__(self, app: faust.App) -> None:
        self._metrics: Any = getattr(app.monitor, "_metrics", None)

    def received(self, topic: str, partition: int, messages: int, last_offset: int) -> None:
        metrics = self._metrics
        if metrics is None or not messages:
            return
        metrics.messages_received.inc(messages)
        metrics.messages_received_per_topics.labels(topic=topic).inc(messages)
        metrics.messages_received_per_topics_partition.labels(topic=topic, partition=partition).set(last_offset)

    def folded(self, stream: str, items: int, seconds: float) -> None:
        metrics = self._metrics
        if metrics is None or not items:
            return
        metrics.total_events.inc(items)
        metrics.total_events_per_stream.labels(stream=f"stream.{stream}.events").inc(items)
        metrics.events_runtime_latency.observe(seconds * 1000 / items)

    def sent(self, counts: Mapping[str, int]) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        for topic, messages in counts.items():
            if messages:
                metrics.topic_messages_sent.labels(topic=f"topic.{topic}").inc(messages)
                metrics.total_sent_messages.inc(messages)

    def table(self, retrieved: int, updated: int, deleted: int) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        for operation, count in (("keys_retrieved", retrieved), ("keys_updated", updated), ("keys_deleted", deleted)):
            if count:
                metrics.table_operations.labels(table=TABLE_LABEL, operation=operation).inc(count)

    def committed(self, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.consumer_commit_latency.observe(seconds * 1000)
