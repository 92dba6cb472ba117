"""Specifies stream/app/health.py: ready means assigned, stable, recovered, broker reachable, lag known."""

from __future__ import annotations

import dataclasses

import orjson

from stream.app.health import BROKER_STALE_SECONDS, HealthFacts, readiness
from stream.app.web import readiness_response

READY = HealthFacts(
    assignment_received=True,
    rebalancing=False,
    recovering=False,
    broker_seen_at=100.0,
    lag_measured=True,
    snapshot_built=True,
    now=105.0,
)


def missing(**changes: object) -> list[str]:
    return [m.condition for m in readiness(dataclasses.replace(READY, **changes))]  # type: ignore[arg-type]


def test_a_worker_with_everything_in_place_is_ready() -> None:
    assert readiness(READY) == ()
    assert readiness_response(()) == (200, b'{"ready":true,"missing":[]}')


def test_a_worker_just_started_lists_every_condition_it_still_waits_for() -> None:
    started = HealthFacts(False, False, True, None, False, False, now=3.0)
    assert [m.condition for m in readiness(started)] == ["assignment", "recovery", "broker", "lag", "snapshot"]
    status, body = readiness_response(readiness(started))
    assert status == 503
    assert orjson.loads(body)["missing"][0] == {
        "condition": "assignment",
        "reason": "no partitions assigned by the consumer group yet",
    }


def test_a_rebalance_or_a_recovery_in_progress_is_not_ready() -> None:
    assert missing(rebalancing=True) == ["rebalance"]
    assert missing(recovering=True) == ["recovery"]


def test_a_broker_silent_longer_than_the_limit_is_named_with_how_long() -> None:
    assert missing(now=100.0 + BROKER_STALE_SECONDS) == []
    silent = dataclasses.replace(READY, now=100.0 + BROKER_STALE_SECONDS + 26)
    [reason] = readiness(silent)
    assert (reason.condition, reason.reason) == ("broker", "the broker has not answered for 41 s")


def test_lag_not_yet_measured_for_the_assignment_is_not_ready() -> None:
    assert missing(lag_measured=False) == ["lag"]
