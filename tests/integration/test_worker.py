"""The live worker on a real broker reports exactly what `leadlag replay` reports for the same events."""

from __future__ import annotations

import asyncio
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.events import EVENT_ADAPTER
from schemas.snapshot import InputCounts
from stream.core.ledger import Ledger
from stream.core.policy import Policy
from stream.core.snapshot import build_snapshot
from stream.simulation import generate_count
from tests.integration.processes import (
    get,
    get_json,
    produce_events,
    produce_raw,
    read_keyed,
    read_topic,
    running_worker,
    wait_until,
)

pytestmark = pytest.mark.integration

POLICY = Policy(fx_rates={"EUR": Decimal("1.08")})


def normalised(value: Any) -> Any:
    """Floats as `Close` numbers: sums of floats (credits, seconds) differ in the last bit by order."""
    if isinstance(value, float):
        return Close(value)
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


class Close(float):
    """A float equal to any number within a relative 1e-9 of it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (int, float)) and math.isclose(self, other, rel_tol=1e-9, abs_tol=1e-9)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(round(self, 6))


def replayed(events: list[dict[str, Any]], policy: Policy = POLICY) -> dict[str, Any]:
    """The snapshot `leadlag replay` prints for these events, minus the run's input counts."""
    ledger = Ledger(policy)
    for raw in events:
        ledger.fold(EVENT_ADAPTER.validate_python(raw))
    snapshot = build_snapshot(
        ledger.totals(),
        ledger.watermark_ms,
        ledger.earliest_ms,
        policy,
        InputCounts(events=0, accepted=0, duplicates=0, invalid=0, rejected=0),
    )
    body = snapshot.model_dump(mode="json", exclude_none=True)
    del body["input"]
    return normalised(body)  # type: ignore[no-any-return]


def live(worker_base: str) -> dict[str, Any]:
    body = get_json(f"{worker_base}/api/snapshot")
    del body["input"]
    return normalised(body)  # type: ignore[no-any-return]


def converges(worker: Any, expected: dict[str, Any], seconds: float = 60.0) -> None:
    """Links between entities travel through the routing topic after their event is counted: wait for them."""
    import time

    deadline = time.monotonic() + seconds
    latest: dict[str, Any] = {}
    while time.monotonic() < deadline:
        worker.alive()
        try:
            latest = live(worker.base)
        except (OSError, AssertionError):  # not listening yet, or 503 while it recovers
            time.sleep(1)
            continue
        if latest == expected:
            return
        time.sleep(1)
    assert latest == expected, "the worker's snapshot differs from replay's at:\n" + "\n".join(
        differences(latest, expected)
    )


def differences(live: Any, expected: Any, path: str = "", limit: int = 40) -> list[str]:
    """Where two snapshots differ (`path: live != expected`), at most `limit` places: a readable failure."""
    found: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(found) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if key not in a or key not in b:
                    found.append(f"{where}/{key}: only in {'the worker' if key in a else 'replay'}")
                else:
                    walk(a[key], b[key], f"{where}/{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for index, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{where}[{index}]")
        elif a != b:
            found.append(f"{where}: {a!r} != {b!r}")

    walk(live, expected, path)
    return found


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(f"{base}/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_worker_reports_what_replay_reports_for_the_same_events(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    events = list(generate_count(4000, seed=11))
    half = len(events) // 2
    with running_worker(embedded_broker.url, topic_prefix, tmp_path / "data") as worker:
        # leadlag's own producers send envelopes; third-party ones send single keyed events: both at once
        asyncio.run(produce_events(embedded_broker.bootstrap, topic_prefix, events[:half], envelope_size=200))
        asyncio.run(produce_events(embedded_broker.bootstrap, topic_prefix, events[half:], envelope_size=1))
        worker.wait_for(len(events))
        expected = replayed(events)
        converges(worker, expected)

        status = worker.status()
        assert status["input"]["accepted"] == len(events)
        assert status["input"]["invalid"] == 0

        metrics = samples(worker.base)
        window_24h = expected["windows"]["24h"]["traffic"]
        assert metrics[("leadlag_sessions", (("channel", "all"), ("window", "24h")))] == window_24h["sessions"]
        mrr = metrics[("leadlag_mrr", (("currency", "USD"),))]
        assert mrr == pytest.approx(expected["revenue"]["mrr"])
        assert mrr > 0

        # the compacted snapshot topic carries the same windows for downstream consumers
        def published_sessions() -> int:
            value = asyncio.run(
                read_keyed(embedded_broker.bootstrap, f"{topic_prefix}leadlag.snapshots", b"window:24h")
            )
            return int(json.loads(value)["traffic"]["sessions"])

        wait_until(lambda: published_sessions() == window_24h["sessions"], 30, "the 24h window on leadlag.snapshots")


def test_a_worker_restarted_mid_stream_ends_with_the_same_numbers(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    """State comes back from RocksDB and the changelog; the replayed tail is not double counted."""
    events = list(generate_count(3000, seed=5))
    first, second = events[:1800], events[1500:]  # 300 events sent twice: at-least-once delivery
    data = tmp_path / "data"
    with running_worker(embedded_broker.url, topic_prefix, data) as worker:
        asyncio.run(produce_events(embedded_broker.bootstrap, topic_prefix, first, envelope_size=100))
        worker.wait_for(len(first))
        assert worker.stop() == 0
    with running_worker(embedded_broker.url, topic_prefix, data) as restarted:
        asyncio.run(produce_events(embedded_broker.bootstrap, topic_prefix, second, envelope_size=100))
        restarted.wait_for(len(second))
        converges(restarted, replayed(events))
        assert restarted.status()["input"]["duplicates"] == 300


def test_a_worker_on_an_empty_store_recovers_every_entity_from_the_changelog(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    """A new data directory (a partition moved to another machine): the changelog alone restores the state."""
    events = list(generate_count(2500, seed=8))
    with running_worker(embedded_broker.url, topic_prefix, tmp_path / "first") as worker:
        asyncio.run(produce_events(embedded_broker.bootstrap, topic_prefix, events, envelope_size=50))
        worker.wait_for(len(events))
        assert worker.stop() == 0
    with running_worker(embedded_broker.url, topic_prefix, tmp_path / "second") as moved:
        converges(moved, replayed(events), seconds=90)


GOOD = {
    "type": "site_visit",
    "occurred_at": "2026-03-02T10:00:00Z",
    "session_id": "s",
    "visitor_id": "v",
    "pageviews": 2,
    "engaged_seconds": 12,
}


def test_bad_input_goes_to_the_dead_letter_with_its_reason_and_the_good_events_are_all_counted(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    good = [orjson.dumps(GOOD | {"event_id": f"good-{n}", "visitor_id": f"v{n}"}) for n in range(6)]
    bad = {
        b"this is not json": "not JSON",
        b"[1, 2": "not JSON",
        b"42": "not a JSON object",
        orjson.dumps(GOOD | {"event_id": "x1", "type": "page_view"}): "type: unknown event type 'page_view'",
        orjson.dumps(GOOD | {"event_id": "x2", "pageviews": "many"}): "pageviews: Input should be a valid integer",
        orjson.dumps(GOOD | {"event_id": "x3", "occurred_at": "2026-03-02T10:00:00"}): "no UTC offset",
        orjson.dumps(
            {
                "event_id": "x4",
                "type": "spend",
                "occurred_at": "2026-03-02T10:00:00Z",
                "channel": "paid",
                "category": "marketing",
                "amount": 10,
                "currency": "JPY",
            }
        ): "unknown currency 'JPY'",
        b'{"padding": "' + b"x" * 1_000_000 + b'"}': "type: missing",
    }
    payloads = [good[0], *list(bad)[:4], good[1], good[2], *list(bad)[4:], good[3], good[4]]
    envelope = orjson.dumps([json.loads(good[5]), GOOD | {"event_id": "x5", "engaged_seconds": -1}])
    topic = f"{topic_prefix}site.visits"
    with running_worker(embedded_broker.url, topic_prefix, tmp_path / "data") as worker:
        asyncio.run(produce_raw(embedded_broker.bootstrap, topic, [*payloads, envelope]))
        worker.wait_for(len(good) + len(bad) + 1)
        letters = [
            json.loads(v)
            for v in asyncio.run(
                read_topic(embedded_broker.bootstrap, f"{topic_prefix}leadlag.deadletter", len(bad) + 1)
            )
        ]
        counts = worker.status()["input"]
        assert counts["accepted"] == len(good)
        assert counts["invalid"] + counts["rejected"] == len(bad) + 1
        sessions = ("leadlag_sessions", (("channel", "all"), ("window", "30d")))
        # /metrics reads the snapshot the worker builds about once a second, never one built for the scrape
        wait_until(lambda: samples(worker.base).get(sessions) == len(good), 30, "the next snapshot", worker.log)
        metrics = samples(worker.base)
        assert metrics[("leadlag_sessions", (("channel", "all"), ("window", "30d")))] == len(good)
        dead_letters_counted = sum(v for (name, _), v in metrics.items() if name == "leadlag_deadletters_total")
        assert dead_letters_counted == len(bad) + 1

    assert len(letters) == len(bad) + 1
    import base64

    def letter_of(payload: bytes) -> dict[str, Any]:
        """The dead letter of `payload`: whole, or (over the dead letter's cap) its start and its length."""
        for letter in letters:
            kept = base64.b64decode(letter["original_base64"])
            if kept == payload or (letter.get("truncated") and payload.startswith(kept)):
                assert letter.get("original_length", len(payload)) == len(payload)
                return letter
        raise AssertionError(f"no dead letter for {payload[:60]!r}")

    for payload, reason in bad.items():
        letter = letter_of(payload)
        assert len(orjson.dumps(letter)) <= 1_000_000  # fits a default Kafka broker
        assert reason in letter["reason"], (reason, letter["reason"])
        assert letter["topic"] == topic
        assert letter["offset"] is not None
    enveloped = [letter for letter in letters if letter.get("envelope_index") == 1]
    assert len(enveloped) == 1
    assert "engaged_seconds" in enveloped[0]["reason"]


def test_an_event_older_than_the_grace_period_goes_to_the_dead_letter_as_late(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    def visit(n: int, at: str) -> bytes:
        return orjson.dumps(GOOD | {"event_id": f"v-{n}", "visitor_id": f"v{n}", "occurred_at": at})

    topic = f"{topic_prefix}site.visits"
    with running_worker(embedded_broker.url, topic_prefix, tmp_path / "data", grace_hours="1") as worker:
        asyncio.run(produce_raw(embedded_broker.bootstrap, topic, [visit(1, "2026-03-02T10:00:00Z")]))
        worker.wait_for(1)
        # 30 minutes before the newest event is within the hour of grace; two hours is not
        late = visit(3, "2026-03-02T08:00:00Z")
        asyncio.run(produce_raw(embedded_broker.bootstrap, topic, [visit(2, "2026-03-02T09:30:00Z"), late]))
        worker.wait_for(3)
        counts = worker.status()["input"]
        [letter] = [
            json.loads(v)
            for v in asyncio.run(read_topic(embedded_broker.bootstrap, f"{topic_prefix}leadlag.deadletter", 1))
        ]
        assert samples(worker.base)[("leadlag_deadletters_total", (("reason", "late"),))] == 1
    assert (counts["accepted"], counts["rejected"]) == (2, 1)
    assert letter["reason"].startswith(
        "late: occurred_at 2026-03-02T08:00:00+00:00 is more than the grace period (1 h)"
    )
    assert letter["original_text"] == late.decode()


def test_events_from_a_librdkafka_producer_are_counted_like_any_others(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    """confluent-kafka (librdkafka) partitions keys differently from aiokafka: entities must not split."""
    from confluent_kafka import Producer

    events = list(generate_count(1200, seed=3))
    producer = Producer({"bootstrap.servers": embedded_broker.bootstrap, "linger.ms": 5})
    topic_of = {
        "site_visit": "site.visits",
        "form_fill": "form.fills",
        "stage_change": "crm.stage_changes",
        "subscription": "billing.subscriptions",
        "spend": "marketing.spend",
    }
    key_of = {
        "site_visit": "visitor_id",
        "form_fill": "contact_id",
        "stage_change": "contact_id",
        "subscription": "account_id",
        "spend": "channel",
    }
    with running_worker(embedded_broker.url, topic_prefix, tmp_path / "data") as worker:
        for event in events:
            kind = str(event["type"])
            producer.produce(topic_prefix + topic_of[kind], orjson.dumps(event), key=str(event[key_of[kind]]).encode())
            producer.poll(0)
        assert producer.flush(30) == 0
        worker.wait_for(len(events))
        converges(worker, replayed(events))
