"""One company, many workers: whatever the number of workers, every output describes the whole company.

On the real embedded broker, a mixed stream (envelopes and single events, with the scripted "traffic up,
conversion down" incident at its end) flows while the group grows from one worker to two and three; then
the company's voice (the owner of partition 0) is killed with SIGKILL mid-stream and another worker joins.
At the end:

- every worker's `/api/snapshot` equals `leadlag replay` of the stream in every figure, and its input
  counts are the company's (every event read and accepted once);
- the last record of every key on `leadlag.snapshots` equals replay too;
- `leadlag.alerts` holds the transitions one worker alone would have published: for each alert, states
  that alternate (never the same twice in a row: nothing repeated across a handover), starting with
  `firing` and ending in replay's verdict (nothing dropped). The voice is killed once more after the
  alert fired, so its successor must take the announced state from the topic rather than repeat it.

With 4 partitions, and with 8 so that three workers hold them unevenly (3, 3, 2).
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from stream.simulation import generate_count
from tests.integration.processes import WorkerProcess, get, stop_group, wait_until
from tests.integration.test_chaos import produce_in_chunks as produce
from tests.integration.test_worker import converges, normalised, replayed

pytestmark = pytest.mark.integration

EVENTS = 12_000
SEED = 1
"""A stream whose incident makes replay's overall divergence verdict fire at its end."""
MONTHS_PUBLISHED = 12
PUBLISH_SECONDS = 2
"""The workers' LEADLAG_SNAPSHOT_INTERVAL_SECONDS in these tests."""


def status(worker: WorkerProcess) -> dict[str, Any]:
    worker.alive()
    code, body = get(f"{worker.base}/api/status")
    assert code in (200, 503), code
    return json.loads(body)  # type: ignore[no-any-return]


def ready(worker: WorkerProcess) -> bool:
    worker.alive()
    return get(f"{worker.base}/readyz")[0] == 200


def last_records(bootstrap: str, topic: str) -> list[tuple[str, dict[str, Any]]]:
    """Every (key, value) on a topic, oldest first, read until it is idle."""

    async def read() -> list[tuple[str, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        found: list[tuple[str, dict[str, Any]]] = []
        try:
            while batch := await consumer.getmany(timeout_ms=2000):
                for records in batch.values():
                    found.extend((bytes(r.key or b"").decode(), json.loads(r.value or b"null")) for r in records)
        finally:
            await consumer.stop()
        return found

    return asyncio.run(read())


def published_snapshot(bootstrap: str, prefix: str) -> dict[str, Any]:
    """The last value of every key on the snapshot topic."""
    return dict(last_records(bootstrap, f"{prefix}leadlag.snapshots"))


def expected_publication(expected: dict[str, Any]) -> dict[str, Any]:
    months = list(expected["months"].items())[-MONTHS_PUBLISHED:]
    return {
        **{f"window:{window}": body for window, body in expected["windows"].items()},
        "revenue:now": expected["revenue"],
        **{f"month:{month}": body for month, body in months},
    }


@pytest.mark.parametrize("partitions", [4, 8])
def test_every_worker_and_every_output_describe_the_whole_company_while_workers_join_and_die(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path, partitions: int
) -> None:
    events = list(generate_count(EVENTS, seed=SEED, incident=True))
    expected = replayed(events)
    firing_at_end = {
        "overall" if v["scope"] == "overall" else f"channel:{v['channel']}": v["firing"] for v in expected["divergence"]
    }
    assert any(firing_at_end.values()), "the stream must make replay's divergence verdict fire"
    quarter = len(events) // 4
    parts = [events[n * quarter : (n + 1) * quarter] for n in range(3)] + [events[3 * quarter :]]
    bootstrap, url = embedded_broker.bootstrap, embedded_broker.url
    settings = {"partitions": str(partitions)}
    workers: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        worker = WorkerProcess(url, topic_prefix, tmp_path / name / "data", **settings)
        (tmp_path / name).mkdir()
        workers.append(worker.start())
        return worker

    try:
        first = start("a")
        wait_until(lambda: ready(first), 120, "the first worker ready (its topics created)", first.log)
        produce(bootstrap, topic_prefix, parts[0], 4, 0.2)
        start("b")
        produce(bootstrap, topic_prefix, parts[1], 4, 1.0)
        start("c")
        produce(bootstrap, topic_prefix, parts[2], 4, 1.0)
        wait_until(
            lambda: (
                sum(len(status(w)["runtime"]["partitions"]) for w in workers) == partitions
                and all(status(w)["runtime"]["partitions"] for w in workers)
            ),
            120,
            "three workers sharing every partition",
            first.log,
        )
        voices = [w for w in workers if status(w)["runtime"]["partitions"].count(0)]
        assert len(voices) == 1
        flowing = threading.Thread(target=produce, args=(bootstrap, topic_prefix, parts[3], 8, 0.5), daemon=True)
        flowing.start()
        time.sleep(1.5)
        killed = voices[0]
        assert killed.process is not None
        stop_group(killed.process, signal.SIGKILL)
        workers.remove(killed)
        start("d")
        flowing.join(120)
        assert not flowing.is_alive()

        for worker in workers:
            converges(worker, expected, seconds=240)
            counts = status(worker)["input"]
            assert (counts["events"], counts["accepted"], counts["invalid"]) == (len(events), len(events), 0)
        wait_until(
            lambda: len([w for w in workers if status(w)["runtime"]["voice"]]) == 1,
            60,
            "exactly one worker speaking for the company",
        )

        # the voice killed once more, after the alert fired: its successor must not announce it again
        voice = next(w for w in workers if status(w)["runtime"]["voice"])
        assert voice.process is not None
        stop_group(voice.process, signal.SIGKILL)
        workers.remove(voice)
        wait_until(
            lambda: any(status(w)["runtime"]["voice"] for w in workers),
            120,
            "another worker speaking for the company",
        )
        for worker in workers:
            converges(worker, expected, seconds=120)
        time.sleep(3 * PUBLISH_SECONDS)  # a few publications by the new voice

        want = normalised(expected_publication(expected))

        def published_equal() -> bool:
            published = normalised(published_snapshot(bootstrap, topic_prefix))
            return all(published.get(key) == body for key, body in want.items())

        wait_until(published_equal, 60, "the last record of every snapshot key equal to replay")
    finally:
        for worker in workers:
            worker.stop()

    transitions: dict[str, list[str]] = defaultdict(list)
    for key, alert in last_records(bootstrap, f"{topic_prefix}leadlag.alerts"):
        if alert.get("alert_name") == "TrafficUpConversionDown":
            transitions[key].append(alert["state"])
    for key, firing in firing_at_end.items():
        states = transitions.get(key, [])
        if firing:
            assert states, f"{key}: replay fires at the end but nothing was announced"
        if states:
            assert states[0] == "firing", (key, states)
            assert all(a != b for a, b in pairwise(states)), f"{key} repeated: {states}"
            assert states[-1] == ("firing" if firing else "resolved"), (key, states)
