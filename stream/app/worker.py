"""The live worker: a Faust app hosting the batch engine, the read model, the publisher and the web views.

Read it by its files, each one role, each arrow one way:

    stream/app/intake.py     validate a message's events, dead-letter bad input, place each event
    stream/app/fold.py       fold items into the owned partitions' entity states, emit links
    stream/state/            the store interface, memory and RocksDB backends, the batched changelog
    stream/app/engine.py     consume a batch -> intake -> fold -> send -> changelog -> store -> commit
    stream/app/readmodel.py  totals -> snapshot, on a timer, serialized once per build
    stream/app/publish.py    snapshot and alert topics
    stream/app/web.py        /metrics and the JSON views over the read model

At-least-once, and why the figures are still exact: the engine commits a
step's input offsets only after everything the step produced — routed events
and links, dead letters, then the changelog records of every entity it changed
— has been acknowledged by the broker, and writes its local store only after
the changelog. After a crash at any point the uncommitted tail is read again:
what had already reached the changelog is a duplicate by `event_id` (its links
went out before its state), the rest is folded for the first time, and a local
store behind the changelog catches up from it. See `stream.app.engine` and
docs/architecture.md.

Faust runs the process (signals, lifecycle, the web server, timers and its
Prometheus sensors); the stream itself is consumed in batches by the engine,
not by Faust agents: Faust's per-message iteration and per-key table writes
cost 100-1000 times more than the work itself (docs/architecture.md, "The hot path").
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable

import faust
from faust.app.base import BootStrategy
from mode import ServiceT
from prometheus_client import CollectorRegistry

from schemas.snapshot import InputCounts, Snapshot
from stream.app.engine import Engine
from stream.app.health import HealthFacts, Missing, readiness
from stream.app.publish import Publisher
from stream.app.readmodel import REFRESH_SECONDS, Facts, ReadModel
from stream.app.sensors import FaustSensors
from stream.app.topics import Topics
from stream.core.policy import Policy
from stream.core.windows import to_datetime
from stream.metrics import RuntimeStats, SnapshotCollector
from stream.settings import Settings

log = logging.getLogger("leadlag.worker")

LAG_INTERVAL_SECONDS = 5.0
SHUTDOWN_SECONDS = 15.0
"""A worker asked to stop exits within this, whatever it waits for (docs/architecture.md, "Stopping")."""
SHUTDOWN_EXPIRED_EXIT = 1
CREDENTIALS_IN_URL = re.compile(r"(^|[;,\s]|://)[^/;,\s]*@")
"""`user:password@` (or `token@`) after a scheme or at the start of a server: never printed."""


class WorkerBoot(BootStrategy):
    """Faust without its Kafka consumer, producer and tables: the engine consumes and produces itself."""

    enable_kafka = False

    def tables(self) -> Iterable[ServiceT]:
        return []


class WorkerApp(faust.App):
    BootStrategy = WorkerBoot

    async def on_stop(self) -> None:
        """Stopping starts here (a signal, or a crash): from now on the process exits within `SHUTDOWN_SECONDS`."""
        exit_after(SHUTDOWN_SECONDS)
        await super().on_stop()


def exit_after(seconds: float) -> None:
    """End the process (exit `SHUTDOWN_EXPIRED_EXIT`) should it still be shutting down after `seconds`.

    Faust waits for every service and future to finish; one waiting on a broker that vanished (aiokafka
    retries until its request timeout, and then again) would keep the worker alive indefinitely.
    """

    def expire() -> None:
        log.error(
            "the worker did not stop within %.0f s (is its broker gone?): exiting now (exit %d)",
            seconds,
            SHUTDOWN_EXPIRED_EXIT,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(SHUTDOWN_EXPIRED_EXIT)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


class LeadlagWorker:
    """The Faust app and the parts it hosts; `app` is what `faust.Worker` runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy: Policy = settings.policy()
        self.topics = Topics(settings.topic_prefix)
        self.partitions = settings.partitions
        self.started_at = time.time()
        if settings.processing_guarantee == "exactly_once":
            log.warning(
                "LEADLAG_PROCESSING_GUARANTEE=exactly_once is not used: leadlag is at-least-once with reducers "
                "idempotent by event_id, which gives the same figures (see docs/architecture.md)"
            )
        quiet_payload_logs()
        self.registry = CollectorRegistry()
        self.app = self._create_app()
        self.engine = Engine(settings, self.policy, beacon=self.app.beacon)
        self.read_model = ReadModel(self.policy, self._version, self._facts)
        self.publisher = Publisher(self.topics, self.policy, settings.output_message_bytes)
        self.publish_failures = 0
        self._publish_errors_logged: set[str] = set()
        self._wire()

    # -- app ----------------------------------------------------------------------
    def _create_app(self) -> faust.App:
        settings = self.settings
        return WorkerApp(
            settings.app_id,
            broker=normalise_broker_url(settings.broker),
            datadir=str(settings.data_dir),
            web_enabled=True,
            web_bind=settings.web_host,
            web_host=settings.web_host,
            web_port=settings.web_port,
            # Faust's own pages are off: /table/... would serve an entity's raw state to anyone (README, "HTTP")
            web_router_enabled=False,
            web_tables_enabled=False,
            web_stats_enabled=False,
            web_graph_enabled=False,
            web_metrics_enabled=False,
            autodiscover=False,
        )

    def _wire(self) -> None:
        app = self.app

        async def start_engine() -> None:
            await app.add_runtime_dependency(self.engine)

        app.task(start_engine)
        app.timer(REFRESH_SECONDS)(self._refresh)
        app.timer(self.settings.snapshot_interval_seconds)(self._publish)
        app.timer(LAG_INTERVAL_SECONDS)(self.engine.measure_lag)

        from stream.app.web import install_pages

        token = self.settings.api_token
        install_pages(
            app,
            self.registry,
            lambda path: self.read_model.respond(path, self.runtime()),
            self.readiness,
            token.get_secret_value() if token is not None else None,
        )
        self.registry.register(SnapshotCollector(self.snapshot, self.runtime))
        self.engine.sensors = FaustSensors(app)

    # -- the read side ---------------------------------------------------------------
    def _version(self) -> int | None:
        """None while the figures would describe part of the company: recovering, or not yet read the other
        partitions' changelog up to where it stood (`stream.app.company`)."""
        engine = self.engine
        if engine.recovering or engine.company_behind():
            return None
        return engine.version

    def _facts(self) -> Facts:
        engine = self.engine
        return Facts(engine.totals(), self.as_of_ms(), engine.earliest_ms(), self.input_counts())

    async def _refresh(self) -> None:
        """Build the snapshot in a thread, so that scrapes and requests are answered during a long build; under
        the step lock and the replicas' lock, so that nothing changes the totals while it reads them."""
        engine = self.engine
        async with engine.lock, engine.replicas_lock:
            await self.read_model.refresh_in_thread(always=self.settings.clock == "wall")

    def snapshot(self) -> Snapshot | None:
        """The last snapshot built (never built here: see `stream.app.readmodel`)."""
        return self.read_model.current()

    def as_of_ms(self) -> int | None:
        if self.settings.clock == "wall":
            return int(time.time() * 1000)
        return self.engine.newest_ms()

    def input_counts(self) -> InputCounts:
        tally = self.engine.input_tally()
        return InputCounts(
            events=tally.events,
            accepted=tally.accepted,
            duplicates=tally.duplicates,
            invalid=tally.invalid,
            rejected=tally.rejected,
        )

    def readiness(self) -> tuple[Missing, ...]:
        """The readiness conditions that do not hold now (`stream.app.health`); empty when ready."""
        engine = self.engine
        return readiness(
            HealthFacts(
                assignment_received=engine.assignment_received,
                rebalancing=engine.rebalancing,
                recovering=engine.recovering,
                company_behind=tuple(engine.company_behind()),
                broker_seen_at=engine.broker_seen_at,
                lag_measured=engine.lag_measured,
                snapshot_built=self.read_model.current() is not None,
                now=time.monotonic(),
            )
        )

    def runtime(self) -> RuntimeStats:
        engine = self.engine
        counts = engine.counts
        as_of = self.as_of_ms()
        return RuntimeStats(
            input=self.input_counts(),
            as_of=None if as_of is None else to_datetime(as_of),
            deadletters=dict(counts.deadletters),
            messages_in=dict(counts.messages_in),
            events_in=dict(counts.events_in),
            batches=counts.steps,
            consumer_lag=dict(engine.lag),
            rebalances=counts.rebalances,
            recovering=engine.recovering,
            partitions_assigned=0 if engine.recovering else len(engine.owned_partitions()),
            partitions=() if engine.recovering else tuple(engine.owned_partitions()),
            voice=self.publisher.speaking,
            snapshot_seconds=self.read_model.build_seconds,
            started_at=self.started_at,
            alerts=tuple(self.publisher.checks),
            monthly_targets={stage.value: target for stage, target in self.settings.monthly_targets.items()},
            pipeline_target=self.settings.pipeline_target,
            reporting_currency=self.settings.reporting_currency,
            not_ready=tuple((missing.condition, missing.reason) for missing in self.readiness()),
            snapshot_failures=self.read_model.failures,
            publish_failures=self.publish_failures,
        )

    # -- periodic: snapshot and alert topics ---------------------------------------
    async def _publish(self) -> None:
        """Judge the alerts on every worker; the company's voice (owner of partition 0) publishes.

        Under the step lock, so a rebalance (whose revoke waits for it) cannot move the voice mid-publication.
        """
        producer = self.engine._producer
        if producer is None:
            return
        engine = self.engine
        publisher = self.publisher
        try:
            async with engine.lock:
                speaks = engine.speaks()
                if not speaks:
                    publisher.silence()
                elif not publisher.speaking:
                    publisher.restore((await engine.read_alerts()).items())
                letters = engine.input_tally().letters
                await publisher.publish(producer, self.snapshot(), engine.company_lag, letters, speaks=speaks)
        except Exception as exc:  # a failed publication is retried by the next tick; it never stops the worker
            self.publish_failures += 1
            error = f"{type(exc).__name__}: {exc}"[:500]
            if error not in self._publish_errors_logged:
                if len(self._publish_errors_logged) < 100:
                    self._publish_errors_logged.add(error)
                log.error(
                    "publishing the snapshot and alerts failed (%s); the next tick tries again "
                    "(counted in leadlag_publish_failures_total, logged once per distinct error)",
                    error,
                )


def redacted_broker_url(broker: str) -> str:
    """The broker setting as it may be printed: any `user:password@` in a URL replaced by `***@`."""
    return CREDENTIALS_IN_URL.sub(r"\1***@", broker)


def quiet_payload_logs() -> None:
    """Keep message values out of the logs whatever the level: aiokafka logs every record it sends at
    debug level, key and value included."""
    logging.getLogger("aiokafka.producer.producer").addFilter(_no_payloads)


def _no_payloads(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Sending (key=")


def normalise_broker_url(broker: str) -> str:
    """`host:9092` or `kafka://host:9092`, several separated by `,` or `;`, as Faust expects them."""
    if not broker:
        raise ValueError("no broker: set LEADLAG_BROKER (e.g. kafka://localhost:9092) or run `leadlag demo`")
    parts = [part.strip() for part in broker.replace(",", ";").split(";") if part.strip()]
    return ";".join(part if "://" in part else f"kafka://{part}" for part in parts)


WorkerFactory = Callable[[Settings], LeadlagWorker]
