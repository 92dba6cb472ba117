"""The engine's sends (stream/app/engine.py `_send`): retried, shrunk when refused as too large, then a clean stop;
and what it publishes of a partition it takes (`_publish_taken`).

An injected producer stands in for the broker's answers; the retry policy itself is specified in
tests/app/test_outputs.py.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from stream.app.engine import Engine
from stream.app.fold import Outbox
from stream.app.outputs import OutputUnavailable
from stream.settings import Settings
from tests.app.test_company import EVENTS, logged, owning

LIMIT = 100_000


class FlakyProducer:
    """Acknowledges a send unless told to fail it: `failures` first sends fail on delivery (a broker that does
    not answer), and any value over `LIMIT` bytes is refused at once (the producer's size check)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.delivered: list[tuple[str, int | None, bytes]] = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        if len(value) > LIMIT:
            raise MessageSizeTooLargeError(f"The message is {len(value)} bytes")
        self.attempts += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.attempts <= self.failures:
            future.set_exception(KafkaTimeoutError("no broker answered"))
        else:
            self.delivered.append((topic, partition, value))
            future.set_result(None)
        return future


def engine_with(producer: FlakyProducer, tmp_path: Path, attempts: int) -> Engine:
    settings = Settings(broker="kafka://127.0.0.1:1", store="memory", data_dir=tmp_path, send_attempts=attempts)
    engine = Engine(settings, settings.policy())
    engine._producer = producer  # type: ignore[assignment]
    return engine


def letter(original: bytes) -> bytes:
    return orjson.dumps(
        {
            "reason": "not JSON",
            "received_at": "2026-03-02T10:00:00Z",
            "topic": "site.visits",
            "partition": 1,
            "offset": 7,
            "original_base64": base64.b64encode(original).decode(),
            "original_text": None,
        }
    )


def test_dead_letters_the_broker_did_not_acknowledge_are_sent_again_until_it_does(tmp_path: Path) -> None:
    producer = FlakyProducer(failures=3)
    outbox = Outbox(dead_letters=[(1, letter(b"a")), (2, letter(b"b"))])
    asyncio.run(engine_with(producer, tmp_path, attempts=4)._send(outbox))
    assert sorted(partition for _, partition, _ in producer.delivered) == [1, 2]  # each once, none lost


def test_sends_that_keep_failing_stop_the_engine_saying_nothing_was_committed(tmp_path: Path) -> None:
    producer = FlakyProducer(failures=1000)
    outbox = Outbox(dead_letters=[(0, letter(b"a"))])
    with pytest.raises(OutputUnavailable, match=r"tries over .* failed.*not committed"):
        asyncio.run(engine_with(producer, tmp_path, attempts=2)._send(outbox))
    assert producer.attempts == 2
    assert producer.delivered == []


def test_a_dead_letter_too_large_for_the_producer_is_sent_without_its_original(tmp_path: Path) -> None:
    producer = FlakyProducer(failures=0)
    huge = letter(b"x" * 200_000)
    asyncio.run(engine_with(producer, tmp_path, attempts=2)._send(Outbox(dead_letters=[(3, huge)])))
    [(topic, partition, value)] = producer.delivered
    sent: dict[str, Any] = orjson.loads(value)
    assert (topic, partition) == ("leadlag.deadletter", 3)
    assert (sent["topic"], sent["partition"], sent["offset"]) == ("site.visits", 1, 7)
    assert "original of 200000 bytes left out" in sent["reason"]


class RecordingTopic:
    """Stands in for the totals topic (`stream.state.changelog.Changelog`): keeps what is appended, and answers
    each partition's end offset as a broker would."""

    def __init__(self) -> None:
        self.records: dict[int, list[tuple[bytes, bytes | None]]] = {}

    async def append(self, records: dict[int, dict[bytes, bytes | None]]) -> dict[int, int]:
        for partition, written in records.items():
            self.records.setdefault(partition, []).extend(written.items())
        return {partition: len(self.records[partition]) for partition in records}


def test_a_partition_taken_is_published_whole_on_the_totals_topic_and_marked_so(tmp_path: Path) -> None:
    engine = engine_with(FlakyProducer(failures=0), tmp_path, attempts=1)
    topic = RecordingTopic()
    engine._published = topic  # type: ignore[assignment]
    changelog = logged(EVENTS[:400], flush_every=50)
    engine.fold = owning(changelog, {0, 1, 2})

    asyncio.run(engine._publish_taken([1, 2]))

    assert sorted(topic.records) == [1, 2]
    for partition in (1, 2):
        part = engine.fold.parts[partition]
        assert dict(topic.records[partition]) == part.company_records()
        assert part.published == len(topic.records[partition])
    assert engine.fold.parts[0].published == changelog.ends[0]  # kept, not taken: not published again
