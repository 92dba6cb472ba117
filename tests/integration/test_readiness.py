"""Readiness on a real broker: not ready while the broker is stopped (SIGSTOP), ready again after SIGCONT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from stream.broker import EmbeddedBroker
from stream.simulation import generate_count
from tests.integration.processes import (
    WORKER_READY_SECONDS,
    get,
    produce_events,
    running_worker,
    stop_group,
    wait_until,
)

pytestmark = pytest.mark.integration

BROKER_SILENT_SECONDS = 60.0
"""Enough for the readiness limit (15 s) plus a lag measurement that times out (10 s) and the timer's 5 s."""


def readyz(base: str) -> tuple[int, dict[str, Any]]:
    status, body = get(f"{base}/readyz")
    return status, json.loads(body)


def test_a_worker_is_not_ready_while_its_broker_is_stopped_says_why_and_is_ready_again_after(
    topic_prefix: str, tmp_path: Path
) -> None:
    events = list(generate_count(300, seed=4))
    # a broker of its own: pausing the session's broker would stall every other test
    with EmbeddedBroker() as broker, running_worker(broker.url, topic_prefix, tmp_path / "data") as worker:
        asyncio.run(produce_events(broker.bootstrap, topic_prefix, events, envelope_size=50))
        worker.wait_for(len(events))
        wait_until(lambda: readyz(worker.base)[0] == 200, WORKER_READY_SECONDS, "ready", worker.log)
        assert worker.status()["ready"] is True

        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)  # the binary itself: it runs in a session of its own
        stopped = time.monotonic()
        try:
            wait_until(
                lambda: readyz(worker.base)[0] == 503,
                BROKER_SILENT_SECONDS,
                "not ready with the broker stopped",
                worker.log,
            )
            print(f"not ready {time.monotonic() - stopped:.1f} s after the broker stopped")
            status, body = readyz(worker.base)
            assert status == 503
            assert body["ready"] is False
            broker_reason = [m for m in body["missing"] if m["condition"] == "broker"]
            assert broker_reason, body
            assert "has not answered for" in broker_reason[0]["reason"]
            status_code, status_body = get(f"{worker.base}/api/status")
            assert status_code == 503
            status_json = json.loads(status_body)
            assert status_json["ready"] is False
            assert "broker" in [m["condition"] for m in status_json["not_ready"]]
            assert status_json["input"]["accepted"] == len(events)  # still shown, for a person looking
            assert get(f"{worker.base}/healthz")[0] == 200  # alive: a liveness probe must not restart it
            worker.alive()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(broker.pid, signal.SIGCONT)

        resumed = time.monotonic()
        wait_until(lambda: readyz(worker.base)[0] == 200, 120, "ready again after SIGCONT", worker.log)
        print(f"ready again {time.monotonic() - resumed:.1f} s after the broker resumed")
        assert worker.status()["input"]["accepted"] == len(events)
        assert worker.stop() == 0


def test_a_worker_killed_and_restarted_is_ready_only_once_it_holds_every_partition_again(
    embedded_broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    """The killed member stays in the group until the broker drops it; the restarted one must not say ready
    before then with part of the partitions (it waits for its join, then recovers)."""
    events = list(generate_count(2_000, seed=5))
    asyncio.run(produce_events(embedded_broker.bootstrap, topic_prefix, events, envelope_size=50))
    data = tmp_path / "data"
    with running_worker(embedded_broker.url, topic_prefix, data) as first:
        first.wait_for(len(events))
        wait_until(lambda: readyz(first.base)[0] == 200, WORKER_READY_SECONDS, "ready", first.log)
        assert first.process is not None
        stop_group(first.process, signal.SIGKILL)

    with running_worker(embedded_broker.url, topic_prefix, data) as again:
        seen: list[tuple[int, int, tuple[str, ...]]] = []

        def ready_with_every_partition() -> bool:
            status, body = get(f"{again.base}/api/status")
            state = json.loads(body)
            conditions = tuple(m["condition"] for m in state["not_ready"])
            seen.append((status, state["runtime"]["partitions_assigned"], conditions))
            return status == 200

        started = time.monotonic()
        wait_until(ready_with_every_partition, WORKER_READY_SECONDS, "the restarted worker ready", again.log)
        print(f"ready {time.monotonic() - started:.1f} s after the restart; states seen: {sorted(set(seen))}")
        assert all(partitions == 4 for status, partitions, _ in seen if status == 200), seen
        assert any(status == 503 and "assignment" in conditions for status, _, conditions in seen), seen
        assert again.counted() == len(events)
