"""Publishing: the snapshot to `leadlag.snapshots`, alert transitions to `leadlag.alerts`, on a timer.

Every `snapshot_interval_seconds` every worker judges the alerts on the last
snapshot the read model built (the whole company's): divergence verdicts come
with the snapshot; the others (consumer lag, dead letters, the data checks)
are held for their `for:` durations. Only the company's voice — the worker
owning partition 0 — publishes: the snapshot (compacted topic, key = window,
`revenue:now` or month) and each alert's changes of state. A worker that
becomes the voice first reads the alert topic and takes the last state
announced for each alert as its own (`restore`), so a rebalance or a crash
neither repeats nor drops a transition (docs/architecture.md, "One company,
many workers"). Every message fits
`LEADLAG_OUTPUT_MESSAGE_BYTES` (`stream.app.outputs.fit`) and is acknowledged
before the next is sent; a publication that fails is logged and counted by the
worker, which keeps running (docs/architecture.md, "Outputs").
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from schemas.alerts import CheckAlert, CheckVerdict
from schemas.snapshot import Snapshot
from schemas.snapshot.divergence import DivergenceAlert
from stream.app.outputs import fit, send_with_retry
from stream.app.topics import Topics
from stream.core.checks import check_transitions, data_checks, hold, recent_increase, worker_checks
from stream.core.divergence import alert_transitions
from stream.core.policy import Policy

log = logging.getLogger("leadlag.publish")

DIVERGENCE_ALERT = "TrafficUpConversionDown"
MONTHS_PUBLISHED = 12
SEND_ATTEMPTS = 3
"""Tries of one publication: the timer publishes again soon, so a failure is retried there too."""


class Publisher:
    """Snapshot and alert topics, and the alert verdicts held between publications."""

    def __init__(
        self, topics: Topics, policy: Policy, message_bytes: int = 1_000_000, attempts: int = SEND_ATTEMPTS
    ) -> None:
        self.topics = topics
        self.policy = policy
        self.message_bytes = message_bytes
        """The largest message published (LEADLAG_OUTPUT_MESSAGE_BYTES)."""
        self.attempts = attempts
        self._noted: set[str] = set()
        self.checks: list[CheckVerdict] = []
        """The latest verdicts of the alerts besides divergence, held for their `for:` durations."""
        self._alert_state: dict[str, bool] = {}
        self._check_since: dict[str, int] = {}
        self._dead_letter_history: deque[tuple[int, dict[str, int]]] = deque()
        self.speaking = False
        """Whether this worker has taken the voice (restored the announced states) and kept it since."""

    def restore(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Take the last state announced on the alert topic for each alert as the state to change from.

        Records that are not alerts of this release are skipped. Conditions waiting out their `for:` start
        over on the new voice (a firing is delayed, never dropped or repeated).
        """
        divergence: dict[str, bool] = {}
        checks: dict[str, CheckVerdict] = {}
        for key, value in records:
            if key is None or value is None:
                continue
            try:
                body = orjson.loads(value)
                if body.get("alert_name") == DIVERGENCE_ALERT:
                    divergence[body["key"]] = DivergenceAlert.model_validate(body).state == "firing"
                    continue
                alert = CheckAlert.model_validate(body)
            except (ValueError, TypeError, AttributeError, KeyError, ValidationError):
                continue
            checks[alert.key] = alert.verdict.model_copy(update={"firing": alert.state == "firing"})
        self._alert_state = divergence
        self.checks = list(checks.values())
        self._check_since = {}
        self._dead_letter_history.clear()
        self.speaking = True
        log.info(
            "speaking for the company: %d alerts announced before, %d of them firing",
            len(divergence) + len(checks),
            sum(divergence.values()) + sum(verdict.firing for verdict in checks.values()),
        )

    def silence(self) -> None:
        """This worker is not (or no longer) the voice: it judges, but publishes nothing."""
        if self.speaking:
            log.info("no longer speaking for the company (partition 0 moved to another worker)")
        self.speaking = False

    async def publish(
        self,
        producer: AIOKafkaProducer,
        snapshot: Snapshot | None,
        lag: Mapping[tuple[str, int], int],
        deadletters: Mapping[str, int],
        *,
        speaks: bool = True,
    ) -> None:
        """Judge the alerts; when this worker `speaks` for the company, publish their transitions and the
        snapshot. A publication that fails part-way makes the next one restore from the alert topic first."""
        data = [] if snapshot is None else data_checks(snapshot, self.policy.alerts)
        alerts: list[CheckAlert | DivergenceAlert] = self._judge(data, self._worker_checks(lag, deadletters), snapshot)
        if snapshot is not None and snapshot.as_of is not None:
            alerts.extend(alert_transitions(self._alert_state, snapshot.divergence))
            self._alert_state = {verdict.key: verdict.firing for verdict in snapshot.divergence}
        if not speaks:
            return
        try:
            for alert in alerts:
                log.warning("alert %s %s: %s", alert.state, alert.key, alert.verdict.reason)
                await self._send(producer, self.topics.alerts, alert.key, alert.model_dump(mode="json"))
        except BaseException:
            self.speaking = False  # what was announced is unknown now: read it back before speaking again
            raise
        if snapshot is None or snapshot.as_of is None:
            return
        topic = self.topics.snapshots
        for window, metrics in snapshot.windows.items():
            await self._send(producer, topic, f"window:{window}", metrics.model_dump(mode="json", exclude_none=True))
        await self._send(producer, topic, "revenue:now", snapshot.revenue.model_dump(mode="json"))
        for month, month_metrics in list(snapshot.months.items())[-MONTHS_PUBLISHED:]:
            body = month_metrics.model_dump(mode="json", exclude_none=True)
            await self._send(producer, topic, f"month:{month}", body)

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

    def _judge(
        self, data: list[CheckVerdict], own: list[CheckVerdict], snapshot: Snapshot | None
    ) -> list[CheckAlert | DivergenceAlert]:
        """Hold each condition for its `for:`; every change of state, to publish on the alert topic."""
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
        return [
            *check_transitions(previous, [v for v in held if v.key in data_keys], data_at),
            *check_transitions(previous, [v for v in held if v.key not in data_keys], now),
        ]

    async def _send(self, producer: AIOKafkaProducer, topic: str, key: str, body: dict[str, Any]) -> None:
        """One message of at most `message_bytes` (the largest name maps capped when needed), acknowledged."""
        fitted = fit(body, self.message_bytes)
        if fitted is None:
            self._note_once(f"{topic} {key}: larger than {self.message_bytes} bytes even capped: not published")
            return
        value, folded = fitted
        if folded:
            self._note_once(
                f"{topic} {key}: {folded} names summed as 'other' to fit {self.message_bytes} bytes "
                "(LEADLAG_OUTPUT_MESSAGE_BYTES)"
            )
        await send_with_retry(
            lambda: producer.send_and_wait(topic, value, key=key.encode()), f"{key} to {topic}", self.attempts
        )

    def _note_once(self, note: str) -> None:
        if note not in self._noted:
            self._noted.add(note)
            log.warning("%s", note)
