"""The poison corpus through the live worker on the real broker: it stays up, and counts the good events only.

Every message of `tests.poison.CORPUS` goes to its input topic, each right after a
good event (`tests.poison.interleaved`, the order `leadlag replay` reads them in).
The worker must keep answering `/metrics` and every JSON view while it reads them;
end with the figures of the good events alone, the same input counts as `leadlag
replay` of the same lines, and exactly one dead letter per poison message with its
reason kind, each small enough for a default Kafka broker; and come back clean
when restarted on the same data directory.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from schemas.events import TOPIC_OF_TYPE, EventType
from stream.app.intake import dead_letter_reason_kind
from stream.app.topics import Topics
from stream.replay import replay
from stream.views import ROUTES
from tests.integration.processes import WorkerProcess, get, get_json, produce_raw, read_topic, wait_until
from tests.integration.test_worker import POLICY, converges, replayed
from tests.poison import CORPUS, GOOD, interleaved

pytestmark = pytest.mark.integration

KAFKA_DEFAULT_MESSAGE_BYTES = 1024 * 1024
"""Kafka's default `message.max.bytes`: every dead letter must fit in it."""


def topic_of_good(line: bytes, topics: Topics) -> str:
    return topics.input_of(EventType(json.loads(line)["type"]))


def concrete(route: str) -> str:
    return route.replace("{window}", "24h").replace("{month}", "2026-11")


def every_view_answers(base: str) -> None:
    status, _ = get(f"{base}/metrics")
    assert status == 200, "/metrics"
    for route in ROUTES:
        status, body = get(base + concrete(route))
        assert status in (200, 404), (route, status, body[:300])  # 404: a month or window with no data


def replay_input(lines: list[bytes]) -> dict[str, int]:
    _, counts = replay(iter(lines), POLICY)
    return {
        "events": counts.events,
        "accepted": counts.accepted,
        "duplicates": counts.duplicates,
        "invalid": counts.invalid,
        "rejected": counts.rejected,
        "after_as_of": 0,
    }


def test_the_worker_survives_the_poison_corpus_and_counts_only_the_good_events(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    assert {poison.topic for poison in CORPUS} <= set(TOPIC_OF_TYPE.values()), "unprefixed input topic names"
    lines, poisoned = interleaved()
    expected = replayed(GOOD)
    expected_input = replay_input(lines)
    assert expected_input["events"] - expected_input["accepted"] >= len(CORPUS)

    worker = WorkerProcess(embedded_broker.url, topic_prefix, tmp_path / "data", store="rocksdb").start()
    try:
        wait_until(lambda: worker.alive() and worker.status()["ready"], 120, "the worker ready", worker.log)
        for number, line in enumerate(lines, start=1):
            poison = poisoned.get(number)
            topic = topics.name(poison.topic) if poison is not None else topic_of_good(line, topics)
            asyncio.run(produce_raw(embedded_broker.bootstrap, topic, [line]))
            if number % 20 == 0:
                assert worker.alive(), f"the worker stopped after line {number}"
                every_view_answers(worker.base)
        converges(worker, expected, seconds=120)
        wait_until(
            lambda: get_json(f"{worker.base}/api/snapshot")["input"] == expected_input,
            60,
            "the input counts equal to replay's",
            worker.log,
        )
        every_view_answers(worker.base)

        letters = asyncio.run(read_topic(embedded_broker.bootstrap, topics.deadletter, len(CORPUS), seconds=60))
        assert len(letters) == len(CORPUS)
        assert max(len(letter) for letter in letters) < KAFKA_DEFAULT_MESSAGE_BYTES
        kinds = Counter(dead_letter_reason_kind(json.loads(letter)["reason"]) for letter in letters)
        assert kinds == Counter(poison.kind for poison in CORPUS)
        assert worker.stop() == 0
    finally:
        worker.stop()

    again = WorkerProcess(embedded_broker.url, topic_prefix, tmp_path / "data", store="rocksdb").start()
    try:
        converges(again, expected, seconds=120)
        assert get_json(f"{again.base}/api/snapshot")["input"] == expected_input
        wait_until(lambda: again.status()["ready"], 60, "the restarted worker ready", again.log)
        every_view_answers(again.base)
        assert "Traceback" not in again.log.read_text(errors="replace")
    finally:
        again.stop()
