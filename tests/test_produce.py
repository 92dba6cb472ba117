"""The pure parts of producing simulated traffic (`stream.produce`) and of the benchmark (`stream.bench`)."""

from __future__ import annotations

import io
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from rich.console import Console

from stream.app.topics import Topics
from stream.bench import (
    PathResult,
    ShapeResult,
    Throughput,
    judged,
    peak_rss_bytes,
    scale_out,
    worker_environment,
)
from stream.cli.bench import print_results
from stream.core.windows import HOUR_MS, MINUTE_MS, to_ms
from stream.produce import (
    Envelopes,
    EventQueue,
    LiveClock,
    Message,
    ProduceStats,
    connection_options,
    entity_key,
    event_time_ms,
    live_plan,
    messages_of,
)
from stream.settings import Settings
from stream.simulation import generate, generate_count

TOPICS = Topics("t.")


def visit(n: int, minute: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"v-{n}",
        "type": "site_visit",
        "occurred_at": f"2026-03-05T10:{minute:02d}:00Z",
        "session_id": f"s-{n}",
        "visitor_id": f"visitor-{n}",
        "pageviews": 1,
        "engaged_seconds": 3,
    }


def spend(n: int) -> dict[str, Any]:
    return {
        "event_id": f"sp-{n}",
        "type": "spend",
        "occurred_at": "2026-03-05T00:00:00Z",
        "channel": "paid",
        "category": "marketing",
        "amount": "10.00",
        "currency": "USD",
    }


# -- keys and topics -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "key"),
    [
        ({"type": "site_visit", "visitor_id": "v1", "contact_id": "c1"}, b"v1"),
        ({"type": "form_fill", "visitor_id": "v1", "contact_id": "c1"}, b"c1"),
        ({"type": "stage_change", "contact_id": "c2", "account_id": "a2"}, b"c2"),
        ({"type": "subscription", "account_id": "a3", "subscription_id": "s3"}, b"a3"),
        ({"type": "spend", "channel": "paid"}, b"paid"),
    ],
)
def test_a_single_event_is_keyed_by_the_entity_whose_state_it_changes(event: dict[str, Any], key: bytes) -> None:
    assert entity_key(event) == key


def test_single_events_are_one_keyed_message_each_on_their_types_topic() -> None:
    envelopes = Envelopes(TOPICS, envelope_size=1)
    message = envelopes.add(visit(1))
    assert message == Message("t.site.visits", b"visitor-1", orjson.dumps(visit(1)), 1)
    assert envelopes.drain() == []


def test_events_are_grouped_per_topic_into_unkeyed_envelopes_of_the_chosen_size() -> None:
    envelopes = Envelopes(TOPICS, envelope_size=2)
    sent = [envelopes.add(event) for event in (visit(1), spend(1), visit(2), visit(3))]
    # the second visit completes the first envelope; the spend and the third visit wait
    assert sent[:2] == [None, None]
    assert sent[2] == Message("t.site.visits", None, orjson.dumps([visit(1), visit(2)]), 2)
    assert sent[3] is None
    assert envelopes.drain() == [
        Message("t.marketing.spend", None, orjson.dumps([spend(1)]), 1),
        Message("t.site.visits", None, orjson.dumps([visit(3)]), 1),
    ]
    assert envelopes.drain() == []


def test_an_envelope_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="envelope_size"):
        Envelopes(TOPICS, envelope_size=0)


@pytest.mark.parametrize("envelope_size", [1, 7, 200])
def test_every_generated_event_goes_out_exactly_once_on_its_types_topic(envelope_size: int) -> None:
    events = list(generate_count(1000, seed=3))
    expected = Counter(TOPICS.input_of(event["type"]) for event in events)  # type: ignore[arg-type]
    messages = list(messages_of(events, TOPICS, envelope_size))
    per_topic: Counter[str] = Counter()
    ids: list[object] = []
    for message in messages:
        decoded = orjson.loads(message.value)
        batch = decoded if isinstance(decoded, list) else [decoded]
        assert len(batch) == message.events <= envelope_size
        assert all(TOPICS.input_of(event["type"]) == message.topic for event in batch)
        per_topic[message.topic] += message.events
        ids.extend(event["event_id"] for event in batch)
    assert per_topic == expected
    assert sorted(ids) == sorted(event["event_id"] for event in events)  # type: ignore[type-var]


def test_the_counts_add_up_per_topic_events_and_messages() -> None:
    stats = ProduceStats()
    stats.count(Message("t.site.visits", None, b"[]", 200))
    stats.count(Message("t.site.visits", None, b"[]", 50))
    stats.count(Message("t.marketing.spend", b"paid", b"{}", 1))
    assert stats.events == {"t.site.visits": 250, "t.marketing.spend": 1}
    assert stats.messages == {"t.site.visits": 2, "t.marketing.spend": 1}
    assert (stats.total_events, stats.total_messages) == (251, 3)


# -- live time ------------------------------------------------------------------------------------


def test_the_live_clock_runs_speed_simulated_seconds_per_wall_second() -> None:
    clock = LiveClock(start_ms=1_000_000, speed=60)
    assert clock.event_ms_at(10) == 1_000_000 + 10 * 60 * 1000
    assert clock.elapsed_at(1_000_000 + 600_000) == 10.0
    assert clock.elapsed_at(999_000) == 0.0  # the backfill is due at once


def test_a_live_plan_starts_at_midnight_before_the_backfill_and_scripts_the_incident_in_event_time() -> None:
    now = datetime(2026, 3, 5, 10, 17, tzinfo=UTC)
    plan = live_plan(now, speed=60, backfill_hours=48, incident_after_minutes=5, incident_minutes=30)
    assert plan.scenario.start == datetime(2026, 3, 3, tzinfo=UTC)
    assert plan.backfill_from_ms == to_ms(datetime(2026, 3, 3, 10, 17, tzinfo=UTC))
    assert plan.clock == LiveClock(to_ms(now), 60)
    # 5 wall minutes at 60× are 5 simulated hours; 30 wall minutes are 30 hours
    assert plan.scenario.incident_start == datetime(2026, 3, 5, 15, 17, tzinfo=UTC)
    assert plan.scenario.incident_hours == 30
    assert plan.incident_ms == (to_ms(now) + 5 * HOUR_MS, to_ms(now) + 35 * HOUR_MS)


def test_a_live_plan_without_an_incident_has_none() -> None:
    plan = live_plan(datetime(2026, 3, 5, tzinfo=UTC))
    assert plan.incident_ms is None
    assert plan.scenario.incident_start is None


def test_a_live_plan_refuses_a_speed_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="speed"):
        live_plan(datetime(2026, 3, 5, tzinfo=UTC), speed=0)


def test_a_live_plan_sends_the_paying_base_and_the_backfill_window_but_not_the_morning_before_it() -> None:
    now = datetime(2026, 3, 5, 10, 17, tzinfo=UTC)
    plan = live_plan(now, backfill_hours=6, visits_per_day=2000)
    start_ms = to_ms(plan.scenario.start)  # 2026-03-05T00:00Z: 04:17 is the backfill's start
    assert plan.backfill_from_ms == start_ms + 4 * HOUR_MS + 17 * MINUTE_MS
    events = []
    for event in generate(plan.scenario, seed=1):
        if event_time_ms(event) >= to_ms(now):
            break
        events.append(event)
    kept = [event for event in events if plan.wanted(event)]
    skipped = [event for event in events if not plan.wanted(event)]
    assert skipped, "the night before 04:17 has sessions"
    assert all(start_ms <= event_time_ms(event) < plan.backfill_from_ms for event in skipped)
    base = [event for event in kept if event_time_ms(event) < start_ms]
    assert len(base) == plan.scenario.existing_customers
    assert {event["type"] for event in base} == {"subscription"}
    assert all(event_time_ms(event) >= plan.backfill_from_ms for event in kept[len(base) :])


def test_the_event_queue_hands_out_events_before_a_moment_and_keeps_the_next_one() -> None:
    queue = EventQueue([visit(1, minute=0), visit(2, minute=1), visit(3, minute=2)])
    one_minute_in = to_ms(datetime(2026, 3, 5, 10, 1, tzinfo=UTC))
    assert [e["event_id"] for e in queue.due(one_minute_in)] == ["v-1"]
    assert [e["event_id"] for e in queue.due(one_minute_in)] == []
    assert not queue.exhausted
    assert [e["event_id"] for e in queue.due(one_minute_in + 2 * MINUTE_MS)] == ["v-2", "v-3"]
    assert queue.exhausted


# -- connection settings --------------------------------------------------------------------------


def test_the_producer_connects_to_the_broker_setting_without_credentials_on_plaintext() -> None:
    assert connection_options(Settings(broker="kafka://a:9092;kafka://b:9093")) == {
        "bootstrap_servers": ["a:9092", "b:9093"]
    }


def test_an_empty_broker_setting_says_how_to_set_one() -> None:
    with pytest.raises(ValueError, match="LEADLAG_BROKER"):
        connection_options(Settings(broker=" ; "))


def test_sasl_settings_reach_the_producer() -> None:
    settings = Settings(
        broker="k:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="leadlag",
        sasl_password=SecretStr("s3cret"),
    )
    assert connection_options(settings) == {
        "bootstrap_servers": ["k:9092"],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "leadlag",
        "sasl_plain_password": "s3cret",
    }


# -- the benchmark's arithmetic ---------------------------------------------------------------------


def test_throughput_is_measured_between_the_first_and_the_last_change_seen() -> None:
    meter = Throughput()
    assert not meter.observe(0.0, 0)  # still starting up
    assert meter.observe(10.0, 100)
    assert not meter.observe(10.25, 100)
    assert meter.observe(11.0, 300)
    assert meter.observe(12.0, 500)
    assert meter.seconds() == 2.0
    assert meter.events_after_first_change() == 400  # 200 events/s


def test_everything_seen_at_one_poll_has_no_rate() -> None:
    meter = Throughput()
    meter.observe(3.0, 1000)
    assert meter.seconds() is None
    assert PathResult(1000, None, None).events_per_second is None


def test_the_ratio_is_worker_events_per_second_over_the_raw_consumers() -> None:
    raw = PathResult(events=400_000, seconds=1.0, peak_rss_bytes=None)
    worker = PathResult(events=400_000, seconds=2.0, peak_rss_bytes=None)
    result = ShapeResult(200, 400_000, 2_000, 1.0, raw, worker)
    assert result.ratio == 0.5
    assert result.as_json()["worker"]["events_per_second"] == 200_000
    assert ShapeResult(200, 400_000, 2_000, 1.0, raw, None, "worker exited").ratio is None


def test_the_scale_out_is_each_shapes_events_per_second_with_more_workers_over_one_workers() -> None:
    raw = PathResult(1_000_000, 2.0, None)
    results = [
        ShapeResult(200, 1_000_000, 5_000, 1.0, raw, PathResult(1_000_000, 100.0, None)),
        ShapeResult(200, 1_000_000, 5_000, 1.0, raw, PathResult(1_000_000, 56.0, None), workers=2),
        ShapeResult(1, 1_000_000, 1_000_000, 1.0, raw, PathResult(1_000_000, 50.0, None), workers=2),
        ShapeResult(200, 1_000_000, 5_000, 1.0, raw, None, "worker exited", workers=3),
    ]

    assert scale_out(results) == [(200, 2, 100.0 / 56.0)]
    printed = io.StringIO()
    print_results(results, Console(file=printed, width=130))
    assert "scale-out, 200 events per message: 2 workers fold 1.79× one worker's events/s (target ≥ 1.7×)" in (
        printed.getvalue()
    )


def test_the_worker_has_judged_every_accepted_duplicate_invalid_and_rejected_event() -> None:
    status = {"input": {"events": 99, "accepted": 90, "duplicates": 3, "invalid": 2, "rejected": 1}}
    assert judged(status) == 96
    assert judged({"input": {"accepted": 5, "duplicates": 0, "invalid": 0}}) == 5


def test_peak_rss_is_read_from_the_processes_high_water_mark() -> None:
    own = peak_rss_bytes(os.getpid())
    assert own is not None
    assert own > 10 * 2**20
    assert peak_rss_bytes(2**22 + 12345) is None


def test_the_benchmarked_worker_gets_its_own_topics_group_port_and_memory_store(tmp_path: Path) -> None:
    env = worker_environment("127.0.0.1:9092", "embedded", "bench-x.", 6123, tmp_path, 4)
    assert (
        env.items()
        >= {
            "LEADLAG_BROKER": "127.0.0.1:9092",
            "LEADLAG_BROKER_KIND": "embedded",
            "LEADLAG_TOPIC_PREFIX": "bench-x.",
            "LEADLAG_APP_ID": "bench-x.leadlag",
            "LEADLAG_WEB_PORT": "6123",
            "LEADLAG_STORE": "memory",
            "LEADLAG_PARTITIONS": "4",
            "LEADLAG_DATA_DIR": str(tmp_path),
        }.items()
    )


def test_envelopes_per_entity_partition_hold_only_events_the_worker_places_there() -> None:
    from schemas.events import EVENT_ADAPTER
    from stream.app.placement import entity_partition
    from stream.app.topics import Topics
    from stream.core.links import entity_of
    from stream.produce import messages_of
    from stream.simulation import generate_count

    events = list(generate_count(3000, seed=4))
    messages = list(messages_of(events, Topics(""), 50, partitions=4))

    assert sum(message.events for message in messages) == len(events)
    for message in messages:
        assert message.partition is not None
        for raw in orjson.loads(message.value):
            kind, key = entity_of(EVENT_ADAPTER.validate_python(raw))
            assert entity_partition(kind, key, 4) == message.partition
