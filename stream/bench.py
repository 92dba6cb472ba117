"""`leadlag bench`: how fast the worker folds events, next to a raw consumer reading the same topics.

One run per input shape (envelopes of 200, single-event messages): produce
N simulated events into fresh topics, then read them all back twice —
(a) with a bare aiokafka consumer that only decodes the JSON, in a child
process, and (b) with the real `leadlag worker` as a subprocess, polled over
`/api/status` until it has judged all N. Both numbers come from the same
run on the same topics, so their ratio says what the worker's machinery
costs, and each process's peak RSS says what it holds.

The module keeps its top-level imports light: the raw consumer child imports
it, and its peak RSS should be the consumer's, not the producer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_EVENTS = 1_000_000
DEFAULT_SHAPES = (200, 1)
TARGET_RATIO = {200: 0.15, 1: 0.05}
"""Worker/raw ratios the worker aims at per input shape (issue: "Bounded state and a batch hot path")."""
TARGET_WORKER_RSS_BYTES = 250 * 2**20
TARGET_SCALE_OUT = {2: 1.7}
"""Worker count -> how many times one worker's events/s that many fold together (issue: "One company, many
workers": two workers on the two cores of the project's machine)."""
STALL_SECONDS = 180.0
"""A path that makes no progress for this long has failed (the worker's first group join takes ~10 s)."""
POLL_SECONDS = 0.25
WORKER_COMMAND = (sys.executable, "-m", "stream.cli", "worker", "--log-level", "warning")


class BenchError(RuntimeError):
    """A measured path failed or stalled; the message says which and why (with the worker's log tail)."""


@dataclass(frozen=True, slots=True)
class PathResult:
    """One path's measurement: events seen, over how long, and the process's peak resident memory."""

    events: int
    seconds: float | None
    """From the first progress seen to the last; None when everything arrived at once."""
    peak_rss_bytes: int | None
    snapshot_seconds: float | None = None
    """The worker's last snapshot build (the read model's, on its timer); None for the raw consumer."""

    @property
    def events_per_second(self) -> float | None:
        return self.events / self.seconds if self.seconds else None


@dataclass(frozen=True, slots=True)
class ShapeResult:
    """Both paths over the same topics: `envelope_size` events per message (1: one keyed event each)."""

    envelope_size: int
    events: int
    messages: int
    produce_seconds: float
    raw: PathResult
    worker: PathResult | None
    worker_error: str | None = None
    workers: int = 1
    """Worker processes that folded the events together (one consumer group)."""

    @property
    def ratio(self) -> float | None:
        """Worker events/s over raw-consumer events/s (> 1: the worker is faster)."""
        if self.worker is None:
            return None
        worker, raw = self.worker.events_per_second, self.raw.events_per_second
        return worker / raw if worker and raw else None

    def as_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["ratio"] = self.ratio
        document["raw"]["events_per_second"] = self.raw.events_per_second
        if self.worker is not None:
            document["worker"]["events_per_second"] = self.worker.events_per_second
        return document


@dataclass(slots=True)
class Throughput:
    """Counts polled over time; the rate is taken between the first and the last poll that saw a change.

    Why: the worker's start-up (group join, topic checks) is not folding;
    timing from the first change measures only the processing.
    """

    changes: list[tuple[float, int]] = field(default_factory=list)

    def observe(self, at: float, count: int) -> bool:
        """Record a poll; True if the count changed since the last one."""
        if self.changes and self.changes[-1][1] == count:
            return False
        if not self.changes and count == 0:
            return False
        self.changes.append((at, count))
        return True

    @property
    def last_change(self) -> float | None:
        return self.changes[-1][0] if self.changes else None

    def seconds(self) -> float | None:
        if len(self.changes) < 2:
            return None
        return self.changes[-1][0] - self.changes[0][0]

    def events_after_first_change(self) -> int:
        return self.changes[-1][1] - self.changes[0][1] if self.changes else 0


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident set size (VmHWM), or None when it is gone or not on Linux."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scale_out(results: Sequence[ShapeResult]) -> list[tuple[int, int, float]]:
    """(envelope size, workers, their events/s over one worker's) for each shape measured with one worker
    and with more, in the order measured."""
    single = {
        result.envelope_size: result.worker.events_per_second
        for result in results
        if result.workers == 1 and result.worker is not None
    }
    factors = []
    for result in results:
        alone = single.get(result.envelope_size)
        together = result.worker.events_per_second if result.worker is not None else None
        if result.workers > 1 and alone and together:
            factors.append((result.envelope_size, result.workers, together / alone))
    return factors


# -- (a) the raw consumer --------------------------------------------------------------------------


async def consume_raw(options: dict[str, Any], topics: Sequence[str], events: int) -> tuple[int, float | None]:
    """Read `topics` from the start until `events` events were decoded; (events, seconds from first record).

    No consumer group, no commits, no validation: `orjson.loads` and a count,
    the floor any Kafka consumer in Python pays.
    """
    import orjson
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        **options,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    first: float | None = None
    last_progress = time.monotonic()
    try:
        while seen < events:
            batches = await consumer.getmany(timeout_ms=1000)
            now = time.monotonic()
            if not batches:
                if now - last_progress > STALL_SECONDS:
                    raise BenchError(f"raw consumer stalled at {seen:,} of {events:,} events")
                continue
            if first is None:
                first = now
            last_progress = now
            for records in batches.values():
                for record in records:
                    decoded = orjson.loads(record.value)
                    seen += len(decoded) if isinstance(decoded, list) else 1
    finally:
        await consumer.stop()
    finished = time.monotonic()
    return seen, None if first is None else finished - first


def raw_consumer_child() -> None:
    """Entry point of the raw consumer's process: JSON arguments in argv[1], a JSON result on stdout."""
    import resource

    arguments = json.loads(sys.argv[1])
    if arguments["options"] is None:
        from stream.produce import connection_options
        from stream.settings import load_settings

        options = connection_options(load_settings(broker=arguments["broker"]))
    else:
        options = arguments["options"]
    seen, seconds = asyncio.run(consume_raw(options, arguments["topics"], arguments["events"]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"events": seen, "seconds": seconds, "peak_rss_bytes": peak}))


RAW_CHILD = "from stream.bench import raw_consumer_child; raw_consumer_child()"


def measure_raw(broker: str, plaintext: bool, topics: Sequence[str], events: int) -> PathResult:
    """Run the raw consumer in its own process (so its peak RSS is its own) and return its measurement."""
    from stream.app.admin import bootstrap_servers

    options = {"bootstrap_servers": bootstrap_servers(broker)} if plaintext else None
    arguments = json.dumps({"options": options, "broker": broker, "topics": list(topics), "events": events})
    child = subprocess.run(
        [sys.executable, "-c", RAW_CHILD, arguments], capture_output=True, text=True, check=False, timeout=3600
    )
    if child.returncode != 0:
        raise BenchError(f"raw consumer failed (exit {child.returncode}):\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    return PathResult(result["events"], result["seconds"], result["peak_rss_bytes"])


# -- (b) the worker ---------------------------------------------------------------------------------


def judged(status: dict[str, Any]) -> int:
    """Events the worker has finished with, from `/api/status`: accepted, duplicates, invalid or rejected."""
    counts = status["input"]
    return sum(int(counts.get(name) or 0) for name in ("accepted", "duplicates", "invalid", "rejected"))


def worker_environment(
    broker: str, broker_kind: str, prefix: str, web_port: int, data_dir: Path, partitions: int
) -> dict[str, str]:
    """The worker's settings for a bench run: its own topics, group, port and data directory; memory store."""
    return {
        **os.environ,
        "LEADLAG_BROKER": broker,
        "LEADLAG_BROKER_KIND": broker_kind,
        "LEADLAG_TOPIC_PREFIX": prefix,
        "LEADLAG_APP_ID": f"{prefix}leadlag",
        "LEADLAG_PARTITIONS": str(partitions),
        "LEADLAG_WEB_HOST": "127.0.0.1",
        "LEADLAG_WEB_PORT": str(web_port),
        "LEADLAG_STORE": "memory",
        "LEADLAG_DATA_DIR": str(data_dir),
        # the simulated company bills some accounts in EUR; without a rate they would be rejected
        "LEADLAG_FX_RATES": os.environ.get("LEADLAG_FX_RATES", "EUR=1.08"),
    }


@contextlib.contextmanager
def running_process(command: Sequence[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own process group, stopped with SIGTERM (then SIGKILL) however the block ends."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            list(command), env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _status(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def measure_worker(
    broker: str,
    broker_kind: str,
    prefix: str,
    events: int,
    partitions: int,
    work_dir: Path,
    command: Sequence[str] = WORKER_COMMAND,
    workers: int = 1,
) -> PathResult:
    """Start `workers` `leadlag worker` processes on the bench's topics (one group) and poll their
    `/api/status` until they have judged `events`.

    Every worker reports the whole company's input counts, so the progress is the largest count any
    reports. With several workers, progress counts only from when every one of them holds partitions, so
    the rate is theirs together, not the first one's alone while the others join. Peak RSS: the largest
    worker's.
    """
    ports = [free_port() for _ in range(workers)]
    urls = [f"http://127.0.0.1:{port}/api/status" for port in ports]
    meter = Throughput()
    peak: int | None = None
    snapshot_seconds: float | None = None
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        processes = []
        for number, port in enumerate(ports):
            env = worker_environment(broker, broker_kind, prefix, port, work_dir / f"data-{number}", partitions)
            log = work_dir / f"worker-{number}.log"
            processes.append((stack.enter_context(running_process(command, env, log)), log))
        count = 0
        while count < events:
            for process, log in processes:
                if process.poll() is not None:
                    raise BenchError(f"a worker exited ({process.returncode}) at {count:,} events:\n{_tail(log)}")
            statuses = [_status(url) for url in urls]
            now = time.monotonic()
            known = [status for status in statuses if status is not None]
            if known:
                count = max(judged(status) for status in known)
                everyone = len(known) == workers and all(s["runtime"].get("partitions") for s in known)
                if workers == 1 or everyone or count >= events:
                    meter.observe(now, count)
                snapshot_seconds = max(
                    (s["runtime"].get("snapshot_seconds") or 0.0 for s in known), default=snapshot_seconds
                )
            peaks = [peak_rss_bytes(process.pid) for process, _ in processes]
            peak = max((p for p in (*peaks, peak) if p is not None), default=None)
            if now - (meter.last_change or started) > STALL_SECONDS:
                raise BenchError(
                    f"the workers made no progress for {STALL_SECONDS:.0f} s at {count:,} events\n"
                    + _tail(processes[0][1])
                )
            if count < events:
                time.sleep(POLL_SECONDS)
        peaks = [peak_rss_bytes(process.pid) for process, _ in processes]
        peak = max((p for p in (*peaks, peak) if p is not None), default=None)
    seconds = meter.seconds()
    return PathResult(meter.events_after_first_change() if seconds else count, seconds, peak, snapshot_seconds)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


# -- the run ----------------------------------------------------------------------------------------


def bench_shape(
    broker: str,
    broker_kind: str,
    events: int,
    envelope_size: int,
    *,
    seed: int = 1,
    partitions: int = 4,
    with_worker: bool = True,
    worker_command: Sequence[str] = WORKER_COMMAND,
    on_step: Callable[[str], None] | None = None,
    workers: int = 1,
) -> ShapeResult:
    """Produce `events` into fresh topics in one input shape, then measure the raw consumer and the worker."""
    from stream.app.topics import Topics
    from stream.produce import produce_count
    from stream.settings import load_settings

    step = on_step or (lambda _: None)
    prefix = f"bench-{uuid.uuid4().hex[:8]}-e{envelope_size}."
    settings = load_settings(broker=broker, topic_prefix=prefix, partitions=partitions)
    step(f"producing {events:,} events, {envelope_size} per message")
    stats = asyncio.run(produce_count(settings, events, seed=seed, envelope_size=envelope_size))
    step("raw consumer reading them back")
    raw = measure_raw(broker, settings.security_protocol == "PLAINTEXT", Topics(prefix).inputs, events)
    worker: PathResult | None = None
    error: str | None = None
    if with_worker:
        step(f"{workers} leadlag worker{'s' if workers > 1 else ''} folding them")
        with tempfile.TemporaryDirectory(prefix="leadlag-bench-") as work_dir:
            try:
                worker = measure_worker(
                    broker, broker_kind, prefix, events, partitions, Path(work_dir), worker_command, workers
                )
            except BenchError as exc:
                error = str(exc)
    return ShapeResult(
        envelope_size=envelope_size,
        events=stats.total_events,
        messages=stats.total_messages,
        produce_seconds=stats.elapsed_seconds,
        raw=raw,
        worker=worker,
        worker_error=error,
        workers=workers,
    )


def run_bench(
    broker: str | None,
    events: int = DEFAULT_EVENTS,
    shapes: Sequence[int] = DEFAULT_SHAPES,
    *,
    broker_kind: str = "kafka",
    seed: int = 1,
    partitions: int = 4,
    with_worker: bool = True,
    worker_command: Sequence[str] = WORKER_COMMAND,
    on_step: Callable[[str], None] | None = None,
    workers: Sequence[int] = (1,),
) -> list[ShapeResult]:
    """Every shape against `broker`, or against an embedded broker started (and stopped) for the run."""
    if broker:
        return [
            bench_shape(
                broker,
                broker_kind,
                events,
                size,
                seed=seed,
                partitions=partitions,
                with_worker=with_worker,
                worker_command=worker_command,
                on_step=on_step,
                workers=count,
            )
            for size in shapes
            for count in workers
        ]
    from stream.broker import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        return run_bench(
            embedded.bootstrap,
            events,
            shapes,
            broker_kind="embedded",
            seed=seed,
            partitions=partitions,
            with_worker=with_worker,
            worker_command=worker_command,
            on_step=on_step,
            workers=workers,
        )
