"""The live worker: Faust agents around the pure core, one table of entity states, metrics at scrape time.

Data flow (DESIGN §1, §6, §7):

- one *intake* agent per input topic validates each message (one event or an
  envelope), sends bad input to the dead letter with its reason and original
  bytes, and routes the valid events to the partition of their entity on the
  internal `leadlag.entities` topic — one message per target partition per
  input message, so an envelope costs one hop however many events it holds,
  and mixed producers (whatever their partitioner) never split an entity;
- one *fold* agent consumes `leadlag.entities`, folds each batch through a
  `Shard` whose entity states live in a Faust table (RocksDB + changelog,
  co-partitioned with `leadlag.entities`), writes each touched entity once per
  batch, and routes the links the reducers emit the same way;
- the worker's totals are a cache: after every rebalance they are rebuilt
  from the recovered table (`rebuild_totals`), so a restarted or moved
  partition never double counts; every number is the reducers';
- `/metrics`, the JSON views, the snapshot topic and the alert topic all read
  one snapshot, computed from the totals at most every `SNAPSHOT_TTL_SECONDS`.

At-least-once: messages sent while handling an event are attached to it and
its offset is committed only once they are delivered; a replayed tail folds
again into states that already hold its event ids, which changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import faust
import orjson
from faust.types import EventT, StreamT
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from schemas.alerts import CheckVerdict
from schemas.deadletter import DeadLetter
from schemas.events import Event
from schemas.parsing import InvalidEvent, parse_message
from schemas.snapshot import InputCounts, Snapshot
from stream.app.admin import ENTITIES_TABLE
from stream.app.topics import Topics
from stream.codec import CodecError, decode_items, decode_state, encode_items, encode_state
from stream.core.checks import check_transitions, data_checks, hold, recent_increase, worker_checks
from stream.core.divergence import alert_transitions
from stream.core.ledger import EntityState, Shard, entity_delta, late_reason, shard_index
from stream.core.links import EntityKind, Item, entity_of
from stream.core.policy import Policy, UnknownCurrency
from stream.core.snapshot import build_snapshot
from stream.core.totals import Totals
from stream.core.windows import to_datetime
from stream.metrics import RuntimeStats, SnapshotCollector
from stream.settings import Settings

log = logging.getLogger("leadlag.worker")

SNAPSHOT_TTL_SECONDS = 2.0
LAG_INTERVAL_SECONDS = 5.0
MARKS_PREFIX = b"_marks:"
"""Table keys holding a partition's earliest and newest event time (not entities)."""
ENTITY_KINDS: frozenset[str] = frozenset({"visitor", "contact", "account", "channel"})
DEADLETTER_TEXT_LIMIT = 64 * 1024
ENVELOPE_START = re.compile(rb"\s*\[")
"""A message that opens a JSON array is an envelope (matched in place: a message can be megabytes)."""
"""Original bytes are always kept as base64; the UTF-8 copy only for messages up to this size."""

EMBEDDED_TIMEOUTS = {
    "broker_rebalance_timeout": 4.0,
    "broker_session_timeout": 10.0,
    "broker_heartbeat_interval": 3.0,
}
"""DESIGN §2.2: with these the embedded broker's first join takes seconds, not minutes."""


@dataclass(slots=True)
class Counters:
    """What this worker has seen since it started (DESIGN §3 bad input is counted here)."""

    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    invalid: int = 0
    rejected: int = 0
    batches: int = 0
    deadletters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages_in: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    events_in: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rebalances: int = 0


class TableStore:
    """Entity states in the Faust table, decoded on first use in a batch and written back once per batch."""

    __slots__ = ("table", "touched")

    def __init__(self, table: Any) -> None:
        self.table = table
        self.touched: dict[bytes, tuple[EntityKind, EntityState]] = {}

    @staticmethod
    def key_of(kind: EntityKind, key: str) -> bytes:
        return f"{kind}:{key}".encode()

    def get(self, kind: EntityKind, key: str) -> EntityState | None:
        table_key = self.key_of(kind, key)
        touched = self.touched.get(table_key)
        if touched is not None:
            return touched[1]
        raw = self.table.get(table_key)
        return None if raw is None else decode_state(kind, raw)

    def put(self, kind: EntityKind, key: str, state: EntityState) -> None:
        self.touched[self.key_of(kind, key)] = (kind, state)

    def flush(self) -> int:
        """Write every state touched since the last flush (under the current event: its partition)."""
        written = len(self.touched)
        for table_key, (_, state) in self.touched.items():
            self.table[table_key] = encode_state(state)
        self.touched.clear()
        return written


def dead_letter_reason_kind(reason: str) -> str:
    """A bounded label for the dead-letter counter, from the human-readable reason."""
    for prefix, kind in (
        ("not JSON", "not_json"),
        ("not a JSON object", "not_object"),
        ("empty envelope", "empty_envelope"),
        ("late:", "late"),
        ("unknown currency", "unknown_currency"),
        ("internal error", "internal_error"),
        ("too large", "too_large"),
    ):
        if reason.startswith(prefix):
            return kind
    return "invalid"


class LeadlagWorker:
    """The Faust app and the worker-level state the agents, timers and views share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy: Policy = settings.policy()
        self.topics = Topics(settings.topic_prefix)
        self.partitions = settings.partitions
        self.counters = Counters()
        self.totals = Totals()
        self.marks: dict[int, tuple[int, int]] = {}
        """partition -> (earliest, newest) event time folded there."""
        self.started_at = time.time()
        self.recovering = True
        self._snapshot: Snapshot | None = None
        self._snapshot_at = 0.0
        self._snapshot_seconds = 0.0
        self._alert_state: dict[str, bool] = {}
        self._checks: list[CheckVerdict] = []
        """The latest verdicts of the other alerts, held for their `for:` durations."""
        self._check_since: dict[str, int] = {}
        self._dead_letter_history: deque[tuple[int, dict[str, int]]] = deque()
        self._lag: dict[tuple[str, int], int] = {}
        self.registry = CollectorRegistry()
        self.app = self._create_app()
        self.table = self.app.Table(
            ENTITIES_TABLE,
            default=None,
            partitions=self.partitions,
            key_type=bytes,
            value_type=bytes,
            help="Entity states (visitor, contact, account, spend channel) of the pure reducers.",
        )
        self.store = TableStore(self.table)
        self.shard = Shard(self.policy, self.store, self.totals)
        self._define_topics_and_agents()

    # -- app ----------------------------------------------------------------------
    def _create_app(self) -> faust.App:
        settings = self.settings
        extra: dict[str, Any] = {}
        if settings.broker_kind == "embedded":
            extra.update(EMBEDDED_TIMEOUTS)
        credentials = broker_credentials(settings)
        if credentials is not None:
            extra["broker_credentials"] = credentials
        app = faust.App(
            settings.app_id,
            broker=normalise_broker_url(settings.broker),
            store="rocksdb://" if settings.store == "rocksdb" else "memory://",
            datadir=str(settings.data_dir),
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            processing_guarantee=settings.processing_guarantee,
            consumer_auto_offset_reset="earliest",
            web_enabled=True,
            web_bind=settings.web_host,
            web_host=settings.web_host,
            web_port=settings.web_port,
            producer_max_request_size=4 * 1024 * 1024,
            consumer_max_fetch_size=4 * 1024 * 1024,
            table_standby_replicas=0,
            autodiscover=False,
            key_serializer="raw",
            value_serializer="raw",
            **extra,
        )
        if settings.broker_kind == "embedded":
            from stream.app import tansu

            tansu.install(app)
        return app

    def _define_topics_and_agents(self) -> None:
        app = self.app
        n = self.partitions
        self.entities_topic = app.topic(self.topics.entities, partitions=n, internal=True)
        self.deadletter_topic = app.topic(self.topics.deadletter, partitions=n)
        self.snapshots_topic = app.topic(self.topics.snapshots, partitions=1)
        self.alerts_topic = app.topic(self.topics.alerts, partitions=1)
        for name in self.topics.inputs:
            app.agent(app.topic(name, partitions=n), name=f"intake:{name}")(self._intake)
        app.agent(self.entities_topic, name="fold")(self._fold)
        self.table.on_recover(self._on_recovered)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.timer(self.settings.snapshot_interval_seconds)(self._publish)
        app.timer(LAG_INTERVAL_SECONDS)(self._measure_lag)

        from stream import views
        from stream.app.web import install_pages

        install_pages(app, self.registry, self.snapshot, self.runtime, views.view)
        self.registry.register(SnapshotCollector(self.snapshot, self.runtime))

    # -- intake: validate, dead-letter, route ------------------------------------
    async def _intake(self, stream: StreamT[bytes]) -> AsyncIterator[None]:
        try:
            async for event in stream.events():
                await self._route_message(event)
                yield None
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # an agent that dies hangs the worker (DESIGN §2.6): stop it instead
            self._fatal("intake", exc)
            raise

    async def _route_message(self, event: EventT[bytes]) -> None:
        message = event.message
        payload: bytes = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
        topic = message.topic
        outgoing: dict[int, list[Item]] = defaultdict(list)
        parsed = parse_message(payload)
        self.counters.messages_in[topic] += 1
        self.counters.events += len(parsed)
        self.counters.events_in[topic] += len(parsed)
        # the whole message is one event unless it was a JSON array (an envelope) that could be read
        whole = ENVELOPE_START.match(payload) is None or (
            len(parsed) == 1 and isinstance(parsed[0], InvalidEvent) and parsed[0].index is None
        )
        newest = max((newest for _, newest in self.marks.values()), default=None)
        for index, item in enumerate(parsed):
            if isinstance(item, InvalidEvent):
                self.counters.invalid += 1
                await self._dead_letter(event, payload if whole else orjson.dumps(item.raw), item.reason, item.index)
                continue
            reason = self._rejection(item, newest)
            if reason is not None:
                self.counters.rejected += 1
                await self._dead_letter(event, payload if whole else item_json(item), reason, None if whole else index)
                continue
            kind, key = entity_of(item)
            outgoing[shard_index(kind, key, self.partitions)].append(item)
        for partition, items in outgoing.items():
            await self.entities_topic.send(value=encode_items(items), partition=partition)

    def _rejection(self, item: Event, newest_ms: int | None) -> str | None:
        """Valid JSON that cannot be counted: a currency with no rate, or older than the newest event seen
        (`newest_ms`) by more than the grace period."""
        currency = getattr(item, "currency", None)
        if currency is not None:
            try:
                self.policy.to_reporting(Decimal(0), currency)
            except UnknownCurrency as exc:
                return str(exc)
        return late_reason(item, newest_ms, self.policy)

    async def _dead_letter(self, event: EventT[bytes], original: bytes, reason: str, index: int | None) -> None:
        message = event.message
        self.counters.deadletters[dead_letter_reason_kind(reason)] += 1
        letter = DeadLetter.of(
            original,
            reason,
            datetime.now(tz=UTC),
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            envelope_index=index,
        )
        if letter.original_text is not None and len(original) > DEADLETTER_TEXT_LIMIT:
            letter = letter.model_copy(update={"original_text": None})
        log.warning(
            "dead letter: %s (topic %s partition %s offset %s%s)",
            reason,
            message.topic,
            message.partition,
            message.offset,
            "" if index is None else f", event {index} of the envelope",
        )
        await self.deadletter_topic.send(value=letter.model_dump_json().encode(), partition=message.partition)

    # -- fold: entity states and totals ------------------------------------------
    async def _fold(self, stream: StreamT[bytes]) -> AsyncIterator[None]:
        try:
            async for event in stream.events():
                await self._fold_batch(event)
                yield None
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fatal("fold", exc)
            raise

    async def _fold_batch(self, event: EventT[bytes]) -> None:
        partition = event.message.partition
        payload = event.message.value
        raw = payload if isinstance(payload, bytes) else bytes(payload or b"")
        try:
            items = decode_items(raw)
        except CodecError as exc:  # written by another leadlag release, or damaged: keep it, explain, go on
            self.counters.rejected += 1
            await self._dead_letter(event, raw, f"internal error: undecodable routed batch: {exc}", None)
            return
        outgoing: dict[int, list[Item]] = defaultdict(list)
        pending: deque[Item] = deque(items)
        earliest, newest = self.marks.get(partition, (None, None))
        while pending:
            item = pending.popleft()
            kind, key = entity_of(item)
            target = shard_index(kind, key, self.partitions)
            if target != partition:  # a link for an entity that lives elsewhere
                outgoing[target].append(item)
                continue
            try:
                step = self.shard.fold(item)
            except Exception as exc:  # a reducer bug must not stop the stream: dead-letter the item
                log.exception("internal error folding %s", type(item).__name__)
                reason = f"internal error: {type(exc).__name__}: {exc}"
                self.counters.rejected += 1
                await self._dead_letter(event, item_json(item), reason, None)
                continue
            if isinstance(item, BaseModel):  # an event, not a link
                if step.duplicate:
                    self.counters.duplicates += 1
                else:
                    self.counters.accepted += 1
                    ts = item.occurred_ms
                    earliest = ts if earliest is None or ts < earliest else earliest
                    newest = ts if newest is None or ts > newest else newest
            pending.extend(step.emitted)
        self.store.flush()
        if earliest is not None and newest is not None and self.marks.get(partition) != (earliest, newest):
            self.marks[partition] = (earliest, newest)
            self.table[MARKS_PREFIX + str(partition).encode()] = orjson.dumps([earliest, newest])
        self.counters.batches += 1
        for target, routed in outgoing.items():
            await self.entities_topic.send(value=encode_items(routed), partition=target)

    # -- rebalance: rebuild the totals from the recovered table --------------------
    async def _on_recovered(self) -> None:
        started = time.perf_counter()
        actives = self._active_partitions()
        totals = Totals()
        marks: dict[int, tuple[int, int]] = {}
        entities = 0
        for raw_key, raw_value in list(self.table.items()):
            table_key = bytes(raw_key)
            if raw_value is None:
                continue
            if table_key.startswith(MARKS_PREFIX):
                partition = int(table_key[len(MARKS_PREFIX) :])
                if partition in actives:
                    earliest, newest = orjson.loads(raw_value)
                    marks[partition] = (earliest, newest)
                continue
            kind_text, _, key = table_key.decode().partition(":")
            if kind_text not in ENTITY_KINDS:
                continue
            kind: EntityKind = kind_text  # type: ignore[assignment]
            if shard_index(kind, key, self.partitions) not in actives:
                continue
            totals.apply(entity_delta(kind, key, decode_state(kind, raw_value), self.policy))
            entities += 1
        self.totals = totals
        self.shard.totals = totals
        self.marks = marks
        self.recovering = False
        self.counters.rebalances += 1
        self._snapshot = None
        log.info(
            "recovered %d entities of partitions %s in %.2f s; totals rebuilt from the table",
            entities,
            sorted(actives),
            time.perf_counter() - started,
        )

    def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Until the next recovery completes, the totals describe partitions we may no longer hold."""
        self.recovering = True

    def _active_partitions(self) -> set[int]:
        assigned = self.app.assignor.assigned_actives()
        return {tp.partition for tp in assigned if tp.topic == self.topics.entities}

    # -- the read side ---------------------------------------------------------------
    def as_of_ms(self) -> int | None:
        if self.settings.clock == "wall":
            return int(time.time() * 1000)
        if not self.marks:
            return None
        return max(newest for _, newest in self.marks.values())

    def snapshot(self) -> Snapshot | None:
        """The current snapshot, recomputed from the totals when older than `SNAPSHOT_TTL_SECONDS`."""
        now = time.monotonic()
        if self._snapshot is None or now - self._snapshot_at > SNAPSHOT_TTL_SECONDS:
            started = time.perf_counter()
            earliest = min((e for e, _ in self.marks.values()), default=None)
            self._snapshot = build_snapshot(self.totals, self.as_of_ms(), earliest, self.policy, self.input_counts())
            self._snapshot_at = now
            self._snapshot_seconds = time.perf_counter() - started
        return self._snapshot

    def input_counts(self) -> InputCounts:
        c = self.counters
        return InputCounts(
            events=c.events, accepted=c.accepted, duplicates=c.duplicates, invalid=c.invalid, rejected=c.rejected
        )

    def runtime(self) -> RuntimeStats:
        c = self.counters
        as_of = self.as_of_ms()
        return RuntimeStats(
            input=self.input_counts(),
            as_of=None if as_of is None else to_datetime(as_of),
            deadletters=dict(c.deadletters),
            messages_in=dict(c.messages_in),
            events_in=dict(c.events_in),
            batches=c.batches,
            consumer_lag=dict(self._lag),
            rebalances=c.rebalances,
            recovering=self.recovering,
            partitions_assigned=len(self._active_partitions()) if not self.recovering else 0,
            snapshot_seconds=self._snapshot_seconds,
            started_at=self.started_at,
            alerts=tuple(self._checks),
            monthly_targets={stage.value: target for stage, target in self.settings.monthly_targets.items()},
            pipeline_target=self.settings.pipeline_target,
            reporting_currency=self.settings.reporting_currency,
        )

    async def _measure_lag(self) -> None:
        """Refresh the consumer lag (it asks the broker, so it runs on a timer, never at scrape time)."""
        from stream.app.tansu import consumer_lag

        if self.recovering:
            return
        consumed = {*self.topics.inputs, self.topics.entities}  # not the changelog: it is only read to recover
        try:
            lag = await consumer_lag(self.app)
            self._lag = {tp: behind for tp, behind in lag.items() if tp[0] in consumed}
        except Exception as exc:
            log.debug("consumer lag not measured this time: %s", exc)

    # -- periodic: snapshot and alert topics ---------------------------------------
    async def _publish(self) -> None:
        snapshot = self.snapshot()
        data = [] if snapshot is None else data_checks(snapshot, self.policy.alerts)
        await self._judge(data, self._worker_checks(), snapshot)
        if snapshot is None or snapshot.as_of is None:
            return
        for window, metrics in snapshot.windows.items():
            await self.snapshots_topic.send(
                key=f"window:{window}".encode(), value=metrics.model_dump_json(exclude_none=True).encode()
            )
        await self.snapshots_topic.send(key=b"revenue:now", value=snapshot.revenue.model_dump_json().encode())
        for month, month_metrics in list(snapshot.months.items())[-12:]:
            await self.snapshots_topic.send(
                key=f"month:{month}".encode(), value=month_metrics.model_dump_json(exclude_none=True).encode()
            )
        for alert in alert_transitions(self._alert_state, snapshot.divergence):
            log.warning("alert %s %s: %s", alert.state, alert.key, alert.verdict.reason)
            await self.alerts_topic.send(key=alert.key.encode(), value=alert.model_dump_json().encode())
        self._alert_state = {verdict.key: verdict.firing for verdict in snapshot.divergence}

    def _worker_checks(self) -> list[CheckVerdict]:
        """Consumer lag and dead letters, from this worker's own counters."""
        now_ms = int(time.time() * 1000)
        window_ms = self.policy.alerts.dead_letter_window_ms
        history = self._dead_letter_history
        history.append((now_ms, dict(self.counters.deadletters)))
        while len(history) > 1 and history[1][0] <= now_ms - window_ms:
            history.popleft()  # keep one sample at or before the window's start, as the base
        recent = recent_increase(list(history), now_ms, window_ms)
        return worker_checks(self._lag, recent, self.topics.inputs, recent, self.policy.alerts)

    async def _judge(self, data: list[CheckVerdict], own: list[CheckVerdict], snapshot: Snapshot | None) -> None:
        """Hold each condition for its `for:`, then publish every change of state on the alert topic."""
        now = datetime.now(UTC)
        held, self._check_since = hold(
            [*data, *own], self._check_since, int(now.timestamp() * 1000), self.policy.alerts
        )
        previous = {verdict.key: verdict.firing for verdict in self._checks}
        judged = {verdict.key for verdict in held}
        # a scope not judged this time (no snapshot while recovering) keeps its state, unannounced
        self._checks = [*held, *(verdict for verdict in self._checks if verdict.key not in judged)]
        data_at = now if snapshot is None or snapshot.as_of is None else snapshot.as_of
        data_keys = {verdict.key for verdict in data}
        alerts = [
            *check_transitions(previous, [v for v in held if v.key in data_keys], data_at),
            *check_transitions(previous, [v for v in held if v.key not in data_keys], now),
        ]
        for alert in alerts:
            log.warning("alert %s %s: %s", alert.state, alert.key, alert.verdict.reason)
            await self.alerts_topic.send(key=alert.key.encode(), value=alert.model_dump_json().encode())

    # -- failure ----------------------------------------------------------------------
    def _fatal(self, agent: str, exc: BaseException) -> None:
        """A crashed agent would leave the worker hanging: log it plainly and exit non-zero for the supervisor."""
        log.critical("agent %s crashed: %s: %s; stopping the worker (exit 70)", agent, type(exc).__name__, exc)
        logging.shutdown()
        os._exit(70)


def item_json(item: Item) -> bytes:
    """An item as JSON bytes, for the dead letter of an event judged after parsing."""
    if isinstance(item, BaseModel):
        return item.model_dump_json().encode()
    return orjson.dumps(item, default=str)


def normalise_broker_url(broker: str) -> str:
    """`host:9092` or `kafka://host:9092`, several separated by `,` or `;`, as Faust expects them."""
    if not broker:
        raise ValueError("no broker: set LEADLAG_BROKER (e.g. kafka://localhost:9092) or run `leadlag demo`")
    parts = [part.strip() for part in broker.replace(",", ";").split(";") if part.strip()]
    return ";".join(part if "://" in part else f"kafka://{part}" for part in parts)


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials from the SASL/SSL settings (None for PLAINTEXT)."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if protocol in {"SSL", "SASL_SSL"}:
        from aiokafka.helpers import create_ssl_context

        ssl_context = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    return faust.SASLCredentials(
        username=settings.sasl_username or "",
        password=password,
        mechanism=settings.sasl_mechanism,
        ssl_context=ssl_context,
    )


WorkerFactory = Callable[[Settings], LeadlagWorker]
