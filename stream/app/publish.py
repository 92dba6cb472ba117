"""Publishing: the snapshot to `leadlag.snapshots`, alert transitions to `leadlag.alerts`, on a timer.

Every `snapshot_interval_seconds` the worker publishes the last snapshot the
read model built (compacted topic, key = window, `revenue:now` or month) and
judges the alerts: divergence verdicts come with the snapshot; the others
(consumer lag, dead letters, the data checks) are held for their `for:`
durations and published only when they change state.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from schemas.alerts import CheckVerdict
from schemas.snapshot import Snapshot
from stream.app.topics import Topics
from stream.core.checks import check_transitions, data_checks, hold, recent_increase, worker_checks
from stream.core.divergence import alert_transitions
from stream.core.policy import Policy

log = logging.getLogger("leadlag.publish")

MONTHS_PUBLISHED = 12


class Publisher:
    """Snapshot and alert topics, and the alert verdicts held between publications."""

    def __init__(self, topics: Topics, policy: Policy) -> None:
        self.topics = topics
        self.policy = policy
        self.checks: list[CheckVerdict] = []
        """The latest verdicts of the alerts besides divergence, held for their `for:` durations."""
        self._alert_state: dict[str, bool] = {}
        self._check_since: dict[str, int] = {}
        self._dead_letter_history: deque[tuple[int, dict[str, int]]] = deque()

    async def publish(
        self,
        producer: AIOKafkaProducer,
        snapshot: Snapshot | None,
        lag: Mapping[tuple[str, int], int],
        deadletters: Mapping[str, int],
    ) -> None:
        """Judge the alerts and publish their transitions; publish the snapshot when there is one."""
        data = [] if snapshot is None else data_checks(snapshot, self.policy.alerts)
        await self._judge(producer, data, self._worker_checks(lag, deadletters), snapshot)
        if snapshot is None or snapshot.as_of is None:
            return
        topic = self.topics.snapshots
        for window, metrics in snapshot.windows.items():
            await producer.send(
                topic, key=f"window:{window}".encode(), value=metrics.model_dump_json(exclude_none=True).encode()
            )
        await producer.send(topic, key=b"revenue:now", value=snapshot.revenue.model_dump_json().encode())
        for month, month_metrics in list(snapshot.months.items())[-MONTHS_PUBLISHED:]:
            await producer.send(
                topic, key=f"month:{month}".encode(), value=month_metrics.model_dump_json(exclude_none=True).encode()
            )
        for alert in alert_transitions(self._alert_state, snapshot.divergence):
            log.warning("alert %s %s: %s", alert.state, alert.key, alert.verdict.reason)
            await producer.send(self.topics.alerts, key=alert.key.encode(), value=alert.model_dump_json().encode())
        self._alert_state = {verdict.key: verdict.firing for verdict in snapshot.divergence}

    def _worker_checks(self, lag: Mapping[tuple[str, int], int], deadletters: Mapping[str, int]) -> list[CheckVerdict]:
        """Consumer lag and dead letters, from this worker's own counters."""
        now_ms = int(time.time() * 1000)
        window_ms = self.policy.alerts.dead_letter_window_ms
        history = self._dead_letter_history
        history.append((now_ms, dict(deadletters)))
        while len(history) > 1 and history[1][0] <= now_ms - window_ms:
            history.popleft()  # keep one sample at or before the window's start, as the base
        recent = recent_increase(list(history), now_ms, window_ms)
        return worker_checks(dict(lag), recent, self.topics.inputs, recent, self.policy.alerts)

    async def _judge(
        self, producer: AIOKafkaProducer, data: list[CheckVerdict], own: list[CheckVerdict], snapshot: Snapshot | None
    ) -> None:
        """Hold each condition for its `for:`, then publish every change of state on the alert topic."""
        now = datetime.now(UTC)
        held, self._check_since = hold(
            [*data, *own], self._check_since, int(now.timestamp() * 1000), self.policy.alerts
        )
        previous = {verdict.key: verdict.firing for verdict in self.checks}
        judged = {verdict.key for verdict in held}
        # a scope not judged this time (no snapshot while recovering) keeps its state, unannounced
        self.checks = [*held, *(verdict for verdict in self.checks if verdict.key not in judged)]
        data_at = now if snapshot is None or snapshot.as_of is None else snapshot.as_of
        data_keys = {verdict.key for verdict in data}
        alerts = [
            *check_transitions(previous, [v for v in held if v.key in data_keys], data_at),
            *check_transitions(previous, [v for v in held if v.key not in data_keys], now),
        ]
        for alert in alerts:
            log.warning("alert %s %s: %s", alert.state, alert.key, alert.verdict.reason)
            await producer.send(self.topics.alerts, key=alert.key.encode(), value=alert.model_dump_json().encode())
