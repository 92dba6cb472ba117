"""At-least-once, really: a worker SIGKILLed five times while it folds ends equal to `leadlag replay`.

A mixed stream (envelopes and single events of every type) flows into the real
embedded broker while the worker's process group is killed with SIGKILL at five
random points of its work — each time only once it has folded something since
its last start, so never while it is still joining — and restarted on the same
data directory (RocksDB local store). Then a fresh worker on an *empty* data
directory recovers every partition from the changelog alone. Both end equal to
the replay of the same events in every figure of the snapshot, attribution and
first-touch channels included: the local store, the changelog and the committed
offsets never disagreed, and no link an entity emitted was lost. The input
counts (`input`: read, accepted, duplicates, invalid, rejected) equal
replay's too: they survive the kills and the recovery, and a message read
again after a kill is counted neither again nor as a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.core.windows import DAY_MS
from stream.replay import replay
from stream.simulation import generate_count
from tests.integration.processes import WorkerProcess, get, produce_events, stop_group, wait_until
from tests.integration.test_worker import POLICY, converges, replayed

pytestmark = pytest.mark.integration

EVENTS = 60_000
KILLS = 5
BURST_SHARE = 0.12
"""Produced while the worker is down, before each start: it comes back to a backlog, so it is busy folding."""
TRICKLE_CHUNKS = 24
TRICKLE_PAUSE_S = 2.5
"""The rest flows all along, in small chunks, whatever the worker is doing."""
SHAPES = (200, 1, 50, 1)
"""Envelope sizes of the successive chunks: leadlag's own producers and third-party single events."""
HORIZON_DAYS = 366
SETTINGS = {"store": "rocksdb", "dedupe_horizon_days": str(HORIZON_DAYS)}
"""A horizon longer than the stream: what this test proves is crash safety, apart from the horizon's own bound.
With the default 7 days, an event that reached its entity more than 7 days (event time) behind the entity's
newest one is not remembered; read again after a kill, it counts twice, as any duplicate that late does
(docs/architecture.md, "State, changelog and recovery"). Replay folds with the same horizon."""
CHAOS_POLICY = replace(POLICY, dedupe_horizon_ms=HORIZON_DAYS * DAY_MS)
KILL_WITHIN_S = 0.6
"""A kill comes this long at most after the worker's first step since its start (its backlog takes longer)."""


def produce_in_chunks(bootstrap: str, prefix: str, events: list[dict[str, Any]], chunks: int, pause_s: float) -> None:
    size = -(-len(events) // chunks)
    for number, start in enumerate(range(0, len(events), size)):
        chunk = events[start : start + size]
        asyncio.run(produce_events(bootstrap, prefix, chunk, envelope_size=SHAPES[number % len(SHAPES)]))
        time.sleep(pause_s)


def replayed_input(events: list[dict[str, Any]]) -> dict[str, int]:
    """`input` as `leadlag replay` counts it for these events."""
    _, counts = replay((orjson.dumps(event) for event in events), CHAOS_POLICY)
    return {
        "events": counts.events,
        "accepted": counts.accepted,
        "duplicates": counts.duplicates,
        "invalid": counts.invalid,
        "rejected": counts.rejected,
        "after_as_of": 0,
    }


def counts_equal(worker: WorkerProcess, expected: dict[str, int], seconds: float = 30) -> None:
    latest: list[Any] = []

    def equal() -> bool:
        worker.alive()
        status, body = get(f"{worker.base}/api/snapshot")
        if status != 200:  # 503 while it starts and recovers
            return False
        latest[:] = [json.loads(body)["input"]]
        return bool(latest[0] == expected)

    try:
        wait_until(equal, seconds, "the input counts equal to replay's", worker.log)
    except AssertionError:
        assert latest
        assert latest[0] == expected
        raise


def steps_since_start(worker: WorkerProcess) -> int:
    return int(worker.status()["runtime"]["batches_folded"])


def test_a_worker_killed_five_times_while_folding_then_recovered_on_an_empty_store_ends_equal_to_replay(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    events = list(generate_count(EVENTS, seed=21))
    burst = int(len(events) * BURST_SHARE)
    bursts = [events[n * burst : (n + 1) * burst] for n in range(KILLS + 1)]
    trickle = events[(KILLS + 1) * burst :]
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"kill points seeded with {seed}")
    bootstrap = embedded_broker.bootstrap
    producer = threading.Thread(
        target=produce_in_chunks,
        args=(bootstrap, topic_prefix, trickle, TRICKLE_CHUNKS, TRICKLE_PAUSE_S),
        daemon=True,
    )
    expected = replayed(events, CHAOS_POLICY)
    expected_input = replayed_input(events)

    data = tmp_path / "data"
    worker: WorkerProcess | None = None
    try:
        for start in range(KILLS):
            produce_in_chunks(bootstrap, topic_prefix, bursts[start], 2, 0)
            worker = WorkerProcess(embedded_broker.url, topic_prefix, data, **SETTINGS).start()
            if start == 0:
                producer.start()
            wait_until(
                lambda w=worker: w.alive() and steps_since_start(w) > 0,
                120,
                f"the worker folding after start {start + 1}",
                worker.log,
            )
            time.sleep(rng.uniform(0.0, KILL_WITHIN_S))
            assert worker.process is not None
            stop_group(worker.process, signal.SIGKILL)
            assert worker.process.returncode == -signal.SIGKILL, "the worker exited on its own before the kill"
        produce_in_chunks(bootstrap, topic_prefix, bursts[KILLS], 2, 0)
        worker = WorkerProcess(embedded_broker.url, topic_prefix, data, **SETTINGS).start()
        producer.join(300)
        assert not producer.is_alive()
        counts_equal(worker, expected_input, seconds=180)
        converges(worker, expected, seconds=180)
        assert worker.stop() == 0
    finally:
        if worker is not None:
            worker.stop()

    with_empty_store = WorkerProcess(embedded_broker.url, topic_prefix, tmp_path / "empty", **SETTINGS).start()
    try:
        converges(with_empty_store, expected, seconds=180)
        counts_equal(with_empty_store, expected_input)
    finally:
        with_empty_store.stop()
